//! A thread is sampled from its first period of CPU, however short it lives: the
//! process-wide CPU timer's signal makes it arm its own timer (armed_threads.rs), instead
//! of it waiting for the aggregator's scan (every 20 ms, later on a busy machine). Each
//! period is counted once, and the timers of exited threads are deleted.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use support::{burn_cpu, wait_for};

/// The workload, shared with `examples/young_threads.rs`.
#[allow(dead_code)]
mod workload {
    include!("../benches/support/young_threads.rs");
}

/// One profiler per process: tests in this file take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const HZ: u32 = 499;

/// Posix timers this process holds (`/proc/self/timers` lists one `ID:` line each).
fn process_timers() -> usize {
    std::fs::read_to_string("/proc/self/timers")
        .map(|s| s.lines().filter(|l| l.starts_with("ID:")).count())
        .unwrap_or(0)
}

fn live_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Of the CPU time threads living 100 ms and 1 s burnt, the profile holds at least 70%
/// and 90%, and of threads living 10 ms at least a quarter more than the scan alone keeps
/// (measured in the same run, under the same load; idle it is four times as much); never more than 110% (a period
/// counted twice, by the process timer and by the thread's own, would show as up to
/// 200%). What is still missing is the kernel's: CPU timers fire on the scheduler tick
/// (4 ms at HZ=250), so the periods a thread completes after its last tick are lost when
/// it exits, and under contention a 10 ms thread may exit before the process timer's
/// signal reaches it (docs/benchmarks.md has the figures: idle, about 0.75 against the
/// scan's 0.2; beside a CPU hog, 0.25 to 0.4 against 0.13 to 0.19).
#[test]
fn threads_of_10ms_100ms_and_1s_are_sampled_from_their_first_period() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let classes = workload::lifetimes(Duration::from_secs(1));
    let floors = [0.2, 0.7, 0.9];
    let run = |first_cpu: bool| {
        let profiler = stackwatch::Profiler::builder()
            .frequency_hz(HZ)
            .sample_buffer(1 << 13)
            .arm_on_first_cpu(first_cpu)
            .start()
            .unwrap();
        let floors = if first_cpu { floors } else { [0.0; 3] };
        let (captures, p) = workload::capture(&profiler, &classes, &floors, support::DEADLINE);
        let stats = profiler.stats();
        profiler.stop();
        for c in &captures {
            eprintln!(
                "first_cpu={first_cpu} {:>6}: {:>3} threads, {:.3} s of CPU, {} periods, ratio {:.3}",
                c.lifetime.name, c.lifetime.threads, c.cpu_s, c.periods, c.ratio
            );
        }
        eprintln!("{stats:?}");
        (captures, p, stats)
    };
    let (scan, _, _) = run(false);
    let (captures, p, stats) = run(true);
    assert!(
        stats.arms_on_first_cpu,
        "this kernel delivers to the running thread"
    );
    assert_eq!(stats.dropped, 0);
    assert!(
        captures[0].ratio >= 1.25 * scan[0].ratio && captures[0].ratio >= floors[0],
        "threads of 10 ms: {:.3} armed on first CPU, {:.3} by the scan",
        captures[0].ratio,
        scan[0].ratio
    );
    for (c, floor) in captures.iter().zip(floors) {
        assert!(
            (floor..=1.1).contains(&c.ratio),
            "{} threads of {}: {} periods of {:.0} ({:.3}); roots: {:?}",
            c.lifetime.threads,
            c.lifetime.name,
            c.periods,
            c.cpu_s * f64::from(HZ),
            c.ratio,
            p.stacks
                .iter()
                .filter(|(s, _)| s.contains(c.lifetime.frame))
                .map(|(s, n)| (s.split(';').next().unwrap_or(""), n))
                .collect::<Vec<_>>()
        );
    }
}

/// Each thread that burns CPU arms its own timer from the handler; once it exits, the
/// aggregator deletes it (a dead thread's timer still holds a queued-signal entry against
/// RLIMIT_SIGPENDING), and on stop every timer is gone.
#[test]
fn the_timers_of_exited_threads_are_deleted() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = process_timers();
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(HZ)
        .start()
        .unwrap();
    // 200 threads, 4 at a time, each burning a few periods, then counting the timers
    // (its own among them).
    let mut armed_at_peak = 0;
    for _ in 0..50 {
        let batch: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    burn_cpu(Duration::from_millis(10));
                    process_timers()
                })
            })
            .collect();
        for t in batch {
            armed_at_peak = armed_at_peak.max(t.join().unwrap());
        }
    }
    // The exited threads' timers go at the next scans: at most one per live thread is
    // left, plus the process timer.
    let (timers, live) = wait_for(|| {
        let (timers, live) = (process_timers(), live_threads());
        (timers <= before + live + 1, (timers, live))
    });
    let stats = profiler.stats();
    assert!(
        timers <= before + live + 1,
        "{timers} timers for {live} threads ({before} before the profiler)"
    );
    assert!(stats.process_signals_skipped > 0, "{stats:?}");
    profiler.stop();
    assert_eq!(process_timers(), before, "every timer deleted on stop");
    assert!(
        armed_at_peak > before + live,
        "threads armed their own timers: at most {armed_at_peak} timers seen"
    );
}
