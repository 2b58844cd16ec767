//! Latency of `GET /windows` and `GET /` when a window holds 10 000 distinct stacks.
//!
//! Two threads walk a 16-level binary tree of two functions (65 536 distinct call paths)
//! under a 999 Hz profiler until a closed window holds `max_stacks` (10 000) stacks;
//! then each endpoint is fetched 50 times over loopback HTTP.
//!
//! `cargo bench -p stackwatch --bench endpoint_latency`

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[inline(never)]
fn leaf(work: u64) -> u64 {
    let mut x = work;
    for i in 0..work {
        x = std::hint::black_box(x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i);
    }
    x
}

#[inline(never)]
fn left(depth: u32, bits: u32) -> u64 {
    std::hint::black_box(step(depth, bits)) + 1
}

#[inline(never)]
fn right(depth: u32, bits: u32) -> u64 {
    std::hint::black_box(step(depth, bits)) + 2
}

#[inline(never)]
fn step(depth: u32, bits: u32) -> u64 {
    if depth == 0 {
        leaf(20_000)
    } else if bits & 1 == 0 {
        left(depth - 1, bits >> 1)
    } else {
        right(depth - 1, bits >> 1)
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(999)
        .window(Duration::from_secs(30))
        .max_stacks(10_000)
        .start()
        .unwrap();
    let server = stackwatch::http::serve(&profiler, "127.0.0.1:0".parse().unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2u32)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    // xorshift64: every path of the tree is equally likely.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    std::hint::black_box(step(16, (state >> 20) as u32));
                }
            })
        })
        .collect();
    let deadline = Instant::now()
        + Duration::from_secs(
            std::env::var("STACKWATCH_LATENCY_SETUP_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(150),
        );
    let seq = loop {
        std::thread::sleep(Duration::from_millis(500));
        let r = profiler.windows_after(0);
        if let Some(w) = r.windows.iter().find(|w| w.stacks.len() >= 10_000) {
            break w.seq;
        }
        assert!(
            Instant::now() < deadline,
            "no window reached 10 000 stacks: {:?}\n{}",
            r.windows.iter().map(|w| w.stacks.len()).collect::<Vec<_>>(),
            r.windows
                .last()
                .map(|w| w
                    .stacks
                    .iter()
                    .take(3)
                    .map(|s| s.0.clone())
                    .collect::<Vec<_>>()
                    .join("\n"))
                .unwrap_or_default()
        );
    };
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let base = format!("http://{}", server.local_addr());
    println!("| endpoint | distinct stacks | body bytes | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, path) in [
        (
            "GET /windows (one window)",
            format!("/windows?after={}", seq - 1),
        ),
        ("GET / (cumulative)", "/".to_string()),
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        let mut stacks = 0;
        for _ in 0..50 {
            let t = Instant::now();
            let mut r = agent.get(&format!("{base}{path}")).call().unwrap();
            let mut body = Vec::new();
            r.body_mut().as_reader().read_to_end(&mut body).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            size = body.len();
            stacks = if path == "/" {
                body.split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
            } else {
                let r: stackwatch::WindowsResponse = serde_json::from_slice(&body).unwrap();
                r.windows.iter().map(|w| w.stacks.len()).sum()
            };
        }
        let p50 = percentile(&mut times, 0.5);
        let p99 = percentile(&mut times, 0.99);
        println!("| {name} | {stacks} | {size} | {p50:.2} | {p99:.2} |");
    }
    // The same bodies built in-process, without HTTP: what the server itself spends.
    for (name, f) in [
        (
            "build /windows body (in-process)",
            Box::new(|| profiler.windows_after_json(seq - 1, true).len()) as Box<dyn Fn() -> usize>,
        ),
        (
            "build / body (in-process)",
            Box::new(|| profiler.cumulative_folded().len()),
        ),
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..50 {
            let t = Instant::now();
            size = f();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let p50 = percentile(&mut times, 0.5);
        let p99 = percentile(&mut times, 0.99);
        println!("| {name} | - | {size} | {p50:.2} | {p99:.2} |");
    }
    profiler.stop();
}
