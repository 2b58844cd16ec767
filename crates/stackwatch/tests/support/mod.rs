//! What the integration tests share: work measured by the thread's own CPU clock, and
//! waiting for a condition with a generous deadline instead of a fixed sleep.
//!
//! On a loaded machine a thread gets less CPU per second of wall time, and the
//! aggregator drains and closes windows later: a test that burns for a fixed wall time
//! and then counts after a fixed sleep sees too few samples. These burn a given amount of
//! CPU time and poll for what they expect.

#![allow(dead_code)] // each test binary uses part of it

use std::time::{Duration, Instant};

/// How long a burn or a wait may take at most: far more than any of them needs on an
/// idle machine, enough for one sharing two cores with several busy processes.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// CPU time of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Whether the calling thread, which had used `start` seconds of CPU, has now used
/// `cpu` more, or [`DEADLINE`] has passed since `began`.
pub fn burnt(start: f64, cpu: Duration, began: Instant) -> bool {
    thread_cpu_seconds() - start >= cpu.as_secs_f64() || began.elapsed() > DEADLINE
}

/// Burns `cpu` of the calling thread's CPU time (whatever wall time that takes, at most
/// [`DEADLINE`]); returns the thread's CPU time at the end, in seconds.
pub fn burn_cpu(cpu: Duration) -> f64 {
    let (start, began) = (thread_cpu_seconds(), Instant::now());
    let mut x = 1u64;
    loop {
        for _ in 0..20_000 {
            x = std::hint::black_box(x.wrapping_mul(0x9E3779B97F4A7C15).rotate_left(7));
        }
        if burnt(start, cpu, began) {
            break;
        }
    }
    std::hint::black_box(x);
    thread_cpu_seconds()
}

/// Calls `poll` until it says its condition holds or [`DEADLINE`] passes, 20 ms apart,
/// and returns its last value (which the caller then asserts on, with the test's bound).
pub fn wait_for<T>(mut poll: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (done, value) = poll();
        if done || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unix milliseconds (the clock the profiler stamps windows with).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
