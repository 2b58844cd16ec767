//! The query API against a store with known content: every route, every format, hostile
//! frame names escaped, and bad parameters answered with 400 naming the parameter.

use std::io::Read;
use std::time::Duration;

use stackwatch_store::{IngestWindow, Labels, ProfileStore, SqliteStore, StoreOptions};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Vec<u8>, String) {
    let mut r = agent.get(url).call().unwrap();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = Vec::new();
    r.body_mut().as_reader().read_to_end(&mut body).unwrap();
    (r.status().as_u16(), body, ctype)
}

#[test]
fn every_query_route_answers_and_bad_parameters_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = now - 600;
    {
        let mut s = SqliteStore::open(
            &stackwatch_server::db_path(dir.path()),
            StoreOptions::default(),
        )
        .unwrap();
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
            target: t.clone(),
            instance: "i".into(),
            seq: 1,
            start_unix_s: ts,
            stacks: stacks
                .into_iter()
                .map(|(s, c)| (s.to_string(), c))
                .collect(),
        };
        s.ingest(&[
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
        .unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = stackwatch_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let server = rt.block_on(stackwatch_server::Server::bind(cfg)).unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = rt.spawn(server.run(async {
        let _ = stopped.await;
    }));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    // Selectors as a user types them, percent-encoded as a browser or `curl -G` would.
    let q = |path: &str| {
        let enc = path
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('(', "%28");
        get(&agent, &format!("{base}{enc}"))
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

    let (status, body, _) = q("/api/timeseries?from=now-1h&step=5m");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["step"], 300);
    let total: u64 = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .sum();
    assert_eq!(total, 115);

    let (status, body, _) = q("/api/top?query={version=\"canary\"}&limit=3");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["total"], 75);
    assert_eq!(v["functions"][0]["name"], "main");

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
        ("/api/profile.svg?from=%ff", "from"),
    ] {
        let (status, body, _) = q(path);
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{path}: JSON error body"));
        assert_eq!(v["parameter"], parameter, "{path}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    let _ = stop.send(());
    rt.block_on(running).unwrap().unwrap();
}
