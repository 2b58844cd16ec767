//! The child of `cargo bench -p stackwatch --bench debuginfo_rss`: a CPU-bound workload
//! touching many functions (hashing, sorting, formatting, JSON, B-trees), run bare, under
//! stackwatch or under pprof-rs, printing how much memory the profiler added.
//!
//! `debuginfo_workload none|stackwatch|pprof-rs [seconds]`. Prints one line:
//! `RESULT <anon_before> <file_before> <anon_after> <file_after> <hwm> <memory_bytes>
//! <samples>` (kB from /proc/self/status, bytes for memory_bytes): before = after a
//! warm-up, just before the profiler starts; after = when the workload is done and the
//! profiler has drained it (for pprof-rs: its report built), before the profiler stops
//! and before a profile is asked for (the merged profile is the caller's memory).
//! `STACKWATCH_BENCH_SMAPS=<file>` copies /proc/self/smaps there at that point.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

fn status() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"), field("VmHWM:"))
}

#[inline(never)]
fn hash_rows(seed: u64) -> u64 {
    let mut m: HashMap<String, u64> = HashMap::new();
    for i in 0..2_000u64 {
        *m.entry(format!("key-{}", (i * 7919 + seed) % 1_500))
            .or_default() += i;
    }
    m.values().sum()
}

#[inline(never)]
fn sort_rows(seed: u64) -> u64 {
    let mut v: Vec<u64> = (0..20_000u64)
        .map(|i| (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    v.sort_unstable();
    v.dedup();
    v[v.len() / 2]
}

#[inline(never)]
fn json_rows(seed: u64) -> u64 {
    let rows: Vec<serde_json::Value> = (0..300u64)
        .map(|i| {
            serde_json::json!({"id": i + seed, "name": format!("row {i}"), "price": i as f64 * 1.25,
                "tags": ["a", "b", i.to_string()]})
        })
        .collect();
    let text = serde_json::to_string(&rows).unwrap_or_default();
    let back: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    back.len() as u64 + text.len() as u64
}

#[inline(never)]
fn tree_rows(seed: u64) -> u64 {
    let mut t = BTreeMap::new();
    for i in 0..10_000u64 {
        t.insert((i * 31 + seed) % 4_096, i);
    }
    t.range(100..2_000).map(|(k, v)| k ^ v).sum()
}

#[inline(never)]
fn text_rows(seed: u64) -> u64 {
    let mut s = String::new();
    for i in 0..2_000u64 {
        s.push_str(&format!("{:>8}|{:x}|{:.3}\n", i, i ^ seed, i as f64 / 3.0));
    }
    s.lines().filter(|l| l.contains('7')).count() as u64 + s.to_uppercase().len() as u64
}

/// Runs the workload on `threads` threads for `cpu` of wall time each.
fn work(threads: usize, for_: Duration) -> u64 {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::Builder::new()
                .name(format!("work{t}"))
                .spawn(move || {
                    let until = Instant::now() + for_;
                    let mut acc = 0u64;
                    let mut i = t as u64;
                    while Instant::now() < until {
                        acc ^= match i % 5 {
                            0 => hash_rows(i),
                            1 => sort_rows(i),
                            2 => json_rows(i),
                            3 => tree_rows(i),
                            _ => text_rows(i),
                        };
                        i += 1;
                    }
                    acc
                })
                .expect("spawn")
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map(String::as_str).unwrap_or("none");
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    // Warm up: the workload's own allocations reach their steady state first.
    std::hint::black_box(work(2, Duration::from_millis(500)));
    // The same starting point for every variant: what the warm-up freed goes back to
    // the kernel, so that `before` does not depend on how malloc kept it.
    // SAFETY: malloc_trim only releases free memory of malloc's arenas.
    unsafe { libc::malloc_trim(0) };
    let (anon0, file0, _) = status();
    let mut memory_bytes = 0;
    let mut samples = 0;
    let (anon1, file1, hwm) = match variant {
        "stackwatch" => {
            let p = stackwatch::Profiler::builder()
                .frequency_hz(999)
                .start()
                .expect("profiler starts");
            std::hint::black_box(work(2, Duration::from_secs_f64(secs)));
            // Let the aggregator drain and account for its last batch.
            std::thread::sleep(Duration::from_millis(1_200));
            memory_bytes = p.stats().memory_bytes;
            // Measured before asking for a profile: the merged profile is the caller's
            // memory (allocated on the caller's thread), not the profiler's.
            let s = status();
            samples = p.profile(Duration::from_secs(3_600)).total();
            if let Some(path) = std::env::var_os("STACKWATCH_BENCH_SMAPS") {
                // Where the memory is, mapping by mapping (for looking into a result).
                let _ = std::fs::copy("/proc/self/smaps", path);
            }
            p.stop();
            s
        }
        "pprof-rs" => {
            let guard = pprof::ProfilerGuardBuilder::default()
                .frequency(999)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
                .expect("pprof-rs starts");
            std::hint::black_box(work(2, Duration::from_secs_f64(secs)));
            let report = guard.report().build().expect("report");
            samples = report.data.values().map(|c| *c as u64).sum();
            // pprof-rs keeps its samples until the report is built from them: measured
            // with the report, which is what it holds.
            let s = status();
            drop(report);
            drop(guard);
            s
        }
        _ => {
            std::hint::black_box(work(2, Duration::from_secs_f64(secs)));
            std::thread::sleep(Duration::from_millis(1_200));
            status()
        }
    };
    println!("RESULT {anon0} {file0} {anon1} {file1} {hwm} {memory_bytes} {samples}");
}
