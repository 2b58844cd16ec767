//! The SQLite store: lossless ingest with checkpoints, dedup, rollups that never change
//! an answer, late windows, retention, time series.

use stackwatch_store::{IngestWindow, Labels, ProfileStore, Selector, SqliteStore, StoreOptions};

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
    let top = s.top_functions(&sel("canary"), T0, T0 + 10, 10).unwrap();
    assert_eq!((top[0].name.as_str(), top[0].total_count), ("serve", 60));
    let encode = top.iter().find(|f| f.name == "encode").unwrap();
    assert_eq!((encode.self_count, encode.total_count), (30, 30));
    assert_eq!(
        top.iter().position(|f| f.name == "encode"),
        Some(2),
        "after serve and t, by total"
    );
    let (base, target) = s
        .diff((&sel("main"), T0, T0 + 10), (&sel("canary"), T0, T0 + 10))
        .unwrap();
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
