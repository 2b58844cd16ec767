//! Issue #13, item 3: profile types through the query API. A store holds CPU windows
//! beside allocation (`alloc_space`), in-use memory (`inuse_space`) and wall-clock
//! windows of the same service, each type a series of its own (the reserved target label
//! `__profile_type__`, absent for CPU). Every route selects CPU unless `type=` says
//! otherwise, answers in the type's unit, refuses an unknown type and a comparison of two
//! types with a 400, and never lists the reserved label among the labels.

use crate::common;

use std::io::Read;

use serde_json::Value;
use stackwatch_store::{IngestWindow, Labels};

use common::{labels, Collector};

const PERIOD_NS: u64 = 10_000_000;

fn window(target: &Labels, start: i64, period_ns: u64, stacks: &[(&str, u64)]) -> IngestWindow {
    IngestWindow {
        labeled: Vec::new(),
        target: target.clone(),
        instance: format!("w{start}"),
        seq: 0,
        start_unix_s: start,
        period_ns,
        stacks: stacks.iter().map(|(s, c)| (s.to_string(), *c)).collect(),
    }
}

/// Refusals, beside the queries of `common`.
impl Collector {
    /// A 400 naming `parameter`.
    fn refused(&self, path: &str, params: &[(&str, &str)], parameter: &str) -> String {
        let (status, body) = self.get(path, params);
        assert_eq!(status, 400, "{path} {params:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["parameter"], parameter, "{body}");
        v["error"].as_str().unwrap_or_default().to_string()
    }
}

/// The non-null values of a `[[ts, v], ...]` array, with their buckets.
fn present(points: &Value) -> Vec<(i64, f64)> {
    points
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Ten minutes ago, on a minute: the seeded windows start there, 10 s apart.
fn start() -> i64 {
    let now = stackwatch_profile::clock::unix_s();
    (now - 600).div_euclid(60) * 60
}

/// Per minute from `t0`, for six minutes: CPU 100 periods of 10 ms a window (6 windows
/// a minute: 0.1 core), allocations 6 000 bytes a window (600 bytes/s), in use 1 000, 3 000, 1 000,
/// 3 000, ... bytes (a mean of 2 000 per profile) on instance a and 500 on instance b,
/// wall 200 periods of 10 ms a window (0.2 s/s).
fn fleet(t0: i64) -> Vec<IngestWindow> {
    let cpu = labels(&[("service", "shop"), ("instance", "a")]);
    let alloc = labels(&[
        ("service", "shop"),
        ("instance", "a"),
        ("__profile_type__", "alloc_space"),
    ]);
    let inuse_a = labels(&[
        ("service", "shop"),
        ("instance", "a"),
        ("__profile_type__", "inuse_space"),
    ]);
    let inuse_b = labels(&[
        ("service", "shop"),
        ("instance", "b"),
        ("__profile_type__", "inuse_space"),
    ]);
    let wall = labels(&[
        ("service", "shop"),
        ("instance", "a"),
        ("__profile_type__", "wall"),
    ]);
    let mut out = Vec::new();
    for i in 0..36 {
        let t = t0 + 10 * i;
        out.push(window(
            &cpu,
            t,
            PERIOD_NS,
            &[("main;cpu_work;parse", 60), ("main;cpu_work;encode", 40)],
        ));
        out.push(window(
            &alloc,
            t,
            0,
            &[
                ("main;alloc_work;Vec::with_capacity", 4_000),
                ("main;alloc_work;String::from", 2_000),
            ],
        ));
        let live = if i % 2 == 0 { 1_000 } else { 3_000 };
        out.push(window(&inuse_a, t, 0, &[("main;cache::insert", live)]));
        out.push(window(&inuse_b, t, 0, &[("main;cache::insert", 500)]));
        out.push(window(
            &wall,
            t,
            PERIOD_NS,
            &[("main;wall_work;sleep", 200)],
        ));
    }
    out
}

#[test]
fn every_route_selects_cpu_by_default_and_another_type_with_type() {
    let t0 = start();
    let api = Collector::over_store(&fleet(t0));
    let (from, to) = (t0.to_string(), (t0 + 360).to_string());
    let range = [("from", from.as_str()), ("to", to.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = range.to_vec();
        v.extend_from_slice(extra);
        v
    };

    // Default: CPU only, in cores.
    let (status, folded) = api.get("/api/profile.folded", &with(&[]));
    assert_eq!(status, 200);
    assert!(folded.contains("main;cpu_work;parse 2160\n"), "{folded}");
    assert!(
        !folded.contains("alloc_work")
            && !folded.contains("cache::")
            && !folded.contains("wall_work"),
        "CPU only: {folded}"
    );
    let ts = api.json("/api/timeseries", &with(&[("step", "60")]));
    assert_eq!(ts["unit"], "cores");
    assert_eq!(ts["type"], "cpu");
    let pts = present(&ts["points"]);
    assert_eq!(pts.len(), 6, "{ts}");
    for (_, v) in &pts {
        // 6 windows × 100 periods × 10 ms over 60 s.
        assert!(close(*v, 0.1), "{ts}");
    }
    let top = api.json("/api/top", &with(&[]));
    assert_eq!(top["total"], 3600);
    assert_eq!(top["unit"], "cpu_periods");
    assert!(close(top["total_cores"].as_f64().unwrap(), 0.1), "{top}");
    assert_eq!(top["total_cores"], top["average"]);
    assert_eq!(top["average_unit"], "cores");
    let (_, svg) = api.get("/api/profile.svg", &with(&[]));
    assert!(
        svg.contains("CPU flamegraph") && svg.contains(" samples, "),
        "CPU title and samples"
    );

    // `type=alloc_space`: the allocations only, per second, and totals in bytes.
    let alloc = with(&[("type", "alloc_space")]);
    let (_, folded) = api.get("/api/profile.folded", &alloc);
    assert!(
        folded.contains("main;alloc_work;Vec::with_capacity 144000\n"),
        "{folded}"
    );
    assert!(
        !folded.contains("cpu_work") && !folded.contains("cache::"),
        "{folded}"
    );
    // Its pprof names the type and unit, not CPU; values are the bytes.
    let (status, _, pb) = api.get_bytes("/api/profile.pb.gz", &alloc);
    assert_eq!(status, 200);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&pb[..])
        .read_to_end(&mut raw)
        .unwrap();
    let msg =
        <stackwatch_profile::pprof::proto::Profile as prost::Message>::decode(&raw[..]).unwrap();
    let ty = &msg.sample_type;
    assert_eq!(ty.len(), 1);
    assert_eq!(msg.string_table[ty[0].r#type as usize], "alloc_space");
    assert_eq!(msg.string_table[ty[0].unit as usize], "bytes");
    let decoded = stackwatch_profile::pprof::decode(&pb, 1 << 24, &Default::default()).unwrap();
    assert_eq!(decoded.stacks["main;alloc_work;Vec::with_capacity"], 144000);
    let mut p = alloc.clone();
    p.push(("step", "60"));
    let ts = api.json("/api/timeseries", &p);
    assert_eq!(ts["unit"], "bytes_per_second");
    assert_eq!(ts["type"], "alloc_space");
    let pts = present(&ts["points"]);
    assert_eq!(pts.len(), 6, "{ts}");
    for (_, v) in &pts {
        // 6 windows × 6 000 bytes over 60 s.
        assert!(close(*v, 600.0), "{ts}");
    }
    let top = api.json("/api/top", &alloc);
    assert_eq!(top["total"], 216_000);
    assert_eq!(top["unit"], "bytes");
    assert_eq!(top["average_unit"], "bytes_per_second");
    assert!(close(top["average"].as_f64().unwrap(), 600.0), "{top}");
    assert!(
        top.get("total_cores").is_none(),
        "no cores for allocations: {top}"
    );
    assert_eq!(top["functions"][0]["name"], "Vec::with_capacity");
    let (_, svg) = api.get("/api/profile.svg", &alloc);
    assert!(
        svg.contains("bytes allocated") && svg.contains(" bytes, "),
        "alloc title and bytes"
    );
    assert!(!svg.contains("cpu_work"));
    // Grouped by instance: the series add up to the total.
    p.push(("group_by", "instance"));
    let ts = api.json("/api/timeseries", &p);
    let series = ts["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{ts}");
    assert_eq!(series[0]["name"], "a");
    assert_eq!(series[0]["points"], ts["points"]);

    // In use: the mean per profile of each target (2 000 and 500), summed: not the sum
    // of the six profiles a minute.
    let mut p = with(&[("type", "inuse_space"), ("step", "60")]);
    let ts = api.json("/api/timeseries", &p);
    assert_eq!(ts["unit"], "bytes");
    let pts = present(&ts["points"]);
    assert_eq!(pts.len(), 6, "{ts}");
    for (_, v) in &pts {
        assert!(close(*v, 2_500.0), "{ts}");
    }
    p.push(("group_by", "instance"));
    let ts = api.json("/api/timeseries", &p);
    let by: Vec<(String, Vec<(i64, f64)>)> = ts["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                present(&s["points"]),
            )
        })
        .collect();
    assert_eq!(by.len(), 2, "{ts}");
    assert_eq!(by[0].0, "a");
    assert!(by[0].1.iter().all(|(_, v)| close(*v, 2_000.0)), "{ts}");
    assert!(by[1].1.iter().all(|(_, v)| close(*v, 500.0)), "{ts}");
    // A function's own series, in bytes too: all of it is cache::insert.
    let ts = api.json(
        "/api/timeseries",
        &with(&[
            ("type", "inuse_space"),
            ("step", "60"),
            ("function", "cache::insert"),
        ]),
    );
    let own = present(&ts["function"]["total"]);
    assert_eq!(own.len(), 6, "{ts}");
    assert!(own.iter().all(|(_, v)| close(*v, 2_500.0)), "{ts}");
    let top = api.json("/api/top", &with(&[("type", "inuse_space")]));
    assert_eq!(top["unit"], "bytes");
    assert_eq!(top["average_unit"], "bytes");
    assert!(close(top["average"].as_f64().unwrap(), 2_500.0), "{top}");

    // Wall-clock time: seconds per second, like cores.
    let ts = api.json(
        "/api/timeseries",
        &with(&[("type", "wall"), ("step", "60")]),
    );
    assert_eq!(ts["unit"], "wall_seconds_per_second");
    assert!(
        present(&ts["points"]).iter().all(|(_, v)| close(*v, 0.2)),
        "{ts}"
    );

    // The selector may name the type instead of `type=`: the same selection.
    let (_, by_selector) = api.get(
        "/api/profile.folded",
        &with(&[(
            "query",
            r#"{service="shop",__profile_type__="alloc_space"}"#,
        )]),
    );
    let (_, by_type) = api.get(
        "/api/profile.folded",
        &with(&[("query", r#"{service="shop"}"#), ("type", "alloc_space")]),
    );
    assert_eq!(by_selector, by_type);
}

#[test]
fn unknown_types_and_mixed_comparisons_are_400() {
    let t0 = start();
    let api = Collector::over_store(&fleet(t0));
    let (from, to) = (t0.to_string(), (t0 + 360).to_string());
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = vec![("from", from.as_str()), ("to", to.as_str())];
        v.extend_from_slice(extra);
        v
    };
    for path in [
        "/api/profile.svg",
        "/api/profile.folded",
        "/api/profile.pb.gz",
        "/api/timeseries",
        "/api/top",
        "/api/changes",
        "/api/diff.svg",
    ] {
        let why = api.refused(path, &with(&[("type", "heap<script>")]), "type");
        assert!(
            why.contains("unknown profile type") && why.contains("alloc_space"),
            "{why}"
        );
    }
    api.refused("/api/changes", &with(&[("base_type", "nope")]), "base_type");
    // A type the selector names must be one, and agree with `type=`.
    api.refused(
        "/api/top",
        &with(&[("query", r#"{__profile_type__="nope"}"#)]),
        "query",
    );
    api.refused(
        "/api/top",
        &with(&[("query", r#"{__profile_type__=~"alloc.*"}"#)]),
        "query",
    );
    api.refused(
        "/api/top",
        &with(&[
            ("query", r#"{__profile_type__="wall"}"#),
            ("type", "alloc_space"),
        ]),
        "type",
    );

    // Comparisons: both sides one type.
    for path in ["/api/diff.svg", "/api/diff.folded", "/api/changes"] {
        let why = api.refused(
            path,
            &with(&[("type", "alloc_space"), ("base_type", "cpu")]),
            "base_type",
        );
        assert!(why.contains("alloc_space") && why.contains("cpu"), "{why}");
        api.refused(
            path,
            &with(&[
                ("base", r#"{__profile_type__="inuse_space"}"#),
                ("type", "alloc_space"),
            ]),
            "base_type",
        );
    }
    // The same type on both sides: the base follows the target's `type=`.
    let (status, folded) = api.get(
        "/api/diff.folded",
        &with(&[("type", "alloc_space"), ("base", r#"{instance="a"}"#)]),
    );
    assert_eq!(status, 200, "{folded}");
    assert!(
        folded.contains("alloc_work") && !folded.contains("cpu_work"),
        "{folded}"
    );
    let (status, svg) = api.get(
        "/api/diff.svg",
        &with(&[("type", "alloc_space"), ("base_type", "alloc_space")]),
    );
    assert_eq!(status, 200);
    assert!(svg.contains(" bytes"), "the diff counts bytes");
    let c = api.json("/api/changes", &with(&[("type", "alloc_space")]));
    assert_eq!(c["type"], "alloc_space");
    assert_eq!(c["target"]["unit"], "bytes_per_second");
    assert!(close(c["target"]["value"].as_f64().unwrap(), 600.0), "{c}");
    assert!(c["target"].get("cores").is_none(), "{c}");
    assert!(
        close(c["target"]["instances"]["a"].as_f64().unwrap(), 600.0),
        "{c}"
    );
    let c = api.json("/api/changes", &with(&[]));
    assert_eq!(c["target"]["unit"], "cores");
    assert!(close(c["target"]["cores"].as_f64().unwrap(), 0.1), "{c}");
}

#[test]
fn the_type_label_is_never_listed_and_profile_types_say_what_is_stored() {
    let api = Collector::over_store(&fleet(start()));
    let names = api.json("/api/labels", &[]);
    assert_eq!(names, serde_json::json!(["instance", "service"]), "{names}");
    let keys = api.json("/api/label-keys", &[]);
    assert_eq!(
        keys["target"],
        serde_json::json!(["instance", "service"]),
        "{keys}"
    );
    assert!(!keys.to_string().contains("__profile_type__"), "{keys}");

    let types = api.json("/api/profile-types", &[]);
    let list = types.as_array().unwrap();
    assert_eq!(list[0]["name"], "cpu", "CPU first: {types}");
    let find = |n: &str| list.iter().find(|t| t["name"] == n).cloned().unwrap();
    for (name, stored, unit, series_unit) in [
        ("cpu", true, "cpu_periods", "cores"),
        ("alloc_space", true, "bytes", "bytes_per_second"),
        ("inuse_space", true, "bytes", "bytes"),
        ("wall", true, "wall_periods", "wall_seconds_per_second"),
        ("goroutines", false, "count", "count"),
        ("delay", false, "nanoseconds", "nanoseconds_per_second"),
    ] {
        let t = find(name);
        assert_eq!(t["stored"], stored, "{t}");
        assert_eq!(t["unit"], unit, "{t}");
        assert_eq!(t["series_unit"], series_unit, "{t}");
    }
}
