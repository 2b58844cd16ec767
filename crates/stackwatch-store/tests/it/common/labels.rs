//! Sample labels through a store, the same checks for every backend: a fleet of two
//! targets whose samples carry label sets, selected by target and sample matchers on
//! every query path, grouped by a label, before and after the rollups.
//!
//! Included by the store's tests (tests/it/main.rs) as `mod sample_labels`.

#![allow(dead_code)]

use stackwatch_profile::SampleLabels;
use stackwatch_store::{
    IngestWindow, Labels, ProfileReader, ProfileWriter, Selector, OTHER_FRAME, OTHER_VALUE,
};

/// Labels (target or sample) from pairs.
pub fn set(pairs: &[(&str, &str)]) -> SampleLabels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Stacks and their periods.
pub type Stacks<'a> = &'a [(&'a str, u64)];
/// Label pairs.
pub type Pairs<'a> = &'a [(&'a str, &'a str)];

/// A window with unlabeled stacks and the stacks of each label set.
pub fn labeled_window(
    target: &Labels,
    instance: &str,
    seq: u64,
    ts: i64,
    unlabeled: Stacks<'_>,
    groups: &[(Pairs<'_>, Stacks<'_>)],
) -> IngestWindow {
    let stacks = |s: &[(&str, u64)]| -> Vec<(String, u64)> {
        s.iter().map(|(s, c)| (s.to_string(), *c)).collect()
    };
    IngestWindow {
        target: target.clone(),
        instance: instance.into(),
        seq,
        start_unix_s: ts,
        stacks: stacks(unlabeled),
        labeled: groups.iter().map(|(l, s)| (set(l), stacks(s))).collect(),
        period_ns: 10_101_010,
    }
}

/// Windows of the fleet.
pub const WINDOWS: i64 = 18;
/// Seconds between two windows of one target.
pub const EVERY: i64 = 600;

/// Target `x`: service x, instance a.
pub fn target_x() -> Labels {
    Labels::from(set(&[("service", "x"), ("instance", "a")]))
}

/// Target `y`: service y, instance b.
pub fn target_y() -> Labels {
    Labels::from(set(&[("service", "y"), ("instance", "b")]))
}

/// The fleet: from `t0`, every 600 s, 18 windows of each target. Per window, target x
/// has 1 unlabeled period (`m;idle`), 8 under `{table="orders"}` (`m;q;orders` 3,
/// `m;shared` 5), 6 under `{op="insert",table="users"}` (`m;q;users` 2, `m;shared` 4),
/// 1 under `{table="items"}`; target y 2 unlabeled (`m;b`) and 1 under
/// `{table="orders"}` (`m;shared`). 19 per pair of windows.
pub fn fleet(t0: i64) -> Vec<IngestWindow> {
    let (x, y) = (target_x(), target_y());
    let mut out = Vec::new();
    for i in 0..WINDOWS {
        let ts = t0 + i * EVERY;
        let seq = i as u64 + 1;
        out.push(labeled_window(
            &x,
            "wx",
            seq,
            ts,
            &[("m;idle", 1)],
            &[
                (
                    &[("table", "orders")],
                    &[("m;q;orders", 3), ("m;shared", 5)],
                ),
                (
                    &[("table", "users"), ("op", "insert")],
                    &[("m;q;users", 2), ("m;shared", 4)],
                ),
                (&[("table", "items")], &[("m;q;items", 1)]),
            ],
        ));
        out.push(labeled_window(
            &y,
            "wy",
            seq,
            ts,
            &[("m;b", 2)],
            &[(&[("table", "orders")], &[("m;shared", 1)])],
        ));
    }
    out
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap()
}

fn total(store: &dyn ProfileReader, selector: &str, from: i64, to: i64) -> u64 {
    store.profile(&sel(selector), from, to).unwrap().total()
}

/// Every query path over `[t0, t0 + n windows)` of [`fleet`] (`n` a multiple of 6, so
/// hour buckets are whole), with the selectors that split into target and sample
/// matchers.
pub fn check_queries(store: &dyn ProfileReader, t0: i64, n: i64) {
    let (from, to) = (t0, t0 + n * EVERY);
    let n = n as u64;
    // The label sets the rows of a selection use (a tenant's label listings).
    let used = |selector: &str| {
        let mut sets = store.sample_label_sets(&sel(selector), from, to).unwrap();
        sets.sort();
        sets
    };
    assert_eq!(used(r#"{service="y"}"#), [set(&[("table", "orders")])]);
    assert_eq!(
        used(r#"{service="x"}"#),
        [
            set(&[("op", "insert"), ("table", "users")]),
            set(&[("table", "items")]),
            set(&[("table", "orders")]),
        ]
    );
    assert_eq!(
        used(r#"{service="x", table="orders"}"#),
        [set(&[("table", "orders")])]
    );
    assert!(used(r#"{service="nope"}"#).is_empty());
    // Selection: target matchers, sample matchers, both.
    assert_eq!(total(store, "{}", from, to), 19 * n);
    assert_eq!(total(store, r#"{service="x"}"#, from, to), 16 * n);
    let p = store
        .profile(&sel(r#"{service="x", table="orders"}"#), from, to)
        .unwrap();
    assert_eq!(p.total(), 8 * n, "{:?}", p.stacks);
    assert_eq!(p.stacks.get("m;shared"), Some(&(5 * n)));
    assert_eq!(p.stacks.get("m;q;orders"), Some(&(3 * n)));
    assert_eq!(total(store, r#"{table="orders"}"#, from, to), 9 * n);
    // Prometheus semantics: a sample without the label has it empty.
    let p = store
        .profile(&sel(r#"{table!="orders"}"#), from, to)
        .unwrap();
    assert_eq!(p.total(), 10 * n, "{:?}", p.stacks);
    assert_eq!(
        p.stacks.get("m;idle"),
        Some(&n),
        "unlabeled samples are kept"
    );
    assert_eq!(p.stacks.get("m;b"), Some(&(2 * n)));
    assert_eq!(p.stacks.get("m;shared"), Some(&(4 * n)));
    assert_eq!(total(store, r#"{table=~"u.*|it.*"}"#, from, to), 7 * n);
    assert_eq!(total(store, r#"{table=~""}"#, from, to), 3 * n);
    assert_eq!(total(store, r#"{op="insert"}"#, from, to), 6 * n);
    assert_eq!(
        total(store, r#"{op!="insert", service="y"}"#, from, to),
        3 * n
    );
    assert_eq!(total(store, r#"{table="nope"}"#, from, to), 0);
    assert_eq!(total(store, r#"{zone!="b"}"#, from, to), 19 * n);

    // Time series, per target, bucketed stacks, top functions, diff.
    let orders = sel(r#"{table="orders"}"#);
    let ts = store.timeseries(&orders, from, to, 3600).unwrap();
    assert_eq!(ts.len() as u64, n / 6);
    assert!(ts.iter().all(|(_, c)| *c == 9 * 6), "{ts:?}");
    let series = store.target_series(&orders, from, to, 3600).unwrap();
    assert_eq!(series.len(), 2);
    let sx = series.iter().find(|s| s.labels == target_x()).unwrap();
    assert!(sx.points.iter().all(|p| p.1 == 8 * 6), "{:?}", sx.points);
    let b = store
        .bucketed_stacks(&sel(r#"{table!="orders"}"#), from, to, 3600)
        .unwrap();
    assert_eq!(b.counts.iter().map(|c| c.2).sum::<u64>(), 10 * n);
    let mut names: Vec<&str> = b.stacks.iter().map(|s| &**s).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["m;b", "m;idle", "m;q;items", "m;q;users", "m;shared"]
    );
    assert!(!names.contains(&OTHER_FRAME));
    let top = store
        .profile(&sel(r#"{service="x", table="orders"}"#), from, to)
        .unwrap()
        .top_functions(10);
    assert_eq!((top[0].name.as_str(), top[0].total_count), ("m", 8 * n));
    let base = store.profile(&sel(r#"{table="users"}"#), from, to).unwrap();
    let target = store
        .profile(&sel(r#"{table="orders"}"#), from, to)
        .unwrap();
    assert_eq!((base.total(), target.total()), (6 * n, 9 * n));

    check_grouped(store, from, to, n);
}

/// Grouped series of the fleet over `[from, to)` (`n` windows per target).
fn check_grouped(store: &dyn ProfileReader, from: i64, to: i64, n: u64) {
    let all = Selector::all();
    let values = |g: &[stackwatch_store::GroupedSeries]| -> Vec<(String, u64)> {
        g.iter()
            .map(|s| (s.value.clone(), s.points.iter().map(|p| p.1).sum()))
            .collect()
    };
    let owned = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(s, c)| (s.to_string(), *c)).collect()
    };
    // By a sample label: the top two, the rest (unlabeled and items) in [other].
    let g = store
        .grouped_series(&all, from, to, 3600, "table", 2)
        .unwrap();
    assert_eq!(
        values(&g),
        owned(&[("orders", 9 * n), ("users", 6 * n), (OTHER_VALUE, 4 * n)])
    );
    let ts = store.timeseries(&all, from, to, 3600).unwrap();
    for s in &g {
        assert_eq!(s.points.len(), ts.len(), "every bucket present");
    }
    for (i, (b, c)) in ts.iter().enumerate() {
        let sum: u64 = g.iter().map(|s| s.points[i].1).sum();
        assert_eq!(
            (g[0].points[i].0, sum),
            (*b, *c),
            "series add up to timeseries"
        );
    }
    // No limit hit: the samples without the label under the empty value.
    let g = store
        .grouped_series(&all, from, to, 3600, "table", 10)
        .unwrap();
    assert_eq!(
        values(&g),
        owned(&[
            ("orders", 9 * n),
            ("users", 6 * n),
            ("", 3 * n),
            ("items", n)
        ])
    );
    let g = store
        .grouped_series(&sel(r#"{service="x"}"#), from, to, 3600, "op", 5)
        .unwrap();
    assert_eq!(values(&g), owned(&[("", 10 * n), ("insert", 6 * n)]));
    // By a target label, with a sample matcher.
    let g = store
        .grouped_series(&sel(r#"{table="orders"}"#), from, to, 3600, "service", 5)
        .unwrap();
    assert_eq!(values(&g), owned(&[("x", 8 * n), ("y", n)]));
    let g = store
        .grouped_series(&all, from, to, 3600, "instance", 1)
        .unwrap();
    assert_eq!(values(&g), owned(&[("a", 16 * n), (OTHER_VALUE, 3 * n)]));
    // A range not on the step: buckets as timeseries has them.
    let g = store
        .grouped_series(&all, from + 1800, to, 3600, "table", 1)
        .unwrap();
    let ts = store.timeseries(&all, from + 1800, to, 3600).unwrap();
    assert_eq!(g[0].points.len(), ts.len());
    assert_eq!(
        g.iter()
            .map(|s| s.points.iter().map(|p| p.1).sum::<u64>())
            .sum::<u64>(),
        ts.iter().map(|p| p.1).sum::<u64>()
    );
    // Nothing selected: no series.
    assert!(store
        .grouped_series(&sel(r#"{table="nope"}"#), from, to, 3600, "table", 5)
        .unwrap()
        .is_empty());
}

/// The label names and values of [`fleet`].
pub fn check_label_api(store: &dyn ProfileReader) {
    let keys = store.label_keys().unwrap();
    assert_eq!(keys.target, ["instance", "service"]);
    assert_eq!(keys.sample, ["op", "table"]);
    assert_eq!(
        store.label_values("table", 10).unwrap(),
        ["items", "orders", "users"]
    );
    assert_eq!(store.label_values("table", 2).unwrap(), ["items", "orders"]);
    assert_eq!(store.label_values("op", 10).unwrap(), ["insert"]);
    assert_eq!(store.label_values("service", 10).unwrap(), ["x", "y"]);
    assert!(store.label_values("nope", 10).unwrap().is_empty());
}

/// A window whose groups repeat a stack (an empty label set beside the unlabeled
/// samples, one set given twice) stores the sum of each: nothing replaces anything.
pub fn check_repeated_groups(store: &mut dyn ProfileWriter, ts: i64) {
    let z = Labels::from(set(&[("service", "z")]));
    store
        .ingest(&[labeled_window(
            &z,
            "wz",
            1,
            ts,
            &[("m;z", 3)],
            &[
                (&[], &[("m;z", 2)]),
                (&[("table", "t")], &[("m;z", 1)]),
                (&[("table", "t")], &[("m;z", 4), ("m;z", 5)]),
            ],
        )])
        .unwrap();
    let total = |s: &str| {
        store
            .profile(&sel(s), ts, ts + 1)
            .unwrap()
            .stacks
            .get("m;z")
            .copied()
    };
    assert_eq!(total(r#"{service="z"}"#), Some(15));
    assert_eq!(total(r#"{service="z", table="t"}"#), Some(10));
    assert_eq!(total(r#"{service="z", table=""}"#), Some(5));
}
