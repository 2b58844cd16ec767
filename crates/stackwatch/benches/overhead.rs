//! Side-by-side: the same CPU-bound workload bare, under stackwatch and under pprof-rs,
//! at 99 and 999 Hz with 2 and 8 busy threads. Each run is its own child process (both
//! profilers own SIGPROF), rounds are interleaved so machine noise hits all variants alike,
//! and medians are reported.
//!
//! `cargo bench -p stackwatch --bench overhead` (STACKWATCH_BENCH_ROUNDS, default 3).
//! `stackwatch+labels` runs the same work with the workers entering one of four label
//! sets every ~100 µs (labels on vs off, side by side).
//!
//! Reported per cell: capture ratio = periods recorded / (worker CPU seconds × Hz);
//! per-thread share error = max |measured share − CPU share| in points; CPU overhead =
//! process CPU / bare process CPU − 1 for the same work; peak RSS delta vs bare; and the
//! handler's cost per sample (stackwatch only: pprof-rs does not expose it).

use std::process::Command;
use std::time::{Duration, Instant};

include!("support/child_result.rs");

const CHILD_ENV: &str = "STACKWATCH_BENCH_CHILD";

const ALL: [Variant; 4] = [
    Variant::None,
    Variant::Stackwatch,
    Variant::StackwatchLabels,
    Variant::PprofRs,
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    None,
    Stackwatch,
    /// stackwatch, with the workers switching between four label sets every ~100 µs.
    StackwatchLabels,
    PprofRs,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Stackwatch => "stackwatch",
            Variant::StackwatchLabels => "stackwatch+labels",
            Variant::PprofRs => "pprof-rs",
        }
    }
    fn parse(s: &str) -> Variant {
        match s {
            "stackwatch" => Variant::Stackwatch,
            "stackwatch+labels" => Variant::StackwatchLabels,
            "pprof-rs" => Variant::PprofRs,
            _ => Variant::None,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct RunResult {
    worker_cpu_ns: Vec<u64>,
    worker_samples: Vec<u64>,
    process_cpu_ns: u64,
    maxrss_kb: u64,
    handler_ns: u64,
    signals: u64,
}

#[inline(never)]
fn spin(iters: u64) -> u64 {
    let mut x = 0x1234_5678u64;
    for i in 0..iters {
        x = std::hint::black_box(x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(13) ^ i);
    }
    x
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn rusage() -> (u64, u64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

/// Iterations per labeled slice (~100 µs): the labeled variant enters a set per slice.
const SLICE: u64 = 100_000;

fn run_workers(threads: usize, iters_per_thread: u64, labels: bool) -> Vec<u64> {
    let sets: Vec<stackwatch::LabelSet> = (0..4)
        .map(|t| stackwatch::LabelSet::new(&[("table", format!("t{t}")), ("op", "insert".into())]))
        .collect();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let sets = sets.clone();
            std::thread::Builder::new()
                .name(format!("w{i}"))
                .spawn(move || {
                    // Uneven work so the per-thread split is not trivially equal.
                    let share = if i % 2 == 0 { 46 } else { 54 };
                    let total = iters_per_thread * share / 50;
                    if labels {
                        let mut done = 0;
                        let mut k = 0;
                        while done < total {
                            let _g = sets[k % sets.len()].enter();
                            spin(SLICE.min(total - done));
                            done += SLICE;
                            k += 1;
                        }
                    } else {
                        spin(total);
                    }
                    thread_cpu_ns()
                })
                .unwrap()
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn child(variant: Variant, hz: u32, threads: usize, iters: u64) {
    let mut r = RunResult::default();
    match variant {
        Variant::None => {
            r.worker_cpu_ns = run_workers(threads, iters, false);
        }
        Variant::Stackwatch | Variant::StackwatchLabels => {
            let p = stackwatch::Profiler::builder()
                .frequency_hz(hz)
                .start()
                .unwrap();
            r.worker_cpu_ns = run_workers(threads, iters, variant == Variant::StackwatchLabels);
            std::thread::sleep(Duration::from_millis(60));
            let profile = p.profile(Duration::from_secs(3600));
            let stats = p.stats();
            p.stop();
            r.worker_samples = (0..threads)
                .map(|i| {
                    let root = format!("w{i}");
                    profile
                        .stacks
                        .iter()
                        .filter(|(s, _)| s.split(';').next() == Some(root.as_str()))
                        .map(|(_, c)| *c)
                        .sum()
                })
                .collect();
            r.handler_ns = stats.handler_ns;
            r.signals = stats.signals;
        }
        Variant::PprofRs => {
            let guard = pprof::ProfilerGuardBuilder::default()
                .frequency(hz as i32)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
                .unwrap();
            r.worker_cpu_ns = run_workers(threads, iters, false);
            let report = guard.report().build().unwrap();
            drop(guard);
            r.worker_samples = (0..threads)
                .map(|i| {
                    let name = format!("w{i}");
                    report
                        .data
                        .iter()
                        .filter(|(f, _)| f.thread_name == name)
                        .map(|(_, c)| *c as u64)
                        .sum()
                })
                .collect();
        }
    }
    let (cpu, rss) = rusage();
    r.process_cpu_ns = cpu;
    r.maxrss_kb = rss;
    println!(
        "RESULT {} {} {} {} {} {}",
        r.process_cpu_ns,
        r.maxrss_kb,
        r.handler_ns,
        r.signals,
        join(&r.worker_cpu_ns),
        join(&r.worker_samples)
    );
}

fn join(v: &[u64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn split(s: &str) -> Vec<u64> {
    if s == "-" {
        return Vec::new();
    }
    s.split(',').map(|x| x.parse().unwrap()).collect()
}

fn spawn_child(variant: Variant, hz: u32, threads: usize, iters: u64) -> RunResult {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(
            CHILD_ENV,
            format!("{} {hz} {threads} {iters}", variant.name()),
        )
        .output()
        .expect("child runs");
    let f = result_fields(&out, "child");
    RunResult {
        process_cpu_ns: f[0].parse().unwrap(),
        maxrss_kb: f[1].parse().unwrap(),
        handler_ns: f[2].parse().unwrap(),
        signals: f[3].parse().unwrap(),
        worker_cpu_ns: split(&f[4]),
        worker_samples: split(&f[5]),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let f: Vec<&str> = spec.split(' ').collect();
        child(
            Variant::parse(f[0]),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("STACKWATCH_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // Calibrate: iterations for ~1.5 s of CPU per thread in the 2-thread cells.
    let t = Instant::now();
    spin(50_000_000);
    let per_sec = 50_000_000.0 / t.elapsed().as_secs_f64();
    let total_iters = (per_sec * 3.0) as u64;
    println!(
        "# stackwatch overhead bench: {rounds} rounds, {} cores, {:.0} M iterations/s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        per_sec / 1e6
    );
    println!();
    println!("| Hz | threads | profiler | capture ratio | share error (pts) | CPU overhead | peak RSS delta | handler ns/sample |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    for (hz, threads) in [(99u32, 2usize), (999, 2), (99, 8), (999, 8)] {
        let iters = total_iters / threads as u64;
        let mut runs: Vec<(Variant, RunResult)> = Vec::new();
        for _ in 0..rounds {
            for v in ALL {
                runs.push((v, spawn_child(v, hz, threads, iters)));
            }
        }
        let of = |v: Variant| runs.iter().filter(move |(x, _)| *x == v).map(|(_, r)| r);
        let bare_cpu = median(of(Variant::None).map(|r| r.process_cpu_ns as f64).collect());
        let bare_rss = median(of(Variant::None).map(|r| r.maxrss_kb as f64).collect());
        for v in ALL {
            let capture = median(
                of(v)
                    .filter(|r| !r.worker_samples.is_empty())
                    .map(|r| {
                        let cpu_s: f64 = r.worker_cpu_ns.iter().sum::<u64>() as f64 / 1e9;
                        r.worker_samples.iter().sum::<u64>() as f64 / (cpu_s * hz as f64)
                    })
                    .collect(),
            );
            let share_err = median(
                of(v)
                    .filter(|r| !r.worker_samples.is_empty())
                    .map(|r| {
                        let cpu: f64 = r.worker_cpu_ns.iter().sum::<u64>() as f64;
                        let smp: f64 = r.worker_samples.iter().sum::<u64>().max(1) as f64;
                        r.worker_cpu_ns
                            .iter()
                            .zip(&r.worker_samples)
                            .map(|(c, s)| ((*c as f64 / cpu) - (*s as f64 / smp)).abs() * 100.0)
                            .fold(0.0, f64::max)
                    })
                    .collect(),
            );
            let cpu = median(of(v).map(|r| r.process_cpu_ns as f64).collect());
            let rss = median(of(v).map(|r| r.maxrss_kb as f64).collect());
            let handler = median(
                of(v)
                    .filter(|r| r.signals > 0)
                    .map(|r| r.handler_ns as f64 / r.signals as f64)
                    .collect(),
            );
            let dash = |x: f64, f: &dyn Fn(f64) -> String| {
                if x.is_nan() {
                    "n/a".to_string()
                } else {
                    f(x)
                }
            };
            println!(
                "| {hz} | {threads} | {} | {} | {} | {} | {} | {} |",
                v.name(),
                dash(capture, &|x| format!("{x:.3}")),
                dash(share_err, &|x| format!("{x:.1}")),
                if v == Variant::None {
                    "baseline".into()
                } else {
                    format!("{:+.2}%", (cpu / bare_cpu - 1.0) * 100.0)
                },
                if v == Variant::None {
                    format!("{:.1} MiB (abs)", rss / 1024.0)
                } else {
                    format!("{:+.1} MiB", (rss - bare_rss) / 1024.0)
                },
                dash(handler, &|x| format!("{x:.0}")),
            );
        }
    }
}
