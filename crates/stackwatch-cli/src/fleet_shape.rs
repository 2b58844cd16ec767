//! The shape of a simulated fleet's profiles, shared by the fleet simulator and the
//! collector benchmark so both measure the same data: per service a few hundred stacks
//! 14-25 frames deep with Zipf weights, and windows drawn from them.

use std::collections::HashMap;

/// A small deterministic xorshift generator.
pub fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// `n` stacks of service `service`, with Zipf-like weights (a few hot, a long tail).
pub fn service_stacks(service: u64, n: usize) -> Vec<(String, f64)> {
    let mut next = rng(service + 1);
    let modules = [
        "tokio::runtime",
        "hyper::proto",
        "serde_json::ser",
        "app::handler",
        "sqlx::pool",
        "prost::encoding",
        "alloc::vec",
        "core::hash",
    ];
    (0..n)
        .map(|i| {
            let depth = 12 + (next() % 12) as usize;
            let mut frames = vec![
                format!("worker-{}", next() % 4),
                "std::sys::thread::unix::Thread::new::thread_start".to_string(),
            ];
            for d in 0..depth {
                let m = modules[(next() % modules.len() as u64) as usize];
                frames.push(format!("{m}::fn_{d}_{}", next() % 6));
            }
            (frames.join(";"), 1.0 / (i as f64 + 1.0))
        })
        .collect()
}

/// One window: `samples` draws from `stacks` by weight, as (stack, count).
pub fn draw_window(stacks: &[(String, f64)], seed: u64, samples: u64) -> Vec<(String, u64)> {
    let total: f64 = stacks.iter().map(|s| s.1).sum();
    let mut next = rng(seed);
    let mut counts: HashMap<usize, u64> = HashMap::new();
    for _ in 0..samples {
        let mut x = (next() % 1_000_000) as f64 / 1e6 * total;
        for (i, (_, w)) in stacks.iter().enumerate() {
            x -= w;
            if x <= 0.0 {
                *counts.entry(i).or_insert(0) += 1;
                break;
            }
        }
    }
    counts
        .into_iter()
        .map(|(i, c)| (stacks[i].0.clone(), c))
        .collect()
}
