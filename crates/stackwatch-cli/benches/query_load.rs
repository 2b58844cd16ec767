//! Query load on a large store while real workers are scraped (issue #10, "Proof").
//!
//! 1. A store of ~10 M raw rows (`samples_raw`) is written in a temp data dir through
//!    `SqliteStore::ingest`: 200 targets (20 services x 10 instances, one in ten
//!    `version="canary"`) x 60 one-minute windows covering the hour before the start,
//!    each window holding the same number of distinct stacks (drawn from a pool of
//!    14-25-frame stacks per service, `fleet_shape`), so `from=now-1h` has to read every
//!    row. Minute windows: the minute rollup holds as many rows as the raw table, so a
//!    query reads ~10 M rows whether it is answered from `samples_raw` or `samples_1m`.
//!    The rollup job is then run to completion (a store in steady state; set
//!    `STACKWATCH_LOAD_ROLLUP=0` to leave it to the server).
//! 2. Three real binlog-streamer workers (`stackwatch worker`, as `stackwatch demo` starts
//!    them: two `version="main"` writing JSON, one `version="canary"` writing Avro), each
//!    with its own profiler endpoint and 1 s windows.
//! 3. The release `stackwatch server` as a child process, its config in the temp dir:
//!    the three workers as `[[targets]]`, scraped every second.
//! 4. After a warm-up, N HTTP clients (threads, each its own keep-alive connection) loop
//!    for D seconds over `/api/profile.svg`, `/api/top`, `/api/timeseries`,
//!    `/api/diff.svg` (canary vs main) and `/api/profile.folded`, all `from=now-1h`,
//!    each request with a client timeout; the server's VmRSS and VmHWM are read from
//!    /proc every second. Scrape counters of the three workers are read from
//!    `/api/targets` (and `/metrics`) before and after the load.
//!
//! `cargo bench -p stackwatch-cli --bench query_load`
//!
//! Environment (defaults in brackets): `STACKWATCH_LOAD_ROWS` [10000000],
//! `STACKWATCH_LOAD_CLIENTS` [100], `STACKWATCH_LOAD_SECONDS` [60],
//! `STACKWATCH_LOAD_TIMEOUT` client timeout, s [30], `STACKWATCH_LOAD_WARMUP` s [10],
//! `STACKWATCH_LOAD_AFTER` s the server is watched after the clients stop [15],
//! `STACKWATCH_LOAD_WORKER_RATE` rows/s per worker [20000], `STACKWATCH_LOAD_ROLLUP` [1],
//! `STACKWATCH_LOAD_ROUTES` a comma-separated subset of the route names in the table [all],
//! `STACKWATCH_LOAD_SERVER_LOG` the server's RUST_LOG [warn],
//! `STACKWATCH_LOAD_SCRAPE_INTERVAL` [1s], `STACKWATCH_LOAD_FLUSH_INTERVAL` [server default],
//! `STACKWATCH_LOAD_RETRY_AFTER` [1]: a client answered 503 waits its `Retry-After` (0:
//! retries at once, a hostile client), `STACKWATCH_LOAD_KEEP=1` keeps the temp dir,
//! `STACKWATCH_LOAD_COMMIT` names the commit measured when the tree has no .git (an
//! export). The server's log goes to `$TMPDIR/stackwatch-query-load-server.log`, the RSS
//! samples to `$TMPDIR/stackwatch-query-load-rss.csv`.
//!
//! Everything runs on 127.0.0.1; every loop is bounded in time and count, and every child
//! process is killed on exit (and gets SIGTERM if this process dies: PR_SET_PDEATHSIG).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stackwatch_store::{IngestWindow, Labels, ProfileWriter, SqliteStore, StoreOptions};

#[path = "../src/fleet_shape.rs"]
#[allow(dead_code)] // draw_window: used by the collector benchmark, not here
mod fleet_shape;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A child process killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command whose process gets SIGTERM when this one dies.
fn child_command(exe: &str) -> Command {
    let mut cmd = Command::new(exe);
    // Safety: prctl is async-signal-safe and touches only the forked process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

const TARGETS: u64 = 200;
const SERVICES: u64 = 20;
const WINDOWS: i64 = 60;
const WINDOW_S: i64 = 60;

/// Writes ~`rows` raw rows covering the hour before now; returns (rows, seconds, rollup s).
fn build_store(db: &Path, rows: u64, rollup: bool) -> (u64, f64, f64) {
    let t0 = Instant::now();
    let mut store = SqliteStore::open(db, StoreOptions::default()).unwrap();
    let per_window = rows.div_ceil(TARGETS * WINDOWS as u64).max(1) as usize;
    let pool = (2 * per_window).max(300);
    let services: Vec<Vec<(String, f64)>> = (0..SERVICES)
        .map(|s| fleet_shape::service_stacks(s, pool))
        .collect();
    let end = now_s() / WINDOW_S * WINDOW_S;
    let start = end - WINDOWS * WINDOW_S;
    let mut batch: Vec<IngestWindow> = Vec::new();
    let mut in_batch = 0;
    let mut written = 0u64;
    'outer: for w in 0..WINDOWS {
        for t in 0..TARGETS {
            if written + in_batch as u64 >= rows {
                break 'outer;
            }
            let svc = &services[(t % SERVICES) as usize];
            let mut next = fleet_shape::rng((t << 20) ^ w as u64);
            let offset = (next() % pool as u64) as usize;
            let n = per_window.min((rows - written - in_batch as u64) as usize);
            let stacks: Vec<(String, u64)> = (0..n)
                .map(|i| {
                    let (stack, weight) = &svc[(offset + i) % pool];
                    (stack.clone(), 1 + (weight * 200.0) as u64 + next() % 8)
                })
                .collect();
            in_batch += stacks.len();
            let labels: Labels = [
                ("service".to_string(), format!("svc-{}", t % SERVICES)),
                ("instance".to_string(), format!("i-{t}")),
                (
                    "version".to_string(),
                    if t % 10 == 0 { "canary" } else { "main" }.to_string(),
                ),
            ]
            .into();
            batch.push(IngestWindow {
                labeled: Vec::new(),
                target: labels,
                instance: format!("inst-{t}"),
                seq: w as u64 + 1,
                start_unix_s: start + w * WINDOW_S,
                period_ns: 10_101_010,
                stacks,
            });
            if in_batch >= 50_000 {
                written += store.ingest(&batch).unwrap().rows as u64;
                batch.clear();
                in_batch = 0;
            }
        }
    }
    if !batch.is_empty() {
        written += store.ingest(&batch).unwrap().rows as u64;
    }
    let ingest_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    if rollup {
        // Bounded: each step rolls up a bounded amount; an hour of data needs far fewer.
        for _ in 0..100_000 {
            if !store.rollup(now_s()).unwrap() {
                break;
            }
        }
    }
    let rollup_s = t1.elapsed().as_secs_f64();
    assert_eq!(store.raw_rows().unwrap(), written);
    (written, ingest_s, rollup_s)
}

/// A real binlog-streamer worker, as `stackwatch demo` starts it; returns it and its
/// profiler's address.
fn worker(seed: u64, canary: bool, rate: u64, log: &Path) -> (Proc, String) {
    let mut cmd = child_command(env!("CARGO_BIN_EXE_stackwatch"));
    let (format, batch) = if canary {
        ("avro", "500")
    } else {
        ("json", "3000")
    };
    cmd.args([
        "worker",
        "--source",
        "generate",
        "--rate",
        &rate.to_string(),
    ])
    .args(["--seed", &seed.to_string()])
    .args(["--sink", "null", "--format", format, "--batch-size", batch])
    .args(["--http-addr", "127.0.0.1:0", "--profile-window-secs", "1"])
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn stackwatch worker");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut log = std::fs::File::create(log).ok();
    // Drains the worker's stderr until it exits (a full pipe would block the worker).
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(a) = line.strip_prefix("binlog-streamer: listening on http://") {
                    let _ = tx.send(a.trim().to_string());
                    sent = true;
                }
            }
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the worker prints its address");
    (Proc(child), addr)
}

/// Memory of a process from /proc/<pid>/status, KiB.
#[derive(Clone, Copy, Default)]
struct Mem {
    /// VmRSS.
    rss: u64,
    /// VmHWM: the peak of VmRSS over the process's life.
    hwm: u64,
    /// RssAnon: heap and stacks.
    anon: u64,
    /// RssFile: mapped files (the binary, shared libraries, any mmap'd database).
    file: u64,
}

fn rss_kib(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
    })
}

/// User + system CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[close + 2..].split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn get_text(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let mut r = agent.get(url).call().map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("{url}: status {}", r.status()));
    }
    r.body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())
}

/// Per-target scrape counters from `/api/targets`, by URL (missing fields read as 0).
fn target_counters(agent: &ureq::Agent, api: &str) -> BTreeMap<String, serde_json::Value> {
    let text = get_text(agent, &format!("{api}/api/targets")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| Some((t.get("url")?.as_str()?.to_string(), t.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn counter(t: Option<&serde_json::Value>, field: &str) -> Option<u64> {
    t?.get(field)?.as_u64()
}

/// The value of `name{...url="<url>"...}` in Prometheus text.
fn metric_for(metrics: &str, name: &str, url: &str) -> Option<f64> {
    let needle = format!("url=\"{url}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| l.contains(&needle))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

const ROUTES: [(&str, &str); 5] = [
    ("profile.svg", "/api/profile.svg?from=now-1h"),
    ("top", "/api/top?from=now-1h"),
    ("timeseries", "/api/timeseries?from=now-1h"),
    // base={version="main"}, query={version="canary"}
    (
        "diff.svg",
        "/api/diff.svg?from=now-1h&base=%7Bversion%3D%22main%22%7D&query=%7Bversion%3D%22canary%22%7D",
    ),
    ("profile.folded", "/api/profile.folded?from=now-1h"),
];

/// Outcome of one request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Status(u16),
    Timeout,
    Error,
}

struct Sample {
    route: usize,
    ms: f64,
    outcome: Outcome,
    bytes: u64,
    /// Retry-After of the answer, seconds.
    retry_after: Option<u64>,
}

fn client(
    id: usize,
    api: &str,
    deadline: Instant,
    timeout: Duration,
    max_requests: usize,
    honor_retry_after: bool,
    routes: &[usize],
) -> Vec<Sample> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build(),
    );
    let mut out = Vec::new();
    let mut i = id;
    while Instant::now() < deadline && out.len() < max_requests {
        let route = routes[i % routes.len()];
        i += 1;
        let t0 = Instant::now();
        let mut retry_after = None;
        let (outcome, bytes) = match agent.get(&format!("{api}{}", ROUTES[route].1)).call() {
            Ok(mut r) => {
                let status = r.status().as_u16();
                retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
                match std::io::copy(&mut r.body_mut().as_reader(), &mut std::io::sink()) {
                    Ok(n) => (Outcome::Status(status), n),
                    Err(e) if e.to_string().contains("timeout") => (Outcome::Timeout, 0),
                    Err(_) => (Outcome::Error, 0),
                }
            }
            Err(ureq::Error::Timeout(_)) => (Outcome::Timeout, 0),
            Err(_) => (Outcome::Error, 0),
        };
        out.push(Sample {
            route,
            ms: t0.elapsed().as_secs_f64() * 1000.0,
            outcome,
            bytes,
            retry_after,
        });
        if let (true, Some(s)) = (
            honor_retry_after && outcome == Outcome::Status(503),
            retry_after,
        ) {
            // A polite client waits as told (never past the end of the run).
            let left = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(Duration::from_secs(s).min(left));
        }
        if outcome == Outcome::Error {
            // A refused or reset connection: do not spin.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary_row(name: &str, samples: &[&Sample]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|s| s.ms).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let mut ok: Vec<f64> = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Status(200))
        .map(|s| s.ms)
        .collect();
    ok.sort_by(|a, b| a.total_cmp(b));
    let count = |f: &dyn Fn(Outcome) -> bool| samples.iter().filter(|s| f(s.outcome)).count();
    let bytes: u64 = samples.iter().map(|s| s.bytes).sum();
    format!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.1} |",
        samples.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        percentile(&ok, 0.5),
        percentile(&ok, 0.99),
        count(&|o| o == Outcome::Status(200)),
        count(&|o| o == Outcome::Status(503)),
        count(&|o| matches!(o, Outcome::Status(s) if s != 200 && s != 503)),
        count(&|o| o == Outcome::Timeout),
        count(&|o| o == Outcome::Error),
        bytes as f64 / 1e6,
    )
}

fn git(args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows: u64 = env_or("STACKWATCH_LOAD_ROWS", 10_000_000);
    let clients: usize = env_or("STACKWATCH_LOAD_CLIENTS", 100);
    let secs: u64 = env_or("STACKWATCH_LOAD_SECONDS", 60);
    let timeout = Duration::from_secs(env_or("STACKWATCH_LOAD_TIMEOUT", 30));
    let warmup = Duration::from_secs(env_or("STACKWATCH_LOAD_WARMUP", 10));
    let after = Duration::from_secs(env_or("STACKWATCH_LOAD_AFTER", 15));
    let rate: u64 = env_or("STACKWATCH_LOAD_WORKER_RATE", 20_000);
    let rollup = env_or("STACKWATCH_LOAD_ROLLUP", 1u8) != 0;
    let keep = env_or("STACKWATCH_LOAD_KEEP", 0u8) != 0;
    let honor_retry_after = env_or("STACKWATCH_LOAD_RETRY_AFTER", 1u8) != 0;
    let routes: Vec<usize> = match std::env::var("STACKWATCH_LOAD_ROUTES") {
        Ok(list) => ROUTES
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| list.split(',').any(|n| n.trim() == *name))
            .map(|(i, _)| i)
            .collect(),
        Err(_) => (0..ROUTES.len()).collect(),
    };
    assert!(!routes.is_empty(), "STACKWATCH_LOAD_ROUTES names no route");
    let server_log = std::env::var("STACKWATCH_LOAD_SERVER_LOG").unwrap_or_else(|_| "warn".into());
    let scrape_interval =
        std::env::var("STACKWATCH_LOAD_SCRAPE_INTERVAL").unwrap_or_else(|_| "1s".into());
    let flush_interval = std::env::var("STACKWATCH_LOAD_FLUSH_INTERVAL").ok();

    // A tree exported with `git archive` has no .git: STACKWATCH_LOAD_COMMIT names it.
    let commit = std::env::var("STACKWATCH_LOAD_COMMIT")
        .unwrap_or_else(|_| git(&["rev-parse", "--short=12", "HEAD"]));
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .lines()
        .count();
    println!(
        "# query load benchmark: {} cores, commit {}{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if commit.is_empty() {
            "unknown"
        } else {
            &commit
        },
        if dirty > 0 {
            format!(" + uncommitted changes in {dirty} tracked files")
        } else {
            String::new()
        }
    );
    println!(
        "# {rows} rows, {clients} clients x {secs} s, client timeout {} s, clients {} Retry-After, workers at {rate} rows/s, rollup before start: {rollup}",
        timeout.as_secs(),
        if honor_retry_after { "honour" } else { "ignore" }
    );
    println!(
        "# server config: [scrape] interval = {scrape_interval}, [storage] flush_interval = {}",
        flush_interval.as_deref().unwrap_or("(default)")
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = stackwatch_server::db_path(&data);
    let (written, ingest_s, rollup_s) = build_store(&db, rows, rollup);
    let db_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "# store: {written} raw rows written in {ingest_s:.1} s, rollup {rollup_s:.1} s, {:.0} MB on disk",
        db_bytes as f64 / 1e6
    );

    let workers: Vec<(Proc, String, &str)> =
        [("main-1", false), ("main-2", false), ("canary-1", true)]
            .into_iter()
            .enumerate()
            .map(|(i, (name, canary))| {
                let (p, addr) = worker(
                    i as u64 + 1,
                    canary,
                    rate,
                    &dir.path().join(format!("{name}.log")),
                );
                (p, addr, name)
            })
            .collect();
    let mut cfg = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"{scrape_interval}\"\n",
        data.display()
    );
    if let Some(f) = &flush_interval {
        cfg.push_str(&format!("[storage]\nflush_interval = \"{f}\"\n"));
    }
    for (_, addr, name) in &workers {
        cfg.push_str(&format!(
            "[[targets]]\nurl = \"http://{addr}\"\nlabels = {{ service = \"binlog-streamer\", instance = \"{name}\", version = \"{}\" }}\n",
            if name.starts_with("canary") { "canary" } else { "main" }
        ));
    }
    let config = dir.path().join("stackwatch.toml");
    std::fs::write(&config, &cfg).unwrap();
    let log_path = std::env::temp_dir().join("stackwatch-query-load-server.log");
    let mut server = child_command(env!("CARGO_BIN_EXE_stackwatch"));
    server
        .args(["server", "--config"])
        .arg(&config)
        .env("RUST_LOG", &server_log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut server = Proc(server.spawn().expect("spawn stackwatch server"));
    let pid = server.0.id();
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let api = format!(
        "http://{}",
        line.trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .trim_start_matches("http://")
    );
    println!("# server pid {pid} at {api}, log {}", log_path.display());

    // RSS every second, from now until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let rss_samples: Arc<Mutex<Vec<(f64, Mem)>>> = Arc::default();
    let started = Instant::now();
    let sampler = {
        let stop = stop.clone();
        let samples = rss_samples.clone();
        std::thread::spawn(move || {
            // Bounded: at most one hour of samples.
            for _ in 0..3600 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(m) = rss_kib(pid) {
                    samples
                        .lock()
                        .unwrap()
                        .push((started.elapsed().as_secs_f64(), m));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let probe = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .build(),
    );
    std::thread::sleep(warmup);
    let before = target_counters(&probe, &api);
    let rss_before = rss_kib(pid).unwrap_or_default();
    // The machine may be shared: its load average says how much.
    let loadavg = || {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let load_before = loadavg();
    let cpu_before = cpu_seconds(pid);

    let load_start = Instant::now();
    let deadline = load_start + Duration::from_secs(secs);
    let mark_load = started.elapsed().as_secs_f64();
    let handles: Vec<_> = (0..clients)
        .map(|id| {
            let api = api.clone();
            let routes = routes.clone();
            std::thread::spawn(move || {
                client(
                    id,
                    &api,
                    deadline,
                    timeout,
                    1_000_000,
                    honor_retry_after,
                    &routes,
                )
            })
        })
        .collect();
    let samples: Vec<Sample> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    // With no clients (a control run) the server is still watched for the whole time.
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let load_wall = load_start.elapsed().as_secs_f64();
    let mark_end = started.elapsed().as_secs_f64();
    let cpu_load = cpu_seconds(pid) - cpu_before;
    let load_end = loadavg();
    let after_load = target_counters(&probe, &api);
    let metrics_after = get_text(&probe, &format!("{api}/metrics")).unwrap_or_default();
    let rss_end = rss_kib(pid).unwrap_or_default();
    // The server after the clients left: how long does it stay busy, what does it keep?
    let cpu_end = cpu_seconds(pid);
    std::thread::sleep(after);
    let cpu_after = cpu_seconds(pid) - cpu_end;
    let rss_after = rss_kib(pid).unwrap_or_default();
    let t_probe = Instant::now();
    let probe_status = probe
        .get(&format!("{api}/api/top?from=now-5m&limit=5"))
        .call()
        .map(|r| r.status().as_u16().to_string())
        .unwrap_or_else(|e| e.to_string());
    let probe_ms = t_probe.elapsed().as_secs_f64() * 1000.0;
    let final_counters = target_counters(&probe, &api);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let alive = matches!(server.0.try_wait(), Ok(None));

    // Latency table.
    println!();
    println!(
        "| route | requests | p50 ms | p99 ms | max ms | p50 ms (200) | p99 ms (200) | 200 | 503 | other status | timeouts | errors | MB received |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &i in &routes {
        let name = ROUTES[i].0;
        let s: Vec<&Sample> = samples.iter().filter(|s| s.route == i).collect();
        println!("{}", summary_row(name, &s));
    }
    let all: Vec<&Sample> = samples.iter().collect();
    println!("{}", summary_row("**all**", &all));
    let mut other: BTreeMap<u16, usize> = BTreeMap::new();
    for s in &samples {
        if let Outcome::Status(c) = s.outcome {
            if c != 200 && c != 503 {
                *other.entry(c).or_default() += 1;
            }
        }
    }
    if !other.is_empty() {
        println!("other statuses: {other:?}");
    }
    let mut retry: BTreeMap<u64, usize> = BTreeMap::new();
    for s in &samples {
        if let (Outcome::Status(503), Some(r)) = (s.outcome, s.retry_after) {
            *retry.entry(r).or_default() += 1;
        }
    }
    let no_retry = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Status(503) && s.retry_after.is_none())
        .count();
    println!("503s by Retry-After (seconds: count): {retry:?}; without Retry-After: {no_retry}");

    // Memory.
    let rss = rss_samples.lock().unwrap().clone();
    let peak_during = rss
        .iter()
        .filter(|s| s.0 >= mark_load && s.0 <= mark_end + 1.0)
        .map(|s| s.1)
        .max_by_key(|m| m.rss)
        .unwrap_or_default();
    let hwm = rss
        .iter()
        .map(|s| s.1.hwm)
        .max()
        .unwrap_or(0)
        .max(rss_after.hwm);
    let mib = |k: u64| k as f64 / 1024.0;
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| requests completed in {load_wall:.1} s (load {secs} s + stragglers) | {} ({:.1}/s) |",
        samples.len(),
        samples.len() as f64 / load_wall
    );
    println!(
        "| server RSS before the load (VmRSS), MiB | {:.1} |",
        mib(rss_before.rss)
    );
    println!(
        "| server peak RSS, VmHWM (whole life), MiB | {:.1} (target < 512) |",
        mib(hwm)
    );
    println!(
        "| server peak VmRSS sampled during the load (1 s samples), MiB: total (anon + file) | {:.1} ({:.1} + {:.1}) |",
        mib(peak_during.rss),
        mib(peak_during.anon),
        mib(peak_during.file)
    );
    println!(
        "| server VmRSS when the clients finished / {} s later, MiB: total (anon + file) | {:.1} ({:.1} + {:.1}) / {:.1} ({:.1} + {:.1}) |",
        after.as_secs(),
        mib(rss_end.rss),
        mib(rss_end.anon),
        mib(rss_end.file),
        mib(rss_after.rss),
        mib(rss_after.anon),
        mib(rss_after.file)
    );
    println!(
        "| server CPU during the load, % of one core | {:.0} |",
        cpu_load / load_wall * 100.0
    );
    println!(
        "| server CPU in the {} s after the clients left, s | {cpu_after:.1} |",
        after.as_secs()
    );
    println!(
        "| probe `/api/top?from=now-5m` {} s after the load | {probe_status} in {probe_ms:.0} ms |",
        after.as_secs()
    );
    println!("| server alive at the end | {alive} |");
    println!("| machine load average (1/5/15 min) before / at the end of the load | {load_before} / {load_end} |");

    // Scrapes of the real workers.
    println!();
    println!("| worker | up (end) | scrapes during load | failures during load | skipped during load | failures / skipped in the {} s after | samples ingested during load | windows lost during load | last_error |", after.as_secs());
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    let mut total_fail = 0;
    let mut total_skip = 0;
    for (_, addr, name) in &workers {
        let url = format!("http://{addr}");
        let (b, a, f) = (
            before.get(&url),
            after_load.get(&url),
            final_counters.get(&url),
        );
        let delta = |x: Option<&serde_json::Value>, y: Option<&serde_json::Value>, k: &str| match (
            counter(x, k),
            counter(y, k),
        ) {
            (Some(p), Some(q)) => Some(q.saturating_sub(p)),
            _ => None,
        };
        let show = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
        let fails = delta(b, a, "scrape_failures_total");
        let skips = delta(b, a, "scrapes_skipped_total");
        total_fail += fails.unwrap_or(0);
        total_skip += skips.unwrap_or(0);
        // Cross-check with /metrics (cumulative since the server started).
        let m_fail = metric_for(
            &metrics_after,
            "stackwatch_target_scrape_failures_total",
            &url,
        );
        let m_skip = metric_for(
            &metrics_after,
            "stackwatch_target_scrapes_skipped_total",
            &url,
        );
        println!(
            "| {name} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            f.and_then(|t| t.get("up"))
                .map_or("n/a".into(), |v| v.to_string()),
            show(delta(b, a, "scrapes_total")),
            show(fails),
            show(skips),
            show(delta(a, f, "scrape_failures_total")),
            show(delta(a, f, "scrapes_skipped_total")),
            show(delta(b, a, "samples_ingested_total")),
            show(delta(b, a, "windows_lost_total")),
            f.and_then(|t| t.get("last_error"))
                .filter(|v| !v.is_null())
                .map_or("-".into(), |v| v.to_string()),
        );
        println!(
            "|  /metrics cumulative since start (failures, skipped) | | | {} | {} | | | | |",
            m_fail.map_or("n/a".into(), |v| v.to_string()),
            m_skip.map_or("n/a".into(), |v| v.to_string())
        );
    }
    println!();
    println!(
        "scrape failures / skips of the real workers during the load: {total_fail} / {total_skip} (target 0 / 0)"
    );
    // Whatever the server reports about queries (shedding, budgets), if it does.
    let query_lines: Vec<&str> = metrics_after
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("stackwatch_target_"))
        .collect();
    if !query_lines.is_empty() {
        println!();
        println!("/metrics after the load (collector-wide series):");
        for l in query_lines {
            println!("  {l}");
        }
    }
    let csv = std::env::temp_dir().join("stackwatch-query-load-rss.csv");
    if let Ok(mut f) = std::fs::File::create(&csv) {
        let _ = writeln!(
            f,
            "seconds,vmrss_kib,vmhwm_kib,rssanon_kib,rssfile_kib,phase"
        );
        for (t, m) in &rss {
            let phase = if *t < mark_load {
                "before"
            } else if *t <= mark_end {
                "load"
            } else {
                "after"
            };
            let _ = writeln!(
                f,
                "{t:.1},{},{},{},{},{phase}",
                m.rss, m.hwm, m.anon, m.file
            );
        }
        println!("RSS samples: {}", csv.display());
    }

    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && matches!(server.0.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    drop(workers);
    if keep {
        println!("kept: {}", dir.keep().display());
    }
}
