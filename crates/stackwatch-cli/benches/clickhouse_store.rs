//! ClickHouse store beside SQLite: ingest rate, bytes on disk per stored row, merged
//! profiles.
//!
//! The same synthetic windows (the collector benchmark's shape: 1 000 samples per window
//! over a 300-stack Zipf profile per service, 14-25 frames deep; 5-minute windows) go
//! through `SqliteStore::ingest` and `ClickHouseStore::ingest` in the same batches, one
//! store after the other per batch, each timed on its own. Two data sets:
//!
//! - *deep*: 100 targets x 24 h (as in the collector benchmark);
//! - *wide*: 10 000 targets x 1 h (`STACKWATCH_BENCH_WIDE_TARGETS` to change).
//!
//! After ingest each store's rollups run to completion; then the merged profile of every
//! target over the last hour (not hour-aligned, as in the collector benchmark, so it
//! reads minute rollups and raw rows) and over the whole data set (hour-aligned), median
//! of 5; then bytes on disk per raw row: SQLite's file and
//! WAL; for ClickHouse `sum(bytes_on_disk)` of the active parts of the database after
//! `OPTIMIZE TABLE ... FINAL` on every table (rollups, stacks, targets included).
//!
//! ```text
//! STACKWATCH_BENCH_CLICKHOUSE=http://127.0.0.1:18123 \
//! STACKWATCH_BENCH_CLICKHOUSE_PASSWORD=secret \
//!   cargo bench -p stackwatch-cli --bench clickhouse_store
//! ```
//!
//! Other variables: `STACKWATCH_BENCH_CLICKHOUSE_USER` (default `default`),
//! `STACKWATCH_BENCH_CLICKHOUSE_DB` (prefix of the two databases, default
//! `stackwatch_bench`; they are dropped and created again), `STACKWATCH_BENCH_PART`
//! (`deep` or `wide`: only that data set), `STACKWATCH_BENCH_BATCH` (rows per ingest
//! call, default 50 000), `STACKWATCH_BENCH_WINDOW_S` (window length, default 300; with
//! 10, as a live fleet scrapes, a minute rollup row sums six windows). Without `STACKWATCH_BENCH_CLICKHOUSE` the bench prints why and
//! does nothing.

use std::time::{Duration, Instant};

use stackwatch_store::{
    ClickHouseOptions, ClickHouseStore, IngestWindow, ProfileReader, ProfileWriter, Selector,
    SqliteStore, StoreOptions,
};

mod common;
#[path = "../src/fleet_shape.rs"]
mod fleet_shape;

use common::{fleet_window, median_profile_ms};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A statement over ClickHouse's HTTP interface; the answer's text.
fn ch(url: &str, user: &str, password: &str, sql: &str) -> String {
    ureq::post(url)
        .header("X-ClickHouse-User", user)
        .header("X-ClickHouse-Key", password)
        .config()
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .send(sql)
        .unwrap_or_else(|e| panic!("clickhouse {sql:?}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

struct Ch {
    url: String,
    user: String,
    password: String,
}

impl Ch {
    fn q(&self, sql: &str) -> String {
        ch(&self.url, &self.user, &self.password, sql)
    }
}

struct DataSet {
    name: &'static str,
    targets: u64,
    hours: i64,
}

struct Figures {
    rows: u64,
    sqlite_ingest: Duration,
    ch_ingest: Duration,
    sqlite_rollup: Duration,
    ch_rollup: Duration,
    sqlite_q1h: f64,
    ch_q1h: f64,
    sqlite_qall: f64,
    ch_qall: f64,
    sqlite_bytes: u64,
    ch_bytes: u64,
    ch_tables: Vec<String>,
}

fn run(set: &DataSet, chs: &Ch, db: &str, batch_rows: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stackwatch.db");
    let mut sqlite = SqliteStore::open(&file, StoreOptions::default()).unwrap();
    chs.q(&format!("DROP DATABASE IF EXISTS {db}"));
    chs.q(&format!("CREATE DATABASE {db}"));
    let mut clickhouse = ClickHouseStore::open(ClickHouseOptions {
        url: chs.url.clone(),
        database: db.to_string(),
        user: chs.user.clone(),
        password: chs.password.clone(),
        timeout: Duration::from_secs(600),
        ..ClickHouseOptions::default()
    })
    .unwrap();

    let services: Vec<_> = (0..20)
        .map(|s| fleet_shape::service_stacks(s, 300))
        .collect();
    // Inside the ClickHouse store's accepted range (raw retention 2 days, nothing ahead).
    let now = stackwatch_profile::clock::unix_s();
    let end: i64 = now / 3600 * 3600;
    let start = end - set.hours * 3600;
    // Window length (the collector benchmark's 5 minutes; 10 for a live fleet's shape).
    let step: usize = env("STACKWATCH_BENCH_WINDOW_S", "300").parse().unwrap();
    let mut batch: Vec<IngestWindow> = Vec::new();
    let mut rows_in_batch = 0;
    let mut rows = 0u64;
    let (mut sqlite_ingest, mut ch_ingest) = (Duration::ZERO, Duration::ZERO);
    let mut flush = |batch: &mut Vec<IngestWindow>| {
        let t0 = Instant::now();
        let n = sqlite.ingest(batch).unwrap().rows as u64;
        sqlite_ingest += t0.elapsed();
        let t0 = Instant::now();
        let m = clickhouse.ingest(batch).unwrap().rows as u64;
        ch_ingest += t0.elapsed();
        assert_eq!(n, m);
        rows += n;
        batch.clear();
    };
    for ts in (start..end).step_by(step) {
        for t in 0..set.targets {
            let stacks =
                fleet_shape::draw_window(&services[(t % 20) as usize], (t << 32) ^ ts as u64, 1000);
            rows_in_batch += stacks.len();
            let seq = ((ts - start) / step as i64 + 1) as u64;
            batch.push(fleet_window(t, seq, ts, stacks));
            if rows_in_batch >= batch_rows {
                flush(&mut batch);
                rows_in_batch = 0;
            }
        }
    }
    if !batch.is_empty() {
        flush(&mut batch);
    }

    let rollup_to = now + 3600;
    let t0 = Instant::now();
    while sqlite.rollup(rollup_to).unwrap() {}
    let sqlite_rollup = t0.elapsed();
    let t0 = Instant::now();
    // The ClickHouse rollup reads the wall clock's "now" as its bound.
    while clickhouse.rollup(now).unwrap() {}
    let ch_rollup = t0.elapsed();

    let (f1, t1) = (end - 3600 - 17, end - 17);
    let sqlite_q1h = median_profile_ms(&sqlite, f1, t1);
    let ch_q1h = median_profile_ms(&clickhouse, f1, t1);
    let sqlite_qall = median_profile_ms(&sqlite, start, end);
    let ch_qall = median_profile_ms(&clickhouse, start, end);
    // Same totals from both stores.
    let all = Selector::all();
    let a = sqlite.profile(&all, start, end).unwrap().total();
    let b = clickhouse.profile(&all, start, end).unwrap().total();
    assert_eq!(a, b, "SQLite and ClickHouse disagree on the total");
    drop(sqlite);
    drop(clickhouse);

    let sqlite_bytes: u64 = ["stackwatch.db", "stackwatch.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    let tables: Vec<String> = chs
        .q(&format!(
            "SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"
        ))
        .lines()
        .map(str::to_string)
        .collect();
    for t in &tables {
        chs.q(&format!("OPTIMIZE TABLE {db}.{t} FINAL"));
    }
    let ch_bytes: u64 = chs
        .q(&format!(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = '{db}' AND active"
        ))
        .trim()
        .parse()
        .unwrap();
    let ch_tables = chs
        .q(&format!(
            "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts WHERE database = '{db}' AND active GROUP BY table ORDER BY table"
        ))
        .lines()
        .map(str::to_string)
        .collect();
    Figures {
        rows,
        sqlite_ingest,
        ch_ingest,
        sqlite_rollup,
        ch_rollup,
        sqlite_q1h,
        ch_q1h,
        sqlite_qall,
        ch_qall,
        sqlite_bytes,
        ch_bytes,
        ch_tables,
    }
}

fn report(set: &DataSet, f: &Figures) {
    let what = format!("{} targets x {} h", set.targets, set.hours);
    println!();
    let window_s = env("STACKWATCH_BENCH_WINDOW_S", "300");
    println!("## {} ({what}, {window_s} s windows)", set.name);
    println!();
    println!("| measure | SQLite | ClickHouse | ClickHouse / SQLite |");
    println!("|---|---:|---:|---:|");
    println!("| rows ingested | {} | {} | |", f.rows, f.rows);
    let rs = f.rows as f64 / f.sqlite_ingest.as_secs_f64();
    let rc = f.rows as f64 / f.ch_ingest.as_secs_f64();
    println!(
        "| ingest rate, stack-rows/s | {rs:.0} | {rc:.0} | {:.2} |",
        rc / rs
    );
    println!(
        "| rollup to completion, s | {:.1} | {:.1} | {:.2} |",
        f.sqlite_rollup.as_secs_f64(),
        f.ch_rollup.as_secs_f64(),
        f.ch_rollup.as_secs_f64() / f.sqlite_rollup.as_secs_f64()
    );
    println!(
        "| query: merged profile, {} targets x last 1 h (unaligned), ms (median of 5) | {:.0} | {:.0} | {:.2} |",
        set.targets,
        f.sqlite_q1h,
        f.ch_q1h,
        f.ch_q1h / f.sqlite_q1h
    );
    let (s, c) = (f.sqlite_qall, f.ch_qall);
    println!(
        "| query: merged profile, {what} (hour-aligned: the whole data set), ms (median of 5) | {s:.0} | {c:.0} | {:.2} |",
        c / s
    );
    let bs = f.sqlite_bytes as f64 / f.rows as f64;
    let bc = f.ch_bytes as f64 / f.rows as f64;
    println!(
        "| bytes on disk per stored (target, window, stack) row, all tables included | {bs:.1} | {bc:.1} | {:.2} |",
        bc / bs
    );
    println!();
    println!("ClickHouse active parts after OPTIMIZE ... FINAL (table, rows, bytes_on_disk):");
    for t in &f.ch_tables {
        println!("    {t}");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Ok(url) = std::env::var("STACKWATCH_BENCH_CLICKHOUSE") else {
        println!("clickhouse_store: set STACKWATCH_BENCH_CLICKHOUSE=http://host:port (ClickHouse's HTTP interface) to run");
        return;
    };
    let chs = Ch {
        url,
        user: env("STACKWATCH_BENCH_CLICKHOUSE_USER", "default"),
        password: env("STACKWATCH_BENCH_CLICKHOUSE_PASSWORD", ""),
    };
    let db = env("STACKWATCH_BENCH_CLICKHOUSE_DB", "stackwatch_bench");
    let batch_rows: usize = env("STACKWATCH_BENCH_BATCH", "50000").parse().unwrap();
    let wide: u64 = env("STACKWATCH_BENCH_WIDE_TARGETS", "10000")
        .parse()
        .unwrap();
    let part = env("STACKWATCH_BENCH_PART", "");
    println!(
        "# ClickHouse store benchmark, {} cores, ClickHouse {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chs.q("SELECT version()").trim()
    );
    let sets = [
        DataSet {
            name: "deep",
            targets: 100,
            hours: 24,
        },
        DataSet {
            name: "wide",
            targets: wide,
            hours: 1,
        },
    ];
    for set in &sets {
        if !part.is_empty() && part != set.name {
            continue;
        }
        let f = run(set, &chs, &format!("{db}_{}", set.name), batch_rows);
        report(set, &f);
    }
}
