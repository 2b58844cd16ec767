//! How much of short-lived threads' CPU time the profile holds: threads living 10 ms,
//! 100 ms and 1 s of CPU, armed on their first period of CPU (the process-wide CPU
//! timer's signal, the default) or only when the aggregator's scan finds them (the
//! earlier design), on an idle machine and beside a CPU hog (one busy loop per core, in
//! child processes). The figures in docs/benchmarks.md come from it.
//!
//! ```text
//! cargo run -p stackwatch --example young_threads -- [HZ] [CPU SECONDS PER CLASS]
//! ```

use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod workload {
    include!("../benches/support/young_threads.rs");
}

/// One `sh` busy loop per core, killed on drop.
struct Hog(Vec<Child>);

impl Hog {
    fn start() -> std::io::Result<Hog> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let children = (0..cores)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Hog(children))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let hz: u32 = args.next().map_or(Ok(99), |a| a.parse())?;
    let per_class: f64 = args.next().map_or(Ok(2.0), |a| a.parse())?;
    let classes = workload::lifetimes(Duration::from_secs_f64(per_class));
    println!(
        "{hz} Hz, {per_class} s of CPU per class, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| machine | armed | 10 ms | 100 ms | 1 s | wall |");
    println!("|---|---|---|---|---|---|");
    for hogged in [false, true] {
        let _hog = if hogged { Some(Hog::start()?) } else { None };
        for first_cpu in [false, true] {
            let began = Instant::now();
            let profiler = stackwatch::Profiler::builder()
                .frequency_hz(hz)
                .sample_buffer(1 << 13)
                .arm_on_first_cpu(first_cpu)
                .start()?;
            // No floor to wait for: the profile is read for 3 s after the last thread
            // ends, by when the aggregator has drained everything.
            let (captures, _) = workload::capture(
                &profiler,
                &classes,
                &[f64::INFINITY; 3],
                Duration::from_secs(3),
            );
            let stats = profiler.stats();
            profiler.stop();
            let cells: Vec<String> = captures
                .iter()
                .map(|c| {
                    format!(
                        "{:.2} ({} of {:.0})",
                        c.ratio,
                        c.periods,
                        c.cpu_s * f64::from(hz)
                    )
                })
                .collect();
            println!(
                "| {} | {} | {} | {:.1} s |",
                if hogged { "2 busy loops" } else { "idle" },
                if first_cpu && stats.arms_on_first_cpu {
                    "on first CPU"
                } else {
                    "by the scan"
                },
                cells.join(" | "),
                began.elapsed().as_secs_f64()
            );
            if stats.dropped > 0 {
                println!("({} samples dropped)", stats.dropped);
            }
        }
    }
    Ok(())
}
