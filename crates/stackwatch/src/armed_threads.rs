//! Sampling a thread from its first instruction of CPU: a process-wide CPU timer whose
//! signal makes the handler arm the interrupted thread's own timer.
//!
//! The aggregator's scan finds a new thread only every 20 ms (later when the machine is
//! busy), so a thread armed by the scan alone loses what it burns before: most of a
//! short-lived thread's CPU. Instead:
//!
//! - one POSIX timer on the process's CPU clock (`CLOCK_PROCESS_CPUTIME_ID`,
//!   `SIGEV_SIGNAL`) expires every period of CPU time the process as a whole uses. Since
//!   Linux 6.3 ("posix-timers: Prefer delivery of signals to the current thread") the
//!   kernel delivers such a signal to the thread that was running when it expired, the
//!   one that used the CPU; before, to the main thread whenever it could take it, so on
//!   older kernels this is not used and the scan arms threads (see [`supported`]);
//! - the handler tells its signal from a thread timer's by `si_value`
//!   ([`PROCESS_TIMER_TAG`]). On a thread that has no timer of its own it records the
//!   sample (the period that just ended was that thread's) and arms the thread's own
//!   timer ([`on_process_timer`]); on a thread that has one it records nothing: that
//!   thread's own timer counts its periods, and counting the process timer's too would
//!   count them twice;
//! - which threads armed themselves, and their timers, is a static table of
//!   `(tid, timer)` words (the model is labels.rs's `(tid, set)` table): the handler
//!   claims a slot with one compare-exchange, no lock, no allocation. Only the thread
//!   itself ever inserts its own tid (its SIGPROF handler runs are serialised by the
//!   signal mask), so a tid is never in the table twice;
//! - the aggregator deletes the timers of threads that have exited (each POSIX timer
//!   holds a queued-signal entry against `RLIMIT_SIGPENDING`, and a dead thread's timer
//!   is not freed by the kernel before the process exits; [`sweep`]), and every so often
//!   those whose thread is gone although its tid was reused ([`recheck`]). On stop it
//!   turns arming off, waits until no handler runs, and deletes them all
//!   ([`delete_all`]).
//!
//! Timers are created and deleted with the raw system calls on both sides: glibc's
//! `timer_create` is not async-signal-safe (its `SIGEV_THREAD` path starts a helper
//! thread and allocates), and its `timer_t` is glibc's own handle, not the kernel's id
//! that the handler gets from the system call. With `SIGEV_THREAD_ID` and
//! `SIGEV_SIGNAL` the system call is the whole of what the C library would do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Threads that can hold a timer armed from the handler at the same time; a thread past
/// it is sampled by the process timer alone (counted, but less exactly) until a slot
/// frees.
pub(crate) const ARMED_SLOTS: usize = 4096;

/// `si_value` of the process timer's signal (the thread timers' carry
/// [`THREAD_TIMER_TAG`]).
pub(crate) const PROCESS_TIMER_TAG: usize = 0x5357_5052; // "SWPR"
/// `si_value` of a thread timer's signal.
pub(crate) const THREAD_TIMER_TAG: usize = 0x5357_5448; // "SWTH"

/// A slot never used.
const EMPTY: u64 = 0;
/// A slot whose thread exited: lookups probe past it, claims reuse it.
const FREED: u64 = u64::MAX;
/// Low half of a slot whose thread is creating its timer right now.
const ARMING: u32 = u32::MAX;

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise SLOTS
const FREE_SLOT: AtomicU64 = AtomicU64::new(EMPTY);

/// `tid << 32 | timer id` (or [`ARMING`]) of every thread that armed its own timer.
/// Static: the handler reads it without any pointer that could dangle.
static SLOTS: [AtomicU64; ARMED_SLOTS] = [FREE_SLOT; ARMED_SLOTS];

/// Whether handlers may arm timers: set while a profiler runs with this mechanism,
/// cleared (then handlers quiesce) before the aggregator deletes every timer.
static ARMING_ON: AtomicBool = AtomicBool::new(false);
/// The sampling period the handler arms thread timers with, in nanoseconds.
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
/// When arming was turned on, monotonic nanoseconds.
static ARMING_SINCE_NS: AtomicU64 = AtomicU64::new(0);

fn word(tid: u32, state: u32) -> u64 {
    (u64::from(tid) << 32) | u64::from(state)
}

fn tid_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// The kernel id of the timer in `word`, if armed (not empty, freed or arming).
fn timer_of(word: u64) -> Option<i32> {
    if word == EMPTY || word == FREED || word as u32 == ARMING {
        return None;
    }
    Some(word as u32 as i32)
}

fn home(tid: u32) -> usize {
    // Fibonacci hashing spreads consecutive tids.
    (tid.wrapping_mul(0x9E37_79B9) as usize) % ARMED_SLOTS
}

/// Whether this kernel delivers a process-directed timer signal to the thread that was
/// running when it expired (Linux 6.3 and later), which is what lets a thread arm its
/// own timer on its first period of CPU. Read from `uname`'s release ("6.8.0-45-...").
pub(crate) fn supported() -> bool {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    let release: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    release_at_least(&String::from_utf8_lossy(&release), (6, 3))
}

/// Whether a kernel release string ("6.8.0-45-generic") is at least `major.minor`.
fn release_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// What the handler records for a process-timer signal on thread `tid`: the weight of
/// the sample in periods, 0 for nothing.
///
/// - The thread has a timer of its own: 0. That timer counts its periods.
/// - It has none: it arms one now, and the sample stands for the CPU time the thread
///   used before it (read from its own CPU clock, from its first instruction): `c` ns
///   of CPU and a random phase `u` in `[0, period)` give `floor((c + u) / period)`
///   periods, and the thread's timer first expires `period - (c + u) % period` from
///   now. So the thread is counted exactly as if its timer had been armed, with a random
///   phase, when it started: `floor((L + u) / period)` periods for `L` of CPU, `L /
///   period` on average, however short `L` (without the phase, threads shorter than a
///   period would never be counted). The weight is capped at the periods since
///   arming was turned on (a thread older than the profiler is armed by the
///   aggregator's first scan and never gets here, unless that listing missed it).
/// - It has none and cannot get one (the table is full, the kernel refuses: the
///   `RLIMIT_SIGPENDING` of timers): 1, the process timer sampling it as `setitimer`
///   would.
/// - Arming is off (the profiler is stopping): 0.
///
/// Signal context. Async-signal-safe: atomic loads and compare-exchanges on a static
/// table (no allocation, no lock, bounded by the table's size), `clock_gettime` (on
/// POSIX's list), the time-stamp counter, and the raw `timer_create`, `timer_settime`
/// and `timer_delete` system calls (see [`arm`]).
pub(crate) fn on_process_timer(tid: u32) -> u32 {
    // An atomic load: async-signal-safe. SeqCst pairs with `stop_arming`: a handler that
    // reads true here was counted as running before the aggregator's quiescence wait.
    if !ARMING_ON.load(Ordering::SeqCst) {
        return 0;
    }
    // Probe from the tid's home slot: its own entry, or the first never-used slot, which
    // ends the search. Remember the first reusable slot.
    let start = home(tid);
    let mut reusable = None;
    for i in 0..ARMED_SLOTS {
        let at = (start + i) % ARMED_SLOTS;
        // An atomic load: async-signal-safe.
        let w = SLOTS[at].load(Ordering::Acquire);
        if w != EMPTY && w != FREED && tid_of(w) == tid {
            return 0;
        }
        if w == FREED && reusable.is_none() {
            reusable = Some(at);
        }
        if w == EMPTY {
            reusable.get_or_insert(at);
            break;
        }
    }
    // Not in the table: this thread has no timer of its own. Claim a slot (the first
    // reusable one, else any further free one), then arm.
    let Some(at) = reusable.and_then(|first| claim(tid, first)) else {
        return 1;
    };
    // Atomic loads: async-signal-safe.
    let period = PERIOD_NS.load(Ordering::Relaxed).max(1);
    let since_ns = ARMING_SINCE_NS.load(Ordering::Relaxed);
    // clock_gettime is async-signal-safe (POSIX); a syscall for a CPU clock.
    let cpu = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    // The time-stamp counter (an instruction) mixed with the tid: a phase in [0, period)
    // that differs between threads and runs.
    let phase = mix(u64::from(tid) ^ crate::handler_cost::cost_ticks()) % period;
    // clock_gettime on the monotonic clock: async-signal-safe (POSIX), a vDSO call.
    let cap = clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(since_ns) / period + 1;
    let weight = ((cpu + phase) / period).min(cap);
    let first = period - (cpu + phase) % period;
    match arm(tid, period, first) {
        Some(timer) => {
            // A compare-exchange: async-signal-safe. It fails only if the aggregator
            // freed the slot meanwhile (its listing missed this thread): then the timer
            // is not kept, since nobody would delete it, and the process timer samples
            // the thread.
            if SLOTS[at]
                .compare_exchange(
                    word(tid, ARMING),
                    word(tid, timer as u32),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                sys_timer_delete(timer);
                return 1;
            }
            weight as u32
        }
        None => {
            // Refused (RLIMIT_SIGPENDING reached, say): give the slot back; the next
            // process-timer signal on this thread tries again. An atomic CAS.
            let _ = SLOTS[at].compare_exchange(
                word(tid, ARMING),
                FREED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            1
        }
    }
}

/// splitmix64's finaliser: spreads a value's bits. Pure arithmetic.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `clock` in nanoseconds. `clock_gettime` is async-signal-safe (POSIX).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Claims a free slot for `tid`, from `first` on. Signal context: compare-exchanges on
/// the static table, at most one pass.
fn claim(tid: u32, first: usize) -> Option<usize> {
    for i in 0..ARMED_SLOTS {
        let at = (first + i) % ARMED_SLOTS;
        // Atomic load and compare-exchange: async-signal-safe.
        let w = SLOTS[at].load(Ordering::Relaxed);
        if (w == EMPTY || w == FREED)
            && SLOTS[at]
                .compare_exchange(w, word(tid, ARMING), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(at);
        }
    }
    None
}

/// Creates and starts thread `tid`'s own CPU timer: SIGPROF to that thread every
/// `period_ns` of its CPU time, the first `first_ns` from now. Returns the kernel's
/// timer id.
///
/// Async-signal-safe: two or three plain system calls through `syscall(2)` (a register
/// shuffle and the `syscall` instruction, no lock, no allocation; it may set `errno`,
/// which the handler saves and restores), on data on this stack.
fn arm(tid: u32, period_ns: u64, first_ns: u64) -> Option<i32> {
    let timer = sys_timer_create(thread_cpu_clock(tid), tid, THREAD_TIMER_TAG).ok()?;
    if sys_timer_settime(timer, period_ns, first_ns).is_err() {
        sys_timer_delete(timer);
        return None;
    }
    Some(timer)
}

/// Arms the timer of thread `tid`, which existed before arming was turned on, with its
/// first expiry `first_ns` from now, and enters it in the table. The aggregator's first
/// scan, before [`start_arming`]: no handler inserts meanwhile. Returns false if the
/// kernel refused (or the thread exited) or the table is full.
pub(crate) fn arm_existing(tid: u32, period_ns: u64, first_ns: u64) -> bool {
    let Some(at) = claim(tid, home(tid)) else {
        return false;
    };
    match arm(tid, period_ns, first_ns) {
        Some(timer) => {
            SLOTS[at].store(word(tid, timer as u32), Ordering::Release);
            true
        }
        None => {
            SLOTS[at].store(FREED, Ordering::Release);
            false
        }
    }
}

/// The CPU clock of thread `tid`: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED).
pub(crate) fn thread_cpu_clock(tid: u32) -> libc::clockid_t {
    ((!(tid as libc::clockid_t)).wrapping_shl(3)) | 6
}

/// `timer_create(clock, {SIGPROF, value}, &id)` as the raw system call: to thread `tid`
/// (`SIGEV_THREAD_ID`), or to the process (`SIGEV_SIGNAL`) when `tid` is 0.
///
/// Async-signal-safe (used by the handler): the system call itself, with a `sigevent`
/// built on this stack. The kernel allocates the timer; nothing happens in user space.
pub(crate) fn sys_timer_create(clock: libc::clockid_t, tid: u32, value: usize) -> Result<i32, i32> {
    // SAFETY: sigevent is plain data; zeroed, then the fields the kernel reads for
    // SIGEV_THREAD_ID / SIGEV_SIGNAL are filled.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    sev.sigev_signo = libc::SIGPROF;
    sev.sigev_value = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    if tid == 0 {
        sev.sigev_notify = libc::SIGEV_SIGNAL;
    } else {
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_notify_thread_id = tid as libc::c_int;
    }
    let mut timer: libc::c_int = -1;
    // SAFETY: timer_create(clockid_t, struct sigevent *, __kernel_timer_t *): both
    // pointers are valid for the call; the kernel's timer id is an int.
    let r = unsafe {
        libc::syscall(
            libc::SYS_timer_create,
            clock,
            &mut sev as *mut libc::sigevent,
            &mut timer as *mut libc::c_int,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(timer)
}

/// `timer_settime(timer, 0, {interval, first})` as the raw system call. Async-signal-safe.
pub(crate) fn sys_timer_settime(timer: i32, interval_ns: u64, first_ns: u64) -> Result<(), i32> {
    let spec = libc::itimerspec {
        it_interval: timespec(interval_ns),
        it_value: timespec(first_ns.max(1)),
    };
    // SAFETY: timer_settime(timer_t, int, const struct itimerspec *, struct itimerspec *):
    // a valid itimerspec, no old value wanted.
    let r = unsafe {
        libc::syscall(
            libc::SYS_timer_settime,
            timer as libc::c_long,
            0 as libc::c_long,
            &spec as *const libc::itimerspec,
            std::ptr::null_mut::<libc::itimerspec>(),
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(())
}

/// `timer_delete(timer)` as the raw system call. Async-signal-safe.
pub(crate) fn sys_timer_delete(timer: i32) {
    // SAFETY: timer_delete(timer_t): an id this process created (a stale id is refused
    // with EINVAL, which is harmless here).
    unsafe { libc::syscall(libc::SYS_timer_delete, timer as libc::c_long) };
}

/// Whether `timer` still runs: an armed periodic timer always has time left, and a
/// timer whose thread exited reads as disarmed (or is gone).
fn sys_timer_alive(timer: i32) -> bool {
    // SAFETY: itimerspec is plain data.
    let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: timer_gettime(timer_t, struct itimerspec *): a valid out-pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_timer_gettime,
            timer as libc::c_long,
            &mut cur as *mut libc::itimerspec,
        )
    };
    r == 0 && (cur.it_value.tv_sec != 0 || cur.it_value.tv_nsec != 0)
}

fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Lets handlers arm thread timers, every `period_ns` of CPU. Aggregator thread.
pub(crate) fn start_arming(period_ns: u64) {
    PERIOD_NS.store(period_ns, Ordering::Relaxed);
    ARMING_SINCE_NS.store(clock_ns(libc::CLOCK_MONOTONIC), Ordering::Relaxed);
    ARMING_ON.store(true, Ordering::SeqCst);
}

/// Stops handlers from arming timers. A handler already past the check may still be
/// between claiming a slot and publishing its timer: wait for the handlers to quiesce
/// before [`delete_all`]. Aggregator thread.
pub(crate) fn stop_arming() {
    ARMING_ON.store(false, Ordering::SeqCst);
}

/// The occupied slots: `(index, word)`. Aggregator thread.
pub(crate) fn snapshot() -> Vec<(usize, u64)> {
    SLOTS
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let w = s.load(Ordering::Acquire);
            (w != EMPTY && w != FREED).then_some((i, w))
        })
        .collect()
}

/// Deletes the timers of the threads in `before` (a [`snapshot`] taken *before* `live`,
/// the sorted tids of `/proc/self/task`, was read) that are not in `live`: those threads
/// exited. An entry made after the listing is not in `before`, so a thread that started
/// and armed itself meanwhile keeps its timer. Returns how many were deleted.
pub(crate) fn sweep(before: &[(usize, u64)], live: &[u32]) -> usize {
    let mut deleted = 0;
    for &(at, w) in before {
        if live.binary_search(&tid_of(w)).is_ok() {
            continue;
        }
        deleted += usize::from(free(at, w));
    }
    deleted
}

/// Deletes the timers that no longer run although their tid is live: the thread that
/// armed it exited and a new thread got the same tid between two scans. That thread
/// then arms its own on its next process-timer signal. Returns how many were deleted.
pub(crate) fn recheck() -> usize {
    let mut deleted = 0;
    for (at, w) in snapshot() {
        if let Some(timer) = timer_of(w) {
            if !sys_timer_alive(timer) {
                deleted += usize::from(free(at, w));
            }
        }
    }
    deleted
}

/// Frees slot `at` if it still holds `w`, and deletes its timer.
fn free(at: usize, w: u64) -> bool {
    if SLOTS[at]
        .compare_exchange(w, FREED, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    if let Some(timer) = timer_of(w) {
        sys_timer_delete(timer);
    }
    true
}

/// Deletes every timer the handlers armed and empties the table (so tombstones do not
/// outlive a profiler), after [`stop_arming`] and a wait for the handlers: `quiet` says
/// whether they quiesced (if not, slots become tombstones instead of empty). Aggregator
/// thread, when the profiler stops.
pub(crate) fn delete_all(quiet: bool) {
    for slot in &SLOTS {
        let w = slot.load(Ordering::Acquire);
        if let Some(timer) = timer_of(w) {
            sys_timer_delete(timer);
        }
        // Emptying is safe only with no handler probing; otherwise leave tombstones.
        if w != EMPTY {
            slot.store(if quiet { EMPTY } else { FREED }, Ordering::Release);
        }
    }
    if !quiet {
        tracing::warn!("signal handlers did not quiesce; thread timers deleted anyway");
    }
}

/// Timers armed from the handler right now.
pub(crate) fn armed_count() -> usize {
    SLOTS
        .iter()
        .filter(|s| timer_of(s.load(Ordering::Relaxed)).is_some())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(release_at_least("6.3.0", (6, 3)));
        assert!(release_at_least("6.18.44-fc-v1300", (6, 3)));
        assert!(release_at_least("7.0", (6, 3)));
        assert!(!release_at_least("6.2.16-arch1", (6, 3)));
        assert!(!release_at_least("5.15.0-91-generic", (6, 3)));
        assert!(!release_at_least("", (6, 3)));
        assert!(!release_at_least("six", (6, 3)));
    }

    #[test]
    fn slot_words_keep_tid_and_timer_apart() {
        let w = word(4242, 17);
        assert_eq!(tid_of(w), 4242);
        assert_eq!(timer_of(w), Some(17));
        assert_eq!(timer_of(word(4242, ARMING)), None);
        assert_eq!(timer_of(EMPTY), None);
        assert_eq!(timer_of(FREED), None);
        assert_eq!(timer_of(word(1, 0)), Some(0), "timer id 0 is a timer");
    }

    /// A thread timer made with the raw system calls runs while its thread lives and
    /// reads as stopped once the thread exited (what `recheck` relies on), and is
    /// deleted by id.
    #[test]
    fn a_raw_thread_timer_runs_while_its_thread_lives() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            // SIGPROF blocked on this thread: the timer may expire without killing the
            // test (no handler is installed here).
            // SAFETY: a valid sigset, changed on this thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPROF);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            tx.send(tid).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        let timer = sys_timer_create(thread_cpu_clock(tid), tid, THREAD_TIMER_TAG).unwrap();
        sys_timer_settime(timer, 1_000_000_000, 1_000_000_000).unwrap();
        assert!(sys_timer_alive(timer));
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(
            !sys_timer_alive(timer),
            "a dead thread's timer reads as stopped"
        );
        sys_timer_delete(timer);
        assert!(!sys_timer_alive(timer));
    }
}
