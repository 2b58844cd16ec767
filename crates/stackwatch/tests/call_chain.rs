//! A known call chain burning CPU shows up with its frames, in order.

mod support;

use std::time::{Duration, Instant};

use support::{burnt, thread_cpu_seconds, wait_for};

#[inline(never)]
fn chain_a(cpu: Duration) -> u64 {
    std::hint::black_box(chain_b(cpu)) + 1
}

#[inline(never)]
fn chain_b(cpu: Duration) -> u64 {
    std::hint::black_box(chain_c(cpu)) + 1
}

/// Burns `cpu` of the thread's CPU time (not of wall time: on a busy machine the thread
/// gets less of it per second).
#[inline(never)]
fn chain_c(cpu: Duration) -> u64 {
    let (start, began) = (thread_cpu_seconds(), Instant::now());
    let mut x = 0u64;
    while !burnt(start, cpu, began) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[test]
fn a_b_c_appears_in_order_in_at_least_95_percent_of_the_threads_samples() {
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .window(Duration::from_secs(1))
        .start()
        .unwrap();
    let worker = std::thread::Builder::new()
        .name("chain-worker".into())
        .spawn(|| chain_a(Duration::from_millis(1500)))
        .unwrap();
    worker.join().unwrap();
    // Every period the worker burnt is in the profile once the aggregator has drained
    // it, which on a busy machine may take a while.
    let (p, total, in_order) = wait_for(|| {
        let p = profiler.profile(Duration::from_secs(60));
        let (total, in_order) = chain_counts(&p);
        (total > 300, (p, total, in_order))
    });
    profiler.stop();
    eprintln!("{}", p.to_folded());
    assert!(total > 300, "too few samples for the worker: {total}");
    assert!(
        in_order as f64 >= 0.95 * total as f64,
        "{in_order} of {total} samples have chain_a;chain_b;chain_c in order"
    );
}

/// The worker's periods, and those whose stack has chain_a, chain_b and chain_c in order.
fn chain_counts(p: &stackwatch::Profile) -> (u64, u64) {
    let mut total = 0u64;
    let mut in_order = 0u64;
    for (stack, count) in &p.stacks {
        if !stack.starts_with("chain-worker;") {
            continue;
        }
        total += count;
        let frames: Vec<&str> = stack.split(';').collect();
        let pos = |name: &str| frames.iter().position(|f| f.ends_with(name));
        if let (Some(a), Some(b), Some(c)) = (pos("chain_a"), pos("chain_b"), pos("chain_c")) {
            if a < b && b < c {
                in_order += count;
            }
        }
    }
    (total, in_order)
}
