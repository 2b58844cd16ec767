//! Push ingest benchmark (issue 13): 1 000 simulated processes push OpenTelemetry
//! profiles (OTLP/HTTP, protobuf, gzip, as the OpenTelemetry Collector's `otlphttp`
//! exporter sends them) every 10 s to a real `stackwatch server` process storing into
//! SQLite.
//!
//! Each process is one resource (`service.name` = one of 20 services, `host.name` its
//! own) with one CPU profile per push: 1 000 samples drawn from its service's 300-stack
//! Zipf profile (`fleet_shape`, 14-25 frames deep, as the collector benchmark), in the
//! OTLP dictionary model (its own dictionary per request, `thread.name` as a sample
//! attribute), so a few hundred distinct stacks per push. Pushes are spread evenly over
//! each 10 s. After a 20 s warm-up the collector's CPU is read from /proc for 60 s, and
//! the pushes' outcomes and latencies (request sent to answer read, which includes the
//! store's commit: the writer acknowledges after its flush) are counted.
//!
//! `cargo bench -p stackwatch-cli --bench push_ingest`
//! (`STACKWATCH_PUSH_SOURCES`, `STACKWATCH_PUSH_SECONDS` change the 1 000 and the 60 s;
//! `STACKWATCH_PUSH_FLUSH=100ms` sets the collector's `storage.flush_interval`.)

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use prost::Message;

mod common;
#[path = "../src/fleet_shape.rs"]
mod fleet_shape;

use common::otlp_request::{request, INTERVAL};
use common::{metric_sum, proc_cpu_seconds, spawn_server};

const TOKEN: &str = "push-bench-token";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What the senders saw during the measured window.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
    last_refusal: Mutex<Option<String>>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = |k: &str, d: u64| -> u64 {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let n_sources = env("STACKWATCH_PUSH_SOURCES", 1000) as usize;
    let secs = env("STACKWATCH_PUSH_SECONDS", 60);
    let warmup = Duration::from_secs(20);
    println!(
        "# push ingest benchmark, {} cores, {n_sources} sources every {} s, {secs} s measured",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        INTERVAL.as_secs()
    );

    // Three pushes' worth of profiles per process, built before the clock starts.
    let t0 = Instant::now();
    let services: Vec<_> = (0..20)
        .map(|s| fleet_shape::service_stacks(s, 300))
        .collect();
    let mut distinct = 0usize;
    let requests: Vec<Vec<ExportProfilesServiceRequest>> = (0..n_sources)
        .map(|i| {
            (0..3u64)
                .map(|w| {
                    let stacks = fleet_shape::draw_window(
                        &services[i % 20],
                        ((i as u64) << 32) ^ (w + 1),
                        1000,
                    );
                    distinct += stacks.len();
                    request(&format!("svc-{}", i % 20), &format!("host-{i}"), &stacks)
                })
                .collect()
        })
        .collect();
    let sample_body = requests[0][0].encode_to_vec();
    println!(
        "# built {} requests in {:.1} s: {:.0} distinct stacks per push, {} bytes of protobuf each (source 0)",
        n_sources * 3,
        t0.elapsed().as_secs_f64(),
        distinct as f64 / (n_sources * 3) as f64,
        sample_body.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[push]\nenabled = true\n[[push.tokens]]\ntoken = \"{TOKEN}\"\ntenant = \"bench\"\n",
        dir.path().join("data").display()
    );
    // The writer acknowledges a push once its batch is committed, so the flush interval
    // (default 1 s) is most of a push's latency.
    if let Ok(flush) = std::env::var("STACKWATCH_PUSH_FLUSH") {
        cfg.push_str(&format!("[storage]\nflush_interval = \"{flush}\"\n"));
        println!("# storage.flush_interval = {flush}");
    }
    std::fs::write(dir.path().join("s.toml"), cfg).unwrap();
    let (mut server, api) = spawn_server(
        &dir.path().join("s.toml"),
        "stackwatch-push-bench.log",
        "STACKWATCH_PUSH_LOG",
    );
    let pid = server.id();

    let seen = Arc::new(Seen::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n_sources)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("{api}/v1development/profiles");
    let start = Instant::now() + Duration::from_millis(500);
    let mut tasks = Vec::new();
    for (i, reqs) in requests.into_iter().enumerate() {
        let (client, url, seen, measuring, stop) = (
            client.clone(),
            url.clone(),
            seen.clone(),
            measuring.clone(),
            stop.clone(),
        );
        let offset = INTERVAL.mul_f64(i as f64 / n_sources as f64);
        tasks.push(rt.spawn(async move {
            let mut reqs = reqs;
            let mut tick = tokio::time::interval_at((start + offset).into(), INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let req = &mut reqs[n % 3];
                n += 1;
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                let p = &mut req.resource_profiles[0].scope_profiles[0].profiles[0];
                p.time_unix_nano = (now - INTERVAL).as_nanos() as u64;
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(8192),
                    flate2::Compression::fast(),
                );
                gz.write_all(&req.encode_to_vec()).unwrap();
                let body = gz.finish().unwrap();
                let counted = measuring.load(Ordering::Relaxed);
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "gzip")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(body)
                    .send()
                    .await;
                // Ok, or refused (a status other than 200, or a 200 carrying a partial
                // success), or the request failed.
                let outcome: Result<(), (bool, String)> = match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let answer = r.bytes().await.unwrap_or_default();
                        if status == 200 && answer.is_empty() {
                            Ok(())
                        } else {
                            Err((
                                false,
                                format!("{status}: {}", String::from_utf8_lossy(&answer)),
                            ))
                        }
                    }
                    Err(e) => Err((true, format!("request failed: {e}"))),
                };
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                if counted && measuring.load(Ordering::Relaxed) {
                    match outcome {
                        Ok(()) => {
                            seen.ok.fetch_add(1, Ordering::Relaxed);
                            seen.latencies_ms.lock().unwrap().push(ms);
                        }
                        Err((transport, why)) => {
                            if transport {
                                seen.errors.fetch_add(1, Ordering::Relaxed);
                            } else {
                                seen.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            *seen.last_refusal.lock().unwrap() = Some(why);
                        }
                    }
                }
            }
        }));
    }

    std::thread::sleep(warmup);
    let cpu0 = proc_cpu_seconds(pid);
    let rows0 = metric_sum(&api, "stackwatch_push_rows_total");
    let acc0 = metric_sum(
        &api,
        "stackwatch_push_requests_total{protocol=\"otlp\",outcome=\"accepted\"}",
    );
    let rej0 = metric_sum(
        &api,
        "stackwatch_push_requests_total{protocol=\"otlp\",outcome=\"rejected\"}",
    );
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(secs));
    measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds(pid) - cpu0;
    let rows = metric_sum(&api, "stackwatch_push_rows_total") - rows0;
    let accepted = metric_sum(
        &api,
        "stackwatch_push_requests_total{protocol=\"otlp\",outcome=\"accepted\"}",
    ) - acc0;
    let rejected = metric_sum(
        &api,
        "stackwatch_push_requests_total{protocol=\"otlp\",outcome=\"rejected\"}",
    ) - rej0;
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    drop(rt);

    let mut lat = std::mem::take(&mut *seen.latencies_ms.lock().unwrap());
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| profiles accepted/s (collector's count; one profile per push) | {:.1} |",
        accepted / wall
    );
    println!(
        "| stack-rows accepted/s ((label set, stack) rows handed to the store) | {:.0} |",
        rows / wall
    );
    println!(
        "| collector CPU, % of one core ({secs} s) | {:.1} |",
        cpu / wall * 100.0
    );
    println!(
        "| collector resident memory at the end, MiB | {:.0} |",
        rss_kb as f64 / 1024.0
    );
    println!(
        "| pushes refused (collector's count / senders': non-200 or partial / transport errors) | {rejected:.0} / {} / {} |",
        seen.refused.load(Ordering::Relaxed),
        seen.errors.load(Ordering::Relaxed)
    );
    println!(
        "| push latency p50 / p99 / max, ms ({} pushes) | {:.0} / {:.0} / {:.0} |",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    if let Some(why) = seen.last_refusal.lock().unwrap().as_ref() {
        println!("# last refusal: {why}");
    }
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = server.wait();
}
