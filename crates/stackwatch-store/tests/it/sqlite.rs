//! The SQLite store: lossless ingest with checkpoints, dedup, rollups that never change
//! an answer, late windows, retention, time series.

use crate::sample_labels;

use stackwatch_store::{
    IngestWindow, Labels, ProfileReader, ProfileWriter, Selector, SqliteStore, StoreError,
    StoreOptions,
};

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
        labeled: Vec::new(),
        target: target.clone(),
        instance: instance.into(),
        seq,
        start_unix_s: ts,
        period_ns: 10_101_010,
        stacks: stacks.iter().map(|(s, c)| (s.to_string(), *c)).collect(),
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("stackwatch.db"), StoreOptions::default()).unwrap()
}

const T0: i64 = 1_795_000_000 - 1_795_000_000 % 3600; // an hour boundary

#[test]
fn ingest_dedups_stacks_and_checkpoints_atomically_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = labels(&[("service", "api"), ("instance", "a"), ("version", "main")]);
    let b = labels(&[("service", "api"), ("instance", "b"), ("version", "canary")]);
    {
        let mut s = open(&dir);
        let st = s
            .ingest(&[
                window(&a, "i1", 1, T0, &[("main;x;y", 5), ("main;x", 1)]),
                window(&a, "i1", 2, T0 + 10, &[("main;x;y", 2)]),
                window(&b, "i9", 7, T0, &[("main;x;y", 4), ("main;<script>", 1)]),
            ])
            .unwrap();
        assert_eq!(st.rows, 5);
        assert_eq!(st.new_stacks, 3, "stacks are stored once");
    }
    let s = open(&dir);
    assert_eq!(s.checkpoints(&a).unwrap()[0].last_seq, 2);
    assert_eq!(s.checkpoints(&b).unwrap()[0].instance, "i9");
    let all = s.profile(&Selector::all(), T0, T0 + 60).unwrap();
    assert_eq!(all.stacks["main;x;y"], 11);
    assert_eq!(all.total(), 13);
    let canary = s
        .profile(
            &Selector::parse(r#"{version="canary"}"#).unwrap(),
            T0,
            T0 + 60,
        )
        .unwrap();
    assert_eq!(canary.total(), 5);
    assert_eq!(canary.stacks["main;<script>"], 1);
    let none = s
        .profile(
            &Selector::parse(r#"{service="nope"}"#).unwrap(),
            T0,
            T0 + 60,
        )
        .unwrap();
    assert_eq!(none.total(), 0);
    assert_eq!(s.integrity_check().unwrap(), "ok");
    assert_eq!(s.targets().unwrap().len(), 2);
}

#[test]
fn rollups_never_change_an_answer_and_late_windows_still_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir);
    let t = labels(&[("service", "api")]);
    // Three hours of 10 s windows.
    let mut windows = Vec::new();
    for i in 0..(3 * 360) {
        let ts = T0 + i * 10;
        windows.push(window(
            &t,
            "i",
            i as u64 + 1,
            ts,
            &[("m;a", 1 + (i % 3) as u64), ("m;b", 2)],
        ));
    }
    s.ingest(&windows).unwrap();
    let ranges = [
        (T0, T0 + 3 * 3600),
        (T0 + 17, T0 + 7207),
        (T0 + 3599, T0 + 3601),
        (T0 + 1000, T0 + 9000),
    ];
    let before: Vec<_> = ranges
        .iter()
        .map(|(a, b)| s.profile(&Selector::all(), *a, *b).unwrap())
        .collect();
    let series_before = s
        .timeseries(&Selector::all(), T0, T0 + 3 * 3600, 600)
        .unwrap();
    // Roll everything up (the job does bounded chunks; loop until done).
    let now = T0 + 4 * 3600;
    let mut rounds = 0;
    while s.rollup(now).unwrap() {
        rounds += 1;
        assert!(rounds < 1000);
    }
    for ((a, b), p) in ranges.iter().zip(&before) {
        let after = s.profile(&Selector::all(), *a, *b).unwrap();
        assert_eq!(after.stacks, p.stacks, "range {a}..{b} changed by rollup");
    }
    assert_eq!(
        s.timeseries(&Selector::all(), T0, T0 + 3 * 3600, 600)
            .unwrap(),
        series_before
    );
    // A window that arrives after its hour was rolled up still counts everywhere.
    s.ingest(&[window(&t, "j", 1, T0 + 5, &[("m;late", 9)])])
        .unwrap();
    let p = s.profile(&Selector::all(), T0, T0 + 3600).unwrap();
    assert_eq!(p.stacks["m;late"], 9);
    let p = s.profile(&Selector::all(), T0 + 5, T0 + 6).unwrap();
    assert_eq!(p.stacks["m;late"], 9);
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

#[test]
fn an_hour_rolled_up_in_target_batches_still_counts_a_window_arriving_mid_way() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir);
    let targets: Vec<Labels> = (0..120)
        .map(|i| labels(&[("instance", &i.to_string())]))
        .collect();
    let windows: Vec<_> = targets
        .iter()
        .map(|t| window(t, "i", 1, T0 + 30, &[("m;a", 2)]))
        .collect();
    s.ingest(&windows).unwrap();
    let now = T0 + 2 * 3600;
    // Step 1 rolls the minute; step 2 finishes the minutes and rolls the hour for the
    // first 50 targets only.
    assert!(s.rollup(now).unwrap());
    assert!(s.rollup(now).unwrap());
    // Target 0 is already covered for this hour; a window of it arrives now.
    s.ingest(&[window(&targets[0], "j", 1, T0 + 50, &[("m;late", 7)])])
        .unwrap();
    let mut steps = 0;
    while s.rollup(now).unwrap() {
        steps += 1;
        assert!(steps < 100);
    }
    assert!(steps >= 1, "the hour needed more batches");
    let p = s.profile(&Selector::all(), T0, T0 + 3600).unwrap();
    assert_eq!(p.stacks["m;a"], 240);
    assert_eq!(
        p.stacks["m;late"], 7,
        "a window arriving while its hour was being rolled up"
    );
    let p0 = s
        .profile(
            &Selector::parse(r#"{instance="0"}"#).unwrap(),
            T0,
            T0 + 3600,
        )
        .unwrap();
    assert_eq!(p0.total(), 9);
}

#[test]
fn retention_deletes_old_rows_per_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = SqliteStore::open(
        &dir.path().join("db"),
        StoreOptions {
            raw_retention: std::time::Duration::from_secs(3600),
            minute_retention: std::time::Duration::from_secs(2 * 3600),
            retention: std::time::Duration::from_secs(10 * 3600),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let t = labels(&[("service", "api")]);
    s.ingest(&[window(&t, "i", 1, T0, &[("m;a", 3)])]).unwrap();
    while s.rollup(T0 + 3 * 3600).unwrap() {}
    let deleted = s.apply_retention(T0 + 3 * 3600).unwrap().sample_rows;
    assert_eq!(deleted, 2, "raw and 1m rows are past their retention");
    assert_eq!(s.raw_rows().unwrap(), 0);
    // The hourly rollup still answers.
    assert_eq!(
        s.profile(&Selector::all(), T0, T0 + 3600).unwrap().total(),
        3
    );
    s.apply_retention(T0 + 11 * 3600).unwrap();
    assert_eq!(
        s.profile(&Selector::all(), T0, T0 + 3600).unwrap().total(),
        0
    );
}

#[test]
fn top_functions_and_diff_of_two_selections() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir);
    let main = labels(&[("service", "api"), ("version", "main")]);
    let canary = labels(&[("service", "api"), ("version", "canary")]);
    s.ingest(&[
        window(
            &main,
            "m",
            1,
            T0,
            &[("t;serve;parse", 10), ("t;serve;encode", 10)],
        ),
        window(
            &canary,
            "c",
            1,
            T0,
            &[
                ("t;serve;parse", 10),
                ("t;serve;encode", 30),
                ("t;serve;debug_fmt", 20),
            ],
        ),
    ])
    .unwrap();
    let sel = |v: &str| Selector::parse(&format!("{{version=\"{v}\"}}")).unwrap();
    let top = s
        .profile(&sel("canary"), T0, T0 + 10)
        .unwrap()
        .top_functions(10);
    assert_eq!((top[0].name.as_str(), top[0].total_count), ("serve", 60));
    let encode = top.iter().find(|f| f.name == "encode").unwrap();
    assert_eq!((encode.self_count, encode.total_count), (30, 30));
    assert_eq!(
        top.iter().position(|f| f.name == "encode"),
        Some(2),
        "after serve and t, by total"
    );
    let base = s.profile(&sel("main"), T0, T0 + 10).unwrap();
    let target = s.profile(&sel("canary"), T0, T0 + 10).unwrap();
    let folded = stackwatch_profile::svg::diff_folded(&base, &target);
    // Base (20 periods) is scaled to the target's 60: parse 10 -> 30, encode 10 -> 30.
    assert!(folded.contains("t;serve;debug_fmt 0 20"), "{folded}");
    assert!(folded.contains("t;serve;encode 30 30"), "{folded}");
}

#[test]
fn bad_ranges_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    assert!(s.profile(&Selector::all(), 10, 10).is_err());
    assert!(s.timeseries(&Selector::all(), 0, 10, 0).is_err());
    assert!(s.timeseries(&Selector::all(), 0, 10_000_000, 1).is_err());
}

/// Issue #10, item 7: retention never deleted stacks, targets or checkpoints, so a
/// fleet whose stacks change grew without bound; and it deleted raw rows whether or
/// not they had been rolled up.
#[test]
fn retention_reclaims_what_it_orphaned_and_never_what_is_not_rolled_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let opts = StoreOptions {
        raw_retention: std::time::Duration::from_secs(3600),
        minute_retention: std::time::Duration::from_secs(2 * 3600),
        retention: std::time::Duration::from_secs(10 * 3600),
        ..StoreOptions::default()
    };
    let mut s = SqliteStore::open(&path, opts.clone()).unwrap();
    let old = labels(&[("service", "gone")]);
    let kept = labels(&[("service", "kept")]);
    s.ingest(&[window(&old, "i", 1, T0, &[("m;old", 3), ("m;shared", 1)])])
        .unwrap();
    // Not rolled up yet: a retention pass past the raw retention keeps the raw rows.
    s.apply_retention(T0 + 3 * 3600).unwrap();
    assert_eq!(s.raw_rows().unwrap(), 2, "raw rows not rolled up are kept");
    while s.rollup(T0 + 3 * 3600).unwrap() {}
    let late = T0 + 20 * 3600;
    s.ingest(&[window(
        &kept,
        "j",
        1,
        late,
        &[("m;new", 2), ("m;shared", 1)],
    )])
    .unwrap();
    let count = |table: &str| -> i64 {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        (count("stacks"), count("targets"), count("series")),
        (3, 2, 2)
    );
    // Past the first target's data: its own stack goes.
    let deleted = s.apply_retention(late + 3600).unwrap();
    assert_eq!(
        deleted.stacks, 1,
        "{deleted:?}: m;old only; m;shared is still named"
    );
    assert_eq!(count("stacks"), 2);
    // The checkpoint of "gone" is younger than the retention by the wall clock: kept,
    // and with it its target.
    assert_eq!(count("targets"), 2);
    let far = stackwatch_profile::clock::unix_s() + 30 * 86_400;
    while s.rollup(far).unwrap() {}
    let deleted = s.apply_retention(far).unwrap();
    assert!(deleted.series >= 1 && deleted.targets >= 1, "{deleted:?}");
    // The newest data is past the retention too now: nothing is left.
    assert_eq!(
        (count("stacks"), count("targets"), count("series")),
        (0, 0, 0)
    );
    // And ingest still works afterwards (no cached id names a deleted row).
    let now = stackwatch_profile::clock::unix_s();
    s.ingest(&[window(&kept, "k", 1, now, &[("m;shared", 1)])])
        .unwrap();
    assert_eq!(
        s.profile(&Selector::all(), now - 10, now + 10)
            .unwrap()
            .total(),
        1
    );
}

/// Counts near 2^63 from a target cannot make a query overflow: a window's count is
/// capped at ingest and sums saturate.
#[test]
fn huge_counts_saturate_instead_of_failing_queries() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir);
    let t = labels(&[("service", "big")]);
    s.ingest(&[window(&t, "i", 1, T0, &[("m;x", u64::MAX)])])
        .unwrap();
    s.ingest(&[window(&t, "i", 2, T0 + 10, &[("m;x", u64::MAX)])])
        .unwrap();
    let p = s.profile(&Selector::all(), T0, T0 + 60);
    assert!(p.is_ok(), "{p:?}");
}

fn now() -> i64 {
    stackwatch_profile::clock::unix_s()
}

fn count_rows(path: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Issue #12, item 3: samples under label sets, selected by sample matchers next to
/// target matchers on every query path, grouped by a label, the same once the rollups
/// (which keep the label set) serve the range and the raw rows are gone.
#[test]
fn sample_labels_select_group_and_survive_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stackwatch.db");
    let mut s = SqliteStore::open(
        &path,
        StoreOptions {
            raw_retention: std::time::Duration::from_secs(3600),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let t0 = now() - now().rem_euclid(3600) - 4 * 3600;
    let stats = s.ingest(&sample_labels::fleet(t0)).unwrap();
    assert_eq!(stats.rows, 18 * 8);
    // The same stack of one window under two label sets (and unlabeled) is two rows.
    assert_eq!(
        count_rows(
            &path,
            &format!(
                "SELECT COUNT(*) FROM samples_raw WHERE ts = {t0} AND stack_id = (SELECT id FROM stacks WHERE stack = 'm;shared')"
            )
        ),
        3
    );
    assert_eq!(count_rows(&path, "SELECT COUNT(*) FROM label_sets"), 3);
    sample_labels::check_label_api(&s);
    sample_labels::check_queries(&s, t0, 18);
    sample_labels::check_queries(&s, t0, 6);

    while s.rollup(now()).unwrap() {}
    assert!(
        count_rows(
            &path,
            "SELECT COUNT(*) FROM samples_1h WHERE label_set <> 0"
        ) > 0,
        "hour rollups keep the label sets"
    );
    // Raw rows past their retention go: the rollups answer alone.
    s.apply_retention(now()).unwrap();
    assert_eq!(
        count_rows(
            &path,
            &format!(
                "SELECT COUNT(*) FROM samples_raw WHERE ts < {}",
                t0 + 3 * 3600
            )
        ),
        0
    );
    sample_labels::check_queries(&s, t0, 18);
    sample_labels::check_queries(&s, t0, 12);
    sample_labels::check_label_api(&s);
    // A minute rollup answers a 60 s step.
    let orders = Selector::parse(r#"{table="orders"}"#).unwrap();
    let minutes = s.timeseries(&orders, t0, t0 + 3600, 60).unwrap();
    assert_eq!(minutes.iter().map(|p| p.1).sum::<u64>(), 9 * 6);
    assert_eq!(minutes[0].1, 9);

    // A late labeled window, below both rollups' progress, counts under its set.
    let late = sample_labels::labeled_window(
        &sample_labels::target_x(),
        "late",
        1,
        t0 + 5,
        &[("m;idle", 1)],
        &[(&[("table", "late")], &[("m;late", 7)])],
    );
    s.ingest(&[late]).unwrap();
    let sel = |t: &str| Selector::parse(t).unwrap();
    let p = s.profile(&sel(r#"{table="late"}"#), t0, t0 + 3600).unwrap();
    assert_eq!((p.total(), p.stacks.get("m;late")), (7, Some(&7)));
    let g = s
        .grouped_series(&sel(r#"{service="x"}"#), t0, t0 + 3600, 3600, "table", 1)
        .unwrap();
    assert_eq!(g[0].value, "orders");
    // The rest: users 36, items 6, unlabeled 6 + 1, late 7.
    assert_eq!(g[1].points, vec![(t0, 36 + 6 + 6 + 1 + 7)]);
    sample_labels::check_repeated_groups(&mut s, t0 + 7200);
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

/// A store written by the version before sample labels (schema 2) is migrated in place
/// when opened: every row kept (as samples without labels), queryable, and labeled
/// windows stored beside them.
#[test]
fn a_version_2_store_is_migrated_in_place_and_stays_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stackwatch.db");
    let hash = |s: &str| xxhash_rust::xxh3::xxh3_64(s.as_bytes()) as i64;
    {
        // The statements of version 2, and rows as it wrote them.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(stackwatch_store::schema::SCHEMA_V1)
            .unwrap();
        c.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = 2; COMMIT;",
            stackwatch_store::schema::MIGRATE_V1_TO_V2
        ))
        .unwrap();
        c.execute(
            "INSERT INTO targets (id, key, labels, last_seen, period_ns) VALUES (1, 'service=\"old\"', '{\"service\":\"old\"}', ?1, 10101010)",
            [T0],
        )
        .unwrap();
        for (id, stack) in [(1, "m;a"), (2, "m;b")] {
            c.execute(
                "INSERT INTO stacks (id, hash, stack, last_seen) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id, hash(stack), stack, T0],
            )
            .unwrap();
        }
        c.execute_batch(&format!(
            "INSERT INTO samples_raw (ts, target_id, stack_id, count) VALUES ({a}, 1, 1, 5), ({b}, 1, 2, 3), ({c}, 1, 1, 2);
             INSERT INTO samples_1m (target_id, ts, stack_id, count) VALUES (1, {a}, 1, 5), (1, {b}, 2, 3);
             INSERT INTO samples_1h (target_id, ts, stack_id, count) VALUES (1, {a}, 1, 5), (1, {a}, 2, 3);
             INSERT INTO rollup_state (level, done_through) VALUES ('1m', {c}), ('1h', {c});
             INSERT INTO series (target_id, instance, last_seq, updated_at) VALUES (1, 'w', 3, {now});",
            a = T0,
            b = T0 + 600,
            c = T0 + 3600,
            now = now()
        ))
        .unwrap();
    }
    let version = || count_rows(&path, "PRAGMA user_version");
    let all = Selector::all();
    let sel = |t: &str| Selector::parse(t).unwrap();
    let old = labels(&[("service", "old")]);
    for round in 0..2 {
        let mut s = open(&dir);
        assert_eq!(version(), 3);
        assert_eq!(s.integrity_check().unwrap(), "ok");
        assert_eq!(s.checkpoints(&old).unwrap()[0].last_seq, 3 + round);
        // The hour from samples_1h, the next from raw rows.
        let p = s.profile(&all, T0, T0 + 3600).unwrap();
        assert_eq!((p.stacks["m;a"], p.stacks["m;b"]), (5, 3));
        let p = s.profile(&sel(r#"{table!="x"}"#), T0, T0 + 3600).unwrap();
        assert_eq!(p.total(), 8, "old rows have no labels: the empty value");
        assert_eq!(
            s.profile(&sel(r#"{table="x"}"#), T0, T0 + 3600)
                .unwrap()
                .total(),
            0
        );
        assert_eq!(
            s.timeseries(&all, T0, T0 + 2 * 3600, 600).unwrap()[1],
            (T0 + 600, 3)
        );
        if round == 0 {
            s.ingest(&[sample_labels::labeled_window(
                &old,
                "w",
                4,
                T0 + 3600,
                &[("m;a", 1)],
                &[(&[("table", "t")], &[("m;a", 4)])],
            )])
            .unwrap();
        }
        let p = s.profile(&all, T0 + 3600, T0 + 7200).unwrap();
        assert_eq!(p.stacks["m;a"], 2 + 1 + 4);
        assert_eq!(
            s.profile(&sel(r#"{table="t"}"#), T0 + 3600, T0 + 7200)
                .unwrap()
                .total(),
            4
        );
        let g = s
            .grouped_series(&all, T0, T0 + 7200, 3600, "table", 5)
            .unwrap();
        let got: Vec<(&str, u64)> = g
            .iter()
            .map(|s| (s.value.as_str(), s.points.iter().map(|p| p.1).sum()))
            .collect();
        assert_eq!(got, [("", 11), ("t", 4)]);
        assert_eq!(s.label_keys().unwrap().sample, ["table"]);
    }
}

/// Retention reclaims label sets no remaining row names, as it does stacks.
#[test]
fn retention_reclaims_label_sets_no_row_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut s = SqliteStore::open(
        &path,
        StoreOptions {
            raw_retention: std::time::Duration::from_secs(3600),
            minute_retention: std::time::Duration::from_secs(2 * 3600),
            retention: std::time::Duration::from_secs(10 * 3600),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let t = labels(&[("service", "api")]);
    let lw = |seq, ts, table: &str| {
        sample_labels::labeled_window(
            &t,
            "i",
            seq,
            ts,
            &[("m;x", 1)],
            &[(&[("table", table)], &[("m;x", 2)])],
        )
    };
    s.ingest(&[lw(1, T0, "old"), lw(2, T0 + 10, "both")])
        .unwrap();
    while s.rollup(T0 + 3 * 3600).unwrap() {}
    let late = T0 + 20 * 3600;
    s.ingest(&[lw(3, late, "both"), lw(4, late + 10, "new")])
        .unwrap();
    assert_eq!(count_rows(&path, "SELECT COUNT(*) FROM label_sets"), 3);
    let deleted = s.apply_retention(late + 3600).unwrap();
    assert_eq!(deleted.label_sets, 1, "{deleted:?}: only {{table=\"old\"}}");
    assert_eq!(s.label_values("table", 10).unwrap(), ["both", "new"]);
    let far = now() + 30 * 86_400;
    while s.rollup(far).unwrap() {}
    let deleted = s.apply_retention(far).unwrap();
    assert_eq!(deleted.label_sets, 2, "{deleted:?}");
    assert!(s.label_keys().unwrap().sample.is_empty());
    // Ingest still works afterwards (no cached id names a deleted set).
    s.ingest(&[lw(5, now(), "again")]).unwrap();
    let p = s
        .profile(
            &Selector::parse(r#"{table="again"}"#).unwrap(),
            now() - 10,
            now() + 10,
        )
        .unwrap();
    assert_eq!(p.total(), 2);
}

/// A stored label set whose text does not parse is a corrupt store, not a panic; a query
/// without sample matchers does not read the label sets at all.
#[test]
fn a_label_set_that_does_not_parse_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stackwatch.db");
    let mut s = open(&dir);
    let t0 = now() - now().rem_euclid(3600) - 4 * 3600;
    s.ingest(&sample_labels::fleet(t0)).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE label_sets SET labels = '{oops' WHERE id = (SELECT MIN(id) FROM label_sets)",
            [],
        )
        .unwrap();
    let s = SqliteStore::open_reader(&path).unwrap();
    let sel = Selector::parse(r#"{table="orders"}"#).unwrap();
    assert!(matches!(
        s.profile(&sel, t0, t0 + 3600),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(s.label_keys(), Err(StoreError::Corrupt(_))));
    assert!(matches!(
        s.grouped_series(&Selector::all(), t0, t0 + 3600, 600, "table", 5),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(
        s.profile(&Selector::parse(r#"{service="x"}"#).unwrap(), t0, t0 + 3600)
            .unwrap()
            .total(),
        16 * 6
    );
}

/// Issue 24: a file locked by another connection for longer than the busy timeout is a
/// transient error (the collector keeps the windows in its backlog and retries), not a
/// refusal of the windows; once the lock is gone the same windows are stored, once.
#[test]
fn a_locked_database_is_a_transient_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let t = labels(&[("service", "locked")]);
    let now = stackwatch_profile::clock::unix_s();
    let w = vec![window(&t, "i", 1, now, &[("main;work", 5)])];
    let other = rusqlite::Connection::open(dir.path().join("stackwatch.db")).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let e = store.ingest(&w).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("locked"), "{e}");
    other.execute_batch("COMMIT").unwrap();
    store.ingest(&w).unwrap();
    assert_eq!(store.raw_totals().unwrap(), vec![(t.clone(), 5)]);
    // What the store refuses for what it asks stays permanent.
    let e = store
        .ingest(&[window(
            &labels(&[("service", "x")]),
            "i",
            1,
            -1,
            &[("a", 1)],
        )])
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert_eq!(
        store
            .check_window(&window(&t, "i", 2, -1, &[]), now)
            .unwrap_err()
            .to_string(),
        e.to_string().replace("window 1", "window 2")
    );
    store
        .check_window(&window(&t, "i", 2, now, &[]), now)
        .unwrap();
}
