//! A known call chain burning CPU shows up with its frames, in order.

use std::time::{Duration, Instant};

#[inline(never)]
fn chain_a(until: Instant) -> u64 {
    std::hint::black_box(chain_b(until)) + 1
}

#[inline(never)]
fn chain_b(until: Instant) -> u64 {
    std::hint::black_box(chain_c(until)) + 1
}

#[inline(never)]
fn chain_c(until: Instant) -> u64 {
    let mut x = 0u64;
    while Instant::now() < until {
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
        .spawn(|| chain_a(Instant::now() + Duration::from_millis(1500)))
        .unwrap();
    worker.join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let p = profiler.profile(Duration::from_secs(60));
    profiler.stop();
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
    eprintln!("{}", p.to_folded());
    assert!(total > 300, "too few samples for the worker: {total}");
    assert!(
        in_order as f64 >= 0.95 * total as f64,
        "{in_order} of {total} samples have chain_a;chain_b;chain_c in order"
    );
}
