//! The long stress run: 999 Hz with malloc/free storms, dlopen/dlclose loops, thread
//! churn and fork+exec, for `STACKWATCH_STRESS_SECS` (default 60) seconds.
//!
//! `cargo bench -p stackwatch --bench stress`

include!("support/stress_workload.rs");

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = std::env::var("STACKWATCH_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let t = Instant::now();
    let r = run(Duration::from_secs(secs));
    println!(
        "stress {secs} s at 999 Hz: {} periods, {} threads spawned, {} fork+exec, {} dlopen/dlclose, {} malloc/free, {} dropped, profiler memory {:.1} MiB, finished in {:.1} s",
        r.samples,
        r.threads_spawned,
        r.forks,
        r.dlopens,
        r.allocations,
        r.dropped,
        r.profiler_memory_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
}
