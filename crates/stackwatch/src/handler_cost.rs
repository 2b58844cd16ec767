//! The signal handler's own cost, measured by the handler: the time-stamp counter and
//! its calibration ([`cost_ticks`], [`ticks_to_ns`]), the thread's CPU clock
//! ([`thread_cpu_ns`]), and the histogram each run is counted in ([`CostHistogram`]).
//! Everything the handler calls here is async-signal-safe (an instruction, a vDSO clock
//! read, relaxed atomics on preallocated memory); each says why. A leaf: it imports no
//! other module of the crate, so the handler, the armed-thread table and the aggregator
//! can all use it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Nanoseconds on the monotonic clock. `clock_gettime` is async-signal-safe (POSIX) and
/// is a vDSO call, no syscall, for CLOCK_MONOTONIC.
#[inline(always)]
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Buckets of [`CostHistogram`]: 0-63 ns one each, then 32 per power of two (about 3 %
/// wide) up to 2^28 ns; longer runs land in the last bucket.
pub const COST_BUCKETS: usize = 64 + 22 * 32;

fn cost_bucket(ns: u64) -> usize {
    if ns < 64 {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros() as usize;
    let sub = ((ns >> (e - 5)) & 31) as usize;
    (64 + (e - 6) * 32 + sub).min(COST_BUCKETS - 1)
}

/// The smallest value of bucket `i`.
fn cost_bucket_low(i: usize) -> u64 {
    if i < 64 {
        return i as u64;
    }
    let e = (i - 64) / 32 + 6;
    let sub = ((i - 64) % 32) as u64;
    (32 + sub) << (e - 5)
}

/// Only samples of this thread are counted in the cost histogram (0: every thread).
static COST_TID: AtomicU32 = AtomicU32::new(0);
/// Time the handler with the thread's CPU clock instead of the time-stamp counter.
pub(crate) static COST_ON_CPU: AtomicBool = AtomicBool::new(false);

/// A histogram of handler durations, in nanoseconds, filled from signal context: one
/// relaxed atomic add per sample into preallocated buckets (no allocation, no lock).
#[doc(hidden)]
pub struct CostHistogram {
    buckets: [AtomicU64; COST_BUCKETS],
    depth_sum: AtomicU64,
    delegated_sum: AtomicU64,
    direct: AtomicU64,
}

impl Default for CostHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl CostHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        CostHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            depth_sum: AtomicU64::new(0),
            delegated_sum: AtomicU64::new(0),
            direct: AtomicU64::new(0),
        }
    }

    /// Counts one handler run of `ns` nanoseconds that recorded `depth` frames.
    /// Async-signal-safe: relaxed atomic adds.
    #[inline]
    pub fn record(&self, ns: u64, depth: u32) {
        self.buckets[cost_bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.depth_sum.fetch_add(depth as u64, Ordering::Relaxed);
    }

    /// [`record`](Self::record) and what the walk did (`frames` recorded, `delegated`
    /// of them unwound by framehop, the stack read `direct`ly), if `tid` passes the filter
    /// set by [`cost_filter_tid`]. Async-signal-safe: a relaxed load and relaxed adds.
    #[inline]
    pub(crate) fn record_for(&self, tid: u32, ns: u64, frames: u32, delegated: u32, direct: bool) {
        let only = COST_TID.load(Ordering::Relaxed);
        if only == 0 || only == tid {
            self.record(ns, frames);
            self.delegated_sum
                .fetch_add(delegated as u64, Ordering::Relaxed);
            self.direct.fetch_add(direct as u64, Ordering::Relaxed);
        }
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> CostSnapshot {
        CostSnapshot {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            depth_sum: self.depth_sum.load(Ordering::Relaxed),
            delegated_sum: self.delegated_sum.load(Ordering::Relaxed),
            direct: self.direct.load(Ordering::Relaxed),
        }
    }
}

/// Counts of a [`CostHistogram`] at one moment.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct CostSnapshot {
    /// Runs per bucket.
    pub counts: Vec<u64>,
    /// Sum of the frames recorded by those runs.
    pub depth_sum: u64,
    /// Sum of the frames framehop unwound (no compact row).
    pub delegated_sum: u64,
    /// Runs that read the stack directly.
    pub direct: u64,
}

impl CostSnapshot {
    /// Runs counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Mean frames per run.
    pub fn mean_depth(&self) -> f64 {
        self.depth_sum as f64 / self.count().max(1) as f64
    }

    /// What was counted after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &CostSnapshot) -> CostSnapshot {
        CostSnapshot {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            depth_sum: self.depth_sum.saturating_sub(earlier.depth_sum),
            delegated_sum: self.delegated_sum.saturating_sub(earlier.delegated_sum),
            direct: self.direct.saturating_sub(earlier.direct),
        }
    }

    /// The `q` quantile (0..=1) in nanoseconds: the middle of its bucket.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = cost_bucket_low(i) as f64;
                let hi = cost_bucket_low(i + 1) as f64;
                return (lo + hi) / 2.0;
            }
        }
        f64::NAN
    }
}

/// Counts only the samples of thread `tid` in the active profiler's cost histogram
/// (0: all threads). For benchmarks.
#[doc(hidden)]
pub fn cost_filter_tid(tid: u32) {
    COST_TID.store(tid, Ordering::Relaxed);
}

/// Times the handler with the interrupted thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`,
/// a syscall of its own, part of which lands inside the measured interval) instead of the
/// time-stamp counter, which also counts time the thread spent descheduled. For
/// benchmarks; [`SignalState::handler_ns`] then counts CPU time too.
#[doc(hidden)]
pub fn cost_on_cpu(on: bool) {
    COST_ON_CPU.store(on, Ordering::Relaxed);
}

/// The calling thread's CPU time in nanoseconds. `clock_gettime` is async-signal-safe
/// (POSIX).
#[doc(hidden)]
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Time-stamp counter ticks (x86_64: `rdtsc`, an unprivileged instruction, no syscall);
/// elsewhere monotonic nanoseconds. Async-signal-safe either way.
#[doc(hidden)]
#[inline(always)]
pub fn cost_ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions; Linux leaves it enabled for user space.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        monotonic_ns()
    }
}

/// Nanoseconds per tick, times 2^32 (0 until calibrated).
static NS_PER_TICK_Q32: AtomicU64 = AtomicU64::new(0);

/// Converts [`cost_ticks`] differences to nanoseconds. A load and a multiplication:
/// async-signal-safe.
#[doc(hidden)]
#[inline]
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ((ticks as u128 * NS_PER_TICK_Q32.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Measures the tick rate against the monotonic clock, once per process (about 5 ms).
/// Not for signal context.
#[doc(hidden)]
pub fn calibrate_ticks() {
    if NS_PER_TICK_Q32.load(Ordering::Relaxed) != 0 {
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        NS_PER_TICK_Q32.store(1 << 32, Ordering::Relaxed);
    }
    #[cfg(target_arch = "x86_64")]
    {
        // A (ticks, ns) pair read within a short monotonic interval, so a preemption
        // between the two reads does not skew it.
        let pair = || loop {
            let a = monotonic_ns();
            let t = cost_ticks();
            let b = monotonic_ns();
            if b - a < 2_000 {
                return (t, a + (b - a) / 2);
            }
        };
        let (t0, n0) = pair();
        while monotonic_ns() - n0 < 5_000_000 {
            std::hint::spin_loop();
        }
        let (t1, n1) = pair();
        let q32 = (((n1 - n0) as u128) << 32) / ((t1 - t0).max(1) as u128);
        NS_PER_TICK_Q32.store((q32 as u64).max(1), Ordering::Relaxed);
    }
}
