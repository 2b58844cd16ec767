//! Which threads get SIGPROF, and how often: one CPU-time timer per thread.
//!
//! Each thread gets a POSIX timer on *its own* CPU clock (`timer_create` with the clock
//! id `((~tid) << 3) | 6`, the kernel's MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)),
//! delivering SIGPROF to that thread (`SIGEV_THREAD_ID`). Who arms it:
//!
//! - on Linux 6.3 and later, the thread itself, from the signal handler, on its first
//!   period of CPU: a process-wide CPU timer's signal reaches the thread that used the
//!   CPU, and the handler arms that thread's own timer, the sample standing for the CPU
//!   the thread used before (armed_threads.rs). Threads that exist when the profiler
//!   starts are armed by the first scan. The scan below then only names threads and
//!   deletes the timers of those that exited;
//! - on older kernels (which deliver the process timer's signal to the main thread), the
//!   scan: one thread may arm another's timer, so threads found in `/proc/self/task`
//!   every tick are armed without hooking thread creation, their first expiry drawn at
//!   random within one period. A thread burns unsampled until the scan finds it.
//!
//! Where per-thread timers are refused, a process-wide `setitimer(ITIMER_PROF)` is the
//! fallback (the pprof-rs / pre-1.18 Go design, with its known under-counting).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::armed_threads::{self, thread_cpu_clock};

pub use crate::settings::TimerMode;

struct ThreadTimer {
    timer: Option<libc::timer_t>,
    name: Arc<str>,
    /// The scan that found the thread: its name is re-read for a few scans after, since
    /// a thread usually names itself just after it starts.
    found_at_scan: u64,
    /// The scan at which its name was last read.
    name_read_at: u64,
}

/// Scans during which a new thread's name is re-read (100 ms at one scan per 20 ms).
const YOUNG_SCANS: u64 = 5;
/// Scans during which a new thread still without a name of its own is re-read (5 s), at
/// ages that double (8, 16, ..., 128 scans: five reads): on a loaded machine a thread can
/// be listed in `/proc/self/task` long before it first runs and names itself, and a
/// thread that never names itself costs only those reads.
const UNNAMED_YOUNG_SCANS: u64 = 250;

pub(crate) use crate::settings::DEFAULT_UNNAMED_THREAD_ROOT;

/// The root frame of the process's main thread (the one whose tid is the pid).
pub const MAIN_THREAD_ROOT: &str = "main";

/// The timers of every live thread, kept in step with `/proc/self/task`.
pub struct ThreadTimers {
    period_ns: u64,
    mode: TimerMode,
    threads: HashMap<u32, ThreadTimer>,
    process_name: String,
    unnamed_root: Arc<str>,
    /// A name changed while folding: the next scan reports it.
    renamed_since_scan: bool,
    /// Names of the threads the last scan found gone: their last samples are folded
    /// after it (the drain follows the scan), when `/proc` no longer has their name.
    recently_gone: HashMap<u32, Arc<str>>,
    pid: u32,
    rng: u64,
    scans: u64,
    itimer_armed: bool,
    /// Threads arm their own timer on their first period of CPU (armed_threads.rs);
    /// the scan arms only those that exist when the profiler starts.
    first_cpu: bool,
    /// The process-wide CPU timer whose signal makes a thread arm its own (kernel id).
    process_timer: Option<i32>,
    /// This profiler's timers are in the armed-threads table (its first scan armed the
    /// existing threads there): `stop` empties it.
    uses_table: bool,
}

// SAFETY: timer_t is an opaque kernel id (a pointer-sized integer); using it from
// another thread is fine.
unsafe impl Send for ThreadTimers {}

impl ThreadTimers {
    /// Timers firing every `period_ns` of CPU time, in `mode`.
    pub fn new(period_ns: u64, mode: TimerMode) -> Self {
        let pid = std::process::id();
        let process_name = read_comm(pid).unwrap_or_default();
        ThreadTimers {
            period_ns,
            mode,
            threads: HashMap::new(),
            process_name,
            unnamed_root: Arc::from(DEFAULT_UNNAMED_THREAD_ROOT),
            renamed_since_scan: false,
            recently_gone: HashMap::new(),
            pid,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (pid as u64) << 17 ^ now_nanos(),
            scans: 0,
            itimer_armed: false,
            first_cpu: false,
            process_timer: None,
            uses_table: false,
        }
    }

    /// Whether threads arm their own timer on their first period of CPU, through the
    /// process-wide CPU timer's signal, instead of when the scan finds them. Taken only
    /// with per-thread timers and where the kernel delivers that signal to the running
    /// thread (Linux 6.3 and later, see [`armed_threads::supported`]).
    pub fn with_first_cpu_arming(mut self, on: bool) -> Self {
        self.first_cpu = on && self.mode == TimerMode::PerThread && armed_threads::supported();
        self
    }

    /// Whether threads arm their own timer on their first period of CPU (see
    /// [`ThreadTimers::with_first_cpu_arming`]).
    pub fn arms_on_first_cpu(&self) -> bool {
        self.first_cpu
    }

    /// The root frame given to threads without a name of their own (default
    /// [`DEFAULT_UNNAMED_THREAD_ROOT`]); an empty name keeps the default.
    pub fn with_unnamed_root(mut self, root: &str) -> Self {
        if !root.is_empty() {
            self.unnamed_root = Arc::from(root);
        }
        self
    }

    /// The mode actually in use (per-thread may have fallen back to process-wide).
    pub fn mode(&self) -> TimerMode {
        self.mode
    }

    /// Threads currently tracked.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// The root frame of thread `tid`: `main` for the main thread, else its `comm` with
    /// its tid taken out, or the unnamed root when it has no name of its own.
    ///
    /// A thread found in the last few scans has its name read again here: a thread
    /// names itself just after it starts, and its first samples, folded a tick later,
    /// then carry the name it gave itself rather than the one it inherited.
    ///
    /// A thread still without a name of its own that has samples to fold is read at most
    /// once per scan for [`UNNAMED_YOUNG_SCANS`]: it runs, so it may just have named
    /// itself (the scans' doubling ages would leave its first samples unnamed).
    pub fn thread_name(&mut self, tid: u32) -> Arc<str> {
        let scans = self.scans;
        let young = self.threads.get(&tid).map(|t| {
            self.is_young(t, scans)
                || (scans.saturating_sub(t.found_at_scan) <= UNNAMED_YOUNG_SCANS
                    && t.name == self.unnamed_root
                    && t.name_read_at != scans)
        });
        match young {
            Some(false) => self.threads[&tid].name.clone(),
            Some(true) => {
                let name = self.name_of(tid);
                let t = self.threads.get_mut(&tid).expect("known");
                t.name_read_at = scans;
                if t.name != name {
                    t.name = name.clone();
                    self.renamed_since_scan = true;
                }
                name
            }
            None => match self.recently_gone.get(&tid) {
                Some(name) => name.clone(),
                None => self.name_of(tid),
            },
        }
    }

    /// Whether `t`'s name is re-read at scan `scans`: at every scan for [`YOUNG_SCANS`]
    /// after it was found, then at doubling ages up to [`UNNAMED_YOUNG_SCANS`] while it
    /// has no name of its own.
    fn is_young(&self, t: &ThreadTimer, scans: u64) -> bool {
        let age = scans.saturating_sub(t.found_at_scan);
        age <= YOUNG_SCANS
            || (age <= UNNAMED_YOUNG_SCANS && age.is_power_of_two() && t.name == self.unnamed_root)
    }

    fn name_of(&self, tid: u32) -> Arc<str> {
        if tid == self.pid {
            return Arc::from(MAIN_THREAD_ROOT);
        }
        match read_comm(tid) {
            Some(n) => root_name(&n, tid, &self.process_name)
                .map_or_else(|| self.unnamed_root.clone(), Arc::from),
            None => self.unnamed_root.clone(),
        }
    }

    /// Arms timers for new threads and deletes those of exited ones. Returns whether a
    /// thread's name changed (so folded stacks keyed by thread must be rebuilt).
    pub fn scan(&mut self) -> io::Result<bool> {
        let mut renamed = std::mem::take(&mut self.renamed_since_scan);
        self.scans += 1;
        if self.mode == TimerMode::ProcessWide && !self.itimer_armed {
            arm_itimer(self.period_ns)?;
            self.itimer_armed = true;
        }
        // Threads that armed themselves, read before the listing: one of them missing from
        // the listing has exited (a thread that arms itself after it is not in here).
        let armed_before = if self.first_cpu {
            armed_threads::snapshot()
        } else {
            Vec::new()
        };
        let mut live: Vec<u32> = Vec::with_capacity(self.threads.len() + 4);
        for entry in std::fs::read_dir("/proc/self/task")? {
            if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
                live.push(tid);
            }
        }
        live.sort_unstable();
        // Exited threads: delete their timers.
        let gone: Vec<u32> = self
            .threads
            .keys()
            .filter(|t| live.binary_search(t).is_err())
            .copied()
            .collect();
        self.recently_gone.clear();
        for tid in gone {
            if let Some(t) = self.threads.remove(&tid) {
                delete_timer(t.timer);
                self.recently_gone.insert(tid, t.name);
            }
        }
        // Every few scans, re-arm threads whose timer died with a previous owner of the
        // same tid, and refresh names set after the thread started.
        let recheck = self.scans.is_multiple_of(25);
        if self.first_cpu {
            // The timers of threads that armed themselves and exited (each holds a
            // queued-signal entry against RLIMIT_SIGPENDING until deleted).
            armed_threads::sweep(&armed_before, &live);
            if recheck {
                armed_threads::recheck();
            }
        }
        let scan_arms = self.mode == TimerMode::PerThread && !self.first_cpu;
        // The threads that exist when the profiler starts are armed here, once, before
        // the process timer starts: their CPU clocks count time from before the start.
        let arm_existing = self.first_cpu && self.process_timer.is_none();
        self.uses_table |= arm_existing;
        if recheck || self.scans == 1 {
            // The main thread may have renamed itself (and so the process) since.
            if let Some(n) = read_comm(self.pid) {
                self.process_name = n;
            }
        }
        let scans = self.scans;
        for tid in live {
            let young = self.threads.get(&tid).map(|t| self.is_young(t, scans));
            if young == Some(false) && !recheck {
                continue;
            }
            let name = self.name_of(tid);
            if young.is_some() {
                let t = self.threads.get_mut(&tid).expect("known");
                t.name_read_at = scans;
                if t.name != name {
                    t.name = name.clone();
                    renamed = true;
                }
                if recheck && scan_arms && !timer_alive(t.timer) {
                    delete_timer(t.timer.take());
                } else {
                    continue;
                }
            }
            if arm_existing {
                let first = 1 + self.next_random() % self.period_ns.max(1);
                armed_threads::arm_existing(tid, self.period_ns, first);
            }
            let timer = if scan_arms {
                let first = 1 + self.next_random() % self.period_ns.max(1);
                match create_thread_timer(tid, self.period_ns, first) {
                    Ok(t) => Some(t),
                    // The thread exited between the listing and now.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                    Err(e) if self.threads.is_empty() => {
                        tracing::warn!(error = %e, "per-thread CPU timers unavailable; falling back to setitimer");
                        self.mode = TimerMode::ProcessWide;
                        arm_itimer(self.period_ns)?;
                        self.itimer_armed = true;
                        None
                    }
                    Err(e) => {
                        tracing::debug!(tid, error = %e, "could not arm thread timer");
                        None
                    }
                }
            } else {
                None
            };
            self.threads.insert(
                tid,
                ThreadTimer {
                    timer,
                    name,
                    found_at_scan: scans,
                    name_read_at: scans,
                },
            );
        }
        if arm_existing {
            self.start_process_timer();
        }
        Ok(renamed)
    }

    /// Creates the process-wide CPU timer (every period of the process's CPU time, to
    /// whichever thread used it) after letting handlers arm threads. If the kernel
    /// refuses it, the scan arms threads instead.
    fn start_process_timer(&mut self) {
        armed_threads::start_arming(self.period_ns);
        let timer = armed_threads::sys_timer_create(
            libc::CLOCK_PROCESS_CPUTIME_ID,
            0,
            armed_threads::PROCESS_TIMER_TAG,
        )
        .and_then(|t| {
            armed_threads::sys_timer_settime(t, self.period_ns, self.period_ns)
                .inspect_err(|_| armed_threads::sys_timer_delete(t))
                .map(|()| t)
        });
        match timer {
            Ok(t) => self.process_timer = Some(t),
            Err(errno) => {
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(errno),
                    "process CPU timer unavailable; threads are armed when found"
                );
                // Arming off and the first scan's timers deleted: the scan re-arms those
                // threads at its next recheck, and new ones as it finds them.
                delete_armed_timers();
                self.first_cpu = false;
            }
        }
    }

    /// Deletes every timer (and disarms the process-wide one).
    pub fn stop(&mut self) {
        if let Some(t) = self.process_timer.take() {
            armed_threads::sys_timer_delete(t);
        }
        // Arming off, handlers quiesced, then every timer in the table deleted (those
        // the first scan armed too, if the process timer was refused since).
        if std::mem::take(&mut self.uses_table) {
            delete_armed_timers();
        }
        for (_, t) in self.threads.drain() {
            delete_timer(t.timer);
        }
        if self.itimer_armed {
            let _ = disarm_itimer();
            self.itimer_armed = false;
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: a cheap spread of first expiries, no dependency needed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Drop for ThreadTimers {
    fn drop(&mut self) {
        self.stop();
    }
}

use stackwatch_profile::clock::unix_ns as now_nanos;

/// The root frame for a thread whose `comm` is `comm`, or `None` when it has no name of
/// its own: a thread inherits its creator's comm, so one that still carries the process
/// name was never named. The tid never goes into stack text (stacks of a thread pool
/// must fold together across restarts): a digit run equal to the tid is taken out, with
/// the separator before it.
fn root_name(comm: &str, tid: u32, process_name: &str) -> Option<String> {
    if comm == process_name {
        return None;
    }
    let tid = tid.to_string();
    let mut out = String::with_capacity(comm.len());
    let mut rest = comm;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let len = rest[start..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - start);
        let digits = &rest[start..start + len];
        if digits == tid {
            let before = rest[..start].trim_end_matches(['-', '_', ':', '.', '#', ' ', '/']);
            out.push_str(before);
        } else {
            out.push_str(&rest[..start + len]);
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    let out = out.trim_matches(['-', '_', ':', '.', '#', ' ', '/']);
    (!out.is_empty() && out != process_name).then(|| out.to_owned())
}

fn read_comm(tid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
    Some(s.trim_end_matches('\n').to_owned())
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

fn create_thread_timer(tid: u32, period_ns: u64, first_ns: u64) -> io::Result<libc::timer_t> {
    // SAFETY: sigevent is plain data; zeroed then filled as SIGEV_THREAD_ID requires.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = libc::SIGPROF;
        sev.sigev_notify_thread_id = tid as libc::c_int;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(thread_cpu_clock(tid), &mut sev, &mut timer) != 0 {
            return Err(io::Error::last_os_error());
        }
        let spec = libc::itimerspec {
            it_interval: timespec(period_ns),
            it_value: timespec(first_ns),
        };
        if libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) != 0 {
            let e = io::Error::last_os_error();
            libc::timer_delete(timer);
            return Err(e);
        }
        Ok(timer)
    }
}

/// An armed periodic timer always has time left; a timer whose thread exited reads as
/// disarmed.
fn timer_alive(timer: Option<libc::timer_t>) -> bool {
    let Some(t) = timer else { return false };
    // SAFETY: valid timer id and out-pointer.
    unsafe {
        let mut cur: libc::itimerspec = std::mem::zeroed();
        libc::timer_gettime(t, &mut cur) == 0
            && (cur.it_value.tv_sec != 0 || cur.it_value.tv_nsec != 0)
    }
}

fn delete_timer(timer: Option<libc::timer_t>) {
    if let Some(t) = timer {
        // SAFETY: `t` came from timer_create and is deleted once.
        unsafe { libc::timer_delete(t) };
    }
}

fn arm_itimer(period_ns: u64) -> io::Result<()> {
    let us = (period_ns / 1000).max(1);
    let tv = libc::timeval {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_usec: (us % 1_000_000) as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: valid itimerval.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn disarm_itimer() -> io::Result<()> {
    // SAFETY: zeroed itimerval disarms.
    let it: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: valid itimerval; no old value wanted.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns arming off, waits for the signal handlers to quiesce (so none is between
/// claiming a slot of the armed-thread table and publishing its timer), then deletes
/// every timer the handlers armed.
fn delete_armed_timers() {
    armed_threads::stop_arming();
    let quiet = crate::signal_handler::wait_for_quiescence();
    armed_threads::delete_all(quiet);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_clock_id_matches_the_kernel_encoding() {
        // MAKE_THREAD_CPUCLOCK(1234, CPUCLOCK_SCHED) = ((~1234) << 3) | 6.
        assert_eq!(thread_cpu_clock(1234), -9874);
        // And it is exactly what glibc hands out for the calling thread.
        let mut clk: libc::clockid_t = 0;
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        assert_eq!(
            // SAFETY: valid out-pointer; pthread_self is the calling thread.
            unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clk) },
            0
        );
        assert_eq!(clk, thread_cpu_clock(tid));
    }

    #[test]
    fn named_threads_keep_their_name() {
        let named = std::thread::Builder::new()
            .name("named-worker".into())
            .spawn(move || {
                // SAFETY: gettid has no arguments and cannot fail.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
                ThreadTimers::new(1, TimerMode::PerThread).name_of(tid)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(&*named, "named-worker");
    }

    #[test]
    fn roots_never_carry_the_tid_and_unnamed_threads_share_one_root() {
        assert_eq!(
            root_name("tokio-runtime-w", 77, "svc").as_deref(),
            Some("tokio-runtime-w")
        );
        assert_eq!(root_name("svc", 77, "svc"), None);
        assert_eq!(root_name("pool-4242", 4242, "svc").as_deref(), Some("pool"));
        assert_eq!(root_name("w-4242-io", 4242, "svc").as_deref(), Some("w-io"));
        // Other numbers are part of the name.
        assert_eq!(
            root_name("worker-3", 4242, "svc").as_deref(),
            Some("worker-3")
        );
        assert_eq!(root_name("4242", 4242, "svc"), None);
        assert_eq!(
            root_name("thread-4242", 4242, "svc").as_deref(),
            Some("thread")
        );
    }

    #[test]
    fn the_main_thread_is_main_and_unnamed_threads_get_the_configured_root() {
        let pid = std::process::id();
        let timers = ThreadTimers::new(1, TimerMode::PerThread).with_unnamed_root("anon");
        assert_eq!(&*timers.name_of(pid), MAIN_THREAD_ROOT);
        // A thread carrying the process name (as one nobody named does) is unnamed.
        let process_name = read_comm(pid).unwrap();
        let tid = std::thread::spawn(move || {
            let c = std::ffi::CString::new(process_name).unwrap();
            // SAFETY: names the calling thread with a NUL-terminated string.
            unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            let name = ThreadTimers::new(1, TimerMode::PerThread)
                .with_unnamed_root("anon")
                .name_of(tid);
            assert_eq!(&*name, "anon");
            let name = ThreadTimers::new(1, TimerMode::PerThread).name_of(tid);
            assert_eq!(&*name, DEFAULT_UNNAMED_THREAD_ROOT);
            tid
        })
        .join()
        .unwrap();
        // A thread that is gone gets the unnamed root too, never its tid.
        assert_eq!(&*timers.name_of(tid), "anon");
    }

    #[test]
    fn a_thread_found_gone_keeps_its_name_until_the_next_scan() {
        // Its last samples are folded after the scan that found it gone.
        let tid = std::thread::spawn(|| {
            // SAFETY: gettid has no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_gettid) as u32 }
        })
        .join()
        .unwrap();
        // Timers that never fire (a period of 11 days): no SIGPROF in this test binary.
        let mut timers = ThreadTimers::new(1_000_000_000_000_000, TimerMode::PerThread);
        timers.threads.insert(
            tid,
            ThreadTimer {
                timer: None,
                name: Arc::from("short-worker"),
                found_at_scan: 0,
                name_read_at: 0,
            },
        );
        timers.scan().unwrap();
        assert!(!timers.threads.contains_key(&tid), "found gone");
        assert_eq!(&*timers.thread_name(tid), "short-worker");
        timers.scan().unwrap();
        assert_eq!(&*timers.thread_name(tid), DEFAULT_UNNAMED_THREAD_ROOT);
        timers.stop();
    }

    #[test]
    fn a_thread_that_names_itself_late_gets_its_name() {
        // Found (as if by a scan) before it ran: it carries the process name, so it is
        // unnamed. It names itself 20 scans later (past YOUNG_SCANS, as on a loaded
        // machine): its samples fold under the name it gave itself.
        let (named_tx, named_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let process_name = read_comm(std::process::id()).unwrap();
        let t = std::thread::spawn(move || {
            let c = std::ffi::CString::new(process_name).unwrap();
            // SAFETY: names the calling thread with a NUL-terminated string.
            unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            named_tx.send(tid).unwrap();
            go_rx.recv().unwrap();
            let c = std::ffi::CString::new("late-worker").unwrap();
            // SAFETY: as above.
            unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
            named_tx.send(tid).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = named_rx.recv().unwrap();
        let mut timers = ThreadTimers::new(1, TimerMode::PerThread);
        let name = timers.name_of(tid);
        assert_eq!(&*name, DEFAULT_UNNAMED_THREAD_ROOT);
        timers.threads.insert(
            tid,
            ThreadTimer {
                timer: None,
                name,
                found_at_scan: 1,
                name_read_at: 1,
            },
        );
        // Unnamed: re-read at doubling ages past YOUNG_SCANS, not after UNNAMED_YOUNG_SCANS.
        let young_at =
            |timers: &ThreadTimers, age: u64| timers.is_young(&timers.threads[&tid], 1 + age);
        assert!(young_at(&timers, YOUNG_SCANS));
        assert!(!young_at(&timers, YOUNG_SCANS + 1) || (YOUNG_SCANS + 1).is_power_of_two());
        assert!(young_at(&timers, 16) && young_at(&timers, 128));
        assert!(!young_at(&timers, 17) && !young_at(&timers, 256));
        go_tx.send(()).unwrap();
        named_rx.recv().unwrap();
        // Its samples fold at an age the scans skip (not a power of two): read then.
        timers.scans = 1 + 20;
        assert_eq!(&*timers.thread_name(tid), "late-worker");
        assert!(timers.renamed_since_scan, "folded stacks get rebuilt");
        // Named now: past YOUNG_SCANS it is not re-read, at any age.
        assert!(!young_at(&timers, 32));
        assert!(young_at(&timers, YOUNG_SCANS));
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
