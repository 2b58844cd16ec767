//! The query API against a store with known content: every route, every format, hostile
//! frame names escaped, and bad parameters answered with 400 naming the parameter.

use crate::common;

use stackwatch_store::{IngestWindow, Labels};

use common::{labels, Collector};

#[test]
fn every_query_route_answers_and_bad_parameters_get_400() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = now - 600;
    let mut api = {
        let main = labels(&[
            ("service", "binlog-streamer"),
            ("instance", "a"),
            ("version", "main"),
        ]);
        let canary = labels(&[
            ("service", "binlog-streamer"),
            ("instance", "c"),
            ("version", "canary"),
        ]);
        let w = |t: &Labels, stacks: Vec<(&str, u64)>| IngestWindow {
            labeled: Vec::new(),
            target: t.clone(),
            instance: "i".into(),
            seq: 1,
            start_unix_s: ts,
            period_ns: 10_101_010,
            stacks: stacks
                .into_iter()
                .map(|(s, c)| (s.to_string(), c))
                .collect(),
        };
        Collector::over_store(&[
            w(
                &main,
                vec![
                    ("main;decode;parse_row", 30),
                    ("main;encode;serde_json::to_writer", 10),
                ],
            ),
            w(
                &canary,
                vec![
                    ("main;decode;parse_row", 30),
                    ("main;encode;format_debug", 40),
                    ("main;<script>alert(1)</script>", 5),
                ],
            ),
        ])
    };
    // Selectors as a user types them, percent-encoded as a browser or `curl -G` would.
    let q = |path: &str| {
        let enc = path
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('(', "%28");
        let (status, ctype, body) = api.get_bytes(&enc, &[]);
        (status, body, ctype)
    };

    let (status, body, ctype) =
        q("/api/profile.folded?query=%7Bversion%3D%22canary%22%7D&from=now-1h&to=now");
    assert_eq!((status, ctype.as_str()), (200, "text/plain; charset=utf-8"));
    let folded = String::from_utf8(body).unwrap();
    assert!(folded.contains("main;encode;format_debug 40\n"), "{folded}");
    assert!(!folded.contains("to_writer"), "canary only: {folded}");

    let (status, body, ctype) =
        q("/api/profile.svg?query={service=\"binlog-streamer\"}&from=now-15m");
    assert_eq!((status, ctype.as_str()), (200, "image/svg+xml"));
    let svg = String::from_utf8(body).unwrap();
    assert!(svg.contains("parse_row"));
    assert!(!svg.contains("<script>alert"), "frame name must be escaped");

    let (status, body, _) = q(&format!(
        "/api/profile.pb.gz?from={}&to={}",
        ts - 10,
        ts + 10
    ));
    assert_eq!(status, 200);
    let p = stackwatch_profile::pprof::decode(&body, 1 << 20, &Default::default()).unwrap();
    assert_eq!(p.total(), 115);

    let (status, body, ctype) =
        q("/api/diff.svg?base={version=\"main\"}&query={version=\"canary\"}");
    assert_eq!((status, ctype.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8(body).unwrap().contains("format_debug"));
    let (status, body, _) =
        q("/api/diff.folded?base={version=\"main\"}&query={version=\"canary\"}");
    assert_eq!(status, 200);
    let diff = String::from_utf8(body).unwrap();
    assert!(diff.contains("main;encode;format_debug 0 40"), "{diff}");

    let json = |path: &str| -> serde_json::Value {
        let (status, body, _) = q(path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    };
    // CPU in cores: periods x period / bucket length; null where nothing was stored.
    let v = json("/api/timeseries?from=now-1h&step=5m");
    assert_eq!(
        (v["step"].as_i64(), v["unit"].as_str()),
        (Some(300), Some("cores"))
    );
    let points = v["points"].as_array().unwrap();
    let with_data: Vec<f64> = points.iter().filter_map(|p| p[1].as_f64()).collect();
    assert_eq!(
        with_data.len(),
        1,
        "one bucket has data, the rest are null: {v}"
    );
    let periods = with_data[0] * 300.0 / 0.010_101_010;
    assert!((periods - 115.0).abs() < 1e-6, "{periods}");
    assert!(points.iter().filter(|p| p[1].is_null()).count() >= 10);
    // One series per version, each with its own share.
    let v = json("/api/timeseries?from=now-1h&step=5m&group_by=version");
    let series = v["series"].as_array().unwrap();
    let names: Vec<&str> = series.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["canary", "main"], "largest first: {v}");
    // A function's own CPU over time, self and total.
    let v = json("/api/timeseries?from=now-1h&step=5m&function=decode");
    let total_points: f64 = v["function"]["total"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_f64())
        .sum();
    assert!(
        (total_points * 300.0 / 0.010_101_010 - 60.0).abs() < 1e-6,
        "{v}"
    );
    let self_points: f64 = v["function"]["self"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_f64())
        .sum();
    assert_eq!(self_points, 0.0, "decode is never the leaf");

    // Top functions by self by default; plumbing marked; hide removes frames.
    let v = json("/api/top?query={version=\"canary\"}&limit=3");
    assert_eq!(v["total"], 75);
    assert_eq!(v["order"], "self");
    assert_eq!(v["functions"][0]["name"], "format_debug");
    let v = json("/api/top?query={version=\"canary\"}&order=total");
    let main = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "main")
        .unwrap();
    assert_eq!(main["plumbing"], true, "a thread root: {v}");
    assert_eq!(v["functions"][0]["name"], "main");
    let v = json("/api/top?query={version=\"canary\"}&order=total&hide=%5Emain%24");
    assert!(v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["name"] != "main"));
    let (_, body, _) = q("/api/profile.folded?hide=%5Edecode%24&from=now-1h");
    let folded = String::from_utf8(body).unwrap();
    assert!(folded.contains("main;parse_row 60\n"), "{folded}");

    // The sandwich: callers below, callees above, every period kept.
    let v = json("/api/sandwich?function=encode&from=now-1h");
    assert_eq!(
        (v["self"].as_u64(), v["total"].as_u64()),
        (Some(0), Some(50))
    );
    assert_eq!(v["callers"], "encode;main 50\n");
    assert_eq!(
        v["callees"],
        "encode;format_debug 40\nencode;serde_json::to_writer 10\n"
    );
    let (status, body, ctype) = q("/api/sandwich.svg?function=encode&side=callers&from=now-1h");
    assert_eq!((status, ctype.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8(body).unwrap().contains("encode"));

    // Absolute comparison: base not scaled to the target's total.
    let (_, body, _) =
        q("/api/diff.folded?base={version=\"main\"}&query={version=\"canary\"}&normalize=false");
    let diff = String::from_utf8(body).unwrap();
    assert!(diff.contains("main;decode;parse_row 30 30"), "{diff}");

    // The verdict needs windows on both sides: one window each is reported, not judged.
    let v = json("/api/changes?base={version=\"main\"}&query={version=\"canary\"}&from=now-1h");
    assert_eq!(v["alpha"], 0.01);
    assert_eq!(v["base"]["windows"], 1);
    assert!(v["changes"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["verdict"], "insufficient_data", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("the base has samples in 1 time bucket"),
        "{v}"
    );
    assert!(v["target"]["instances"]["c"].as_f64().unwrap() > 0.0, "{v}");

    let (_, body, _) = q("/api/labels");
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&body).unwrap(),
        vec!["instance", "service", "version"]
    );
    let (_, body, _) = q("/api/label/version/values");
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&body).unwrap(),
        vec!["canary", "main"]
    );

    for (path, parameter) in [
        ("/api/profile.svg?query={service=", "query"),
        ("/api/profile.svg?from=yesterday", "from"),
        ("/api/profile.svg?from=now&to=now-1h", "from"),
        ("/api/profile.folded?to=99999999999999999", "to"),
        ("/api/profile.svg?icicle=maybe", "icicle"),
        ("/api/profile.svg?width=5", "width"),
        ("/api/diff.svg?base_from=later", "base_from"),
        ("/api/diff.svg?base={a=~\"(\"}", "base"),
        ("/api/timeseries?step=0", "step"),
        ("/api/timeseries?from=now-30d&step=1s", "step"),
        ("/api/top?limit=-1", "limit"),
        ("/api/top?order=up", "order"),
        // 70 000 s in 7 s steps from an unaligned start is 10 001 buckets.
        (
            "/api/timeseries?from=1761000001&to=1761070001&step=7&function=main",
            "step",
        ),
        ("/api/top?hide=%28", "hide"),
        ("/api/sandwich?from=now-1h", "function"),
        ("/api/sandwich.svg?function=f&side=up", "side"),
        ("/api/diff.svg?normalize=maybe", "normalize"),
        ("/api/changes?base_from=later", "base_from"),
        ("/api/profile.svg?from=%ff", "from"),
    ] {
        let (status, body, _) = q(path);
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{path}: JSON error body"));
        assert_eq!(v["parameter"], parameter, "{path}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    api.shut_down().unwrap();
}

/// Issue 26, item 1: the verdict of `/api/changes` comes from the data, not from the
/// range asked. Three minutes of a young fleet read the same over the last hour as over
/// the last 15 minutes (same buckets, same changes, same p-values), and a base without
/// data is said to be one instead of "nothing changed".
#[test]
fn the_verdict_comes_from_the_data_not_the_range() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // 18 windows 10 s apart, the last ending well before now (so a second's difference
    // between the two requests' `now` changes nothing).
    let first = (now - 240).div_euclid(10) * 10;
    let main = labels(&[("service", "s"), ("instance", "a"), ("version", "main")]);
    let canary = labels(&[("service", "s"), ("instance", "c"), ("version", "canary")]);
    let mut windows = Vec::new();
    for i in 0..18u64 {
        let w = |t: &Labels, stacks: Vec<(&str, u64)>| IngestWindow {
            labeled: Vec::new(),
            target: t.clone(),
            instance: "i".into(),
            seq: i + 1,
            start_unix_s: first + 10 * i as i64,
            period_ns: 10_101_010,
            stacks: stacks
                .into_iter()
                .map(|(s, c)| (s.to_string(), c))
                .collect(),
        };
        // Window-to-window variation, so the test has a variance to work with.
        let jitter = i % 3;
        windows.push(w(
            &main,
            vec![
                ("main;decode", 30 + jitter),
                ("main;encode_json", 10 + jitter),
            ],
        ));
        windows.push(w(
            &canary,
            vec![
                ("main;decode", 30 + jitter),
                ("main;encode_avro", 25 + jitter),
            ],
        ));
    }
    let api = Collector::over_store(&windows);
    let changes = |from: &str| {
        api.json(
            "/api/changes",
            &[
                ("base", "{version=\"main\"}"),
                ("query", "{version=\"canary\"}"),
                ("from", from),
            ],
        )
    };
    let hour = changes("now-1h");
    let quarter = changes("now-15m");
    assert_eq!(hour["verdict"], "tested", "{hour}");
    for side in ["base", "target"] {
        assert_eq!(hour[side]["step"], quarter[side]["step"], "{side}");
        assert_eq!(hour[side]["windows"], quarter[side]["windows"], "{side}");
        assert_eq!(
            hour[side]["data_from"], quarter[side]["data_from"],
            "{side}"
        );
        assert!(hour[side]["windows"].as_u64().unwrap() >= 10, "{hour}");
    }
    assert_eq!(
        hour["changes"], quarter["changes"],
        "the same verdict from the same data"
    );
    let grew = hour["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["function"] == "encode_avro")
        .unwrap_or_else(|| panic!("{hour}"));
    assert_eq!(grew["significant"], true, "{hour}");

    // The period before the data: nothing to test, and the answer says why.
    let empty = api.json(
        "/api/changes",
        &[
            ("query", "{version=\"canary\"}"),
            ("from", "now-15m"),
            ("base_from", "now-3h"),
            ("base_to", "now-2h"),
        ],
    );
    assert_eq!(empty["verdict"], "insufficient_data", "{empty}");
    assert_eq!(
        empty["reason"], "the base has no data in its range",
        "{empty}"
    );
    assert!(empty["base"]["data_from"].is_null(), "{empty}");
    assert!(empty["changes"].as_array().unwrap().is_empty(), "{empty}");
}
