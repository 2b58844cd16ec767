//! Throughput of the whole worker: generator -> framing -> decode -> JSON -> sink, pinned
//! to one core, with profiling off, with stackwatch at 99 Hz and with pprof-rs at 99 Hz,
//! into the null sink and into a local Redis. Every configuration runs in a fresh child
//! process (re-executing this binary), rounds interleaved, so the modes see the same
//! machine weather; the table reports medians and ratios to "off".
//!
//! `cargo bench -p binlog-streamer --bench throughput` (needs `redis-server` for the Redis
//! rows; set `BENCH_EVENTS` / `BENCH_REDIS_EVENTS` / `BENCH_ROUNDS` to change the size).

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use binlog_streamer::encode::MessageFormat;
use binlog_streamer::metrics::WorkerMetrics;
use binlog_streamer::pipeline::{self, PipelineOptions};
use binlog_streamer::sink::SinkSpec;
use binlog_streamer::source::GeneratorSource;

const MODES: [&str; 3] = ["off", "stackwatch-99hz", "pprof-rs-99hz"];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pin_to_cpu0() {
    // Safety: a zeroed cpu_set_t is valid; CPU_SET writes inside it; pid 0 is this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The child: one run, prints `events_per_second`.
fn child(mode: &str, sink: &str, events: u64) {
    pin_to_cpu0();
    let profiler = (mode == "stackwatch-99hz").then(|| {
        stackwatch::Profiler::builder()
            .frequency_hz(99)
            .start()
            .unwrap()
    });
    let pprof_guard = (mode == "pprof-rs-99hz").then(|| {
        pprof::ProfilerGuardBuilder::default()
            .frequency(99)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .unwrap()
    });
    let sink_spec: SinkSpec = sink.parse().unwrap();
    let sink = sink_spec.open(MessageFormat::Json).unwrap();
    let source = Box::new(GeneratorSource::new(1, None, Some(events)));
    let began = Instant::now();
    let summary = pipeline::run(
        source,
        sink,
        PipelineOptions::default(),
        Arc::new(WorkerMetrics::default()),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let secs = began.elapsed().as_secs_f64();
    assert_eq!(summary.events, events);
    let samples = match (&profiler, &pprof_guard) {
        (Some(p), _) => p.profile_cumulative().total(),
        (_, Some(g)) => g
            .report()
            .build()
            .map(|r| r.data.values().map(|&c| c as u64).sum())
            .unwrap_or(0),
        _ => 0,
    };
    println!("{} {}", events as f64 / secs, samples);
}

fn run_child(mode: &str, sink: &str, events: u64) -> (f64, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("BENCH_CHILD", format!("{mode} {sink} {events}"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "child {mode} {sink} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let rate = parts.next().unwrap().parse().unwrap();
    let samples = parts.next().unwrap().parse().unwrap();
    (rate, samples)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn table(sink_label: &str, sink: &str, events: u64, rounds: u64) {
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut samples = vec![0u64; MODES.len()];
    for round in 0..rounds {
        // Rotate the order every round so no mode always runs first.
        for k in 0..MODES.len() {
            let i = (k + round as usize) % MODES.len();
            let (rate, s) = run_child(MODES[i], sink, events);
            eprintln!(
                "  round {} {:>16} {:>12.0} events/s",
                round + 1,
                MODES[i],
                rate
            );
            rates[i].push(rate);
            samples[i] = samples[i].max(s);
        }
    }
    let base = median(&mut rates[0].clone());
    println!("\n{sink_label}: {events} row events per run, {rounds} rounds, pinned to CPU 0\n");
    println!("| profiling | events/s (median) | runs | vs off | samples in last run |");
    println!("|---|---|---|---|---|");
    for (i, mode) in MODES.iter().enumerate() {
        let m = median(&mut rates[i].clone());
        let runs: Vec<String> = rates[i]
            .iter()
            .map(|r| format!("{:.0}k", r / 1000.0))
            .collect();
        println!(
            "| {mode} | {:.0} | {} | {:+.1}% | {} |",
            m,
            runs.join(" / "),
            (m / base - 1.0) * 100.0,
            samples[i]
        );
    }
}

fn main() {
    if let Ok(spec) = std::env::var("BENCH_CHILD") {
        let mut p = spec.split(' ');
        let (mode, sink, events) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        child(mode, sink, events.parse().unwrap());
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_num("BENCH_ROUNDS", 3);
    table(
        "null sink",
        "null",
        env_num("BENCH_EVENTS", 3_000_000),
        rounds,
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn();
    let Ok(mut redis) = redis else {
        eprintln!(
            "redis-server not found: skipping the Redis table (apt-get install redis-server)"
        );
        return;
    };
    std::thread::sleep(Duration::from_millis(500));
    table(
        "Redis Streams sink (local redis-server, pipelined XADD per batch of 3000)",
        &format!("redis://127.0.0.1:{port}/bench"),
        env_num("BENCH_REDIS_EVENTS", 1_000_000),
        rounds,
    );
    let _ = redis.kill();
    let _ = redis.wait();
}
