//! Issue #12: sample labels through the collector. Fake workers serve labeled windows
//! (the window protocol with `labels=1`) and a Go-style pprof endpoint with `pprof.Do`
//! labels; the collector stores them, and every query route selects samples by them:
//! `{table="orders"}` is exactly the orders samples, `{table!="orders"}` the rest, no
//! selector the sum; `group_by` on a sample label adds up to the total. A worker with
//! 1 000 label sets per window is folded to the label budget with totals exact, and
//! hostile label text is cleaned, never a failure.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use stackwatch_profile::protocol::{LabeledStacks, Window, WindowsResponse};
use stackwatch_profile::{Profile, SampleLabels};
use stackwatch_server::config::{TargetConfig, TargetKind};

use common::{encode, total, Collector};

const PERIOD_NS: u64 = 10_101_010;

fn set(pairs: &[(&str, &str)]) -> SampleLabels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One window's content: the unlabeled stacks, then the stacks of each label set.
#[derive(Clone)]
struct Content {
    stacks: Vec<(String, u64)>,
    labeled: Vec<(SampleLabels, Vec<(String, u64)>)>,
}

impl Content {
    fn samples(&self) -> u64 {
        self.stacks.iter().map(|(_, c)| c).sum::<u64>()
            + self
                .labeled
                .iter()
                .flat_map(|(_, s)| s.iter().map(|(_, c)| c))
                .sum::<u64>()
    }
}

/// A stackwatch worker that closed `windows` windows of `content`, 10 s each, ending
/// a minute ago. With `labels=1` it sends the labeled samples per set (and records
/// that it was asked); without, summed into `stacks`, as the protocol says.
fn worker(
    instance: &'static str,
    windows: u64,
    content: Content,
    asked: Arc<AtomicBool>,
) -> axum::Router {
    let end_ms = stackwatch_profile::clock::unix_ms() / 10_000 * 10_000 - 60_000;
    let start_ms = end_ms - windows * 10_000;
    axum::Router::new().route(
        "/windows",
        get(move |q: axum::extract::Query<HashMap<String, String>>| {
            let content = content.clone();
            let asked = asked.clone();
            async move {
                let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let labels = q.get("labels").map(String::as_str) == Some("1");
                if labels {
                    asked.store(true, Ordering::Relaxed);
                }
                let windows: Vec<Window> = (after + 1..=windows)
                    .map(|seq| {
                        let mut w = Window {
                            seq,
                            start_unix_ms: start_ms + (seq - 1) * 10_000,
                            end_unix_ms: start_ms + seq * 10_000,
                            samples: content.samples(),
                            dropped: 0,
                            pruned_stacks: 0,
                            stacks: content.stacks.clone(),
                            labeled: Vec::new(),
                        };
                        if labels {
                            w.labeled = content
                                .labeled
                                .iter()
                                .map(|(l, s)| LabeledStacks {
                                    labels: l.clone(),
                                    stacks: s.clone(),
                                })
                                .collect();
                        } else {
                            for (_, s) in &content.labeled {
                                w.stacks.extend(s.iter().cloned());
                            }
                        }
                        w
                    })
                    .collect();
                let body = serde_json::to_vec(&WindowsResponse {
                    version: 1,
                    instance: instance.into(),
                    frequency_hz: 99,
                    period_ns: PERIOD_NS,
                    window_seconds: 10,
                    oldest_seq: 1,
                    latest_seq: windows.last().map_or(after, |w| w.seq),
                    windows,
                })
                .unwrap();
                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
        }),
    )
}

/// A Go-style `/debug/pprof/profile`: every scrape the same labeled profile.
fn pprof_worker(body: Vec<u8>) -> axum::Router {
    axum::Router::new().route(
        "/debug/pprof/profile",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/octet-stream")], body) }
        }),
    )
}

/// A fake worker to scrape: its routes, kind, path under its address, target labels.
type FakeWorker<'a> = (axum::Router, TargetKind, &'a str, &'a [(&'a str, &'a str)]);

/// A collector scraping each `(router, kind, path, labels)` fake worker, served on
/// loopback.
fn scrape_workers(workers: Vec<FakeWorker<'_>>) -> Collector {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::scrape_config(dir.path(), Duration::from_secs(5));
    for (router, kind, path, labels) in workers {
        let addr = common::serve(&rt, router);
        cfg.targets.push(TargetConfig {
            url: format!("http://{addr}{path}"),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        });
    }
    Collector::start(rt, dir, cfg, Duration::from_secs(60))
}

fn stacks(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(s, c)| (s.to_string(), *c)).collect()
}

/// The names of a timeseries answer's series, in its order.
fn series_names(ts: &Value) -> Vec<&str> {
    ts["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

/// Periods over a timeseries' points (cores × step / period).
fn periods_of(points: &Value, step: f64) -> f64 {
    points
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_f64())
        .sum::<f64>()
        * step
        / (PERIOD_NS as f64 / 1e9)
}

/// The labeled worker of the selection tests, per window: `main;idle` 1 without labels,
/// orders 7 (with op=insert), users 5, items 3, t4 2, and `main;delete` 1 with only
/// op=delete (no table).
fn binlog_content() -> Content {
    Content {
        stacks: stacks(&[("main;idle", 1)]),
        labeled: vec![
            (
                set(&[("table", "orders"), ("op", "insert")]),
                stacks(&[("main;write;orders", 7)]),
            ),
            (
                set(&[("table", "users")]),
                stacks(&[("main;write;users", 5)]),
            ),
            (
                set(&[("table", "items")]),
                stacks(&[("main;write;items", 3)]),
            ),
            (set(&[("table", "t4")]), stacks(&[("main;write;t4", 2)])),
            (set(&[("op", "delete")]), stacks(&[("main;delete", 1)])),
        ],
    }
}

#[test]
fn sample_labels_select_samples_in_every_query_route() {
    let asked = Arc::new(AtomicBool::new(false));
    // The Go service: pprof.Do labels on two of its three stacks.
    let go = Profile::from_folded("main;runtime.gcBgMarkWorker 4\n", 10_000_000).unwrap();
    let orders_ep = set(&[("endpoint", "/orders")]);
    let users_ep = set(&[("endpoint", "/users"), ("op", "read")]);
    let orders_stacks: HashMap<String, u64> = [("main;handler;orders".to_string(), 6)].into();
    let users_stacks: HashMap<String, u64> = [("main;handler;users".to_string(), 2)].into();
    let pprof = stackwatch_profile::pprof::encode_labeled(
        &go,
        &[(&orders_ep, &orders_stacks), (&users_ep, &users_stacks)],
    );
    let h = scrape_workers(vec![
        (
            worker("w-a", 3, binlog_content(), asked.clone()),
            TargetKind::Stackwatch,
            "",
            &[("service", "binlog-streamer"), ("instance", "a")],
        ),
        (
            pprof_worker(pprof),
            TargetKind::Pprof,
            "/debug/pprof/profile",
            &[("service", "go-service"), ("instance", "g")],
        ),
    ]);
    let t = h.wait_target("binlog-streamer", |t| t["last_seq"] == 3);
    assert_eq!(t["scrape_failures_total"], 0, "{t}");
    assert!(
        asked.load(Ordering::Relaxed),
        "the collector asks with labels=1"
    );
    assert_eq!(t["samples_ingested_total"], 3 * 19, "{t}");
    assert_eq!(t["label_sets_folded_total"], 0, "{t}");
    let g = h.wait_target("go-service", |t| t["scrapes_total"].as_u64().unwrap() >= 2);
    assert_eq!(g["up"], true, "{g}");
    // A pprof scrape is stored at the second it started; ranges end before `now`.
    std::thread::sleep(Duration::from_millis(1100));

    // Selection by sample label: exactly the orders samples, the rest, and the sum.
    let svc = r#"service="binlog-streamer""#;
    let orders = h.folded(&format!("{{{svc}, table=\"orders\"}}"), None);
    assert_eq!(orders, [("main;write;orders".to_string(), 21)].into());
    assert_eq!(
        h.folded(r#"{table="orders"}"#, None),
        orders,
        "no target matcher needed"
    );
    let rest = h.folded(&format!("{{{svc}, table!=\"orders\"}}"), None);
    let want: BTreeMap<String, u64> = [
        ("main;idle".to_string(), 3),
        ("main;write;users".to_string(), 15),
        ("main;write;items".to_string(), 9),
        ("main;write;t4".to_string(), 6),
        ("main;delete".to_string(), 3),
    ]
    .into();
    assert_eq!(rest, want);
    let all = h.folded(&format!("{{{svc}}}"), None);
    assert_eq!(total(&all), 3 * 19);
    let mut sum = rest.clone();
    sum.extend(orders.clone());
    assert_eq!(all, sum, "orders and the rest add up to everything");
    // Two sample matchers, a regex, and a label on other keys of the same set.
    assert_eq!(
        h.folded(r#"{op="insert", table=~"ord.*"}"#, None),
        orders,
        "both labels of one set"
    );
    assert_eq!(
        total(&h.folded(&format!("{{{svc}, op=\"\"}}"), None)),
        3 * (1 + 5 + 3 + 2)
    );
    // A selector on a label nobody has: the empty value, not an error.
    assert_eq!(total(&h.folded(r#"{nosuch="x"}"#, None)), 0);
    assert_eq!(
        total(&h.folded(&format!("{{{svc}, nosuch=\"\"}}"), None)),
        3 * 19
    );

    // Every route passes the selector through unchanged.
    let q = format!("{{{svc}, table=\"orders\"}}");
    let top = h.json("/api/top", &[("query", &q), ("from", "now-1h")]);
    assert_eq!(top["total"], 21, "{top}");
    assert_eq!(top["functions"][0]["name"], "orders", "{top}");
    assert!(top["total_cores"].as_f64().unwrap() > 0.0, "{top}");
    let top = h.json(
        "/api/top",
        &[("query", r#"{nosuch="x"}"#), ("from", "now-1h")],
    );
    assert_eq!(top["total"], 0, "{top}");
    let sw = h.json(
        "/api/sandwich",
        &[("query", &q), ("function", "write"), ("from", "now-1h")],
    );
    assert_eq!(
        (sw["total"].as_u64(), sw["profile_total"].as_u64()),
        (Some(21), Some(21))
    );
    let diff = h.text(
        "/api/diff.folded",
        &[
            ("base", &format!("{{{svc}, table=\"users\"}}")),
            ("query", &q),
            ("from", "now-1h"),
            ("normalize", "false"),
        ],
    );
    assert!(diff.contains("main;write;orders 0 21\n"), "{diff}");
    assert!(diff.contains("main;write;users 15 0\n"), "{diff}");
    assert!(!diff.contains("idle"), "{diff}");
    let (status, ctype, svg) = h.get_bytes(
        "/api/diff.svg",
        &[
            ("base", r#"{table="users"}"#),
            ("query", &q),
            ("from", "now-1h"),
        ],
    );
    assert_eq!((status, ctype.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8(svg).unwrap().contains("orders"));
    let (status, _, pb) = h.get_bytes("/api/profile.pb.gz", &[("query", &q), ("from", "now-1h")]);
    assert_eq!(status, 200);
    let p = stackwatch_profile::pprof::decode(&pb, 1 << 20, &Default::default()).unwrap();
    assert_eq!(p.total(), 21);
    let (status, _, svg) = h.get_bytes("/api/profile.svg", &[("query", &q), ("from", "now-1h")]);
    assert_eq!(status, 200);
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("orders") && !svg.contains("main;idle"));
    let ch = h.json(
        "/api/changes",
        &[
            ("base", r#"{table="users"}"#),
            ("query", &q),
            ("from", "now-1h"),
        ],
    );
    assert!(ch["base"]["cores"].as_f64().unwrap() > 0.0, "{ch}");
    assert!(
        ch["target"]["cores"].as_f64().unwrap() > ch["base"]["cores"].as_f64().unwrap(),
        "orders (21) burn more than users (15): {ch}"
    );

    // CPU of a sample selection, and one series per table.
    let step = 60.0;
    let ts = h.json(
        "/api/timeseries",
        &[("query", &q), ("from", "now-1h"), ("step", "1m")],
    );
    assert!(
        (periods_of(&ts["points"], step) - 21.0).abs() < 1e-6,
        "{ts}"
    );
    let ts = h.json(
        "/api/timeseries",
        &[
            ("query", &format!("{{{svc}}}")),
            ("from", "now-1h"),
            ("step", "1m"),
            ("group_by", "table"),
            ("limit", "2"),
        ],
    );
    let series = ts["series"].as_array().unwrap();
    let names = series_names(&ts);
    assert_eq!(names, ["orders", "users", "[other]", "(none)"], "{ts}");
    let per: Vec<f64> = series
        .iter()
        .map(|s| periods_of(&s["points"], step))
        .collect();
    let want = [21.0, 15.0, 9.0 + 6.0, 3.0 + 3.0];
    for (got, want) in per.iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{per:?}: {ts}");
    }
    assert_series_add_up(&ts);
    // With room for every value the samples without a table are still `(none)`.
    let ts = h.json(
        "/api/timeseries",
        &[
            ("query", &format!("{{{svc}}}")),
            ("from", "now-1h"),
            ("step", "1m"),
            ("group_by", "table"),
            ("limit", "8"),
        ],
    );
    let names = series_names(&ts);
    assert_eq!(names, ["orders", "users", "items", "t4", "(none)"], "{ts}");
    assert_series_add_up(&ts);
    // A sample label and a target label in one selection.
    let ts = h.json(
        "/api/timeseries",
        &[
            ("query", r#"{table!="orders"}"#),
            ("from", "now-1h"),
            ("step", "1m"),
            ("group_by", "op"),
        ],
    );
    assert_series_add_up(&ts);
    // Target labels still group targets.
    let ts = h.json(
        "/api/timeseries",
        &[("from", "now-1h"), ("step", "1m"), ("group_by", "service")],
    );
    let names = series_names(&ts);
    assert!(
        names.contains(&"binlog-streamer") && names.contains(&"go-service"),
        "{ts}"
    );
    assert_series_add_up(&ts);

    // The API says which labels are which.
    let keys = h.json("/api/label-keys", &[]);
    assert_eq!(
        keys["target"],
        serde_json::json!(["instance", "service"]),
        "{keys}"
    );
    assert_eq!(
        keys["sample"],
        serde_json::json!(["endpoint", "op", "table"]),
        "{keys}"
    );
    let names: Vec<String> = serde_json::from_value(h.json("/api/labels", &[])).unwrap();
    assert_eq!(names, ["endpoint", "instance", "op", "service", "table"]);
    let values: Vec<String> =
        serde_json::from_value(h.json("/api/label/table/values", &[])).unwrap();
    assert_eq!(values, ["items", "orders", "t4", "users"]);
    let values: Vec<String> =
        serde_json::from_value(h.json("/api/label/table/values", &[("limit", "2")])).unwrap();
    assert_eq!(values, ["items", "orders"]);
    let values: Vec<String> =
        serde_json::from_value(h.json("/api/label/service/values", &[])).unwrap();
    assert_eq!(values, ["binlog-streamer", "go-service"]);
    let values: Vec<String> =
        serde_json::from_value(h.json("/api/label/nosuch/values", &[])).unwrap();
    assert!(values.is_empty());
    let (status, _, body) = h.get_bytes("/api/label/table/values", &[("limit", "0")]);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // The Go service's pprof.Do labels are sample labels.
    let values: Vec<String> =
        serde_json::from_value(h.json("/api/label/endpoint/values", &[])).unwrap();
    assert_eq!(values, ["/orders", "/users"]);
    let go_orders = h.folded(r#"{service="go-service", endpoint="/orders"}"#, None);
    assert_eq!(
        go_orders.keys().collect::<Vec<_>>(),
        ["main;handler;orders"]
    );
    assert_eq!(go_orders["main;handler;orders"] % 6, 0, "{go_orders:?}");
    let go_rest = h.folded(r#"{service="go-service", endpoint!="/orders"}"#, None);
    assert_eq!(
        go_rest.keys().collect::<Vec<_>>(),
        ["main;handler;users", "main;runtime.gcBgMarkWorker"]
    );
    let go_read = h.folded(r#"{service="go-service", op="read"}"#, None);
    assert_eq!(go_read.keys().collect::<Vec<_>>(), ["main;handler;users"]);
}

/// Every series of a `group_by` answer adds up to the total line, bucket by bucket.
fn assert_series_add_up(ts: &Value) {
    let points = ts["points"].as_array().unwrap();
    for (i, p) in points.iter().enumerate() {
        let parts: Vec<Option<f64>> = ts["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["points"][i][1].as_f64())
            .collect();
        match p[1].as_f64() {
            None => assert!(parts.iter().all(Option::is_none), "bucket {i}: {ts}"),
            Some(total) => {
                let sum: f64 = parts.iter().flatten().sum();
                assert!(
                    (sum - total).abs() <= 1e-9 * total.max(1.0),
                    "bucket {i}: {sum} != {total}: {ts}"
                );
            }
        }
    }
}

#[test]
fn a_thousand_label_sets_per_window_fold_to_the_budget_with_totals_exact() {
    let asked = Arc::new(AtomicBool::new(false));
    let content = Content {
        stacks: stacks(&[("main;idle", 5)]),
        labeled: (0..1000)
            .map(|i| {
                (
                    set(&[("req", &format!("r{i:04}"))]),
                    // The first hundred are heavier: they are the ones kept.
                    stacks(&[("main;serve", if i < 100 { 3 } else { 1 })]),
                )
            })
            .collect(),
    };
    let per_window = content.samples();
    let h = scrape_workers(vec![(
        worker("w-many", 2, content, asked),
        TargetKind::Stackwatch,
        "",
        &[("service", "many")],
    )]);
    let t = h.wait_target("many", |t| t["last_seq"] == 2);
    assert_eq!(t["scrape_failures_total"], 0, "{t}");
    // 256 sets kept per window: the 255 heaviest and one `[labels pruned]`.
    let folded = (1000 - 255) * 2;
    assert_eq!(t["label_sets_folded_total"], folded, "{t}");
    assert_eq!(t["samples_ingested_total"], 2 * per_window, "{t}");
    let metrics = h.text("/metrics", &[]);
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("stackwatch_target_label_sets_folded_total{")
                && l.contains("service=\"many\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(&format!(" {folded}")), "{line}");
    assert!(metrics.contains("# TYPE stackwatch_target_label_sets_folded_total counter"));

    // Totals exact, however the sets were folded.
    assert_eq!(total(&h.folded("{}", None)), 2 * per_window);
    let pruned = h.folded(r#"{req="[labels pruned]"}"#, None);
    assert_eq!(total(&pruned), 2 * (900 - 155), "{pruned:?}");
    assert_eq!(total(&h.folded(r#"{req="r0042"}"#, None)), 2 * 3);
    assert_eq!(total(&h.folded(r#"{req="r0999"}"#, None)), 0, "folded away");
    let values: Vec<String> =
        serde_json::from_value(h.json("/api/label/req/values", &[("limit", "100000")])).unwrap();
    assert_eq!(values.len(), 256, "255 kept and [labels pruned]");
    assert!(values.contains(&"[labels pruned]".to_string()));
    let ts = h.json(
        "/api/timeseries",
        &[
            ("from", "now-1h"),
            ("step", "1m"),
            ("group_by", "req"),
            ("limit", "3"),
        ],
    );
    let names = series_names(&ts);
    assert_eq!(
        names,
        ["[labels pruned]", "r0000", "r0001", "[other]", "(none)"],
        "{ts}"
    );
    assert_series_add_up(&ts);
}

#[test]
fn hostile_label_text_is_cleaned_never_a_failure() {
    let asked = Arc::new(AtomicBool::new(false));
    let big = "v".repeat(10 * 1024);
    let long_key = "k".repeat(100);
    let xss = "<script>alert(1)</script>";
    let content = Content {
        stacks: stacks(&[("main;plain", 1)]),
        labeled: vec![
            (
                set(&[("ta\u{7}ble", "x\u{0}y\u{1b}[31m")]),
                stacks(&[("main;ctl", 1)]),
            ),
            (set(&[("big", &big)]), stacks(&[("main;big", 1)])),
            (set(&[("", "empty key")]), stacks(&[("main;emptykey", 1)])),
            (set(&[("xss", xss)]), stacks(&[("main;xss", 1)])),
            (
                set(&[(&long_key, "long key")]),
                stacks(&[("main;longkey", 1)]),
            ),
            (
                set(&[("quote\"}", "a\"b\\c\nd")]),
                stacks(&[("main;quote", 1)]),
            ),
            (
                set(&[("\u{202e}rtl", "é€😀")]),
                stacks(&[("main;unicode", 1)]),
            ),
            (SampleLabels::new(), stacks(&[("main;emptyset", 1)])),
        ],
    };
    let per_window = content.samples();
    let h = scrape_workers(vec![(
        worker("w-hostile", 2, content, asked),
        TargetKind::Stackwatch,
        "",
        &[("service", "hostile")],
    )]);
    let t = h.wait_target("hostile", |t| t["last_seq"] == 2);
    assert_eq!(t["scrape_failures_total"], 0, "{t}");
    assert_eq!(t["up"], true, "{t}");
    assert_eq!(total(&h.folded("{}", None)), 2 * per_window, "nothing lost");

    let keys = h.json("/api/label-keys", &[]);
    let sample: Vec<String> = serde_json::from_value(keys["sample"].clone()).unwrap();
    assert!(sample.contains(&"ta_ble".to_string()), "{keys}");
    assert!(sample.contains(&"k".repeat(64)), "cut at 64 bytes: {keys}");
    assert!(
        !sample.iter().any(String::is_empty),
        "empty keys dropped: {keys}"
    );
    assert!(
        !sample.iter().any(|k| k.chars().any(char::is_control)),
        "{keys}"
    );
    let values = |name: &str| -> Vec<String> {
        serde_json::from_value(h.json(&format!("/api/label/{}/values", encode(name)), &[])).unwrap()
    };
    assert_eq!(values("ta_ble"), ["x_y_[31m"]);
    assert_eq!(values("big"), ["v".repeat(256)], "cut at 256 bytes");
    assert_eq!(values("xss"), [xss], "JSON carries it as text");
    // The empty key was dropped, so its samples are unlabeled.
    let plain = h.folded(r#"{xss=""}"#, None);
    assert!(
        plain.contains_key("main;emptykey") && plain.contains_key("main;emptyset"),
        "{plain:?}"
    );
    // A selector naming the hostile value selects it, and the SVG escapes it.
    let q = format!("{{xss=\"{xss}\"}}");
    assert_eq!(h.folded(&q, None), [("main;xss".to_string(), 2)].into());
    let (status, _, svg) = h.get_bytes("/api/profile.svg", &[("query", &q), ("from", "now-1h")]);
    assert_eq!(status, 200);
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("main") || svg.contains("xss"));
    assert!(!svg.contains("<script>alert"), "escaped in the SVG");
    let ts = h.json(
        "/api/timeseries",
        &[("from", "now-1h"), ("step", "1m"), ("group_by", "xss")],
    );
    let names = series_names(&ts);
    assert_eq!(names, [xss, "(none)"], "{ts}");
    assert_series_add_up(&ts);
    // Label names the routes get in their path, however odd, are answered.
    for name in ["quote\"}", "\u{202e}rtl", "<b>", "%00", "a/b"] {
        let (status, _, body) = h.get_bytes(&format!("/api/label/{}/values", encode(name)), &[]);
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Vec<String>>(&body).unwrap();
    }
    assert_eq!(values("quote\"}"), ["a\"b\\c_d"]);
    assert_eq!(values("\u{202e}rtl"), ["é€😀"]);
}
