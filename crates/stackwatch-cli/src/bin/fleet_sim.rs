//! `stackwatch-fleet-sim`: workers for tests and benchmarks.
//!
//! - `real`: one real profiled process: a stackwatch profiler and three threads burning
//!   CPU in distinct call paths, serving the stackwatch endpoints.
//! - `fake`: one process serving N simulated stackwatch targets at `/t/<i>/windows`, with
//!   realistic stack distributions (a few hundred stacks per service, Zipf-weighted, ~20
//!   frames deep), for the 1 000-target collector benchmark.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stackwatch_profile::clock::unix_ms;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::{Parser, Subcommand};
use stackwatch_profile::protocol::{Window, WindowsResponse, PROTOCOL_VERSION};

#[path = "../fleet_shape.rs"]
mod fleet_shape;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// A real profiled worker.
    Real {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 199)]
        hz: u32,
        #[arg(long, default_value_t = 1000)]
        window_ms: u64,
        #[arg(long, default_value_t = 600)]
        retain: usize,
    },
    /// Many simulated targets in one process.
    Fake {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        targets: usize,
        #[arg(long, default_value_t = 300)]
        stacks_per_service: usize,
        #[arg(long, default_value_t = 1000)]
        samples_per_window: u64,
        #[arg(long, default_value_t = 10)]
        window_seconds: u64,
    },
}

#[inline(never)]
fn decode_rows(n: u64) -> u64 {
    (0..n).fold(7u64, |a, i| std::hint::black_box(a.wrapping_mul(31) ^ i))
}

#[inline(never)]
fn encode_batch(n: u64) -> u64 {
    (0..n).fold(3u64, |a, i| std::hint::black_box(a.rotate_left(5) ^ i))
}

#[inline(never)]
fn flush_sink(n: u64) -> u64 {
    decode_rows(n / 2) + encode_batch(n / 2)
}

fn real(addr: SocketAddr, hz: u32, window_ms: u64, retain: usize) -> anyhow::Result<()> {
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(hz)
        .window(Duration::from_millis(window_ms))
        .retain_windows(retain)
        .start()?;
    let server = stackwatch::http::serve(&profiler, addr)?;
    println!("listening on {}", server.local_addr());
    for (name, f) in [
        ("decoder", decode_rows as fn(u64) -> u64),
        ("encoder", encode_batch),
        ("sink", flush_sink),
    ] {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                let t = Instant::now();
                f(2_000_000);
                // About a third of a core per thread.
                std::thread::sleep(t.elapsed() * 2);
            })?;
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

struct Fleet {
    start_ms: u64,
    window_ms: u64,
    targets: usize,
    /// Per service: (stack, weight).
    services: Vec<Vec<(String, f64)>>,
    samples: u64,
    instances: Vec<String>,
}

impl Fleet {
    fn window(&self, target: usize, seq: u64) -> Window {
        let svc = &self.services[target % self.services.len()];
        let stacks = fleet_shape::draw_window(svc, (target as u64) << 32 ^ seq, self.samples);
        Window {
            seq,
            start_unix_ms: self.start_ms + (seq - 1) * self.window_ms,
            end_unix_ms: self.start_ms + seq * self.window_ms,
            samples: stacks.iter().map(|s| s.1).sum(),
            dropped: 0,
            pruned_stacks: 0,
            stacks,
            labeled: Vec::new(),
        }
    }
}

#[derive(serde::Deserialize)]
struct After {
    after: Option<u64>,
}

async fn fake_windows(
    State(f): State<Arc<Fleet>>,
    Path(i): Path<usize>,
    Query(q): Query<After>,
) -> axum::response::Response {
    if i >= f.targets {
        return (axum::http::StatusCode::NOT_FOUND, "no such target").into_response();
    }
    let now = unix_ms();
    let latest = (now - f.start_ms) / f.window_ms;
    let oldest = latest.saturating_sub(59).max(1);
    let after = q.after.unwrap_or(0);
    let f2 = f.clone();
    let body = tokio::task::spawn_blocking(move || {
        let windows: Vec<Window> = (after.max(oldest - 1) + 1..=latest)
            .map(|s| f2.window(i, s))
            .collect();
        serde_json::to_vec(&WindowsResponse {
            version: PROTOCOL_VERSION,
            instance: f2.instances[i].clone(),
            frequency_hz: 99,
            period_ns: 10_101_010,
            window_seconds: f2.window_ms / 1000,
            oldest_seq: if latest == 0 { 0 } else { oldest },
            latest_seq: latest,
            windows,
        })
        .unwrap()
    })
    .await
    .unwrap();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Real {
            addr,
            hz,
            window_ms,
            retain,
        } => real(addr, hz, window_ms, retain),
        Mode::Fake {
            addr,
            targets,
            stacks_per_service,
            samples_per_window,
            window_seconds,
        } => {
            let now = unix_ms();
            let window_ms = window_seconds * 1000;
            let fleet = Arc::new(Fleet {
                // Aligned, and 10 windows of history already.
                start_ms: now / window_ms * window_ms - 10 * window_ms,
                window_ms,
                targets,
                services: (0..20)
                    .map(|s| fleet_shape::service_stacks(s, stacks_per_service))
                    .collect(),
                samples: samples_per_window,
                instances: (0..targets)
                    .map(|i| {
                        format!(
                            "{:016x}",
                            xxhash_rust::xxh3::xxh3_64(format!("{now}-{i}").as_bytes())
                        )
                    })
                    .collect(),
            });
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                println!("listening on {}", listener.local_addr()?);
                let app = axum::Router::new()
                    .route("/t/{i}/windows", get(fake_windows))
                    .with_state(fleet);
                axum::serve(listener, app).await?;
                anyhow::Ok(())
            })
        }
    }
}
