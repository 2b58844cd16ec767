//! Issue #13, item 1: Pyroscope's ingest API on an in-process collector.
//!
//! First what the SDKs send, shaped as they send it (pyroscope-go's multipart `/ingest`
//! with a heap profile of four sample types and its `sample_type_config`; the Rust-based
//! SDKs' gzipped `push.v1.PushRequest` of cpu/nanoseconds pprof with thread tags as
//! sample labels; folded and lines bodies; Connect's JSON), each stored with the stacks,
//! totals, labels and profile types it carries, and a repeated push stored once. Then
//! hostile requests: every one a clear 4xx, nothing panics, the budget holds, another
//! source's data untouched.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use prost::Message;
use serde_json::Value;
use stackwatch_profile::pprof::proto;
use stackwatch_server::config::Config;
use stackwatch_server::push::pyroscope::proto as push;

use common::{encode, total, Collector};

const TOKEN_A: &str = "pyro-token-a";
const TOKEN_B: &str = "pyro-token-b";

/// An answer: status, `Retry-After`, `Content-Type`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    content_type: String,
    body: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.status, self.body)
    }
}

/// A collector with push on (tokens of `team-a` and `team-b`), storing into a temp dir;
/// `tune` adjusts its config.
fn pyroscope_collector(tune: impl FnOnce(&mut Config)) -> Collector {
    Collector::with_push(&[(TOKEN_A, "team-a"), (TOKEN_B, "team-b")], tune)
}

/// Pyroscope's pushes and waiting for what they store, beside the queries of `common`.
impl Collector {
    /// POSTs `body` to `path_and_query` with `headers`.
    fn post(&self, path_and_query: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut req = self.agent.post(format!("{}{path_and_query}", self.api));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut r = req.send(body).expect("the collector answers");
        let header = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after");
        let content_type = header("content-type").unwrap_or_default();
        let mut out = String::new();
        r.body_mut()
            .with_config()
            .limit(64 << 20)
            .reader()
            .read_to_string(&mut out)
            .unwrap_or_default();
        Answer {
            status: r.status().as_u16(),
            retry_after,
            content_type,
            body: out,
        }
    }

    /// POST /ingest with `params` (percent-encoded) and the token of team-a as basic
    /// auth, as the SDKs send it, unless `headers` carry an Authorization.
    fn ingest(&self, params: &[(&str, &str)], headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let qs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let auth = basic(TOKEN_A);
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        if !h
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            h.push(("authorization", &auth));
        }
        self.post(&format!("/ingest?{}", qs.join("&")), &h, body)
    }

    /// POST /push.v1.PusherService/Push as the Rust-based SDKs do: protobuf, gzipped,
    /// basic auth.
    fn connect(&self, req: &push::PushRequest, token: &str) -> Answer {
        self.post(
            "/push.v1.PusherService/Push",
            &[
                ("content-type", "application/proto"),
                ("content-encoding", "gzip"),
                ("authorization", &basic(token)),
            ],
            &gzip(&req.encode_to_vec()),
        )
    }

    /// Waits until a selection is non-empty (the writer flushes every 50 ms).
    fn wait_folded(&self, query: &str, ty: Option<&str>) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let f = self.folded(query, ty);
            if !f.is_empty() {
                // Let a write in flight land, then read again.
                std::thread::sleep(Duration::from_millis(200));
                return self.folded(query, ty);
            }
            assert!(Instant::now() < deadline, "{query} ({ty:?}) stayed empty");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a selection is `want`.
    fn wait_for(&self, query: &str, want: &BTreeMap<String, u64>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let f = self.folded(query, None);
            if &f == want {
                return;
            }
            assert!(Instant::now() < deadline, "{query}: {f:?}, not {want:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn folded_of(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(s, c)| (s.to_string(), *c)).collect()
}

fn basic(token: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("pyroscope:{token}"))
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn now_s() -> u64 {
    stackwatch_profile::clock::unix_ms() / 1000
}

/// This process's peak resident memory (`VmHWM`), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Builds pprof profiles: a string table, one function and location per frame name.
struct Pprof {
    msg: proto::Profile,
    strings: HashMap<String, i64>,
    locations: HashMap<String, u64>,
}

impl Pprof {
    fn new(sample_types: &[(&str, &str)], period_type: Option<(&str, &str)>, period: i64) -> Pprof {
        let mut p = Pprof {
            msg: proto::Profile::default(),
            strings: HashMap::new(),
            locations: HashMap::new(),
        };
        p.s("");
        for (t, u) in sample_types {
            let vt = proto::ValueType {
                r#type: p.s(t),
                unit: p.s(u),
            };
            p.msg.sample_type.push(vt);
        }
        if let Some((t, u)) = period_type {
            p.msg.period_type = Some(proto::ValueType {
                r#type: p.s(t),
                unit: p.s(u),
            });
        }
        p.msg.period = period;
        p.msg.time_nanos = ((now_s() - 30) * 1_000_000_000) as i64;
        p.msg.duration_nanos = 10_000_000_000;
        p
    }

    fn s(&mut self, s: &str) -> i64 {
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = self.msg.string_table.len() as i64;
        self.msg.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    /// Adds a sample of root-first `folded` frames.
    fn sample(&mut self, folded: &str, values: &[i64], label: Option<(&str, &str)>) -> &mut Self {
        let mut ids = Vec::new();
        for frame in folded.split(';').rev() {
            let id = match self.locations.get(frame) {
                Some(id) => *id,
                None => {
                    let id = self.locations.len() as u64 + 1;
                    let name = self.s(frame);
                    self.msg.function.push(proto::Function {
                        id,
                        name,
                        ..Default::default()
                    });
                    self.msg.location.push(proto::Location {
                        id,
                        line: vec![proto::Line {
                            function_id: id,
                            ..Default::default()
                        }],
                        ..Default::default()
                    });
                    self.locations.insert(frame.to_owned(), id);
                    id
                }
            };
            ids.push(id);
        }
        let label = label
            .map(|(k, v)| {
                vec![proto::Label {
                    key: self.s(k),
                    str: self.s(v),
                    ..Default::default()
                }]
            })
            .unwrap_or_default();
        self.msg.sample.push(proto::Sample {
            location_id: ids,
            value: values.to_vec(),
            label,
        });
        self
    }

    fn bytes(&self) -> Vec<u8> {
        self.msg.encode_to_vec()
    }
}

const PERIOD: i64 = 10_000_000;

/// A folded stack, its periods, an optional sample label.
type SdkSample<'a> = (&'a str, i64, Option<(&'a str, &'a str)>);

/// What pyroscope-rs (the Python, Ruby and Rust SDKs) sends: cpu/nanoseconds at 100 Hz,
/// values `periods × period`, thread tags as sample labels.
fn sdk_profile(stacks: &[SdkSample<'_>]) -> Pprof {
    let mut p = Pprof::new(
        &[("cpu", "nanoseconds")],
        Some(("cpu", "nanoseconds")),
        PERIOD,
    );
    for (stack, periods, label) in stacks {
        p.sample(stack, &[periods * PERIOD], *label);
    }
    p
}

fn series(labels: &[(&str, &str)], profiles: Vec<Vec<u8>>) -> push::RawProfileSeries {
    push::RawProfileSeries {
        labels: labels
            .iter()
            .map(|(k, v)| push::LabelPair {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: profiles
            .into_iter()
            .map(|raw_profile| push::RawSample {
                raw_profile,
                id: "734fd599-6865-419e-9475-932762d8f469".into(),
            })
            .collect(),
    }
}

/// An empty Go heap profile: its four sample types as godeltaprof writes them.
fn empty_heap_profile() -> Pprof {
    Pprof::new(
        &[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ],
        Some(("space", "bytes")),
        524_288,
    )
}

/// A Go heap profile (four sample types) as godeltaprof writes it.
fn heap_profile() -> Pprof {
    let mut p = empty_heap_profile();
    p.sample("main.main;main.alloc", &[30, 30_000, 3, 3_000], None)
        .sample("main.main;main.cache", &[5, 500_000, 5, 500_000], None)
        .sample("main.main;runtime.malg", &[2, 64, 0, 0], None);
    p
}

/// pyroscope-go's `sample_type_config` of its heap profile.
const HEAP_CONFIG: &str = r#"{"alloc_objects":{"units":"objects"},"alloc_space":{"units":"bytes"},"inuse_space":{"units":"bytes","aggregation":"average"},"inuse_objects":{"units":"objects","aggregation":"average"}}"#;

/// A multipart/form-data body as Go's `mime/multipart` writes it.
fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "d3a1b0c7e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn pushes_shaped_as_the_sdks_send_them_are_stored() {
    let h = pyroscope_collector(|_| {});
    let from = (now_s() - 20).to_string();
    let until = (now_s() - 10).to_string();

    // Folded text, the original API: CPU samples at sampleRate Hz, tags target labels.
    let r = h.ingest(
        &[
            ("name", "folded-app.cpu{env=prod, region=eu}"),
            ("from", &from),
            ("until", &until),
            ("sampleRate", "100"),
            ("spyName", "ebpfspy"),
            ("format", "folded"),
        ],
        &[],
        b"main;work;hot 30\nmain;idle 10\n\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let want = folded_of(&[("main;work;hot", 30), ("main;idle", 10)]);
    assert_eq!(h.wait_folded(r#"{service="folded-app"}"#, None), want);
    assert_eq!(
        h.folded(
            r#"{service="folded-app",env="prod",region="eu",tenant="team-a"}"#,
            None
        ),
        want
    );
    // The series' period is the sample rate's: 40 periods of 10 ms are 0.4 CPU seconds
    // (whole 10 s buckets: cores × 10 s).
    let to = now_s() / 10 * 10;
    let (status, ts) = h.get(
        "/api/timeseries",
        &[
            ("query", r#"{service="folded-app"}"#),
            ("from", &(to - 120).to_string()),
            ("to", &to.to_string()),
            ("step", "10"),
        ],
    );
    assert_eq!(status, 200, "{ts}");
    let ts: Value = serde_json::from_str(&ts).unwrap();
    let cpu_seconds: f64 = ts["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap_or(0.0) * 10.0)
        .sum();
    assert!((cpu_seconds - 0.4).abs() < 0.01, "{cpu_seconds}: {ts}");

    // `lines`: one stack per line, each counting 1.
    let r = h.ingest(
        &[("name", "lines-app.cpu"), ("format", "lines")],
        &[],
        b"a;b\na;b\na;c\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        h.wait_folded(r#"{service="lines-app"}"#, None),
        folded_of(&[("a;b", 2), ("a;c", 1)])
    );

    // pyroscope-go: multipart, no format, a name without a type suffix whose tags hold
    // a session id and OpenTelemetry's dotted names; the heap profile's four sample
    // types become four series.
    let go_name = "go-app{__session_id__=9f3c2a,otel.scope.name=com.grafana.pyroscope/godeltaprof,process.runtime.name=go,env=prod}";
    let heap = gzip(&heap_profile().bytes());
    let (ctype, body) = multipart(&[
        ("profile", &heap),
        ("sample_type_config", HEAP_CONFIG.as_bytes()),
    ]);
    let from_ns = ((now_s() - 25) * 1_000_000_000).to_string();
    let until_ns = ((now_s() - 10) * 1_000_000_000).to_string();
    let r = h.ingest(
        &[
            ("name", go_name),
            ("from", &from_ns),
            ("until", &until_ns),
            ("spyName", "gospy"),
            ("sampleRate", "100"),
            ("units", "objects"),
            ("aggregationType", ""),
        ],
        &[("content-type", &ctype)],
        &body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let q = r#"{service="go-app",env="prod",process_runtime_name="go",otel_scope_name="com.grafana.pyroscope/godeltaprof"}"#;
    assert_eq!(
        h.wait_folded(q, Some("alloc_space")),
        folded_of(&[
            ("main.main;main.alloc", 30_000),
            ("main.main;main.cache", 500_000),
            ("main.main;runtime.malg", 64)
        ])
    );
    assert_eq!(
        h.wait_folded(q, Some("alloc_objects")),
        folded_of(&[
            ("main.main;main.alloc", 30),
            ("main.main;main.cache", 5),
            ("main.main;runtime.malg", 2)
        ])
    );
    assert_eq!(
        h.wait_folded(q, Some("inuse_space")),
        folded_of(&[
            ("main.main;main.alloc", 3_000),
            ("main.main;main.cache", 500_000)
        ])
    );
    assert_eq!(total(&h.wait_folded(q, Some("inuse_objects"))), 8);
    assert!(h.folded(q, None).is_empty(), "no heap data in CPU");
    // ... and its CPU profile (Go's: samples/count and cpu/nanoseconds): the counts.
    let mut cpu = stackwatch_profile::Profile::from_folded(
        "main.main;main.spin 25\nmain.main;runtime.gc 5\n",
        10_000_000,
    )
    .unwrap();
    cpu.start_unix_ns = (now_s() - 25) * 1_000_000_000;
    cpu.duration_ns = 10_000_000_000;
    let (ctype, body) = multipart(&[("profile", &stackwatch_profile::pprof::encode(&cpu))]);
    let r = h.ingest(
        &[
            ("name", go_name),
            ("spyName", "gospy"),
            ("sampleRate", "100"),
        ],
        &[("content-type", &ctype)],
        &body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        h.wait_folded(r#"{service="go-app"}"#, None),
        folded_of(&[("main.main;main.spin", 25), ("main.main;runtime.gc", 5)])
    );
    let sources = h.json("/api/push-sources", &[]);
    let go = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "go-app")
        .expect("go-app is a source");
    let mut types: Vec<&str> = go["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["profile_type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "cpu",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert!(
        go["series"].as_array().unwrap().iter().all(|s| !s["labels"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("session"))),
        "{go}"
    );

    // format=pprof: a raw gzipped pprof body, gzip Content-Encoding on top.
    let mut raw = stackwatch_profile::Profile::from_folded("x;y 7\n", 10_000_000).unwrap();
    raw.start_unix_ns = (now_s() - 15) * 1_000_000_000;
    let r = h.ingest(
        &[("name", "raw-app.cpu{}"), ("format", "pprof")],
        &[("content-encoding", "gzip")],
        &gzip(&stackwatch_profile::pprof::encode(&raw)),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        h.wait_folded(r#"{service="raw-app"}"#, None),
        folded_of(&[("x;y", 7)])
    );

    // A `service_name` tag names the service.
    let r = h.ingest(
        &[("name", "ignored.cpu{service_name=named-app,team=db}")],
        &[],
        b"q;r 3\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        h.wait_folded(r#"{service="named-app",team="db"}"#, None),
        folded_of(&[("q;r", 3)])
    );

    // The Connect endpoint, as pyroscope-rs sends it: gzipped protobuf, nanoseconds
    // into periods, thread tags as sample labels, dotted label names made identifiers.
    let py = sdk_profile(&[
        ("<module>;burn_alpha", 40, None),
        ("<module>;burn_beta", 25, Some(("phase", "beta"))),
    ]);
    let req = push::PushRequest {
        series: vec![series(
            &[
                ("__name__", "process_cpu"),
                ("service_name", "py-app"),
                ("env", "ci"),
                ("otel.scope.name", "com.grafana.pyroscope/python"),
                ("process.runtime.name", "cpython"),
            ],
            vec![py.bytes()],
        )],
    };
    let r = h.connect(&req, TOKEN_A);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type, "application/proto");
    assert!(r.body.is_empty());
    let all = h.wait_folded(
        r#"{service="py-app",env="ci",process_runtime_name="cpython"}"#,
        None,
    );
    assert_eq!(
        all,
        folded_of(&[("<module>;burn_alpha", 40), ("<module>;burn_beta", 25)])
    );
    assert_eq!(
        h.folded(r#"{service="py-app",phase="beta"}"#, None),
        folded_of(&[("<module>;burn_beta", 25)])
    );

    // Connect's JSON mapping: camelCase, bytes as base64 (a gzipped profile here).
    let json_profile = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(gzip(&sdk_profile(&[("main;json_work", 9, None)]).bytes()))
    };
    let body = serde_json::json!({
        "series": [{
            "labels": [
                {"name": "__name__", "value": "process_cpu"},
                {"name": "service_name", "value": "json-app"}
            ],
            "samples": [{"rawProfile": json_profile, "ID": "x"}]
        }]
    })
    .to_string();
    let r = h.post(
        "/push.v1.PusherService/Push",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {TOKEN_B}")),
        ],
        body.as_bytes(),
    );
    assert_eq!((r.status, r.body.as_str()), (200, "{}"), "{r:?}");
    assert_eq!(
        h.wait_folded(r#"{service="json-app",tenant="team-b"}"#, None),
        folded_of(&[("main;json_work", 9)])
    );

    // A retry (the same push again) is acknowledged and stored once.
    let r = h.connect(&req, TOKEN_A);
    assert_eq!(r.status, 200, "{r:?}");
    let r2 = h.ingest(
        &[
            ("name", "folded-app.cpu{env=prod, region=eu}"),
            ("from", &from),
            ("until", &until),
            ("sampleRate", "100"),
            ("format", "folded"),
        ],
        &[],
        b"main;work;hot 30\nmain;idle 10\n\n",
    );
    assert_eq!(r2.status, 200, "{r2:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.folded(r#"{service="py-app"}"#, None), all);
    assert_eq!(h.folded(r#"{service="folded-app"}"#, None), want);
    let (_, metrics) = h.get("/metrics", &[]);
    assert!(
        metrics.contains("stackwatch_push_duplicates_total 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("push"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The 413/400/401 cases share this: the status, and a reason in the body.
#[track_caller]
fn refused(r: Answer, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{r:?} (wanted {status} with {reason:?})");
    assert!(
        r.body.to_lowercase().contains(&reason.to_lowercase()),
        "{r:?} does not say {reason:?}"
    );
}

#[test]
fn hostile_pushes_are_refused_and_touch_nothing_else() {
    let h = pyroscope_collector(|cfg| {
        cfg.push.max_body_bytes = 1 << 20;
        cfg.push.max_decompressed_bytes = 8 << 20;
    });
    // Another tenant's source, pushed before and read after everything.
    let r = h.ingest(
        &[("name", "victim.cpu{env=prod}")],
        &[("authorization", &format!("Bearer {TOKEN_B}"))],
        b"victim;main;work 50\nvictim;main;io 7\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let victim_req = push::PushRequest {
        series: vec![series(
            &[("service_name", "victim-py")],
            vec![sdk_profile(&[("v;py", 11, None)]).bytes()],
        )],
    };
    assert_eq!(h.connect(&victim_req, TOKEN_B).status, 200);
    let victim = h.wait_folded(r#"{service="victim"}"#, None);
    let victim_py = h.wait_folded(r#"{service="victim-py"}"#, None);
    assert_eq!(total(&victim), 57);
    // A source of team-a with data, so its refusals are recorded on the Fleet page.
    assert_eq!(
        h.ingest(&[("name", "known.cpu")], &[], b"k;ok 1\n").status,
        200
    );

    let good = sdk_profile(&[("a;b", 3, None)]);
    let connect_with = |labels: &[(&str, &str)], profiles: Vec<Vec<u8>>| push::PushRequest {
        series: vec![series(labels, profiles)],
    };
    let py = |profiles: Vec<Vec<u8>>| connect_with(&[("service_name", "hostile-py")], profiles);

    // Tokens: none, wrong, wrong scheme: 401 on both endpoints.
    refused(
        h.ingest(&[("name", "x.cpu")], &[("authorization", "")], b"a 1\n"),
        401,
        "token",
    );
    refused(
        h.ingest(
            &[("name", "x.cpu")],
            &[("authorization", &basic("nope"))],
            b"a 1\n",
        ),
        401,
        "unknown token",
    );
    let r = h.post(
        "/push.v1.PusherService/Push",
        &[("content-type", "application/proto")],
        &py(vec![good.bytes()]).encode_to_vec(),
    );
    refused(r, 401, "\"code\":\"unauthenticated\"");
    refused(
        h.connect(&py(vec![good.bytes()]), "wrong"),
        401,
        "unauthenticated",
    );

    // Sizes: a body over max_body_bytes, a gzip bomb as Content-Encoding, a gzip bomb
    // as a raw profile, profiles that together inflate past the cap.
    let big = vec![b'a'; (1 << 20) + 1];
    refused(h.ingest(&[("name", "x.cpu")], &[], &big), 413, "too large");
    refused(
        h.post(
            "/push.v1.PusherService/Push",
            &[
                ("content-type", "application/proto"),
                ("authorization", &basic(TOKEN_A)),
            ],
            &big,
        ),
        413,
        "resource_exhausted",
    );
    let bomb = {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap()
    };
    assert!(bomb.len() < 1 << 20);
    refused(
        h.ingest(&[("name", "x.cpu")], &[("content-encoding", "gzip")], &bomb),
        413,
        "max_decompressed_bytes",
    );
    refused(
        h.ingest(&[("name", "x.cpu"), ("format", "pprof")], &[], &bomb),
        413,
        "exceeds",
    );
    refused(
        h.connect(&py(vec![bomb.clone()]), TOKEN_A),
        413,
        "max_decompressed_bytes",
    );
    // Three valid profiles of 3 MiB each (a long string): each fits the 8 MiB cap, not
    // the three together.
    let fat = {
        let mut p = sdk_profile(&[("a;b", 1, None)]);
        p.s(&"f".repeat(3 << 20));
        gzip(&p.bytes())
    };
    assert!(fat.len() < 100 << 10);
    assert_eq!(h.connect(&py(vec![fat.clone()]), TOKEN_A).status, 200);
    refused(
        h.connect(&py(vec![fat.clone(), fat.clone(), fat]), TOKEN_A),
        413,
        "the profiles of this request",
    );

    // Malformed bodies: 400 with a reason.
    let connect_raw = |body: &[u8], headers: &[(&str, &str)]| {
        let auth = basic(TOKEN_A);
        let mut h2 = vec![("authorization", auth.as_str())];
        h2.extend_from_slice(headers);
        h.post("/push.v1.PusherService/Push", &h2, body)
    };
    refused(
        connect_raw(&[0xff; 64], &[("content-type", "application/proto")]),
        400,
        "bad PushRequest protobuf",
    );
    refused(
        connect_raw(b"{\"series\": 7}", &[("content-type", "application/json")]),
        400,
        "bad PushRequest JSON",
    );
    refused(
        connect_raw(
            br#"{"series":[{"labels":[{"name":"service_name","value":"hostile-py"}],"samples":[{"rawProfile":"!!!not base64"}]}]}"#,
            &[("content-type", "application/json")],
        ),
        400,
        "base64",
    );
    refused(
        connect_raw(
            b"\x1f\x8bnot gzip",
            &[
                ("content-type", "application/proto"),
                ("content-encoding", "gzip"),
            ],
        ),
        400,
        "bad gzip",
    );
    let r = connect_raw(b"hello", &[("content-type", "text/plain")]);
    assert_eq!(r.status, 415, "{r:?}");
    refused(
        h.connect(&py(vec![b"\x1f\x8b\x08\x00garbage".to_vec()]), TOKEN_A),
        400,
        "gzip",
    );
    refused(
        h.connect(&py(vec![vec![0xff; 32]]), TOKEN_A),
        400,
        "protobuf",
    );
    refused(
        h.connect(&connect_with(&[("env", "x")], vec![good.bytes()]), TOKEN_A),
        400,
        "service_name",
    );
    refused(
        h.ingest(
            &[("name", "x.cpu")],
            &[("content-type", "multipart/form-data")],
            b"--x\r\n",
        ),
        400,
        "boundary",
    );
    for body in [
        &b"--b\r\nContent-Disposition: form-data; name=\"profile\"\r\n\r\nnever closed"[..],
        b"no boundary here",
        b"--b\r\nno headers end",
    ] {
        refused(
            h.ingest(
                &[("name", "known")],
                &[("content-type", "multipart/form-data; boundary=b")],
                body,
            ),
            400,
            "bad multipart",
        );
    }
    let (ctype, body) = multipart(&[("sample_type_config", b"{}")]);
    refused(
        h.ingest(&[("name", "known")], &[("content-type", &ctype)], &body),
        400,
        "without a profile part",
    );
    let (ctype, body) = multipart(&[("profile", &good.bytes()), ("sample_type_config", b"[1,")]);
    refused(
        h.ingest(&[("name", "known")], &[("content-type", &ctype)], &body),
        400,
        "sample_type_config",
    );
    // A config part too large to parse (its entries cost memory outside the wire count).
    let huge_config = format!(
        "{{{}\"last\":{{}}}}",
        (0..20_000)
            .map(|i| format!("\"k{i}\":{{}},"))
            .collect::<String>()
    );
    let (ctype, body) = multipart(&[
        ("profile", &good.bytes()),
        ("sample_type_config", huge_config.as_bytes()),
    ]);
    refused(
        h.ingest(&[("name", "known")], &[("content-type", &ctype)], &body),
        413,
        "sample_type_config part of",
    );
    let (ctype, body) = multipart(&[("profile", &good.bytes()), ("prev_profile", &good.bytes())]);
    refused(
        h.ingest(&[("name", "known")], &[("content-type", &ctype)], &body),
        400,
        "prev_profile",
    );

    // Absurd indices and values in the pprof.
    let mut p = sdk_profile(&[("a;b", 1, None)]);
    p.msg.function[0].name = 1_000_000_000;
    refused(
        h.connect(&py(vec![p.bytes()]), TOKEN_A),
        400,
        "string index",
    );
    let mut p = sdk_profile(&[("a;b", 1, None)]);
    p.msg.sample[0].location_id.push(987_654_321);
    refused(
        h.connect(&py(vec![p.bytes()]), TOKEN_A),
        400,
        "missing location",
    );
    let mut p = sdk_profile(&[("a;b", 1, None)]);
    p.msg.location[0].line[0].function_id = 77;
    refused(
        h.connect(&py(vec![p.bytes()]), TOKEN_A),
        400,
        "missing function",
    );
    let mut p = sdk_profile(&[("a;b", 1, None)]);
    p.msg.sample_type[0].unit = -5;
    refused(
        h.connect(&py(vec![p.bytes()]), TOKEN_A),
        400,
        "string index",
    );
    let mut p = heap_profile();
    p.msg.sample[0].value.truncate(1);
    refused(h.connect(&py(vec![p.bytes()]), TOKEN_A), 400, "values");
    let weird = Pprof::new(&[("furlongs", "parsecs")], None, 0);
    refused(
        h.connect(&py(vec![weird.bytes()]), TOKEN_A),
        400,
        "no sample type",
    );
    // Counts that overflow: periods past the budget, sums past u64.
    let mut p = sdk_profile(&[("a;b", 1, None), ("a;c", 1, None)]);
    p.msg.sample[0].value = vec![i64::MAX];
    p.msg.sample[1].value = vec![i64::MAX];
    refused(h.connect(&py(vec![p.bytes()]), TOKEN_A), 400, "max_samples");
    let mut p = Pprof::new(&[("samples", "count")], None, 0);
    p.sample("a", &[i64::MAX], None)
        .sample("b", &[i64::MAX], None);
    refused(h.connect(&py(vec![p.bytes()]), TOKEN_A), 400, "max_samples");
    refused(
        h.ingest(
            &[("name", "known.cpu")],
            &[],
            b"a;b 99999999999999999999999\n",
        ),
        400,
        "not a non-negative integer",
    );
    refused(
        h.ingest(&[("name", "known.cpu")], &[], b"a;b -5\n"),
        400,
        "not a non-negative integer",
    );
    refused(
        h.ingest(
            &[("name", "known.cpu")],
            &[],
            b"a;b 18446744073709551615\na;c 18446744073709551615\n",
        ),
        400,
        "max_samples",
    );
    refused(
        h.ingest(&[("name", "known.cpu")], &[], b"no-count-here\n"),
        400,
        "no count",
    );
    refused(
        h.ingest(&[("name", "known.cpu")], &[], b"\xff\xfe 1\n"),
        400,
        "UTF-8",
    );
    // More profiles than a request may carry.
    let many: Vec<Vec<u8>> = (0..65).map(|_| good.bytes()).collect();
    refused(h.connect(&py(many), TOKEN_A), 400, "more than 64 profiles");

    // One location repeated 4 M times: 4 KB of gzip. Truncated at the depth budget
    // (or refused), quickly, never gigabytes.
    let mut deep = sdk_profile(&[("deep_frame", 1, None)]);
    deep.msg.sample[0].location_id = vec![1; 4_000_000];
    let deep = gzip(&deep.bytes());
    assert!(deep.len() < 64 << 10, "{}", deep.len());
    let peak_before = peak_rss_kib();
    let started = Instant::now();
    let r = h.connect(
        &connect_with(&[("service_name", "deep-app")], vec![deep]),
        TOKEN_A,
    );
    let grown_mib = peak_rss_kib().saturating_sub(peak_before) / 1024;
    assert!(grown_mib < 1024, "the peak RSS grew by {grown_mib} MiB");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    match r.status {
        200 => {
            let stored = h.wait_folded(r#"{service="deep-app"}"#, None);
            let (stack, count) = stored.iter().next().unwrap();
            assert_eq!(*count, 1);
            assert!(
                stack.split(';').count() <= 513,
                "{} frames",
                stack.split(';').count()
            );
            assert!(stack.ends_with("[truncated]"), "{stack:.80}");
        }
        _ => refused(r, 400, "budget"),
    }

    // Bad names, times, rates, formats: 400 with the parameter.
    for (name, reason) in [
        ("", "name is missing"),
        ("{env=x}", "no application name"),
        (".cpu", "no application name"),
        ("app{env=x", "do not end"),
        ("app{env}", "has no '='"),
        ("app.cpu{bad-tag=x}", "bad-tag"),
        ("app.cpu{tenant=other}", "tenant"),
        ("app.cpu{9lives=x}", "9lives"),
    ] {
        refused(h.ingest(&[("name", name)], &[], b"a;b 1\n"), 400, reason);
    }
    let long = format!("app.cpu{{k={}}}", "v".repeat(300));
    refused(h.ingest(&[("name", &long)], &[], b"a;b 1\n"), 400, "longer");
    for (k, v, reason) in [
        ("from", "yesterday", "from"),
        ("until", "now-5parsecs", "until"),
        ("from", "99999999999999999999999", "from"),
        ("sampleRate", "0", "sampleRate"),
        ("sampleRate", "fast", "sampleRate"),
        ("sampleRate", "-100", "sampleRate"),
        ("format", "jfr", "not supported"),
        ("format", "trie", "not supported"),
    ] {
        refused(
            h.ingest(&[("name", "known.cpu"), (k, v)], &[], b"a;b 1\n"),
            400,
            reason,
        );
    }
    refused(
        h.ingest(
            &[
                ("name", "known.cpu"),
                ("from", "now-1m"),
                ("until", "now-2m"),
            ],
            &[],
            b"a;b 1\n",
        ),
        400,
        "until is before from",
    );
    refused(
        h.ingest(
            &[
                ("name", "known.cpu"),
                ("from", &(now_s() + 86_400).to_string()),
                ("until", &(now_s() + 86_410).to_string()),
            ],
            &[],
            b"a;b 1\n",
        ),
        400,
        "future",
    );
    refused(
        h.ingest(
            &[("name", "known.cpu")],
            &[("content-encoding", "br")],
            b"a;b 1\n",
        ),
        400,
        "content-encoding",
    );

    // Still up, the victims untouched, the refusals counted and on the Fleet page.
    assert_eq!(
        h.ingest(&[("name", "known.cpu")], &[], b"k;after 2\n")
            .status,
        200
    );
    h.wait_for(
        r#"{service="known"}"#,
        &folded_of(&[("k;ok", 1), ("k;after", 2)]),
    );
    assert_eq!(h.folded(r#"{service="victim"}"#, None), victim);
    assert_eq!(h.folded(r#"{service="victim-py"}"#, None), victim_py);
    assert_eq!(
        total(&h.folded(r#"{tenant="team-b"}"#, None)),
        total(&victim) + total(&victim_py)
    );
    let sources = h.json("/api/push-sources", &[]);
    let known = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "known")
        .expect("known is a source");
    assert!(known["rejected"].as_u64().unwrap() >= 5, "{known}");
    assert!(known["last_error"].as_str().is_some(), "{known}");
    for s in sources.as_array().unwrap() {
        if s["tenant"] == "team-b" {
            assert_eq!(s["rejected"], 0, "{s}");
        }
    }
    let (_, metrics) = h.get("/metrics", &[]);
    let rejected = metrics
        .lines()
        .find(|l| l.contains(r#"protocol="pyroscope""#) && l.contains(r#"outcome="rejected""#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(rejected >= 40, "{rejected}");
}

#[test]
fn a_source_over_its_rate_is_told_to_wait() {
    let h = pyroscope_collector(|cfg| cfg.push.max_requests_per_second = 2);
    let mut limited = None;
    for i in 0..20 {
        let r = h.ingest(
            &[("name", "busy.cpu")],
            &[],
            format!("a;b{i} 1\n").as_bytes(),
        );
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = limited.expect("a 429 within 20 quick pushes at 2/s (burst 4)");
    assert!(r.body.contains("max_requests_per_second"), "{r:?}");
    let wait: u64 = r.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(wait >= 1, "{wait}");
    // The Connect endpoint answers it as Connect does, with Retry-After too.
    let mut limited = None;
    for i in 0..20 {
        let req = push::PushRequest {
            series: vec![series(
                &[("service_name", "busy-py")],
                vec![sdk_profile(&[(&format!("a;b{i}"), 1, None)]).bytes()],
            )],
        };
        let r = h.connect(&req, TOKEN_A);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = limited.expect("a 429 from the Connect endpoint");
    assert!(r.body.contains("\"code\":\"resource_exhausted\""), "{r:?}");
    assert!(r.retry_after.is_some(), "{r:?}");
    // Another source is not limited by them.
    assert_eq!(h.ingest(&[("name", "calm.cpu")], &[], b"c 1\n").status, 200);
    let sources = h.json("/api/push-sources", &[]);
    let busy = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "busy")
        .unwrap();
    assert!(busy["rejected"].as_u64().unwrap() >= 1, "{busy}");
}

/// A heap profile of a process that allocated `alloc` and `cache` bytes in the interval.
fn heavy_heap_profile(alloc: i64, cache: i64) -> Vec<u8> {
    let mut p = empty_heap_profile();
    p.sample("main.main;main.alloc", &[alloc / 64, alloc, 3, 3_000], None)
        .sample(
            "main.main;main.cache",
            &[cache / 64, cache, 5, 500_000],
            None,
        );
    gzip(&p.bytes())
}

#[test]
fn allocation_amounts_have_their_own_budget_apart_from_cpu_periods() {
    // 9 GiB allocated in one interval (a busy Go service in 10 s) is more than the 2^32
    // periods a CPU profile may carry, and is stored whole: amounts are bounded by
    // push.max_amount_per_push (2^36 for the request's amount profiles together), not
    // by the scrape's period budget.
    let h = pyroscope_collector(|_| {});
    let (six, three) = (6i64 << 30, 3i64 << 30);
    let (ctype, body) = multipart(&[
        ("profile", &heavy_heap_profile(six, three)),
        ("sample_type_config", HEAP_CONFIG.as_bytes()),
    ]);
    let r = h.ingest(
        &[("name", "alloc-heavy{env=prod}")],
        &[("content-type", &ctype)],
        &body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        h.wait_folded(r#"{service="alloc-heavy"}"#, Some("alloc_space")),
        folded_of(&[
            ("main.main;main.alloc", six as u64),
            ("main.main;main.cache", three as u64)
        ])
    );
    // The same amounts past a lowered push.max_amount_per_push: refused, and the
    // message names that key.
    let h = pyroscope_collector(|cfg| cfg.push.max_amount_per_push = 1 << 30);
    let r = h.ingest(
        &[("name", "alloc-heavy{env=prod}")],
        &[("content-type", &ctype)],
        &body,
    );
    refused(r, 400, "push.max_amount_per_push");
    // CPU keeps the period budget (scrape.max_samples_per_window, 2^32).
    let r = h.ingest(
        &[("name", "alloc-heavy.cpu")],
        &[],
        b"a;b 4294967296\na;c 1\n",
    );
    refused(r, 400, "scrape.max_samples_per_window");
    // Folded text of an amount type (`units=bytes`) has the amount budget too: 8 GiB
    // passes the default, and the lowered one refuses it naming its key.
    let folded = format!("main;alloc {}\nmain;cache 1\n", 8u64 << 30);
    let r = h.ingest(
        &[("name", "folded-heavy"), ("units", "bytes")],
        &[],
        folded.as_bytes(),
    );
    refused(r, 400, "push.max_amount_per_push");
    let h = pyroscope_collector(|_| {});
    let r = h.ingest(
        &[("name", "folded-heavy"), ("units", "bytes")],
        &[],
        folded.as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        h.wait_folded(r#"{service="folded-heavy"}"#, Some("alloc_space")),
        folded_of(&[("main;alloc", 8u64 << 30), ("main;cache", 1)])
    );
}

/// Issue #24, item 1, over Connect: a push of `svc-a` (100 periods) beside a
/// rate-limited `svc-b` is `429` and records nothing; its identical retry, once `svc-b`
/// may push again, stores `svc-a` (it used to be acknowledged as a repeat of the refused
/// request and never stored).
#[test]
fn a_request_refused_for_one_source_is_stored_whole_when_retried() {
    let h = pyroscope_collector(|cfg| cfg.push.max_requests_per_second = 1);
    for i in 0..2 {
        let warm = push::PushRequest {
            series: vec![series(
                &[("service_name", "pyro-svc-b")],
                vec![sdk_profile(&[(&format!("main;warm{i}"), 1, None)]).bytes()],
            )],
        };
        let r = h.connect(&warm, TOKEN_A);
        assert_eq!(r.status, 200, "{r:?}");
    }
    let req = push::PushRequest {
        series: vec![
            series(
                &[("service_name", "pyro-svc-a")],
                vec![sdk_profile(&[("main;a;work", 60, None), ("main;a;idle", 40, None)]).bytes()],
            ),
            series(
                &[("service_name", "pyro-svc-b")],
                vec![sdk_profile(&[("main;b", 3, None)]).bytes()],
            ),
        ],
    };
    let r = h.connect(&req, TOKEN_A);
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.body.contains("resource_exhausted"), "{r:?}");
    let sources = h.json("/api/push-sources", &[]);
    assert!(
        !sources.to_string().contains("pyro-svc-a"),
        "a refused request left its source behind: {sources}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = h.connect(&req, TOKEN_A);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429, "{r:?}");
        assert!(Instant::now() < deadline, "still refused: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let a = h.folded("{service=\"pyro-svc-a\"}", None);
    assert_eq!(a, folded_of(&[("main;a;idle", 40), ("main;a;work", 60)]));
    assert_eq!(total(&a), 100);
    assert_eq!(
        h.folded("{service=\"pyro-svc-b\"}", None).get("main;b"),
        Some(&3)
    );
}
