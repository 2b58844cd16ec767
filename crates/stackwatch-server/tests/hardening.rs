//! Issue #10: every defect a hostile test found in the collector, each reproduced with
//! its hostile input and answered with a bounded outcome: the error (naming the
//! budget), the memory ceiling (this process's own peak RSS from /proc, reset before
//! each case), and the neighbours unaffected (a well-behaved worker scraped beside the
//! hostile targets never fails).
//!
//! The cases run one at a time (one lock), so each one's peak RSS is its own.

// This test measures its own process (peak RSS): it keeps a binary of its own.
#[path = "it/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use flate2::write::GzEncoder;
use prost::Message;
use serde_json::Value;
use stackwatch_profile::pprof::proto;
use stackwatch_profile::protocol::{Window, WindowsResponse};
use stackwatch_server::config::{Config, FoldedCounts, TargetConfig, TargetKind};
use stackwatch_store::{IngestWindow, ProfileWriter, SqliteStore, StoreOptions};

use common::{target, Collector};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Resets this process's peak RSS (VmHWM) to its current RSS.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
}

/// `(current, peak)` RSS of this process, MiB.
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn json_response(body: Vec<u8>) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn windows_body(instance: &str, oldest: u64, windows: Vec<Window>) -> Vec<u8> {
    let latest = windows.last().map_or(0, |w| w.seq);
    serde_json::to_vec(&WindowsResponse {
        version: 1,
        instance: instance.into(),
        frequency_hz: 99,
        period_ns: 10_101_010,
        window_seconds: 1,
        oldest_seq: oldest,
        latest_seq: latest,
        windows,
    })
    .unwrap()
}

fn window(seq: u64, start_unix_ms: u64, stacks: Vec<(String, u64)>) -> Window {
    Window {
        seq,
        start_unix_ms,
        end_unix_ms: start_unix_ms + 1000,
        samples: stacks.iter().map(|(_, c)| c).sum(),
        dropped: 0,
        pruned_stacks: 0,
        stacks,
        labeled: Vec::new(),
    }
}

/// A well-behaved worker: one window a second since it started, 10 periods each.
fn healthy_worker() -> axum::Router {
    let started = stackwatch_profile::clock::unix_ms() / 1000 * 1000;
    axum::Router::new().route(
        "/windows",
        get(
            move |q: axum::extract::Query<HashMap<String, String>>| async move {
                let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let latest = (stackwatch_profile::clock::unix_ms() - started) / 1000;
                let oldest = latest.saturating_sub(59).max(1);
                let windows = (after.max(oldest - 1) + 1..=latest)
                    .map(|seq| {
                        window(
                            seq,
                            started + (seq - 1) * 1000,
                            vec![("healthy;work".into(), 10)],
                        )
                    })
                    .collect();
                json_response(windows_body("healthy", oldest, windows))
            },
        ),
    )
}

/// A collector scraping the healthy worker and the given hostile targets: serves
/// `hostile` on loopback; `targets(base_url)` names the hostile targets; `tune` adjusts
/// the config; `prepare` may fill the store before the server starts.
fn scrape_hostile(
    hostile: axum::Router,
    targets: impl FnOnce(&str) -> Vec<TargetConfig>,
    tune: impl FnOnce(&mut Config),
    prepare: impl FnOnce(&std::path::Path),
) -> Collector {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let hostile_addr = common::serve(&rt, hostile);
    let healthy_addr = common::serve(&rt, healthy_worker());
    let mut cfg = common::scrape_config(dir.path(), Duration::from_secs(3));
    cfg.targets = targets(&format!("http://{hostile_addr}"));
    cfg.targets.push(target(
        format!("http://{healthy_addr}"),
        TargetKind::Stackwatch,
        "healthy",
    ));
    tune(&mut cfg);
    Collector::start(rt, dir, cfg, Duration::from_secs(60))
}

/// Headers, and the healthy neighbour's checks, beside the queries of `common`.
impl Collector {
    /// GET `path_and_query` as given; returns status, headers and body.
    fn get_with_headers(&self, path_and_query: &str) -> (u16, HashMap<String, String>, String) {
        let mut r = self
            .agent
            .get(format!("{}{path_and_query}", self.api))
            .call()
            .expect("the collector answers");
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (r.status().as_u16(), headers, body)
    }

    /// Waits until `service` has been scraped `n` times; returns its health.
    fn scraped(&self, service: &str, n: u64) -> Value {
        self.wait_target(service, |t| t["scrapes_total"].as_u64().unwrap() >= n)
    }

    /// The neighbour: scraped, never failed, and its periods stored.
    fn assert_healthy_unaffected(&self) {
        let h = self.scraped("healthy", 5);
        assert_eq!(h["scrape_failures_total"], 0, "healthy worker: {h}");
        assert!(h["samples_ingested_total"].as_u64().unwrap() > 0, "{h}");
        let (status, _, body) = self.get_with_headers(
            "/api/profile.folded?query=%7Bservice%3D%22healthy%22%7D&from=now-1h",
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("healthy;work"), "{body}");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// One sample naming location 1 (a 1 KB function name) `refs` times.
fn pprof_bomb(refs: usize, value: i64) -> Vec<u8> {
    let msg = proto::Profile {
        string_table: vec![
            "".into(),
            "samples".into(),
            "count".into(),
            "f".repeat(1024),
        ],
        sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
        function: vec![proto::Function {
            id: 1,
            name: 3,
            ..Default::default()
        }],
        location: vec![proto::Location {
            id: 1,
            line: vec![proto::Line {
                function_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        sample: vec![proto::Sample {
            location_id: vec![1; refs],
            value: vec![value],
            label: vec![],
        }],
        ..Default::default()
    };
    gzip(&msg.encode_to_vec())
}

fn pprof_route(body: Vec<u8>) -> axum::routing::MethodRouter {
    get(move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/octet-stream")], body) }
    })
}

/// Item 1: a 4 KB pprof that names a 1 KB function four million times aborted the
/// collector ("memory allocation of 4099999999 bytes failed").
#[test]
fn item1_a_tiny_pprof_cannot_expand_into_gigabytes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bomb = pprof_bomb(4_000_000, 1);
    assert!(
        bomb.len() < 8 << 10,
        "the hostile body is small: {}",
        bomb.len()
    );
    // Many samples whose stacks together expand past the decoded-bytes budget.
    let wide = {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&pprof_bomb(1, 1)[..])
            .read_to_end(&mut raw)
            .unwrap();
        let mut msg = proto::Profile::decode(&raw[..]).unwrap();
        msg.sample = vec![
            proto::Sample {
                location_id: vec![1; 600],
                value: vec![1],
                label: vec![],
            };
            400
        ];
        gzip(&msg.encode_to_vec())
    };
    reset_peak_rss();
    let (before, _) = rss_mib();
    let h = scrape_hostile(
        axum::Router::new()
            .route("/bomb", pprof_route(bomb))
            .route("/wide", pprof_route(wide)),
        |base| {
            vec![
                target(format!("{base}/bomb"), TargetKind::Pprof, "bomb"),
                target(format!("{base}/wide"), TargetKind::Pprof, "wide"),
            ]
        },
        |cfg| cfg.scrape.max_decoded_bytes = 32 << 20,
        |_| {},
    );
    let bomb = h.scraped("bomb", 3);
    assert_eq!(bomb["up"], true, "{bomb}");
    assert!(
        bomb["stacks_truncated_total"].as_u64().unwrap() >= 1,
        "{bomb}"
    );
    let wide = h.scraped("wide", 3);
    assert_eq!(wide["up"], false, "{wide}");
    assert!(
        wide["last_error"]
            .as_str()
            .unwrap()
            .contains("max_decoded_bytes"),
        "{wide}"
    );
    let (status, _, folded) =
        h.get_with_headers("/api/profile.folded?query=%7Bservice%3D%22bomb%22%7D&from=now-1h");
    assert_eq!(status, 200);
    let line = folded
        .lines()
        .next()
        .expect("the bomb's one stack is stored");
    assert!(
        line.contains(";[truncated] "),
        "{}",
        &line[line.len() - 40..]
    );
    assert_eq!(line.matches(';').count(), 512);
    h.assert_healthy_unaffected();
    let (_, peak) = rss_mib();
    assert!(
        peak.saturating_sub(before) < 400,
        "peak RSS grew by {} MiB",
        peak - before
    );
}

/// Item 2: one target's data that the store refuses failed the whole shared batch, so
/// healthy targets' scrapes failed too. Now the failing request is retried alone.
#[test]
fn item2_one_targets_bad_data_fails_only_its_own_write() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Windows the store refuses (they start more than a day ahead of its clock), but
    // that pass every check of the scrape.
    let ahead = stackwatch_profile::clock::unix_ms() + 3 * 86_400_000;
    let h = scrape_hostile(
        axum::Router::new().route(
            "/future/windows",
            get(move || async move {
                json_response(windows_body(
                    "future",
                    1,
                    vec![window(1, ahead, vec![("future;x".into(), 5)])],
                ))
            }),
        ),
        |base| {
            vec![target(
                format!("{base}/future"),
                TargetKind::Stackwatch,
                "future",
            )]
        },
        // Wide batches: the bad window shares its transaction with the healthy ones.
        |cfg| cfg.storage.flush_interval = Duration::from_millis(700),
        |_| {},
    );
    let future = h.scraped("future", 4);
    assert_eq!(future["up"], false);
    assert!(
        future["last_error"]
            .as_str()
            .unwrap()
            .contains("a day ahead"),
        "{future}"
    );
    h.assert_healthy_unaffected();
    // The writer refuses the window on arrival (the store's check_window: a day ahead),
    // before it can share a transaction with the healthy ones; counted as a refusal,
    // with no shared transaction failed for it.
    let (_, _, metrics) = h.get_with_headers("/metrics");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(counter("stackwatch_ingest_errors_total") >= 1, "{metrics}");
    assert_eq!(
        counter("stackwatch_ingest_isolated_failures_total"),
        0,
        "{metrics}"
    );
}

/// Item 3: counts near 2^63 made every query `503 sqlite: integer overflow`, froze the
/// rollup fleet-wide, wrapped `samples_ingested_total`; a window with seq u64::MAX
/// made `windows_lost_total` grow on every scrape.
#[test]
fn item3_huge_counts_and_sequences_are_refused_and_nothing_else_breaks() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let now_ms = stackwatch_profile::clock::unix_ms();
    let max = i64::MAX as u64;
    let h = scrape_hostile(
        axum::Router::new()
            .route(
                "/folded",
                get(move || async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain")],
                        format!("main;x {max}\nmain;x {max}\n"),
                    )
                }),
            )
            .route(
                "/bigwindow/windows",
                get(move || async move {
                    json_response(windows_body(
                        "big",
                        1,
                        vec![window(1, now_ms, vec![("big;x".into(), max)])],
                    ))
                }),
            )
            .route(
                "/maxseq/windows",
                get(move || async move {
                    json_response(windows_body(
                        "maxseq",
                        u64::MAX,
                        vec![window(u64::MAX, now_ms, vec![("seq;x".into(), 1)])],
                    ))
                }),
            )
            .route("/pprof", pprof_route(pprof_bomb(1, i64::MAX))),
        |base| {
            let mut folded = target(format!("{base}/folded"), TargetKind::Folded, "folded");
            folded.folded_counts = FoldedCounts::Delta;
            vec![
                folded,
                target(
                    format!("{base}/bigwindow"),
                    TargetKind::Stackwatch,
                    "bigwindow",
                ),
                target(format!("{base}/maxseq"), TargetKind::Stackwatch, "maxseq"),
                target(format!("{base}/pprof"), TargetKind::Pprof, "pprof"),
            ]
        },
        |_| {},
        |_| {},
    );
    for (service, want) in [
        ("folded", "max_samples"),
        ("bigwindow", "max_samples"),
        ("pprof", "max_samples"),
        ("maxseq", "beyond 2^63-1"),
    ] {
        let t = h.scraped(service, 3);
        assert_eq!(t["up"], false, "{t}");
        assert!(t["last_error"].as_str().unwrap().contains(want), "{t}");
        assert_eq!(t["samples_ingested_total"], 0, "{t}");
        assert_eq!(t["windows_lost_total"], 0, "{t}");
    }
    // Every query still answers, `{}` included.
    for path in [
        "/api/profile.folded?query=%7B%7D&from=now-1h",
        "/api/timeseries?from=now-1h",
        "/api/top?from=now-1h",
    ] {
        let (status, _, body) = h.get_with_headers(path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    h.assert_healthy_unaffected();
    let (_, _, metrics) = h.get_with_headers("/metrics");
    assert!(
        metrics.contains("\nstackwatch_rollup_errors_total 0\n"),
        "{metrics}"
    );
}

/// Item 4: two inputs panicked a request handler (an empty reply).
#[test]
fn item4_odd_times_are_400s_not_panics() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let h = scrape_hostile(axum::Router::new(), |_| vec![], |_| {}, |_| {});
    for path in [
        // `curl -sG :7070/api/top --data-urlencode from=é12345`
        "/api/top?from=%C3%A912345",
        // `-d from=9999-12-31T22:00:00Z --data-urlencode to=9999-12-31T23:30:00-01:00`
        "/api/profile.svg?from=9999-12-31T22:00:00Z&to=9999-12-31T23%3A30%3A00-01%3A00",
        "/api/timeseries?from=now-99999999999999d",
    ] {
        let (status, _, body) = h.get_with_headers(path);
        assert_eq!(status, 400, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["parameter"].is_string(), "{body}");
    }
    h.assert_healthy_unaffected();
}

/// Item 5: 100 matchers like `a1=~"\\w{0,200}"` (a 3.6 KB URL) took 8.2 s and 1.3 GB.
#[test]
fn item5_regex_selectors_are_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let h = scrape_hostile(axum::Router::new(), |_| vec![], |_| {}, |_| {});
    h.scraped("healthy", 2);
    let selector: Vec<String> = (0..100)
        .map(|i| format!("a{i}=~\"\\\\w{{0,200}}\""))
        .collect();
    let selector = format!("{{{}}}", selector.join(","));
    let encoded: String = selector.bytes().map(|b| format!("%{b:02X}")).collect();
    reset_peak_rss();
    let (before, _) = rss_mib();
    let started = Instant::now();
    for max in ["", "&x=1"] {
        let (status, _, body) =
            h.get_with_headers(&format!("/api/top?from=now-1h&query={encoded}{max}"));
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("query.max_"), "{body}");
    }
    let one: String = "{a=~\"\\\\w{0,200}\"}"
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let (status, _, body) = h.get_with_headers(&format!("/api/top?from=now-1h&query={one}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("query.max_regex_program_bytes"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (_, peak) = rss_mib();
    assert!(
        peak.saturating_sub(before) < 64,
        "peak RSS grew by {} MiB",
        peak - before
    );
    let (_, _, metrics) = h.get_with_headers("/metrics");
    assert!(
        metrics.contains("\nstackwatch_queries_selector_refused_total 3\n"),
        "{metrics}"
    );
    h.assert_healthy_unaffected();
}

/// Fills a store with `windows` windows of `stacks` distinct stacks for one target,
/// over the last hour.
fn fill_store(dir: &std::path::Path, windows: u64, stacks: usize) {
    let mut store = SqliteStore::open(&dir.join("stackwatch.db"), StoreOptions::default()).unwrap();
    let now = stackwatch_profile::clock::unix_s();
    let target: stackwatch_store::Labels = [("service".to_string(), "big".to_string())].into();
    for w in 0..windows {
        let start = now - 3500 + w as i64 * 3500 / windows as i64;
        store
            .ingest(&[IngestWindow {
                labeled: Vec::new(),
                target: target.clone(),
                instance: "i".into(),
                seq: w + 1,
                start_unix_s: start,
                period_ns: 10_101_010,
                stacks: (0..stacks)
                    .map(|s| {
                        (
                            format!("main;module_{};function_{s}", s % 50),
                            1 + s as u64 % 7,
                        )
                    })
                    .collect(),
            }])
            .unwrap();
    }
}

/// Item 6: concurrent queries were unbounded (100 at once: 8.7 GB, every client timed
/// out, the server worked on for minutes after they left, a real target's scrapes
/// timed out). Now a bounded number run, a bounded number wait, the rest get 503 with
/// Retry-After, a runaway query stops at query.timeout, and scrapes go on.
#[test]
fn item6_query_bursts_are_shed_and_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let h = scrape_hostile(
        axum::Router::new(),
        |_| vec![],
        |cfg| {
            cfg.query.max_concurrent = 1;
            cfg.query.max_queued = 2;
            cfg.query.queue_timeout = Duration::from_millis(500);
        },
        |dir| fill_store(dir, 120, 2000),
    );
    h.scraped("healthy", 2);
    reset_peak_rss();
    let (before, _) = rss_mib();
    let api = h.api.clone();
    let clients: Vec<_> = (0..30)
        .map(|_| {
            let url = format!("{api}/api/profile.svg?from=now-1h");
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .into();
                let r = agent.get(&url).call().unwrap();
                let retry = r.headers().get("retry-after").is_some();
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for c in clients {
        let (status, retry) = c.join().unwrap();
        if status == 503 {
            assert!(retry, "a 503 without Retry-After");
        }
        *by_status.entry(status).or_default() += 1;
    }
    assert!(
        by_status.get(&200).copied().unwrap_or(0) >= 1,
        "{by_status:?}"
    );
    assert!(
        by_status.get(&503).copied().unwrap_or(0) >= 10,
        "{by_status:?}"
    );
    assert_eq!(by_status.values().sum::<usize>(), 30, "{by_status:?}");
    let (_, peak) = rss_mib();
    assert!(
        peak.saturating_sub(before) < 512,
        "peak RSS grew by {} MiB",
        peak - before
    );
    let (_, _, metrics) = h.get_with_headers("/metrics");
    assert!(
        metrics.contains("stackwatch_queries_shed_total{reason=\"queue_full\"}"),
        "{metrics}"
    );
    h.assert_healthy_unaffected();
    drop(h);

    // A query over its time budget is stopped and answered 503 naming the budget.
    let h = scrape_hostile(
        axum::Router::new(),
        |_| vec![],
        |cfg| cfg.query.timeout = Duration::from_millis(1),
        |dir| fill_store(dir, 60, 2000),
    );
    let (status, headers, body) = h.get_with_headers("/api/profile.folded?from=now-1h");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("query.timeout"), "{body}");
    assert!(headers.contains_key("retry-after"));
}

/// Item 7, the smaller holes, one by one.
#[test]
fn item7_volume_names_tokens_headers_and_the_data_dir() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let now_ms = stackwatch_profile::clock::unix_ms();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let long_frame = "L".repeat(5000);
    let h = scrape_hostile(
        axum::Router::new()
            // 20 000 distinct stacks per window, 30 windows at once.
            .route(
                "/wide/windows",
                get(
                    move |q: axum::extract::Query<HashMap<String, String>>| async move {
                        let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                        let windows = (after + 1..=30)
                            .map(|seq| {
                                window(
                                    seq,
                                    now_ms - 60_000 + seq * 1000,
                                    (0..20_000).map(|s| (format!("wide;f{s}"), 1)).collect(),
                                )
                            })
                            .collect();
                        json_response(windows_body("wide", 1, windows))
                    },
                ),
            )
            // A frame name of 5 000 bytes and a 2 000-frame stack.
            .route(
                "/names/windows",
                get(move || {
                    let long_frame = long_frame.clone();
                    async move {
                        let deep = vec!["d"; 2000].join(";");
                        json_response(windows_body(
                            "names",
                            1,
                            vec![window(
                                1,
                                now_ms,
                                vec![(format!("names;{long_frame}"), 3), (deep, 2)],
                            )],
                        ))
                    }
                }),
            )
            // A worker that wants a bearer token.
            .route(
                "/private/windows",
                get(
                    move |headers: axum::http::HeaderMap,
                          q: axum::extract::Query<HashMap<String, String>>| async move {
                        if headers.get("authorization").and_then(|v| v.to_str().ok())
                            != Some("Bearer s3cret")
                        {
                            return (axum::http::StatusCode::UNAUTHORIZED, "token").into_response();
                        }
                        let mut windows = vec![window(1, now_ms, vec![("private;x".into(), 4)])];
                        let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                        windows.retain(|w| w.seq > after);
                        json_response(windows_body("private", 1, windows))
                    },
                ),
            ),
        |base| {
            let mut private = target(format!("{base}/private"), TargetKind::Stackwatch, "private");
            private.bearer_token_file = Some(token_file.clone());
            vec![
                target(format!("{base}/wide"), TargetKind::Stackwatch, "wide"),
                target(format!("{base}/names"), TargetKind::Stackwatch, "names"),
                private,
                target(
                    format!("{base}/private"),
                    TargetKind::Stackwatch,
                    "no-token",
                ),
            ]
        },
        |cfg| {
            cfg.scrape.max_stacks_per_window = 1000;
            cfg.scrape.max_rows_per_scrape = 5000;
            cfg.http.header_read_timeout = Duration::from_secs(1);
            // None of these targets is slow: a scrape of the wide one (5 windows of
            // 20 000 stacks) may take longer than the hostile tests' 3 s on a machine
            // whose cores are busy, and must not count as a failure then.
            cfg.scrape.timeout = Duration::from_secs(60);
        },
        |_| {},
    );
    // Volume: each window folded to 1 000 stacks, totals exact; 5 windows a scrape, the
    // rest at the next scrapes, none lost.
    let deadline = Instant::now() + Duration::from_secs(60);
    h.scraped("wide", 1);
    let wide = loop {
        let t = h.targets().remove("wide").unwrap();
        if t["last_seq"] == 30 || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(wide["last_seq"], 30, "{wide}");
    assert_eq!(wide["samples_ingested_total"], 30 * 20_000, "{wide}");
    assert!(
        wide["stacks_pruned_total"].as_u64().unwrap() >= 30 * 19_000,
        "{wide}"
    );
    assert!(
        wide["scrapes_row_limited_total"].as_u64().unwrap() >= 5,
        "{wide}"
    );
    assert_eq!(wide["scrape_failures_total"], 0, "{wide}");
    let (_, _, folded) =
        h.get_with_headers("/api/profile.folded?query=%7Bservice%3D%22wide%22%7D&from=now-1h");
    let total: u64 = folded
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 30 * 20_000);
    // At most 1 000 stacks per window (ties fold in any order, so windows keep
    // different ones), and the folded remainder is there.
    assert!(
        folded.lines().count() <= 30 * 1000,
        "{}",
        folded.lines().count()
    );
    assert!(folded.lines().any(|l| l.starts_with("[pruned] ")));
    // Names: cut to 1 KB, deep stacks truncated.
    h.scraped("names", 2);
    let (_, _, folded) =
        h.get_with_headers("/api/profile.folded?query=%7Bservice%3D%22names%22%7D&from=now-1h");
    assert!(folded.lines().all(|l| l.len() < 4096), "{folded}");
    assert!(folded.contains("…"), "the long frame is cut");
    assert!(folded.contains(";[truncated] 2"), "{folded}");
    // Tokens: sent from the file; without one, the 401 is the target's error.
    let private = h.scraped("private", 2);
    assert_eq!(private["up"], true, "{private}");
    let anonymous = h.scraped("no-token", 2);
    assert!(
        anonymous["last_error"].as_str().unwrap().contains("401"),
        "{anonymous}"
    );
    // SVG answers carry nosniff and a policy that loads nothing.
    let (status, headers, _) = h.get_with_headers("/api/profile.svg?from=now-1h");
    assert_eq!(status, 200);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-security-policy"].contains("default-src 'none'"));
    // Slow headers: 200 connections that never finish their request are dropped.
    let addr: std::net::SocketAddr = h.api.trim_start_matches("http://").parse().unwrap();
    let mut slow: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /api/targets HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        // Closed by the server: EOF (or a reset), not a timeout.
        match s.read(&mut buf) {
            Ok(n) => assert!(n < buf.len(), "an answer to a request never finished"),
            Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "held open"),
        }
    }
    let (_, _, metrics) = h.get_with_headers("/metrics");
    let open: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stackwatch_http_connections_open "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(open <= 2, "{open} connections still open");
    h.assert_healthy_unaffected();
}

/// Item 7: the data directory and the store refuse what they cannot honour.
#[test]
fn item7_the_store_refuses_to_start_when_it_cannot_be_ours() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = |dir: &std::path::Path| Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    // Two collectors, one data_dir: the second is refused.
    let dir = tempfile::tempdir().unwrap();
    let first = rt
        .block_on(stackwatch_server::Server::bind(config(dir.path())))
        .unwrap();
    let e = rt
        .block_on(stackwatch_server::Server::bind(config(dir.path())))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("in use by another stackwatch"), "{e}");
    drop(first);
    rt.block_on(stackwatch_server::Server::bind(config(dir.path())))
        .unwrap();
    // A 0-byte database file is not silently a new store.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("stackwatch.db"), b"").unwrap();
    let e = rt
        .block_on(stackwatch_server::Server::bind(config(empty.path())))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("empty (0 bytes)"), "{e}");
    // Another program's SQLite database is not adopted.
    let foreign = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(foreign.path().join("stackwatch.db"))
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER)")
        .unwrap();
    let e = rt
        .block_on(stackwatch_server::Server::bind(config(foreign.path())))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a stackwatch store"), "{e}");
}
