//! The ClickHouse store against real servers: Debian's clickhouse-server (18.16),
//! started here on free loopback ports, as one node and as a 2-shard cluster.

use crate::clickhouse;
use crate::sample_labels;

use std::time::Duration;

use clickhouse::ClickHouse;
use stackwatch_store::{
    ClickHouseOptions, ClickHouseStore, IngestWindow, Labels, ProfileReader, ProfileWriter,
    Selector, StoreError, OTHER_FRAME,
};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn options(node: &ClickHouse, db: &str) -> ClickHouseOptions {
    ClickHouseOptions {
        url: node.http_url.clone(),
        database: db.into(),
        user: node.user.into(),
        password: node.password.into(),
        ..Default::default()
    }
}

fn window(
    target: &Labels,
    instance: &str,
    seq: u64,
    ts: i64,
    stacks: &[(&str, u64)],
) -> IngestWindow {
    IngestWindow {
        labeled: Vec::new(),
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

/// Everything a query node answers, on a store where windows were stored once, twice
/// (a retried insert), and by two collectors (a hand-off): each window counts once.
fn exercise(store: &mut ClickHouseStore, other: &mut ClickHouseStore) {
    let a = labels(&[("service", "api"), ("instance", "a")]);
    let b = labels(&[("service", "db"), ("instance", "b")]);
    let t0 = (now() / 3600) * 3600 - 3 * 3600;
    let mut windows = Vec::new();
    for i in 0..30u64 {
        let ts = t0 + i as i64 * 600;
        windows.push(window(
            &a,
            "w1",
            i + 1,
            ts,
            &[
                ("main;work;<script>alert(1)</script>", 3),
                ("main;idle\tx", 1),
            ],
        ));
        windows.push(window(&b, "w2", i + 1, ts, &[("main;query", 2)]));
    }
    store.ingest(&windows).unwrap();
    // The same windows again, from this writer (a retry) and from another (hand-off).
    store.ingest(&windows[..10]).unwrap();
    other.ingest(&windows[5..20]).unwrap();
    let all = store.profile(&Selector::all(), t0, t0 + 30 * 600).unwrap();
    assert_eq!(all.total(), 30 * 6, "{:?}", all.stacks);
    assert_eq!(
        all.stacks.get("main;work;<script>alert(1)</script>"),
        Some(&90)
    );
    assert_eq!(all.stacks.get("main;idle\tx"), Some(&30));
    let api = store
        .profile(
            &Selector::parse(r#"{service="api"}"#).unwrap(),
            t0,
            t0 + 30 * 600,
        )
        .unwrap();
    assert_eq!(api.total(), 30 * 4);
    let cps = store.checkpoints(&a).unwrap();
    assert_eq!(cps.len(), 1);
    assert_eq!((cps[0].instance.as_str(), cps[0].last_seq), ("w1", 30));
    assert_eq!(store.targets().unwrap(), vec![a.clone(), b.clone()]);
    let series = store
        .target_series(&Selector::all(), t0, t0 + 30 * 600, 3600)
        .unwrap();
    assert_eq!(series.len(), 2);
    let sa = series.iter().find(|s| s.labels == a).unwrap();
    assert_eq!(sa.period_ns, 10_101_010);
    assert_eq!(sa.points.iter().map(|p| p.1).sum::<u64>(), 120);
    assert_eq!(sa.points[0], (t0, 6 * 4));
    let ts = store
        .timeseries(&Selector::all(), t0, t0 + 3600, 600)
        .unwrap();
    assert_eq!(ts, (0..6).map(|i| (t0 + i * 600, 6)).collect::<Vec<_>>());
    let b = store
        .bucketed_stacks(&Selector::all(), t0, t0 + 3600, 1800)
        .unwrap();
    assert_eq!(b.stacks.len(), 3);
    assert_eq!(b.counts.iter().map(|c| c.2).sum::<u64>(), 36);

    // Rollups computed by ClickHouse give the same answers; a late window re-rolls.
    while store.rollup(now()).unwrap() {}
    store
        .ingest(&[window(&a, "w1", 31, t0 + 5, &[("main;late", 7)])])
        .unwrap();
    let rolled = store.profile(&Selector::all(), t0, t0 + 30 * 600).unwrap();
    assert_eq!(rolled.total(), 30 * 6 + 7);
    assert_eq!(rolled.stacks.get("main;late"), Some(&7));
    let minutes = store
        .timeseries(&Selector::all(), t0, t0 + 3600, 60)
        .unwrap();
    assert_eq!(minutes[0], (t0, 6 + 7));
    // Answers stay bounded: [other] holds the rest, totals exact.
    let mut small = store.reader(None);
    let _ = &mut small;
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn a_single_node_counts_every_window_once() {
    let node = ClickHouse::start();
    node.query("CREATE DATABASE sw").unwrap();
    let mut store = ClickHouseStore::open(options(&node, "sw")).unwrap();
    let mut other = ClickHouseStore::open(options(&node, "sw")).unwrap();
    exercise(&mut store, &mut other);

    let bounded = ClickHouseStore::open(ClickHouseOptions {
        max_answer_stacks: 2,
        ..options(&node, "sw")
    })
    .unwrap();
    let t0 = (now() / 3600) * 3600 - 3 * 3600;
    let p = bounded
        .profile(&Selector::all(), t0, t0 + 30 * 600)
        .unwrap();
    assert_eq!(p.total(), 30 * 6 + 7);
    assert_eq!(p.stacks.len(), 2);
    assert!(p.stacks.contains_key(OTHER_FRAME));

    // Retention drops whole days past the retention and nothing newer.
    let dropped = store.apply_retention(now()).unwrap();
    assert_eq!(dropped.sample_rows, 0);
    // A stalled rollup keeps raw days (and the stacks they name) past their retention.
    let stalled = store.apply_retention(now() + 40 * 86_400).unwrap();
    assert_eq!(stalled.stacks, 0, "{stalled:?}");
    assert!(
        store
            .profile(&Selector::all(), t0, t0 + 30 * 600)
            .unwrap()
            .total()
            > 0
    );
    // Rolled up 40 days on, everything is past the retention and goes.
    while store.rollup(now() + 40 * 86_400).unwrap() {}
    let far = store.apply_retention(now() + 40 * 86_400).unwrap();
    assert!(
        far.sample_rows > 0 && far.stacks > 0 && far.targets > 0,
        "{far:?}"
    );
    assert_eq!(
        store
            .profile(&Selector::all(), t0, t0 + 30 * 600)
            .unwrap()
            .total(),
        0
    );
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn a_two_shard_cluster_answers_like_one_node() {
    let nodes = ClickHouse::start_cluster("two", 2);
    for n in &nodes {
        n.query("CREATE DATABASE sw").unwrap();
    }
    let opts = ClickHouseOptions {
        cluster: Some("two".into()),
        shard_urls: nodes.iter().map(|n| n.http_url.clone()).collect(),
        ..options(&nodes[0], "sw")
    };
    let mut store = ClickHouseStore::open(opts.clone()).unwrap();
    // A second collector entering through the other node.
    let mut other = ClickHouseStore::open(ClickHouseOptions {
        url: nodes[1].http_url.clone(),
        ..opts.clone()
    })
    .unwrap();
    exercise(&mut store, &mut other);
    // The shards together hold every row, each once (rows are sharded by target).
    let local: u64 = nodes
        .iter()
        .map(|n| {
            n.query("SELECT count() FROM sw.samples_raw_local FINAL")
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let all: u64 = nodes[0]
        .query("SELECT count() FROM sw.samples_raw FINAL")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!((local, all), (91, 91));
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn startup_errors_name_the_key() {
    let node = ClickHouse::start();
    let err = |o: ClickHouseOptions| match ClickHouseStore::open(o) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened"),
    };
    let e = err(options(&node, "missing"));
    assert!(
        e.starts_with("store.database: database missing does not exist"),
        "{e}"
    );
    let e = err(ClickHouseOptions {
        password: "wrong".into(),
        ..options(&node, "default")
    });
    assert!(e.starts_with("store.password:"), "{e}");
    let e = err(ClickHouseOptions {
        url: "http://127.0.0.1:1".into(),
        ..options(&node, "default")
    });
    assert!(e.starts_with("store.url:"), "{e}");
    let e = err(ClickHouseOptions {
        url: "not a url".into(),
        ..options(&node, "default")
    });
    assert!(e.starts_with("store.url:"), "{e}");
    let e = err(ClickHouseOptions {
        cluster: Some("nope".into()),
        ..options(&node, "default")
    });
    assert!(e.starts_with("store.cluster:"), "{e}");
    assert!(!e.contains('\n'));
    // A store written by a newer stackwatch is refused.
    node.query("CREATE DATABASE newer").unwrap();
    drop(ClickHouseStore::open(options(&node, "newer")).unwrap());
    node.query("INSERT INTO newer.meta (key, value) VALUES ('schema_version', 99)")
        .unwrap();
    assert!(matches!(
        ClickHouseStore::open(options(&node, "newer")),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn a_down_server_is_unavailable_not_a_hang() {
    let mut node = ClickHouse::start();
    node.query("CREATE DATABASE sw").unwrap();
    let mut store = ClickHouseStore::open(ClickHouseOptions {
        timeout: Duration::from_secs(5),
        ..options(&node, "sw")
    })
    .unwrap();
    node.kill();
    let a = labels(&[("service", "api")]);
    let e = store
        .ingest(&[window(&a, "w", 1, now() - 60, &[("main", 1)])])
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    let e = store
        .profile(&Selector::all(), now() - 60, now())
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    // What the store will refuse once back is refused while it is down, as permanent
    // (the collector's writer checks before it backlogs: issue 24).
    let old = window(&a, "w", 2, now() - 3 * 86_400, &[("main", 1)]);
    let e = store.check_window(&old, now()).unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("older than the raw retention"),
        "{e}"
    );
    let e = store.ingest(&[old]).unwrap_err();
    assert!(!e.is_transient(), "{e}");
    node.restart();
    store
        .ingest(&[window(&a, "w", 1, now() - 60, &[("main", 1)])])
        .unwrap();
    assert_eq!(
        store
            .profile(&Selector::all(), now() - 120, now())
            .unwrap()
            .total(),
        1
    );
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn migrating_a_sqlite_store_twice_doubles_nothing() {
    use stackwatch_store::{migrate_sqlite, SqliteStore, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stackwatch.db");
    let a = labels(&[("service", "api"), ("instance", "a")]);
    let t0 = (now() / 3600) * 3600 - 5 * 3600;
    {
        let mut sqlite = SqliteStore::open(&db, StoreOptions::default()).unwrap();
        let windows: Vec<IngestWindow> = (0..50u64)
            .map(|i| {
                window(
                    &a,
                    "w1",
                    i + 1,
                    t0 + i as i64 * 300,
                    &[("main;a", 2), ("main;b;'quoted'\\", 1)],
                )
            })
            .collect();
        sqlite.ingest(&windows).unwrap();
        // A labeled fleet beside it (sample labels, issue #12).
        sqlite.ingest(&sample_labels::fleet(t0)).unwrap();
        while sqlite.rollup(now()).unwrap() {}
    }
    let node = ClickHouse::start();
    node.query("CREATE DATABASE sw").unwrap();
    let dest = ClickHouseStore::open(options(&node, "sw")).unwrap();
    let first = migrate_sqlite(&db, &dest, |_, _| {}).unwrap();
    let second = migrate_sqlite(&db, &dest, |_, _| {}).unwrap();
    assert_eq!(first, second);
    assert_eq!((first.targets, first.label_sets), (3, 3));
    let sqlite = SqliteStore::open_reader(&db).unwrap();
    for (from, to) in [
        (t0, t0 + 50 * 300),
        (t0 + 600, t0 + 3 * 3600 + 60),
        (t0 - 3600, now()),
    ] {
        for sel in [
            "{}",
            r#"{service="api"}"#,
            r#"{table="orders"}"#,
            r#"{table!="orders", service=~"x|api"}"#,
            r#"{op="insert"}"#,
        ] {
            let sel = Selector::parse(sel).unwrap();
            let want = sqlite.profile(&sel, from, to).unwrap();
            let got = dest.profile(&sel, from, to).unwrap();
            assert_eq!(got.stacks, want.stacks, "{sel} [{from}, {to})");
        }
        let want = sqlite
            .grouped_series(&Selector::all(), from, to, 3600, "table", 2)
            .unwrap();
        let got = dest
            .grouped_series(&Selector::all(), from, to, 3600, "table", 2)
            .unwrap();
        assert_eq!(got, want, "[{from}, {to})");
    }
    assert_eq!(dest.checkpoints(&a).unwrap()[0].last_seq, 50);
    assert_eq!(dest.targets().unwrap().len(), 3);
    assert_eq!(dest.label_keys().unwrap(), sqlite.label_keys().unwrap());

    // A store of the version before sample labels (schema 2) copies as unlabeled.
    let v2 = dir.path().join("v2.db");
    {
        let c = rusqlite::Connection::open(&v2).unwrap();
        c.execute_batch(stackwatch_store::schema::SCHEMA_V1)
            .unwrap();
        c.execute_batch(&format!(
            "{} PRAGMA user_version = 2;",
            stackwatch_store::schema::MIGRATE_V1_TO_V2
        ))
        .unwrap();
        c.execute_batch(&format!(
            "INSERT INTO targets (id, key, labels, last_seen, period_ns) VALUES (1, 'service=\"v2\"', '{{\"service\":\"v2\"}}', {t0}, 0);
             INSERT INTO stacks (id, hash, stack, last_seen) VALUES (1, 0, 'm;v2', {t0});
             INSERT INTO samples_raw (ts, target_id, stack_id, count) VALUES ({t0}, 1, 1, 6);"
        ))
        .unwrap();
    }
    let copied = migrate_sqlite(&v2, &dest, |_, _| {}).unwrap();
    assert_eq!((copied.sample_rows, copied.label_sets), (1, 0));
    let p = dest
        .profile(
            &Selector::parse(r#"{service="v2", table!="orders"}"#).unwrap(),
            t0,
            t0 + 600,
        )
        .unwrap();
    assert_eq!(p.stacks.get("m;v2"), Some(&6));
}

/// A fleet large enough that reads are split into parallel branches by (service,
/// target): every selection still sees each of its rows exactly once.
#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn reads_split_into_branches_cover_the_selection_exactly() {
    let node = ClickHouse::start();
    node.query("CREATE DATABASE sw").unwrap();
    let mut store = ClickHouseStore::open(options(&node, "sw")).unwrap();
    let t0 = (now() / 3600) * 3600 - 3 * 3600;
    let mut windows = Vec::new();
    for i in 0..300u64 {
        // Services of uneven sizes, one of them empty-named.
        let service = ["", "api", "api", "db", "edge", "edge", "edge"][(i % 7) as usize];
        let t = labels(&[("service", service), ("instance", &format!("i{i}"))]);
        for w in 0..4u64 {
            windows.push(window(
                &t,
                "w",
                w + 1,
                t0 + w as i64 * 900,
                &[("main;x", i + 1), ("main;y", 1)],
            ));
        }
    }
    store.ingest(&windows).unwrap();
    let total = |store: &ClickHouseStore, sel: &str| {
        store
            .profile(&Selector::parse(sel).unwrap(), t0, t0 + 3600)
            .unwrap()
            .total()
    };
    let want = |pred: &dyn Fn(u64) -> bool| -> u64 {
        (0..300u64).filter(|i| pred(*i)).map(|i| 4 * (i + 2)).sum()
    };
    for _ in 0..2 {
        assert_eq!(total(&store, "{}"), want(&|_| true));
        assert_eq!(total(&store, r#"{service="edge"}"#), want(&|i| i % 7 >= 4));
        assert_eq!(total(&store, r#"{service=""}"#), want(&|i| i % 7 == 0));
        assert_eq!(
            total(&store, r#"{instance=~"i1.*"}"#),
            want(&|i| format!("{i}").starts_with('1'))
        );
        // Again from the rollups.
        while store.rollup(now()).unwrap() {}
    }
}

fn count(node: &ClickHouse, sql: &str) -> u64 {
    node.query(sql).unwrap().trim().parse().unwrap()
}

/// Issue #12, item 3 on ClickHouse: labeled rows stored twice (a retry, a hand-off)
/// count once; sample matchers select on every query path; grouped series; rollups
/// keep the label set (answers the same with the raw rows dropped); retention drops
/// label sets. `nodes` are the servers (each shard's), `local` the suffix of the tables
/// that hold rows on one node.
fn exercise_labels(
    store: &mut ClickHouseStore,
    other: &mut ClickHouseStore,
    nodes: &[&ClickHouse],
    local: &str,
) {
    let t0 = (now() / 3600) * 3600 - 4 * 3600;
    let fleet = sample_labels::fleet(t0);
    store.ingest(&fleet).unwrap();
    store.ingest(&fleet[..10]).unwrap();
    other.ingest(&fleet[8..30]).unwrap();
    assert_eq!(
        count(nodes[0], "SELECT count() FROM sw.samples_raw FINAL"),
        18 * 8,
        "one row per (window, stack, label set), each once"
    );
    sample_labels::check_label_api(store);
    sample_labels::check_queries(store, t0, 18);
    sample_labels::check_queries(&store.reader(None), t0, 6);

    while store.rollup(now()).unwrap() {}
    assert!(
        count(
            nodes[0],
            "SELECT count() FROM sw.samples_1h FINAL WHERE labels != 0"
        ) > 0
    );
    sample_labels::check_queries(store, t0, 12);
    // Without the raw rows, the rollups answer alone.
    let days: std::collections::BTreeSet<String> = [t0, t0 + 3 * 3600 - 1]
        .iter()
        .map(|t| {
            nodes[0]
                .query(&format!("SELECT toYYYYMMDD(toDateTime({t}))"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    for n in nodes {
        for d in &days {
            n.query(&format!(
                "ALTER TABLE sw.samples_raw{local} DROP PARTITION {d}"
            ))
            .unwrap();
        }
    }
    assert_eq!(count(nodes[0], "SELECT count() FROM sw.samples_raw"), 0);
    sample_labels::check_queries(store, t0, 18);
    sample_labels::check_queries(store, t0, 12);

    // A late labeled window below both rollups' progress re-rolls under its set.
    store
        .ingest(&[sample_labels::labeled_window(
            &sample_labels::target_x(),
            "late",
            1,
            t0 + 5,
            &[],
            &[(&[("table", "late")], &[("m;late", 7)])],
        )])
        .unwrap();
    let late = Selector::parse(r#"{table="late"}"#).unwrap();
    assert_eq!(store.profile(&late, t0, t0 + 3600).unwrap().total(), 7);
    assert_eq!(
        store.timeseries(&late, t0, t0 + 3600, 3600).unwrap(),
        [(t0, 7)]
    );
    assert_eq!(
        store.timeseries(&late, t0, t0 + 120, 60).unwrap()[0],
        (t0, 7)
    );
    assert_eq!(
        store.label_values("table", 10).unwrap(),
        ["items", "late", "orders", "users"]
    );

    // 40 days on, rolled up, everything is past the retention: label sets go too.
    let far = now() + 40 * 86_400;
    while store.rollup(far).unwrap() {}
    let dropped = store.apply_retention(far).unwrap();
    assert!(dropped.label_sets > 0, "{dropped:?}");
    assert!(store.label_keys().unwrap().sample.is_empty());
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn sample_labels_on_a_single_node() {
    let node = ClickHouse::start();
    node.query("CREATE DATABASE sw").unwrap();
    let mut store = ClickHouseStore::open(options(&node, "sw")).unwrap();
    let mut other = ClickHouseStore::open(options(&node, "sw")).unwrap();
    exercise_labels(&mut store, &mut other, &[&node], "");
    sample_labels::check_repeated_groups(&mut store, now() - 60);
    // A stored label set whose text does not parse is a corrupt store, not a panic.
    node.query("INSERT INTO sw.label_sets (hash, labels, seen) VALUES (42, '{oops', today())")
        .unwrap();
    assert!(matches!(store.label_keys(), Err(StoreError::Corrupt(_))));
    let orders = Selector::parse(r#"{table="orders"}"#).unwrap();
    assert!(matches!(
        store.profile(&orders, now() - 60, now()),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn sample_labels_on_a_two_shard_cluster() {
    let nodes = ClickHouse::start_cluster("two", 2);
    for n in &nodes {
        n.query("CREATE DATABASE sw").unwrap();
    }
    let opts = ClickHouseOptions {
        cluster: Some("two".into()),
        shard_urls: nodes.iter().map(|n| n.http_url.clone()).collect(),
        ..options(&nodes[0], "sw")
    };
    let mut store = ClickHouseStore::open(opts.clone()).unwrap();
    let mut other = ClickHouseStore::open(ClickHouseOptions {
        url: nodes[1].http_url.clone(),
        ..opts
    })
    .unwrap();
    exercise_labels(&mut store, &mut other, &[&nodes[0], &nodes[1]], "_local");
}

/// Creates a version 1 database `sw` (the schema before sample labels) on `nodes`
/// (with `cluster`: `_local` tables and `Distributed` ones) and stores, as version 1
/// did, two hours of one target: raw rows, minute and hour rollups, the checkpoint.
fn version_1_store(nodes: &[&ClickHouse], cluster: Option<&str>, t0: i64) {
    use stackwatch_store::clickhouse::schema::{create_statements, TABLES_V1};
    for n in nodes {
        n.query("CREATE DATABASE sw").unwrap();
        for t in TABLES_V1 {
            for s in create_statements("sw", t, cluster) {
                n.query(&s).unwrap();
            }
        }
    }
    let target = xxhash_rust::xxh3::xxh3_64(br#"service="old""#);
    let (a, b) = (
        xxhash_rust::xxh3::xxh3_64(b"m;a"),
        xxhash_rust::xxh3::xxh3_64(b"m;b"),
    );
    let inst = xxhash_rust::xxh3::xxh3_64(b"w");
    let n = nodes[0];
    let ins = |sql: &str| {
        n.query_with(sql, &[("insert_distributed_sync", "1")])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    ins("INSERT INTO sw.meta (key, value) VALUES ('schema_version', 1)");
    ins(&format!(
        "INSERT INTO sw.stacks (hash, stack, seen) VALUES ({a}, 'm;a', today()), ({b}, 'm;b', today())"
    ));
    ins(&format!(
        "INSERT INTO sw.targets (id, service, labels, period_ns, seen, updated) VALUES ({target}, 'old', '{{\"service\":\"old\"}}', 10101010, today(), 1)"
    ));
    // 12 windows of 600 s: m;a 2 and m;b 1 each.
    let mut raw = Vec::new();
    for i in 0..12i64 {
        let ts = t0 + i * 600;
        raw.push(format!(
            "({ts}, 'old', {target}, {a}, {inst}, {}, 2)",
            i + 1
        ));
        raw.push(format!(
            "({ts}, 'old', {target}, {b}, {inst}, {}, 1)",
            i + 1
        ));
    }
    ins(&format!(
        "INSERT INTO sw.samples_raw (ts, service, target, stack, inst, seq, count) VALUES {}",
        raw.join(", ")
    ));
    // The first hour rolled up by version 1.
    let mut minutes = Vec::new();
    for i in 0..6i64 {
        let ts = t0 + i * 600;
        minutes.push(format!("({ts}, 'old', {target}, {a}, 2, 1)"));
        minutes.push(format!("({ts}, 'old', {target}, {b}, 1, 1)"));
    }
    ins(&format!(
        "INSERT INTO sw.samples_1m (ts, service, target, stack, count, version) VALUES {}",
        minutes.join(", ")
    ));
    ins(&format!(
        "INSERT INTO sw.samples_1h (ts, service, target, stack, count, version) VALUES ({t0}, 'old', {target}, {a}, 12, 1), ({t0}, 'old', {target}, {b}, 6, 1)"
    ));
    let done = t0 + 3600;
    ins(&format!(
        "INSERT INTO sw.rollup_state (level, value) VALUES ('1m-started', {done}), ('1m', {done}), ('1h-started', {done}), ('1h', {done})"
    ));
    ins(&format!(
        "INSERT INTO sw.series (target, inst, last_seq, updated) VALUES ({target}, 'w', 12, now())"
    ));
}

/// The version 1 store of [`version_1_store`], opened by this version: migrated in
/// place, every row kept and counted once, a retried old window still the same row,
/// labeled windows beside them; opening it again changes nothing.
fn check_migrated(nodes: &[&ClickHouse], opts: &ClickHouseOptions, local: &str, t0: i64) {
    let old = labels(&[("service", "old")]);
    let all = Selector::all();
    let sel = |t: &str| Selector::parse(t).unwrap();
    for round in 0..2 {
        let mut store = ClickHouseStore::open(opts.clone()).unwrap();
        for n in nodes {
            for table in ["samples_raw", "samples_1m", "samples_1h"] {
                let ddl = n
                    .query(&format!("SHOW CREATE TABLE sw.{table}{local}"))
                    .unwrap();
                assert!(
                    ddl.contains("labels UInt64") && ddl.contains(", labels)"),
                    "{table}{local}: {ddl}"
                );
                if !local.is_empty() {
                    let ddl = n.query(&format!("SHOW CREATE TABLE sw.{table}")).unwrap();
                    assert!(ddl.contains("labels UInt64"), "{table}: {ddl}");
                }
            }
        }
        assert_eq!(
            nodes[0]
                .query("SELECT max(value) FROM sw.meta WHERE key = 'schema_version'")
                .unwrap()
                .trim(),
            "2"
        );
        assert_eq!(store.checkpoints(&old).unwrap()[0].last_seq, 12 + round);
        // The first hour from samples_1h, the second from raw rows.
        let p = store.profile(&all, t0, t0 + 2 * 3600).unwrap();
        assert_eq!(
            (p.stacks["m;a"], p.stacks["m;b"]),
            (24, 12),
            "{:?}",
            p.stacks
        );
        assert_eq!(
            store
                .profile(&sel(r#"{table!="x"}"#), t0, t0 + 2 * 3600)
                .unwrap()
                .total(),
            36,
            "old rows have no labels: the empty value"
        );
        assert_eq!(
            store
                .profile(&sel(r#"{table="x"}"#), t0, t0 + 2 * 3600)
                .unwrap()
                .total(),
            0
        );
        if round == 0 {
            // A window version 1 stored, stored again now: the same key, counted once.
            store
                .ingest(&[window(&old, "w", 7, t0 + 3600, &[("m;a", 2), ("m;b", 1)])])
                .unwrap();
            store
                .ingest(&[sample_labels::labeled_window(
                    &old,
                    "w",
                    13,
                    t0 + 2 * 3600,
                    &[("m;a", 1)],
                    &[(&[("table", "t")], &[("m;a", 4)])],
                )])
                .unwrap();
        }
        let p = store.profile(&all, t0, t0 + 3 * 3600).unwrap();
        assert_eq!((p.stacks["m;a"], p.stacks["m;b"]), (24 + 5, 12));
        assert_eq!(
            store
                .profile(&sel(r#"{table="t"}"#), t0, t0 + 3 * 3600)
                .unwrap()
                .total(),
            4
        );
        let g = store
            .grouped_series(&all, t0, t0 + 3 * 3600, 3600, "table", 5)
            .unwrap();
        let got: Vec<(&str, u64)> = g
            .iter()
            .map(|s| (s.value.as_str(), s.points.iter().map(|p| p.1).sum()))
            .collect();
        assert_eq!(got, [("", 37), ("t", 4)]);
        // Rolled up over the migrated rows, the answers stay.
        while store.rollup(now()).unwrap() {}
        let p = store.profile(&all, t0, t0 + 3 * 3600).unwrap();
        assert_eq!((p.stacks["m;a"], p.stacks["m;b"]), (24 + 5, 12));
    }
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn a_version_1_database_is_migrated_in_place() {
    let node = ClickHouse::start();
    let t0 = (now() / 3600) * 3600 - 5 * 3600;
    version_1_store(&[&node], None, t0);
    check_migrated(&[&node], &options(&node, "sw"), "", t0);

    // A migration interrupted after its first table is completed by the next open.
    node.query("CREATE DATABASE half").unwrap();
    use stackwatch_store::clickhouse::schema::{create_statements, TABLES_V1};
    for t in TABLES_V1 {
        for s in create_statements("half", t, None) {
            node.query(&s).unwrap();
        }
    }
    node.query("INSERT INTO half.meta (key, value) VALUES ('schema_version', 1)")
        .unwrap();
    node.query("ALTER TABLE half.samples_raw ADD COLUMN labels UInt64 AFTER stack, MODIFY ORDER BY (toStartOfHour(ts), service, target, stack, ts, inst, seq, labels)")
        .unwrap();
    let mut store = ClickHouseStore::open(options(&node, "half")).unwrap();
    let t = labels(&[("service", "s")]);
    store
        .ingest(&[sample_labels::labeled_window(
            &t,
            "w",
            1,
            now() - 600,
            &[],
            &[(&[("table", "t")], &[("m", 3)])],
        )])
        .unwrap();
    while store.rollup(now() + 7200).unwrap() {}
    assert_eq!(
        count(
            &node,
            "SELECT count() FROM half.samples_1h FINAL WHERE labels != 0"
        ),
        1
    );
    assert_eq!(store.label_values("table", 5).unwrap(), ["t"]);
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn a_version_1_cluster_is_migrated_in_place() {
    let nodes = ClickHouse::start_cluster("two", 2);
    let t0 = (now() / 3600) * 3600 - 5 * 3600;
    version_1_store(&[&nodes[0], &nodes[1]], Some("two"), t0);
    let opts = ClickHouseOptions {
        cluster: Some("two".into()),
        shard_urls: nodes.iter().map(|n| n.http_url.clone()).collect(),
        ..options(&nodes[0], "sw")
    };
    check_migrated(&[&nodes[0], &nodes[1]], &opts, "_local", t0);
}
