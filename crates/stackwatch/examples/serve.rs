//! A small service that profiles itself: three named threads burn CPU in different call
//! paths while the stackwatch endpoints serve on 127.0.0.1:6060 (or the address given
//! as the first argument).
//!
//! ```text
//! cargo run --release -p stackwatch --example serve
//! curl -s localhost:6060/ | inferno-flamegraph > profile.svg     # or flamegraph.pl
//! curl -s localhost:6060/flamegraph.svg?seconds=30 > last30s.svg
//! go tool pprof -top 'http://localhost:6060/debug/pprof/profile?seconds=5'
//! ```

use std::time::{Duration, Instant};

#[inline(never)]
fn parse_rows(n: u64) -> u64 {
    (0..n).fold(0u64, |a, i| {
        std::hint::black_box(a.wrapping_mul(31).wrapping_add(i))
    })
}

#[inline(never)]
fn encode_json(n: u64) -> usize {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("{{\"id\":{i},\"v\":\"{}\"}}", i * 7));
        if s.len() > 1 << 16 {
            s.clear();
        }
    }
    std::hint::black_box(s.len())
}

#[inline(never)]
fn handle_batch() -> u64 {
    parse_rows(200_000) + encode_json(2_000) as u64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6060".into());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(99)
        .window(Duration::from_secs(10))
        .start()?;
    let server = stackwatch::http::serve(&profiler, addr.parse()?)?;
    println!("stackwatch endpoints on http://{}", server.local_addr());
    println!(
        "  curl -s http://{}/ | inferno-flamegraph > profile.svg",
        server.local_addr()
    );
    println!(
        "  curl -s 'http://{}/flamegraph.svg?seconds=30' > profile.svg",
        server.local_addr()
    );
    for name in ["ingest", "encoder", "batcher"] {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                let t = Instant::now();
                match name {
                    "ingest" => {
                        parse_rows(1_000_000);
                    }
                    "encoder" => {
                        encode_json(10_000);
                    }
                    _ => {
                        handle_batch();
                    }
                }
                // About half a core per thread.
                std::thread::sleep(t.elapsed());
            })?;
    }
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let s = profiler.stats();
        println!(
            "{} periods sampled, {} threads, {} dropped, profiler memory {:.1} MiB",
            s.samples,
            s.threads,
            s.dropped,
            s.memory_bytes as f64 / 1048576.0
        );
    }
}
