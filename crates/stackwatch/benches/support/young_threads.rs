// The young-threads workload shared by `tests/young_threads.rs` (a floor on the capture
// ratio) and `examples/young_threads.rs` (the ratios with and without a CPU hog, for
// docs/benchmarks.md): threads that live 10 ms, 100 ms and 1 s of CPU, started one after
// another as a pool that spawns a thread per job does, and the share of their CPU time
// the profile holds.

use std::time::{Duration, Instant};

/// Threads of one lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    /// What the table calls them.
    pub name: &'static str,
    /// The function every stack of theirs passes through.
    pub frame: &'static str,
    /// How many run, one after another.
    pub threads: usize,
    body: fn() -> f64,
}

/// 10 ms, 100 ms and 1 s of CPU per thread; `cpu_per_class` of CPU in each class.
pub fn lifetimes(cpu_per_class: Duration) -> [Lifetime; 3] {
    let n = |each_ms: u64| ((cpu_per_class.as_millis() as u64 / each_ms).max(1)) as usize;
    [
        Lifetime {
            name: "10 ms",
            frame: "lives_10ms",
            threads: n(10),
            body: lives_10ms,
        },
        Lifetime {
            name: "100 ms",
            frame: "lives_100ms",
            threads: n(100),
            body: lives_100ms,
        },
        Lifetime {
            name: "1 s",
            frame: "lives_1s",
            threads: n(1000),
            body: lives_1s,
        },
    ]
}

/// What the profile holds of one class's CPU time.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    /// The class.
    pub lifetime: Lifetime,
    /// CPU time its threads burnt, by their own clocks, in seconds.
    pub cpu_s: f64,
    /// Periods the profile holds in its function.
    pub periods: u64,
    /// `periods` over the periods its CPU time makes.
    pub ratio: f64,
}

/// Runs each class's threads under `profiler`, waits (at most `deadline`) until the
/// profile holds at least `floors[i]` of class `i`'s periods (the aggregator drains late
/// on a busy machine), and returns what it holds.
pub fn capture(
    profiler: &stackwatch::Profiler,
    classes: &[Lifetime],
    floors: &[f64],
    deadline: Duration,
) -> (Vec<Capture>, stackwatch::Profile) {
    let hz = f64::from(profiler.frequency_hz());
    let until = Instant::now() + deadline;
    // Sampling starts with the aggregator's first scan (after it loaded the unwind
    // tables), a moment after `start` returns.
    while profiler.stats().threads == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu: Vec<f64> = classes
        .iter()
        .map(|c| {
            (0..c.threads)
                .map(|_| std::thread::spawn(c.body).join().unwrap())
                .sum()
        })
        .collect();
    let until = Instant::now() + deadline;
    loop {
        let profile = profiler.profile(Duration::from_secs(3600));
        let captures: Vec<Capture> = classes
            .iter()
            .zip(&cpu)
            .map(|(&lifetime, &cpu_s)| {
                let periods = periods_in(&profile, lifetime.frame);
                Capture {
                    lifetime,
                    cpu_s,
                    periods,
                    ratio: periods as f64 / (cpu_s * hz),
                }
            })
            .collect();
        if captures.iter().zip(floors).all(|(c, f)| c.ratio >= *f) || Instant::now() > until {
            return (captures, profile);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Periods whose stack passes through a function named `frame`.
pub fn periods_in(p: &stackwatch::Profile, frame: &str) -> u64 {
    p.stacks
        .iter()
        .filter(|(s, _)| s.split(';').any(|f| f.ends_with(frame)))
        .map(|(_, c)| c)
        .sum()
}

#[inline(never)]
fn lives_10ms() -> f64 {
    std::hint::black_box(burn(Duration::from_millis(10)))
}

#[inline(never)]
fn lives_100ms() -> f64 {
    std::hint::black_box(burn(Duration::from_millis(100)))
}

#[inline(never)]
fn lives_1s() -> f64 {
    std::hint::black_box(burn(Duration::from_secs(1)))
}

/// Burns `cpu` of the calling thread's CPU time; returns its CPU time at the end (all
/// of it: the thread is new), in seconds.
fn burn(cpu: Duration) -> f64 {
    let mut x = 1u64;
    loop {
        for _ in 0..5_000 {
            x = std::hint::black_box(x.wrapping_mul(0x9E3779B97F4A7C15).rotate_left(7));
        }
        let used = thread_cpu_s();
        if used >= cpu.as_secs_f64() {
            std::hint::black_box(x);
            return used;
        }
    }
}

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
