//! The current ClickHouse engine accepts every statement the store sends to 18.16.
//!
//! The store is driven through every path that sends SQL (open, ingest with a late
//! window and sample labels, every read with target and sample matchers, grouped
//! series, rollup, retention, membership, `migrate_sqlite`, the migration of a version 1
//! database) against Debian's
//! ClickHouse 18.16 (one node, its query log on), as a single node (database `sw`) and
//! as a cluster (database `sw_c`, cluster `two` of one shard: the node itself). The
//! distinct statements that 18.16 logged as finished, and the settings they ran with,
//! are then run in the current engine, in process, by `tests/chdb_accepts.py` (PyPI's
//! chdb-core): the single-node ones in one chdb session, the cluster ones in another
//! whose config defines `two`, so even the `Distributed` tables are created, read and
//! written as the store does. `INSERT ... FORMAT TabSeparated` appears in the log
//! without its rows: the script adds one row of the same shape.

use crate::clickhouse;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::{ClickHouse, Options};
use stackwatch_store::clickhouse::schema::{create_statements, TABLES, TABLES_V1};
use stackwatch_store::{
    migrate_sqlite, ClickHouseOptions, ClickHouseStore, CollectorBeat, IngestWindow, Labels,
    ProfileReader, ProfileWriter, QueryGuard, Selector, SqliteStore, StoreOptions, OTHER_FRAME,
};

/// Database of the single-node store.
const SINGLE_DB: &str = "sw";
/// Database of the cluster store.
const CLUSTER_DB: &str = "sw_c";
/// Database created with the version 1 schema, then migrated by the store (single node).
const MIGRATED_DB: &str = "sw_v1";
/// The cluster (one shard: the node itself).
const CLUSTER: &str = "two";
/// The test's own statements carry query ids with this prefix, so the log can leave them out.
const OWN_QUERY_ID: &str = "stackwatch-test-";
/// Fewer distinct statement shapes (numbers blanked) than this means the log was not read
/// right (`REQUIRED` checks the kinds one by one).
const MIN_SHAPES: usize = 100;

/// Every kind of statement the store sends, as pieces of its text: for each entry, a
/// statement holding all its pieces must be in the log of both modes (`{db}` is the
/// database). Guards against a path the exercise stopped reaching.
const REQUIRED: &[&[&str]] = &[
    &["SELECT version()"],
    &["FROM system.databases WHERE name = '{db}'"],
    &["EXISTS TABLE {db}.meta"],
    &["SELECT max(value) FROM {db}.meta"],
    &["INSERT INTO {db}.meta (key, value) FORMAT TabSeparated"],
    &["INSERT INTO {db}.stacks (hash, stack, seen) FORMAT TabSeparated"],
    &["INSERT INTO {db}.targets (id, service, labels, period_ns, seen, updated) FORMAT TabSeparated"],
    &["INSERT INTO {db}.samples_raw (ts, service, target, stack, labels, inst, seq, count) FORMAT TabSeparated"],
    &["INSERT INTO {db}.label_sets (hash, labels, seen) FORMAT TabSeparated"],
    &["FROM {db}.label_sets GROUP BY hash"],
    &["FROM system.columns WHERE database = '{db}'"],
    // Sample matchers, and series grouped by a sample and a target label.
    &[" AND labels IN ("],
    &["transform(labels, ["],
    &["transform(target, ["],
    &["SELECT toUInt64(0) AS g"],
    &["INSERT INTO {db}.series (target, inst, last_seq, updated) FORMAT TabSeparated"],
    &["INSERT INTO {db}.rollup_state (level, value) FORMAT TabSeparated"],
    &["INSERT INTO {db}.collectors (id, addr, beat_ms, left) FORMAT TabSeparated"],
    &["FROM {db}.series GROUP BY target, inst"],
    &[" AND (service > '", " AND target IN ("],
    &["INSERT INTO {db}.samples_1m", " AND (service > '"],
    &["FROM {db}.targets GROUP BY id"],
    &["FROM {db}.rollup_state GROUP BY level"],
    &["WITH TOTALS ORDER BY n DESC, stack LIMIT 99999"],
    &["WITH TOTALS ORDER BY n DESC, stack LIMIT 1"],
    &["FROM {db}.stacks WHERE hash IN ("],
    &["FROM {db}.samples_raw FINAL WHERE"],
    &["FROM {db}.samples_1m FINAL WHERE"],
    &["FROM {db}.samples_1h FINAL WHERE"],
    &["SELECT target, intDiv(toUInt32(ts), 3600) * 3600 AS b"],
    &["SELECT target, intDiv(toUInt32(ts), 1) * 1 AS b"],
    &["if(stack IN ("],
    &["if(0, stack, toUInt64(0))"],
    &["INSERT INTO {db}.samples_1m (ts, service, target, stack, labels, count, version) SELECT toStartOfMinute(ts)"],
    &["INSERT INTO {db}.samples_1h (ts, service, target, stack, labels, count, version) SELECT toStartOfHour(ts)"],
    &["SELECT toUInt32(min(ts)), count() FROM {db}.samples_raw WHERE ts >= "],
    &["SELECT toUInt32(min(ts)), count() FROM {db}.samples_1m WHERE ts >= "],
    &["FROM system.parts WHERE database = '{db}' AND active"],
    &["ALTER TABLE {db}.samples_raw", " DROP PARTITION "],
    &["FROM {db}.collectors GROUP BY id HAVING"],
    // `stackwatch migrate`: rollup rows copied from SQLite.
    &["INSERT INTO {db}.samples_1m (ts, service, target, stack, labels, count, version) FORMAT TabSeparated"],
    &["INSERT INTO {db}.samples_1h (ts, service, target, stack, labels, count, version) FORMAT TabSeparated"],
    // The re-roll of a late window: its minute and its hour, of its target only.
    &["INSERT INTO {db}.samples_1m ", " AND target IN ("],
    &["INSERT INTO {db}.samples_1h ", " AND target IN ("],
    // A read of several resolutions at once, of some targets.
    &[" UNION ALL SELECT ", " AND target IN ("],
];

static OWN_QUERIES: AtomicU64 = AtomicU64::new(0);

/// One of the test's own statements (left out of what is checked).
fn own(node: &ClickHouse, sql: &str) -> String {
    let id = format!(
        "{OWN_QUERY_ID}{}",
        OWN_QUERIES.fetch_add(1, Ordering::Relaxed)
    );
    node.query_with(sql, &[("query_id", &id)])
        .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", node.logs()))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn window(
    target: &Labels,
    instance: &str,
    seq: u64,
    ts: i64,
    stacks: &[(&str, u64)],
) -> IngestWindow {
    IngestWindow {
        // Every window also has samples under a label set.
        labeled: vec![(
            [("table".to_string(), "or'ders".to_string())].into(),
            vec![(stacks[0].0.to_string(), 1)],
        )],
        target: target.clone(),
        instance: instance.into(),
        seq,
        start_unix_s: ts,
        stacks: stacks.iter().map(|(s, c)| (s.to_string(), *c)).collect(),
        period_ns: 10_101_010,
    }
}

fn now() -> i64 {
    stackwatch_profile::clock::unix_s()
}

fn now_ms() -> u64 {
    stackwatch_profile::clock::unix_ms()
}

/// Every read of a store over `[t0, t1)`, with and without selectors, bounded, guarded,
/// and over a range without samples. Returns the merged profile's total.
fn read_everything(
    store: &ClickHouseStore,
    bounded: &ClickHouseStore,
    guarded: &ClickHouseStore,
    t0: i64,
    t1: i64,
) -> u64 {
    let all = Selector::all();
    let api = Selector::parse(r#"{service="api"}"#).unwrap();
    let total = store.profile(&all, t0, t1).unwrap().total();
    for sel in [&all, &api] {
        assert!(store.profile(sel, t0, t1).unwrap().total() > 0);
        assert!(!store.target_series(sel, t0, t1, 3600).unwrap().is_empty());
        assert!(store
            .timeseries(sel, t0, t1, 60)
            .unwrap()
            .iter()
            .any(|p| p.1 > 0));
        assert!(!store
            .bucketed_stacks(sel, t0, t1, 600)
            .unwrap()
            .counts
            .is_empty());
    }
    // Raw rows only, at odd edges.
    store.target_series(&all, t0 + 30, t1 - 30, 1).unwrap();
    // Edges off the minute and the hour: once rolled up, one read of raw rows, minutes,
    // hours, minutes and raw rows again (`UNION ALL`).
    let (odd0, odd1) = (t0 + 1845, now());
    assert!(store.profile(&api, odd0, odd1).unwrap().total() > 0);
    assert!(!store
        .target_series(&all, odd0, odd1, 60)
        .unwrap()
        .is_empty());
    assert!(!store
        .bucketed_stacks(&api, odd0, odd1, 60)
        .unwrap()
        .counts
        .is_empty());
    // The answer keeps one stack; [other] holds the rest, the total stays exact.
    let p = bounded.profile(&all, t0, t1).unwrap();
    assert_eq!(p.total(), total);
    assert!(p.stacks.contains_key(OTHER_FRAME), "{:?}", p.stacks);
    let b = bounded.bucketed_stacks(&api, t0, t1, 1800).unwrap();
    assert!(b.stacks.iter().any(|s| &**s == OTHER_FRAME));
    // A range without samples: no stack is kept.
    let empty = store.bucketed_stacks(&all, t0 - 7200, t0, 600).unwrap();
    assert!(empty.counts.is_empty());
    assert!(guarded.profile(&api, t0, t1).unwrap().total() > 0);
    // Sample matchers (`labels IN (...)`) on every path, and the label API.
    let orders = Selector::parse(r#"{service="api", table="or'ders"}"#).unwrap();
    let not_orders = Selector::parse(r#"{table!="or'ders"}"#).unwrap();
    let any_orders = Selector::parse(r#"{table="or'ders"}"#).unwrap();
    assert!(store.profile(&orders, t0, t1).unwrap().total() > 0);
    let o = store.profile(&any_orders, t0, t1).unwrap().total();
    assert_eq!(
        store.profile(&not_orders, t0, t1).unwrap().total(),
        total - o
    );
    assert!(!store
        .target_series(&orders, t0, t1, 3600)
        .unwrap()
        .is_empty());
    assert!(store
        .timeseries(&not_orders, t0, t1, 60)
        .unwrap()
        .iter()
        .any(|p| p.1 > 0));
    assert!(!store
        .bucketed_stacks(&orders, t0, t1, 600)
        .unwrap()
        .counts
        .is_empty());
    for (by, limit) in [("table", 1), ("service", 1), ("table", 0)] {
        let g = store.grouped_series(&all, t0, t1, 3600, by, limit).unwrap();
        let sum: u64 = g.iter().flat_map(|s| &s.points).map(|p| p.1).sum();
        assert_eq!(sum, total, "grouped by {by}");
    }
    assert_eq!(store.label_keys().unwrap().sample, ["table"]);
    assert_eq!(store.label_values("table", 10).unwrap(), ["or'ders"]);
    total
}

/// A database of the version 1 schema (made with the test's own statements), opened
/// by the store: the migration's statements (`ALTER TABLE ... ADD COLUMN ..., MODIFY
/// ORDER BY ...`) are logged, and checked in the current engine on the version 1 DDL.
fn exercise_migration(node: &ClickHouse) {
    own(node, &format!("CREATE DATABASE {MIGRATED_DB}"));
    for t in TABLES_V1 {
        for s in create_statements(MIGRATED_DB, t, None) {
            own(node, &s);
        }
    }
    own(
        node,
        &format!("INSERT INTO {MIGRATED_DB}.meta (key, value) VALUES ('schema_version', 1)"),
    );
    let t0 = (now() / 3600) * 3600 - 3600;
    own(
        node,
        &format!(
            "INSERT INTO {MIGRATED_DB}.samples_raw (ts, service, target, stack, inst, seq, count) VALUES ({t0}, 'old', 1, 2, 3, 4, 5)"
        ),
    );
    let mut store = ClickHouseStore::open(ClickHouseOptions {
        url: node.http_url.clone(),
        database: MIGRATED_DB.into(),
        user: node.user.into(),
        password: node.password.into(),
        ..Default::default()
    })
    .unwrap();
    let a = labels(&[("service", "api")]);
    store
        .ingest(&[window(&a, "w", 1, t0 + 60, &[("main", 2)])])
        .unwrap();
    let orders = Selector::parse(r#"{table="or'ders"}"#).unwrap();
    assert_eq!(store.profile(&orders, t0, t0 + 3600).unwrap().total(), 1);
    let sql = format!("SELECT sum(count) FROM {MIGRATED_DB}.samples_raw FINAL");
    assert_eq!(own(node, &sql).trim(), "8", "the version 1 row is kept");
}

/// Drives a store in `db` (with `cluster`: through Distributed tables) through every
/// path that sends SQL.
fn exercise(node: &ClickHouse, db: &str, cluster: Option<&str>) {
    own(node, &format!("CREATE DATABASE {db}"));
    let opts = ClickHouseOptions {
        url: node.http_url.clone(),
        database: db.into(),
        user: node.user.into(),
        password: node.password.into(),
        cluster: cluster.map(Into::into),
        ..Default::default()
    };
    // The first open creates the schema, the next ones find it.
    let mut store = ClickHouseStore::open(opts.clone()).unwrap();
    let mut other = ClickHouseStore::open(opts.clone()).unwrap();
    let bounded = ClickHouseStore::open(ClickHouseOptions {
        max_answer_stacks: 2,
        ..opts.clone()
    })
    .unwrap();
    let guarded = store.reader(Some(QueryGuard {
        deadline: Instant::now() + Duration::from_secs(600),
        cancelled: Arc::new(AtomicBool::new(false)),
    }));

    let a = labels(&[("service", "api"), ("instance", "a")]);
    let b = labels(&[("service", "db"), ("instance", "b")]);
    let t0 = (now() / 3600) * 3600 - 3 * 3600;
    let t1 = t0 + 3 * 3600;
    let mut windows = Vec::new();
    for i in 0..18u64 {
        let ts = t0 + i as i64 * 600;
        windows.push(window(
            &a,
            "w1",
            i + 1,
            ts,
            &[("main;work;'quoted'", 3), ("main;idle\tx\\y", 1)],
        ));
        windows.push(window(&b, "w2", i + 1, ts, &[("main;query", 2)]));
    }
    store.ingest(&windows).unwrap();
    // A retry from another collector: the same rows again.
    other.ingest(&windows[..6]).unwrap();
    let cps = store.checkpoints(&a).unwrap();
    assert_eq!((cps[0].instance.as_str(), cps[0].last_seq), ("w1", 18));
    assert_eq!(store.targets().unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(read_everything(&store, &bounded, &guarded, t0, t1), 18 * 8);

    // Rolled up, reads take minutes and hours from the rollups.
    while store.rollup(now()).unwrap() {}
    assert_eq!(read_everything(&store, &bounded, &guarded, t0, t1), 18 * 8);
    // A late window below both rollups' progress re-rolls its minute and its hour.
    store
        .ingest(&[window(&a, "w1", 19, t0 + 5, &[("main;late", 7)])])
        .unwrap();
    assert_eq!(
        read_everything(&store, &bounded, &guarded, t0, t1),
        18 * 8 + 7 + 1
    );

    // `stackwatch migrate` copies a SQLite store's history in, rollups included.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("old.db");
    let mut old = SqliteStore::open(&sqlite, StoreOptions::default()).unwrap();
    let legacy = labels(&[("service", "legacy")]);
    old.ingest(&[
        window(&legacy, "w9", 1, t0 + 60, &[("main;old", 4)]),
        window(&legacy, "w9", 2, t0 + 3700, &[("main;old", 5)]),
    ])
    .unwrap();
    while old.rollup(now()).unwrap() {}
    drop(old);
    let copied = migrate_sqlite(&sqlite, &store, |_, _| {}).unwrap();
    assert!(copied.sample_rows > 2, "{copied:?}");
    assert_eq!(
        store
            .profile(&Selector::parse(r#"{service="legacy"}"#).unwrap(), t0, t1)
            .unwrap()
            .total(),
        9 + 2
    );

    // A fleet large enough that reads and rollups split into parallel branches by
    // (service, target).
    let fleet: Vec<IngestWindow> = (0..70u64)
        .map(|i| {
            let t = labels(&[
                ("service", ["fa", "fb"][(i % 2) as usize]),
                ("instance", &format!("f{i}")),
            ]);
            window(&t, "wf", 1, t0 + 120, &[("main;fleet", 1)])
        })
        .collect();
    store.ingest(&fleet).unwrap();
    while store.rollup(now()).unwrap() {}
    assert_eq!(
        store
            .profile(&Selector::parse(r#"{instance=~"f.*"}"#).unwrap(), t0, t1)
            .unwrap()
            .total(),
        70 * 2
    );

    let beat = |id: &str, left: bool| CollectorBeat {
        id: id.into(),
        addr: "127.0.0.1:9100".into(),
        beat_unix_ms: now_ms(),
        left,
    };
    store.heartbeat(&beat("c1", false)).unwrap();
    other.heartbeat(&beat("c2", true)).unwrap();
    let live = store.live_collectors(now_ms() - 60_000).unwrap();
    assert_eq!(
        live.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c1"]
    );

    // Nothing is past the retention now; 40 days on, after the rollups catch up,
    // every day partition is.
    assert_eq!(store.apply_retention(now()).unwrap().sample_rows, 0);
    let far = now() + 40 * 86_400;
    while store.rollup(far).unwrap() {}
    let dropped = store.apply_retention(far).unwrap();
    assert!(
        dropped.sample_rows > 0 && dropped.stacks > 0 && dropped.targets > 0,
        "{dropped:?}"
    );
}

fn unhex(h: &str) -> String {
    let bytes: Vec<u8> = (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

/// The store's finished statements in the log (not the test's own, nor the harness's
/// readiness check), distinct, in the order first seen.
fn logged_statements(node: &ClickHouse) -> Vec<String> {
    let text = own(
        node,
        &format!(
            "SELECT hex(query) FROM system.query_log \
             WHERE type = 2 AND is_initial_query \
             AND query_id NOT LIKE '{OWN_QUERY_ID}%' AND query NOT LIKE '%system.macros%' \
             GROUP BY query ORDER BY min(event_time), query"
        ),
    );
    text.lines().map(unhex).collect()
}

/// The store's statements that failed on 18.16 (there should be none).
fn logged_failures(node: &ClickHouse) -> String {
    own(
        node,
        &format!(
            "SELECT query, exception FROM system.query_log \
             WHERE type IN (3, 4) \
             AND query_id NOT LIKE '{OWN_QUERY_ID}%'"
        ),
    )
}

/// `name=value` of every setting the store's statements ran with (the client's URL
/// parameters, and the harness profile's settings).
fn logged_settings(node: &ClickHouse) -> Vec<String> {
    own(
        node,
        &format!(
            "SELECT DISTINCT concat(name, '=', value) AS s FROM system.query_log \
             ARRAY JOIN Settings.Names AS name, Settings.Values AS value \
             WHERE type = 2 AND is_initial_query \
             AND query_id NOT LIKE '{OWN_QUERY_ID}%' AND query NOT LIKE '%system.macros%' \
             ORDER BY s"
        ),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// A statement with its numbers blanked and its lists of numbers made one: the shape
/// that differs only in literals.
fn shape(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_number = false;
    for c in sql.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    while out.contains("N,N") {
        out = out.replace("N,N", "N");
    }
    out
}

#[test]
#[ignore = "needs clickhouse-server and chdb-core: run via scripts/test.sh"]
fn the_current_engine_accepts_every_statement_the_store_sends() {
    let started = Instant::now();
    let node = ClickHouse::start_cluster_with(CLUSTER, 1, Options { log_queries: true })
        .pop()
        .unwrap();
    let version = own(&node, "SELECT version()");
    exercise(&node, SINGLE_DB, None);
    exercise(&node, CLUSTER_DB, Some(CLUSTER));
    exercise_migration(&node);
    own(&node, "SYSTEM FLUSH LOGS");
    let statements = logged_statements(&node);
    let settings = logged_settings(&node);
    assert_eq!(
        logged_failures(&node).trim(),
        "",
        "statements 18.16 refused"
    );
    let on_1816 = started.elapsed();

    // Split by mode: a statement names its store's database (or the cluster), or none
    // (`SELECT version()`): then it goes to both.
    let names = |s: &str, db: &str| s.contains(&format!("{db}.")) || s.contains(&format!("'{db}'"));
    let is_cluster = |s: &str| names(s, CLUSTER_DB) || s.contains("system.clusters");
    let single_log: Vec<&String> = statements.iter().filter(|s| !is_cluster(s)).collect();
    let cluster_log: Vec<&String> = statements
        .iter()
        .filter(|s| !names(s, SINGLE_DB) && !names(s, MIGRATED_DB))
        .collect();
    for (db, log) in [(SINGLE_DB, &single_log), (CLUSTER_DB, &cluster_log)] {
        for pieces in REQUIRED {
            let pieces: Vec<String> = pieces.iter().map(|p| p.replace("{db}", db)).collect();
            assert!(
                log.iter()
                    .any(|s| pieces.iter().all(|p| s.contains(p.as_str()))),
                "no statement with all of {pieces:?} in the log of database {db}"
            );
        }
    }
    assert!(cluster_log
        .iter()
        .any(|s| s.contains("FROM system.clusters WHERE cluster = 'two'")));
    // The migration from version 1, on 18.16, of each sample table.
    for table in ["samples_raw", "samples_1m", "samples_1h"] {
        let alter = format!("ALTER TABLE {MIGRATED_DB}.{table} ADD COLUMN labels UInt64 AFTER stack, MODIFY ORDER BY (");
        assert!(
            single_log.iter().any(|s| s.starts_with(&alter)),
            "no {alter}... in the log"
        );
    }
    for s in [
        "max_query_size=",
        "insert_distributed_sync=1",
        "max_execution_time=",
    ] {
        assert!(
            settings.iter().any(|x| x.starts_with(s)),
            "no {s} in the logged settings {settings:?}"
        );
    }

    // The DDL 18.16 ran is the schema's, every table of it, in the schema's order.
    let ddl = |db: &str, cluster: Option<&str>| -> Vec<String> {
        TABLES
            .iter()
            .flat_map(|t| create_statements(db, t, cluster))
            .collect()
    };
    // The migrated database: the version 1 tables (the test's own statements), then
    // the table the migration created.
    let migrated_ddl: Vec<String> = TABLES_V1
        .iter()
        .flat_map(|t| create_statements(MIGRATED_DB, t, None))
        .collect();
    let label_sets = TABLES.iter().find(|t| t.name == "label_sets").unwrap();
    let mut single_expected = ddl(SINGLE_DB, None);
    single_expected.extend(create_statements(MIGRATED_DB, label_sets, None));
    let split = |log: &[&String], expected: Vec<String>| -> (Vec<String>, Vec<String>) {
        let logged: BTreeSet<&str> = log
            .iter()
            .filter(|s| s.starts_with("CREATE"))
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            logged,
            expected.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            "the logged DDL is not the schema's"
        );
        let rest = log
            .iter()
            .filter(|s| !s.starts_with("CREATE"))
            .map(|s| s.to_string())
            .collect();
        (expected, rest)
    };
    let (single_ddl, single_sql) = split(&single_log, single_expected);
    let single_ddl: Vec<String> = migrated_ddl.into_iter().chain(single_ddl).collect();
    let (cluster_ddl, cluster_sql) = split(&cluster_log, ddl(CLUSTER_DB, Some(CLUSTER)));

    // Records for chdb_accepts.py: `session<TAB>kind<TAB>text`, NUL-separated.
    let mut records: Vec<(&str, &str, String)> = vec![
        ("single", "database", SINGLE_DB.into()),
        ("single", "database", MIGRATED_DB.into()),
        ("cluster", "cluster", CLUSTER.into()),
        // The schema as ddl() gives it for a cluster in `sw`, and as the store ran it in `sw_c`.
        ("cluster", "database", SINGLE_DB.into()),
        ("cluster", "database", CLUSTER_DB.into()),
    ];
    for session in ["single", "cluster"] {
        for s in &settings {
            records.push((session, "setting", s.clone()));
        }
    }
    let mut checked = 0;
    for (session, kind, list) in [
        ("single", "ddl", single_ddl),
        ("cluster", "ddl", ddl(SINGLE_DB, Some(CLUSTER))),
        ("cluster", "ddl", cluster_ddl),
        ("single", "sql", single_sql),
        ("cluster", "sql", cluster_sql),
    ] {
        for s in list {
            assert!(!s.contains('\0'), "a NUL in {s:?}");
            checked += 1;
            records.push((session, kind, s));
        }
    }
    let shapes: BTreeSet<String> = statements.iter().map(|s| shape(s)).collect();
    assert!(
        shapes.len() >= MIN_SHAPES,
        "only {} statement shapes logged: {shapes:#?}",
        shapes.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("statements.nul");
    let mut bytes = Vec::new();
    for (session, kind, text) in &records {
        bytes.extend_from_slice(format!("{session}\t{kind}\t{text}\0").as_bytes());
    }
    std::fs::write(&file, bytes).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chdb_accepts.py");
    let chdb_started = Instant::now();
    // Run in a directory of our own: chdb reads a config.xml in its working directory.
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("python3 {script}: {e} (scripts/test.sh installs chdb-core)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the current engine refused statements that 18.16 ({}) ran ({}):\n{stdout}{stderr}",
        version.trim(),
        out.status
    );
    let summary = stdout.lines().last().unwrap_or("");
    assert!(
        summary.contains(&format!(": {checked} statements accepted, 0 refused")),
        "python3 {script} checked other than the {checked} statements given:\n{stdout}{stderr}"
    );
    eprintln!(
        "ClickHouse {}: the store sent {} distinct statements ({} shapes), {} settings, in {:.1?}",
        version.trim(),
        statements.len(),
        shapes.len(),
        settings.len(),
        on_1816,
    );
    eprintln!(
        "{checked} statements (the store's, and the schema for a cluster in {SINGLE_DB}) \
         checked in {:.1?}: {summary}",
        chdb_started.elapsed(),
    );
}
