//! Collector and store benchmark.
//!
//! Part 1, the store (in-process): 100 targets x 24 h of 5-minute windows (1 000 samples
//! each over a 300-stack Zipf profile per service, ~20 frames deep), ingested in
//! 50 000-row transactions; rollups run to completion; then the merged profile of all 100
//! targets over the last hour (unaligned) and over 24 h; and bytes on disk per row.
//!
//! Part 2, the live fleet: `stackwatch-fleet-sim fake` serves 1 000 simulated targets
//! (10 s windows) and `stackwatch server` scrapes them every 10 s; after a warm-up the
//! collector's CPU is measured from /proc for 60 s, and its /metrics tell whether any
//! scrape fell behind.
//!
//! `cargo bench -p stackwatch-cli --bench collector`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stackwatch_store::{
    IngestWindow, ProfileReader, ProfileWriter, Selector, SqliteStore, StoreOptions,
};

mod common;
#[path = "../src/fleet_shape.rs"]
mod fleet_shape;

use common::{fleet_window, median, median_profile_ms, metric_sum, proc_cpu_seconds, spawn_server};

fn store_part() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stackwatch.db");
    let mut store = SqliteStore::open(&db, StoreOptions::default()).unwrap();
    let services: Vec<_> = (0..20)
        .map(|s| fleet_shape::service_stacks(s, 300))
        .collect();
    let end: i64 = 1_795_000_000 / 3600 * 3600;
    let start = end - 86_400;
    let step = 300;
    let mut batch: Vec<IngestWindow> = Vec::new();
    let mut rows_in_batch = 0;
    let mut rows = 0u64;
    let mut ingest_time = Duration::ZERO;
    for ts in (start..end).step_by(step) {
        for t in 0..100u64 {
            let stacks =
                fleet_shape::draw_window(&services[(t % 20) as usize], (t << 32) ^ ts as u64, 1000);
            rows_in_batch += stacks.len();
            let seq = ((ts - start) / step as i64 + 1) as u64;
            batch.push(fleet_window(t, seq, ts, stacks));
            if rows_in_batch >= 50_000 {
                let t0 = Instant::now();
                rows += store.ingest(&batch).unwrap().rows as u64;
                ingest_time += t0.elapsed();
                batch.clear();
                rows_in_batch = 0;
            }
        }
    }
    let t0 = Instant::now();
    rows += store.ingest(&batch).unwrap().rows as u64;
    ingest_time += t0.elapsed();
    let t0 = Instant::now();
    let mut steps = 0;
    while store.rollup(end + 86_400).unwrap() {
        steps += 1;
    }
    let rollup_time = t0.elapsed();
    let q1h = median_profile_ms(&store, end - 3600 - 17, end - 17);
    let q24h = median_profile_ms(&store, start, end);
    let all = Selector::all();
    let series = {
        let t0 = Instant::now();
        store.timeseries(&all, start, end, 600).unwrap();
        t0.elapsed().as_secs_f64() * 1000.0
    };
    drop(store);
    let conn_bytes: u64 = ["stackwatch.db", "stackwatch.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| rows ingested (100 targets x 24 h, 5-min windows) | {rows} |");
    println!(
        "| ingest rate, stack-rows/s | {:.0} |",
        rows as f64 / ingest_time.as_secs_f64()
    );
    println!(
        "| rollup of 24 h (1m + 1h), s | {:.1} ({steps} steps) |",
        rollup_time.as_secs_f64()
    );
    println!("| query: merged profile, 100 targets x last 1 h, ms (median of 5) | {q1h:.0} |");
    println!("| query: merged profile, 100 targets x 24 h, ms (median of 5) | {q24h:.0} |");
    println!("| query: CPU time series, 100 targets x 24 h, 10-min step, ms | {series:.0} |");
    println!("| bytes on disk per stored (target, window, stack) row, all tables and stacks included | {:.1} |", conn_bytes as f64 / rows as f64);
}

/// `GET /api/profile.svg` of a window with 10 000 distinct stacks, in-process server.
fn svg_part() {
    let dir = tempfile::tempdir().unwrap();
    let now = stackwatch_profile::clock::unix_s();
    {
        let mut s =
            SqliteStore::open(&dir.path().join("stackwatch.db"), StoreOptions::default()).unwrap();
        let stacks = (0..10_000)
            .map(|i| {
                let frames: Vec<String> = (0..14)
                    .map(|d| format!("app::module_{d}::function_{}", (i >> d) & 3))
                    .collect();
                (
                    format!("worker;{};leaf_{i}", frames.join(";")),
                    1 + (i % 7) as u64,
                )
            })
            .collect();
        s.ingest(&[IngestWindow {
            labeled: Vec::new(),
            target: [("service".to_string(), "big".to_string())].into(),
            instance: "i".into(),
            seq: 1,
            start_unix_s: now - 60,
            period_ns: 10_101_010,
            stacks,
        }])
        .unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = stackwatch_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let server = rt.block_on(stackwatch_server::Server::bind(cfg)).unwrap();
    let url = format!(
        "http://{}/api/profile.svg?from=now-10m",
        server.local_addr()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = rt.spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut size = 0;
    let times: Vec<f64> = (0..7)
        .map(|_| {
            let t0 = Instant::now();
            size = ureq::get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_vec()
                .unwrap()
                .len();
            t0.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    println!("| API: GET /api/profile.svg, 10 000 distinct stacks ({:.1} MB SVG), ms (median of 7) | {:.0} |", size as f64 / 1e6, median(times));
    let _ = stop.send(());
    let _ = rt.block_on(running);
}

fn fleet_part() {
    let secs: u64 = std::env::var("STACKWATCH_FLEET_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_stackwatch-fleet-sim"))
        .args(["fake", "--targets", "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let mut cfg = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"10s\"\ntimeout = \"5s\"\n",
        dir.path().join("data").display()
    );
    for i in 0..1000 {
        cfg.push_str(&format!(
            "[[targets]]\nurl = \"http://{addr}/t/{i}\"\nlabels = {{ service = \"svc-{}\", instance = \"i-{i}\" }}\n",
            i % 20
        ));
    }
    std::fs::write(dir.path().join("s.toml"), cfg).unwrap();
    let (mut c, api) = spawn_server(
        &dir.path().join("s.toml"),
        "stackwatch-fleet-bench.log",
        "STACKWATCH_FLEET_LOG",
    );
    // Warm-up: the first scrape of each target catches up its 10 windows of history.
    std::thread::sleep(Duration::from_secs(25));
    let metrics = |name: &str| metric_sum(&api, name);
    let cpu0 = proc_cpu_seconds(c.id());
    let rows0 = metrics("stackwatch_ingest_rows_total");
    let scrapes0 = metrics("stackwatch_target_scrape_failures_total");
    let skipped0 = metrics("stackwatch_target_scrapes_skipped_total");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = proc_cpu_seconds(c.id()) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let rows = metrics("stackwatch_ingest_rows_total") - rows0;
    let failures = metrics("stackwatch_target_scrape_failures_total") - scrapes0;
    let skipped = metrics("stackwatch_target_scrapes_skipped_total") - skipped0;
    let up = metrics("stackwatch_target_up{");
    println!("| live fleet: targets up | {up:.0} of 1000 |");
    println!(
        "| live fleet: collector CPU, % of one core ({secs} s) | {:.1} |",
        cpu / wall * 100.0
    );
    println!("| live fleet: stack-rows ingested/s | {:.0} |", rows / wall);
    println!(
        "| live fleet: scrapes skipped (fell behind) / failed during the {secs} s | {skipped:.0} / {failures:.0} |"
    );
    println!("| live fleet: scrapes skipped during the 25 s warm-up (each target's first scrape fetches 10 windows) | {skipped0:.0} |");
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = c.wait();
    let _ = sim.kill();
    let _ = sim.wait();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!(
        "# collector benchmark, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let part = std::env::var("STACKWATCH_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "store" {
        store_part();
    }
    if part.is_empty() || part == "svg" {
        svg_part();
    }
    if part.is_empty() || part == "fleet" {
        fleet_part();
    }
}
