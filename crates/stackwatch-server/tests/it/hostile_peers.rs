//! Bad peers never hurt the collector: slow, endless, huge, malformed and mistyped
//! responses each become an error on that target's health while the collector keeps
//! serving, and a target that is down at start is picked up when it comes up.

use crate::common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use stackwatch_profile::protocol::{Window, WindowsResponse};
use stackwatch_server::config::TargetKind;

use common::{target, Collector};

fn valid_body(instance: &str) -> Vec<u8> {
    serde_json::to_vec(&WindowsResponse {
        version: 1,
        instance: instance.into(),
        frequency_hz: 99,
        period_ns: 10_101_010,
        window_seconds: 10,
        oldest_seq: 1,
        latest_seq: 1,
        windows: vec![Window {
            seq: 1,
            start_unix_ms: 1_795_000_000_000,
            end_unix_ms: 1_795_000_010_000,
            samples: 5,
            dropped: 0,
            pruned_stacks: 0,
            stacks: vec![("main;<script>alert(1)</script>".into(), 5)],
            labeled: Vec::new(),
        }],
    })
    .unwrap()
}

fn hostile_app() -> axum::Router {
    axum::Router::new()
        .route(
            "/slow/windows",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "never"
            }),
        )
        .route(
            "/endless/windows",
            get(|| async {
                let chunk = Bytes::from(vec![b' '; 64 * 1024]);
                let stream =
                    futures_util::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(stream),
                )
            }),
        )
        .route(
            "/huge/windows",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    vec![b'['; 3 << 20],
                )
            }),
        )
        .route(
            "/garbage/windows",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    "{\"version\": 1, \"instance\": [",
                )
            }),
        )
        .route(
            "/wrongtype/windows",
            get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html>login</html>") }),
        )
        .route(
            "/lying/windows",
            get(|| async {
                let mut r: WindowsResponse = serde_json::from_slice(&valid_body("liar")).unwrap();
                r.windows[0].samples = 999; // counts do not add up
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::to_vec(&r).unwrap(),
                )
                    .into_response()
            }),
        )
        .route(
            "/pprof-garbage",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    vec![0x1f, 0x8b, 1, 2, 3],
                )
            }),
        )
        .route(
            "/folded-garbage",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "a;b notanumber\n") }),
        )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn hostile_peers_become_target_errors_and_a_late_target_is_picked_up() {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let hostile_addr = common::serve(&rt, hostile_app());
    let late_port = free_port();
    let h = format!("http://{hostile_addr}");
    let mut cfg = common::config(dir.path());
    cfg.scrape.interval = Duration::from_millis(500);
    cfg.scrape.timeout = Duration::from_secs(1);
    cfg.scrape.max_body_bytes = 1 << 20;
    cfg.scrape.pprof_seconds = Some(Duration::from_secs(1));
    cfg.targets = vec![
        target(format!("{h}/slow"), TargetKind::Stackwatch, "slow"),
        target(format!("{h}/endless"), TargetKind::Stackwatch, "endless"),
        target(format!("{h}/huge"), TargetKind::Stackwatch, "huge"),
        target(format!("{h}/garbage"), TargetKind::Stackwatch, "garbage"),
        target(
            format!("{h}/wrongtype"),
            TargetKind::Stackwatch,
            "wrongtype",
        ),
        target(format!("{h}/lying"), TargetKind::Stackwatch, "lying"),
        target(
            format!("{h}/pprof-garbage"),
            TargetKind::Pprof,
            "pprof-garbage",
        ),
        target(
            format!("{h}/folded-garbage"),
            TargetKind::Folded,
            "folded-garbage",
        ),
        target(
            format!("http://127.0.0.1:{late_port}"),
            TargetKind::Stackwatch,
            "late",
        ),
    ];
    let mut collector = Collector::start(rt, dir, cfg, Duration::from_secs(5));
    let api = collector.api.clone();
    // The late target comes up after the collector started.
    std::thread::sleep(Duration::from_secs(2));
    collector.rt.spawn(async move {
        // A well-behaved worker: windows after `after` only.
        let app = axum::Router::new().route(
            "/windows",
            get(
                |q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                    let mut r: WindowsResponse =
                        serde_json::from_slice(&valid_body("late-instance")).unwrap();
                    r.windows.retain(|w| w.seq > after);
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        serde_json::to_vec(&r).unwrap(),
                    )
                },
            ),
        );
        let l = tokio::net::TcpListener::bind(("127.0.0.1", late_port))
            .await
            .unwrap();
        axum::serve(l, app).await.unwrap();
    });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        std::thread::sleep(Duration::from_millis(500));
        let body = agent
            .get(&format!("{api}/api/targets"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let done = v
            .iter()
            .all(|t| t["scrapes_total"].as_u64().unwrap_or(0) >= 2)
            && v.iter()
                .any(|t| t["labels"]["service"] == "late" && t["up"] == true);
        if done || Instant::now() > deadline {
            break v;
        }
    };
    let by_name = |n: &str| -> &serde_json::Value {
        health
            .iter()
            .find(|t| t["labels"]["service"] == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    for (name, expect) in [
        ("slow", "timed out"),
        ("endless", "limit"),
        ("huge", "limit"),
        ("garbage", "bad window protocol body"),
        ("wrongtype", "content type"),
        ("lying", "do not add up"),
        ("pprof-garbage", "gzip"),
        ("folded-garbage", "line 1"),
    ] {
        let t = by_name(name);
        assert_eq!(t["up"], false, "{name}: {t}");
        let err = t["last_error"].as_str().unwrap_or("");
        assert!(
            err.contains(expect),
            "{name}: {err:?} should mention {expect:?}"
        );
    }
    let late = by_name("late");
    assert_eq!(late["up"], true, "{late}");
    assert_eq!(
        late["samples_ingested_total"], 5,
        "stored once, not once per scrape: {late}"
    );
    // The collector still serves its own metrics.
    let m = agent
        .get(&format!("{api}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(m.contains("stackwatch_target_up{"), "{m}");
    collector.shut_down().unwrap();
    // What the late target sent is in the store, hostile frame name and all.
    let store = stackwatch_store::SqliteStore::open_reader(&stackwatch_server::db_path(
        collector.data_dir(),
    ))
    .unwrap();
    use stackwatch_store::ProfileReader;
    let p = store
        .profile(
            &stackwatch_store::Selector::parse(r#"{service="late"}"#).unwrap(),
            1_795_000_000,
            1_795_000_010,
        )
        .unwrap();
    assert_eq!(p.stacks["main;<script>alert(1)</script>"], 5);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}
