//! The ClickHouse store against real servers: Debian's clickhouse-server (18.16),
//! started here on free loopback ports, as one node and as a 2-shard cluster.

#[path = "common/clickhouse.rs"]
mod clickhouse;

use std::time::Duration;

use clickhouse::ClickHouse;
use stackwatch_store::{
    ClickHouseOptions, ClickHouseStore, IngestWindow, Labels, ProfileStore, Selector, StoreError,
    OTHER_FRAME,
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
        while sqlite.rollup(now()).unwrap() {}
    }
    let node = ClickHouse::start();
    node.query("CREATE DATABASE sw").unwrap();
    let dest = ClickHouseStore::open(options(&node, "sw")).unwrap();
    let first = migrate_sqlite(&db, &dest, |_, _| {}).unwrap();
    let second = migrate_sqlite(&db, &dest, |_, _| {}).unwrap();
    assert_eq!(first, second);
    assert_eq!(first.targets, 1);
    let sqlite = SqliteStore::open_reader(&db).unwrap();
    for (from, to) in [
        (t0, t0 + 50 * 300),
        (t0 + 600, t0 + 3 * 3600 + 60),
        (t0 - 3600, now()),
    ] {
        let want = sqlite.profile(&Selector::all(), from, to).unwrap();
        let got = dest.profile(&Selector::all(), from, to).unwrap();
        assert_eq!(got.stacks, want.stacks, "[{from}, {to})");
    }
    assert_eq!(dest.checkpoints(&a).unwrap()[0].last_seq, 50);
    assert_eq!(dest.targets().unwrap(), vec![a]);
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
