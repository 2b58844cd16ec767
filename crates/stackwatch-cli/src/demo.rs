//! `stackwatch demo`: a small fleet, its collector and the dashboard, in one command.
//!
//! Three `binlog-streamer` workers run as child processes of this very binary
//! (`stackwatch worker ...`, each with its own profiler): two `version="main"` publishing
//! JSON in batches of 3000, and one `version="canary"` trying Avro in batches of 500. The
//! canary's profile shows the change: Avro encoding (a value tree and a hash map per row)
//! where main spends its time writing JSON, so Compare answers "what changed with the
//! canary". The collector scrapes them every 2 s into `./stackwatch-data` and serves the
//! dashboard on 127.0.0.1:7070. Ctrl-C stops the server and every worker; a second run
//! reuses the data directory.
//!
//! The workers' generator writes three tables of different shapes (`shop.orders` wide,
//! `shop.users` narrow, `shop.events` with a JSON document per row), and each worker
//! labels its samples by `table`, `db` and `op` (and its publishing by `sink`), so "CPU
//! by table" works out of the box: the demo prints an Explore link with one line per
//! table and the `/api/timeseries?group_by=table` request behind it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use stackwatch_server::config::TargetConfig;
use stackwatch_store::ProfileReader;

/// Flags of `stackwatch demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the collector keeps its SQLite store (reused by the next run).
    #[arg(long, default_value = "stackwatch-data")]
    pub data_dir: PathBuf,
    /// Dashboard and API port on 127.0.0.1.
    #[arg(long, default_value_t = 7070)]
    pub port: u16,
    /// Row changes per second each worker generates.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
}

/// One demo worker.
struct DemoWorker {
    name: &'static str,
    version: &'static str,
    settings: WorkerSettings,
    child: Child,
    addr: String,
}

/// What differs between main and canary.
#[derive(Clone, Copy)]
struct WorkerSettings {
    format: &'static str,
    batch_size: u32,
}

const MAIN: WorkerSettings = WorkerSettings {
    format: "json",
    batch_size: 3000,
};
const CANARY: WorkerSettings = WorkerSettings {
    format: "avro",
    batch_size: 500,
};

const WORKERS: [(&str, &str, WorkerSettings); 3] = [
    ("main-1", "main", MAIN),
    ("main-2", "main", MAIN),
    ("canary-1", "canary", CANARY),
];

const SCRAPE_EVERY: Duration = Duration::from_secs(2);

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn run(args: DemoArgs) -> Result<()> {
    if !cfg!(feature = "demo") {
        bail!(
            "this stackwatch was built without the `demo` feature (the reference worker, with its MariaDB, Redis and Avro clients): run the demo from the repository with `cargo run --release -p stackwatch-cli -- demo`, or install it with `cargo install stackwatch-cli --features demo`"
        );
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    if let Err(e) = std::net::TcpListener::bind(addr) {
        bail!(
            "127.0.0.1:{} is taken ({e}); choose another port with --port, e.g. `stackwatch demo --port {}`",
            args.port,
            args.port.wrapping_add(1).max(1024)
        );
    }
    let logs = args.data_dir.join("worker-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut workers = Vec::new();
    for (i, (name, version, settings)) in WORKERS.into_iter().enumerate() {
        match start_worker(name, version, settings, i as u64 + 1, &args, &logs) {
            Ok(w) => workers.push(w),
            Err(e) => {
                stop_workers(&mut workers);
                return Err(e);
            }
        }
    }
    let result = serve(&args, addr, &mut workers);
    let stopped = stop_workers(&mut workers);
    println!("stackwatch demo: stopped the collector and {stopped} workers");
    result
}

fn start_worker(
    name: &'static str,
    version: &'static str,
    settings: WorkerSettings,
    seed: u64,
    args: &DemoArgs,
    logs: &Path,
) -> Result<DemoWorker> {
    let exe = std::env::current_exe().context("finding the stackwatch binary")?;
    let checkpoint = args.data_dir.join(format!("{name}.checkpoint.json"));
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .args(["--source", "generate", "--rate", &args.rate.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--sink", "null", "--format", settings.format])
        .args(["--batch-size", &settings.batch_size.to_string()])
        .arg("--checkpoint")
        .arg(&checkpoint)
        .args(["--http-addr", "127.0.0.1:0", "--profile-window-secs", "2"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Safety: prctl is async-signal-safe and touches only this (forked) process. If the
    // demo dies without cleaning up (SIGKILL), the kernel sends the worker SIGTERM.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting a worker")?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let log_path = logs.join(format!("{name}.log"));
    std::thread::spawn(move || {
        let mut log = std::fs::File::create(&log_path).ok();
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
    let addr = match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "worker {name} did not start; see {}",
                logs.join(format!("{name}.log")).display()
            );
        }
    };
    Ok(DemoWorker {
        name,
        version,
        settings,
        child,
        addr,
    })
}

fn labels(w: &DemoWorker) -> stackwatch_store::Labels {
    [
        ("service", "binlog-streamer"),
        ("instance", w.name),
        ("version", w.version),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn serve(args: &DemoArgs, addr: SocketAddr, workers: &mut [DemoWorker]) -> Result<()> {
    let mut cfg = stackwatch_server::Config {
        listen: addr,
        data_dir: args.data_dir.clone(),
        ..stackwatch_server::Config::default()
    };
    cfg.scrape.interval = SCRAPE_EVERY;
    cfg.targets = workers
        .iter()
        .map(|w| TargetConfig {
            url: format!("http://{}", w.addr),
            kind: Default::default(),
            labels: labels(w),
            ..Default::default()
        })
        .collect();
    // A second run reuses the store: what is there before this run's collector starts
    // belongs to earlier runs (each worker process has its own instance id).
    let db = stackwatch_server::db_path(&args.data_dir);
    let earlier = earlier_instances(&db);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let server = rt
        .block_on(stackwatch_server::Server::bind(cfg))
        .map_err(|e| {
            anyhow::anyhow!(
                "{:#}; choose another port with --port",
                anyhow::Error::new(e)
            )
        })?;
    let base = format!("http://{}", server.local_addr());
    let data_dir = std::fs::canonicalize(&args.data_dir).unwrap_or(args.data_dir.clone());
    println!("stackwatch demo: 3 binlog-streamer workers on the built-in generator ({} rows/s each), collector storing into {}", args.rate, data_dir.display());
    for w in workers.iter() {
        println!(
            "  worker {:<8} version={:<6} --format {:<4} --batch-size {:<4} pid {:<7} http://{}",
            w.name,
            w.version,
            w.settings.format,
            w.settings.batch_size,
            w.child.id(),
            w.addr
        );
    }
    println!("dashboard: {base}/");
    println!(
        "canary vs main: {base}/#/compare?base=%7Bversion%3D%22main%22%7D&query=%7Bversion%3D%22canary%22%7D&from=now-15m&to=now"
    );
    println!(
        "profile: curl -sG {base}/api/profile.svg --data-urlencode 'query={{service=\"binlog-streamer\"}}' -d from=now-15m > profile.svg"
    );
    println!(
        "CPU by table: {base}/#/explore?query=%7Bservice%3D%22binlog-streamer%22%7D&group_by=table&from=now-15m&to=now"
    );
    println!(
        "CPU by table: curl -sG {base}/api/timeseries --data-urlencode 'query={{service=\"binlog-streamer\"}}' -d group_by=table -d from=now-5m"
    );
    println!("Ctrl-C stops the collector and the workers.");
    let _ = std::io::stdout().flush();
    let progress = {
        let targets: Vec<_> = workers.iter().map(|w| (w.name, labels(w))).collect();
        std::thread::spawn(move || report_progress(&db, &targets, &earlier))
    };
    let result = rt.block_on(server.run(crate::signal::shutdown_signal()));
    drop(progress);
    result.map_err(Into::into)
}

/// Every instance with a checkpoint in the store at `db` (none when there is no store yet).
fn earlier_instances(db: &Path) -> HashSet<String> {
    let Ok(store) = stackwatch_store::SqliteStore::open_reader(db) else {
        return HashSet::new();
    };
    let targets = store.targets().unwrap_or_default();
    targets
        .iter()
        .flat_map(|t| store.checkpoints(t).unwrap_or_default())
        .map(|c| c.instance)
        .collect()
}

/// Prints how many windows of each worker this run has stored until every worker has
/// some (the instances in `earlier`, from earlier runs, do not count).
fn report_progress(
    db: &Path,
    targets: &[(&str, stackwatch_store::Labels)],
    earlier: &HashSet<String>,
) {
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Ok(store) = stackwatch_store::SqliteStore::open_reader(db) else {
            continue;
        };
        let counts: Vec<(String, u64)> = targets
            .iter()
            .map(|(name, l)| {
                let n = store
                    .checkpoints(l)
                    .map(|cps| {
                        cps.iter()
                            .filter(|c| !earlier.contains(&c.instance))
                            .map(|c| c.last_seq)
                            .max()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0);
                (name.to_string(), n)
            })
            .collect();
        let line = counts
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let ready = counts.iter().all(|(_, c)| *c >= 2);
        let mut out = std::io::stdout().lock();
        if ready {
            let _ = writeln!(
                out,
                "{}ready after {:.0} s: windows stored per worker: {line}; open the dashboard",
                if tty { "\r\x1b[2K" } else { "" },
                started.elapsed().as_secs_f64()
            );
            return;
        }
        if tty {
            let _ = write!(
                out,
                "\r\x1b[2Kwaiting for the first profile windows: {line}"
            );
        } else {
            let _ = writeln!(out, "waiting for the first profile windows: {line}");
        }
        let _ = out.flush();
    }
}

/// SIGTERM to every worker, then SIGKILL to any still running after 5 s. Returns how many
/// exited.
fn stop_workers(workers: &mut Vec<DemoWorker>) -> usize {
    for w in workers.iter() {
        // Safety: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut exited = 0;
    for w in workers.iter_mut() {
        loop {
            match w.child.try_wait() {
                Ok(Some(_)) => {
                    exited += 1;
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    exited += 1;
                    break;
                }
            }
        }
    }
    workers.clear();
    exited
}
