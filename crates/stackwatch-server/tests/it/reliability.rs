//! Issue 24: nothing acknowledged is lost when the store is busy, and one data directory
//! has one collector.
//!
//! - A cumulative folded target scraped while another process holds SQLite's write lock
//!   (longer than the busy timeout, so the writer's backlog fills and refuses) stores
//!   every period once the lock is gone, each exactly once.
//! - An interval a budget refuses is dropped and counted, and the baseline moves on.
//! - Deleting `stackwatch.lock` does not let a second collector onto the data directory.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::routing::get;
use stackwatch_profile::protocol::{Window, WindowsResponse};
use stackwatch_server::config::{FoldedCounts, TargetKind};
use stackwatch_store::{ProfileReader, SqliteStore};

use common::{runtime, scrape_config, serve, target, Collector};

/// A fake cumulative folded endpoint: the n-th answer counts `n * step` periods of
/// `main;work` (plus `jump` once `jump_at` answers are served), until `frozen`, from then
/// on the same counts again. Returns the router and its (answers served, frozen) state.
struct Cumulative {
    served: AtomicU64,
    frozen_at: AtomicU64,
    frozen: AtomicBool,
    step: u64,
    jump: u64,
    jump_at: u64,
}

impl Cumulative {
    fn new(step: u64, jump: u64, jump_at: u64) -> Arc<Cumulative> {
        Arc::new(Cumulative {
            served: AtomicU64::new(0),
            frozen_at: AtomicU64::new(0),
            frozen: AtomicBool::new(false),
            step,
            jump,
            jump_at,
        })
    }

    /// The counter after `n` answers.
    fn count(&self, n: u64) -> u64 {
        n * self.step + if n >= self.jump_at { self.jump } else { 0 }
    }

    /// The next answer's counter.
    fn next(&self) -> u64 {
        if self.frozen.load(Ordering::SeqCst) {
            return self.count(self.frozen_at.load(Ordering::SeqCst));
        }
        self.count(self.served.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Stops the counter; returns its final value.
    fn freeze(&self) -> u64 {
        // The answer being built may still count one more: freeze past it.
        let n = self.served.load(Ordering::SeqCst) + 1;
        self.frozen_at.store(n, Ordering::SeqCst);
        self.frozen.store(true, Ordering::SeqCst);
        self.count(n)
    }

    fn router(self: &Arc<Self>) -> axum::Router {
        let me = self.clone();
        axum::Router::new().route(
            "/folded",
            get(move || {
                let me = me.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain")],
                        format!("main;work {}\n", me.next()),
                    )
                }
            }),
        )
    }
}

/// A fake window-protocol worker: each request adds one window (10 periods of
/// `main;window`, a second apart) until frozen; it retains every window.
struct Windowed {
    /// The latest sequence, and whether it is frozen.
    latest: std::sync::Mutex<(u64, bool)>,
    start_ms: u64,
}

type Params = axum::extract::Query<std::collections::HashMap<String, String>>;

impl Windowed {
    fn new() -> Arc<Windowed> {
        Arc::new(Windowed {
            latest: std::sync::Mutex::new((0, false)),
            start_ms: stackwatch_profile::clock::unix_ms() - 3_600_000,
        })
    }

    /// The answer to `GET /windows?after=...`.
    fn answer(&self, after: u64) -> Vec<u8> {
        let latest = {
            let mut l = self.latest.lock().unwrap();
            if !l.1 {
                l.0 += 1;
            }
            l.0
        };
        let windows = (after + 1..=latest)
            .map(|seq| {
                let start_unix_ms = self.start_ms + seq * 1000;
                Window {
                    seq,
                    start_unix_ms,
                    end_unix_ms: start_unix_ms + 1000,
                    samples: 10,
                    dropped: 0,
                    pruned_stacks: 0,
                    stacks: vec![("main;window".into(), 10)],
                    labeled: Vec::new(),
                }
            })
            .collect();
        serde_json::to_vec(&WindowsResponse {
            version: 1,
            instance: "w1".into(),
            frequency_hz: 99,
            period_ns: 10_101_010,
            window_seconds: 1,
            oldest_seq: 1,
            latest_seq: latest,
            windows,
        })
        .unwrap()
    }

    fn router(self: &Arc<Self>) -> axum::Router {
        let me = self.clone();
        axum::Router::new().route(
            "/windows",
            get(move |q: Params| {
                let me = me.clone();
                async move {
                    let after = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        me.answer(after),
                    )
                }
            }),
        )
    }

    /// Stops adding windows; returns the last sequence.
    fn freeze(&self) -> u64 {
        let mut l = self.latest.lock().unwrap();
        l.1 = true;
        l.0
    }
}

/// Periods stored for `service`, read from the SQLite file beside the collector.
fn stored(c: &Collector, service: &str) -> u64 {
    let reader = SqliteStore::open_reader(&stackwatch_server::db_path(c.data_dir())).unwrap();
    reader
        .raw_totals()
        .unwrap()
        .into_iter()
        .filter(|(l, _)| l.get("service").is_some_and(|s| s == service))
        .map(|(_, n)| n)
        .sum()
}

/// A metric's value from `/metrics` (the first sample of that name).
fn metric(c: &Collector, name: &str) -> u64 {
    let text = c.text("/metrics", &[]);
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = rest.rsplit(' ').next()?;
            (rest.starts_with(' ') || rest.starts_with('{')).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// Waits (up to two minutes) for `done`, saying `what` if it never holds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to two minutes) until `service` has at least `want` periods stored.
fn wait_stored(c: &Collector, service: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = stored(c, service);
        if got >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service}: {got} of {want} periods stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 2 of issue 24: the baseline of a cumulative folded target advanced before the
/// write, so a refused write lost its interval for good (1 200 of 1 300 periods stored
/// with SQLite locked 8 s). Here another connection holds SQLite's write lock for 15 s
/// (the 5 s busy timeout three times over) with a backlog of one row, so writes are both
/// backlogged and refused as transient; once the lock is gone every period is stored,
/// exactly once. A window-protocol target scraped beside it stores every window once
/// too (its checkpoint advances only after a commit or an acknowledged backlog).
#[test]
fn a_cumulative_folded_target_loses_nothing_while_the_store_is_locked() {
    let rt = runtime();
    let worker = Cumulative::new(100, 0, u64::MAX);
    let addr = serve(&rt, worker.router());
    let windowed = Windowed::new();
    let waddr = serve(&rt, windowed.router());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = scrape_config(dir.path(), Duration::from_secs(5));
    let mut t = target(
        format!("http://{addr}/folded"),
        TargetKind::Folded,
        "cumulative",
    );
    t.folded_counts = FoldedCounts::Cumulative;
    let w = target(
        format!("http://{waddr}"),
        TargetKind::Stackwatch,
        "windowed",
    );
    cfg.targets = vec![t, w];
    cfg.store.max_buffered_rows = 1;
    let c = Collector::start(rt, dir, cfg, Duration::from_secs(30));
    // The first answer (100) is the baseline; wait until deltas are stored.
    wait_for("nothing stored before the lock", || {
        stored(&c, "cumulative") > 0
    });
    let lock = rusqlite::Connection::open(stackwatch_server::db_path(c.data_dir())).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked_at = Instant::now();
    // The injected fault's length, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(15));
    lock.execute_batch("COMMIT").unwrap();
    let held = locked_at.elapsed();
    wait_for("the collector never scraped after the lock", || {
        worker.served.load(Ordering::SeqCst) > 3
    });
    let last = worker.freeze();
    let want = last - 100;
    let last_seq = windowed.freeze();
    wait_stored(&c, "cumulative", want);
    wait_stored(&c, "windowed", last_seq * 10);
    // Exactly once: a few more scrapes (deltas of 0) and the backlog drained change
    // nothing.
    let served = worker.served.load(Ordering::SeqCst);
    let scrapes = || c.targets()["cumulative"]["scrapes_total"].as_u64().unwrap();
    let before = scrapes();
    wait_for("no more scrapes", || scrapes() >= before + 3);
    assert_eq!(worker.served.load(Ordering::SeqCst), served, "frozen");
    assert_eq!(metric(&c, "stackwatch_store_backlog_rows"), 0);
    assert_eq!(stored(&c, "cumulative"), want, "stored more than once");
    assert_eq!(
        stored(&c, "windowed"),
        last_seq * 10,
        "a window stored twice"
    );
    let reader = SqliteStore::open_reader(&stackwatch_server::db_path(c.data_dir())).unwrap();
    let checkpoints = reader
        .checkpoints(&common::labels(&[("service", "windowed")]))
        .unwrap();
    assert_eq!(checkpoints[0].last_seq, last_seq);
    // The lock did hit the writer: windows were backlogged and refused meanwhile.
    assert!(
        metric(&c, "stackwatch_store_backlog_refused_total") >= 1,
        "the backlog never refused a write (the lock held {held:?})"
    );
    assert_eq!(
        c.targets()["cumulative"]["folded_intervals_dropped_total"],
        0
    );
}

/// Item 2 of issue 24: an interval a budget refuses (`scrape.max_samples_per_window`) is
/// dropped and counted, and the baseline moves on; keeping it would make every later
/// delta larger and the target stuck.
#[test]
fn a_cumulative_interval_over_a_budget_is_dropped_counted_and_the_target_goes_on() {
    let rt = runtime();
    // The fourth answer jumps by 1 000 000 periods, over the budget of 100 000.
    let worker = Cumulative::new(100, 1_000_000, 4);
    let addr = serve(&rt, worker.router());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = scrape_config(dir.path(), Duration::from_secs(5));
    cfg.scrape.max_samples_per_window = 100_000;
    let mut t = target(format!("http://{addr}/folded"), TargetKind::Folded, "jumpy");
    t.folded_counts = FoldedCounts::Cumulative;
    cfg.targets = vec![t];
    let c = Collector::start(rt, dir, cfg, Duration::from_secs(30));
    let health = c.wait_target("jumpy", |t| {
        t["folded_intervals_dropped_total"] == 1 && t["samples_ingested_total"].as_u64() > Some(300)
    });
    assert!(
        health["scrape_failures_total"].as_u64() >= Some(1),
        "{health}"
    );
    let last = worker.freeze();
    // Everything but the refused interval (from the third answer to the fourth).
    let want = last - 100 - (worker.count(4) - worker.count(3));
    wait_stored(&c, "jumpy", want);
    let scrapes = || c.targets()["jumpy"]["scrapes_total"].as_u64().unwrap();
    let before = scrapes();
    wait_for("no more scrapes", || scrapes() >= before + 3);
    assert_eq!(stored(&c, "jumpy"), want);
    assert_eq!(
        metric(&c, "stackwatch_target_folded_intervals_dropped_total"),
        1
    );
}

/// Item 9 of issue 24: deleting `stackwatch.lock` let a second collector start on the
/// same data directory (and write the same SQLite file). The directory itself is locked.
#[test]
fn deleting_the_lock_file_does_not_let_a_second_collector_in() {
    // The data directory outlives the first collector (which removes the temp dir it
    // is given: here an unused one).
    let kept = tempfile::tempdir().unwrap();
    let path = kept.path().join("data");
    let mut first = Collector::start(
        runtime(),
        tempfile::tempdir().unwrap(),
        common::config(&path),
        Duration::from_secs(30),
    );
    let lock = path.join(stackwatch_server::data_dir::LOCK_FILE);
    assert!(lock.exists());
    std::fs::remove_file(&lock).unwrap();
    let rt = runtime();
    let e = rt
        .block_on(stackwatch_server::Server::bind(common::config(&path)))
        .err()
        .expect("a second collector on the same data_dir is refused")
        .to_string();
    assert!(
        e.contains("in use by another stackwatch") && e.contains(&path.display().to_string()),
        "{e}"
    );
    // The first goes on, and once it is gone the directory is free again.
    assert_eq!(first.get("/api/targets", &[]).0, 200);
    first.shut_down().unwrap();
    drop(first);
    rt.block_on(stackwatch_server::Server::bind(common::config(&path)))
        .expect("free once the first collector stopped");
}

/// The environment variable that makes [`child_collector`] run a collector: the data
/// directory.
const CHILD_DATA_DIR: &str = "STACKWATCH_RELIABILITY_CHILD_DATA_DIR";
/// The push token of the child collector (tenant `t`).
const CHILD_TOKEN: &str = "spool-token";

/// Not a test of its own: run by [`acknowledged_pushes_survive_a_killed_collector`] as
/// a child process (this test binary again, with [`CHILD_DATA_DIR`] set), it runs a
/// collector with push on over that data directory until it is killed, and prints
/// `LISTEN <address>` once it listens. Without the variable it returns at once.
#[test]
fn child_collector() {
    let Ok(dir) = std::env::var(CHILD_DATA_DIR) else {
        return;
    };
    let mut cfg = common::config(std::path::Path::new(&dir));
    cfg.storage.flush_interval = Duration::from_millis(50);
    cfg.push.enabled = true;
    cfg.push.tokens = vec![stackwatch_server::config::PushToken {
        token: Some(CHILD_TOKEN.into()),
        token_file: None,
        tenant: "t".into(),
    }];
    let rt = runtime();
    let server = rt
        .block_on(stackwatch_server::Server::bind(cfg))
        .expect("the child collector starts");
    println!("LISTEN {}", server.local_addr());
    let _ = rt.block_on(server.run(std::future::pending()));
}

/// A collector running as a child process (see [`child_collector`]).
struct ChildCollector {
    child: std::process::Child,
    api: String,
}

impl ChildCollector {
    fn start(data_dir: &std::path::Path) -> ChildCollector {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                // This module's path in the test binary, without the crate's name.
                &format!(
                    "{}::child_collector",
                    module_path!().split_once("::").map_or("", |(_, m)| m)
                ),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DATA_DIR, data_dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the test binary runs again");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        // Read what the child prints to its end (so it never writes to a closed pipe),
        // handing over the address.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                // The harness prints `test child_collector ... ` before it, on that line.
                if let Some((_, addr)) = line.split_once("LISTEN ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => ChildCollector {
                child,
                api: format!("http://{addr}"),
            },
            Err(e) => {
                let _ = child.kill();
                panic!("the child collector never listened: {e}");
            }
        }
    }

    /// Pushes `body` (folded) for app `name`; returns the status.
    fn push(&self, name: &str, from: i64, body: &str) -> u16 {
        use base64::Engine as _;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("p:{CHILD_TOKEN}"));
        agent
            .post(format!(
                "{}/ingest?name={name}&from={from}&until={}&format=folded",
                self.api,
                from + 10
            ))
            .header("authorization", format!("Basic {auth}"))
            .header("content-type", "text/plain")
            .send(body.as_bytes())
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    fn metrics(&self) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        agent
            .get(format!("{}/metrics", self.api))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no last flush.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 24: pushes acknowledged while the store was unavailable waited in a backlog in
/// memory; a collector killed then lost them. Here another connection holds SQLite's
/// write lock while pushes are acknowledged (into the backlog, and its spool on disk),
/// the collector is killed (SIGKILL) with the lock still held, and a new collector on the
/// same data directory stores every acknowledged push, exactly once.
#[test]
fn acknowledged_pushes_survive_a_killed_collector() {
    if std::env::var(CHILD_DATA_DIR).is_ok() {
        return;
    }
    let kept = tempfile::tempdir().unwrap();
    let data = kept.path().join("data");
    let first = ChildCollector::start(&data);
    let db = stackwatch_server::db_path(&data);
    let now = stackwatch_profile::clock::unix_s();
    // One push stored before the lock, which the replay must not store again.
    assert_eq!(first.push("before.cpu", now - 60, "main;before 7\n"), 200);
    let totals = || -> std::collections::BTreeMap<String, u64> {
        let Ok(reader) = SqliteStore::open_reader(&db) else {
            return Default::default();
        };
        reader
            .raw_totals()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(l, n)| Some((l.get("service")?.clone(), n)))
            .collect()
    };
    wait_for("the first push is never stored", || {
        totals().get("before") == Some(&7)
    });
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // Each push waits out SQLite's busy timeout at most once before it joins the backlog.
    let pushes = 4;
    for i in 0..pushes {
        assert_eq!(
            first.push(
                &format!("spooled{i}.cpu"),
                now - 50 + i,
                &format!("main;s{i} 7\n")
            ),
            200,
            "push {i} is acknowledged"
        );
    }
    let text = first.metrics();
    assert!(
        text.lines()
            .any(|l| l.starts_with("stackwatch_store_spooled_rows_total ") && !l.ends_with(" 0")),
        "{text}"
    );
    first.kill();
    assert_eq!(totals().get("spooled0"), None, "stored while locked?");
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let second = ChildCollector::start(&data);
    let want: std::collections::BTreeMap<String, u64> = std::iter::once(("before".to_string(), 7))
        .chain((0..pushes).map(|i| (format!("spooled{i}"), 7)))
        .collect();
    wait_for("the acknowledged pushes are never stored", || {
        totals() == want
    });
    let replayed = second.metrics().lines().find_map(|l| {
        l.strip_prefix("stackwatch_store_spool_replayed_total ")?
            .parse::<u64>()
            .ok()
    });
    assert_eq!(replayed, Some(pushes as u64));
    assert!(
        std::fs::read_dir(data.join("backlog"))
            .unwrap()
            .next()
            .is_none(),
        "the spool is empty once its requests are stored"
    );
    // The spool's marker target is selected by no query (each carries a profile type).
    let reader = SqliteStore::open_reader(&db).unwrap();
    for ty in ["", "alloc_space", "inuse_space"] {
        let sel =
            stackwatch_store::Selector::parse(&format!("{{__profile_type__=\"{ty}\"}}")).unwrap();
        let series = reader
            .target_series(&sel, now - 3600, now + 60, 60)
            .unwrap();
        assert!(
            series
                .iter()
                .all(|t| !t.labels.contains_key("__stackwatch_spool__")),
            "{series:?}"
        );
        if ty.is_empty() {
            assert_eq!(series.len(), want.len(), "{series:?}");
        }
    }
    assert!(reader
        .targets()
        .unwrap()
        .contains(&stackwatch_server::writer::spool_marker()));
    // Stored exactly once: still so after more flushes.
    assert_eq!(second.push("after.cpu", now, "main;after 7\n"), 200);
    wait_for("a push after the replay is never stored", || {
        totals().get("after") == Some(&7)
    });
    assert_eq!(
        totals()
            .into_iter()
            .filter(|(s, _)| s != "after")
            .collect::<std::collections::BTreeMap<_, _>>(),
        want
    );
    second.kill();
}
