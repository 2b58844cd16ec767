//! Which threads get SIGPROF, and how often: one CPU-time timer per thread.
//!
//! Each thread found in `/proc/self/task` gets a POSIX timer on *its own* CPU clock
//! (`timer_create` with the clock id `((~tid) << 3) | 6`, the kernel's
//! MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)), delivering SIGPROF to that thread
//! (`SIGEV_THREAD_ID`). One thread may arm another's timer, so threads started after the
//! profiler are covered by rescanning, without hooking thread creation. The first expiry
//! is drawn at random within one period, so short-lived threads are not systematically
//! missed. Where per-thread timers are refused, a process-wide `setitimer(ITIMER_PROF)`
//! is the fallback (the pprof-rs / pre-1.18 Go design, with its known under-counting).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

/// How SIGPROF is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimerMode {
    /// One timer per thread on the thread's CPU clock (default).
    #[default]
    PerThread,
    /// One process-wide `setitimer(ITIMER_PROF)`; the kernel picks the thread.
    ProcessWide,
}

struct ThreadTimer {
    timer: Option<libc::timer_t>,
    name: Arc<str>,
    /// The scan that found the thread: its name is re-read for a few scans after, since
    /// a thread usually names itself just after it starts.
    found_at_scan: u64,
}

/// Scans during which a new thread's name is re-read (100 ms at one scan per 20 ms).
const YOUNG_SCANS: u64 = 5;

/// The timers of every live thread, kept in step with `/proc/self/task`.
pub struct ThreadTimers {
    period_ns: u64,
    mode: TimerMode,
    threads: HashMap<u32, ThreadTimer>,
    process_name: String,
    pid: u32,
    rng: u64,
    scans: u64,
    itimer_armed: bool,
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
            pid,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (pid as u64) << 17 ^ now_nanos(),
            scans: 0,
            itimer_armed: false,
        }
    }

    /// The mode actually in use (per-thread may have fallen back to process-wide).
    pub fn mode(&self) -> TimerMode {
        self.mode
    }

    /// Threads currently tracked.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// The name of thread `tid` (its `comm`, or `thread-<tid>` when it has none of its own).
    pub fn thread_name(&mut self, tid: u32) -> Arc<str> {
        if let Some(t) = self.threads.get(&tid) {
            return t.name.clone();
        }
        self.name_of(tid)
    }

    fn name_of(&self, tid: u32) -> Arc<str> {
        match read_comm(tid) {
            // A thread inherits its creator's comm; one that still carries the process
            // name (and is not the main thread) was never named.
            Some(n) if tid == self.pid || n != self.process_name => Arc::from(n),
            _ => Arc::from(format!("thread-{tid}")),
        }
    }

    /// Arms timers for new threads and deletes those of exited ones. Returns whether a
    /// thread's name changed (so folded stacks keyed by thread must be rebuilt).
    pub fn scan(&mut self) -> io::Result<bool> {
        let mut renamed = false;
        self.scans += 1;
        if self.mode == TimerMode::ProcessWide && !self.itimer_armed {
            arm_itimer(self.period_ns)?;
            self.itimer_armed = true;
        }
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
        for tid in gone {
            if let Some(t) = self.threads.remove(&tid) {
                delete_timer(t.timer);
            }
        }
        // Every few scans, re-arm threads whose timer died with a previous owner of the
        // same tid, and refresh names set after the thread started.
        let recheck = self.scans.is_multiple_of(25);
        let scans = self.scans;
        for tid in live {
            let young = self
                .threads
                .get(&tid)
                .map(|t| scans - t.found_at_scan <= YOUNG_SCANS);
            if young == Some(false) && !recheck {
                continue;
            }
            let name = self.name_of(tid);
            if young.is_some() {
                let t = self.threads.get_mut(&tid).expect("known");
                if t.name != name {
                    t.name = name.clone();
                    renamed = true;
                }
                if recheck && self.mode == TimerMode::PerThread && !timer_alive(t.timer) {
                    delete_timer(t.timer.take());
                } else {
                    continue;
                }
            }
            let timer = if self.mode == TimerMode::PerThread {
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
                },
            );
        }
        Ok(renamed)
    }

    /// Deletes every timer (and disarms the process-wide one).
    pub fn stop(&mut self) {
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

/// The CPU clock of thread `tid`: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED).
fn thread_cpu_clock(tid: u32) -> libc::clockid_t {
    ((!(tid as libc::clockid_t)).wrapping_shl(3)) | 6
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
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        assert_eq!(
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
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
                ThreadTimers::new(1, TimerMode::PerThread).name_of(tid)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(&*named, "named-worker");
    }
}
