//! Issue #13, item 2: OpenTelemetry profiles pushed over OTLP/HTTP
//! (`POST /v1development/profiles`) to an in-process collector.
//!
//! The proof profile is real: the stackwatch sampler runs for a second over a busy
//! function (a worker thread under the sample label `thread_kind=worker`), and its
//! stacks are converted to the OTLP dictionary model with `opentelemetry-proto`'s
//! types (functions, locations with inlined lines, stacks leaf first, sample
//! attributes). Pushed as protobuf and as OTLP/JSON, the collector must return the same
//! stacks with the same totals; resource attributes are target labels, sample
//! attributes sample labels, a heap profile its own type. Then partial success, retries,
//! and hostile requests: every one a clear refusal or a partial success, the collector
//! still up, another source's data untouched.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Location, Mapping, Profile, ProfilesDictionary,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};
use stackwatch_server::config::Config;

use common::{read_answer, total, Collector};

const TOKEN: &str = "otlp-s3cret";
const PATH: &str = "/v1development/profiles";

/// A collector with push on (one token, tenant `team-a`), storing into a temp dir;
/// `tune` adjusts its config.
fn otlp_collector(tune: impl FnOnce(&mut Config)) -> Collector {
    Collector::with_push(&[(TOKEN, "team-a")], tune)
}

/// OTLP pushes, beside the queries of `common`.
impl Collector {
    /// POSTs `body` to the OTLP path; returns status, content type and body.
    fn post_raw(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
        let mut req = self.agent.post(format!("{}{PATH}", self.api));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read_answer(req.send(body).expect("the collector answers"))
    }

    /// POSTs a request as protobuf with the token.
    fn post_otlp(&self, req: &ExportProfilesServiceRequest) -> (u16, Vec<u8>) {
        let (status, _, body) = self.post_raw(
            &[
                ("content-type", "application/x-protobuf"),
                ("authorization", &format!("Bearer {TOKEN}")),
            ],
            &req.encode_to_vec(),
        );
        (status, body)
    }

    /// POSTs a request that must be accepted whole; returns the decoded answer.
    fn post_ok(&self, req: &ExportProfilesServiceRequest) -> ExportProfilesServiceResponse {
        let (status, body) = self.post_otlp(req);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        ExportProfilesServiceResponse::decode(&body[..]).expect("an ExportProfilesServiceResponse")
    }
}

fn now_ns() -> u64 {
    stackwatch_profile::clock::unix_ms() * 1_000_000
}

fn attr(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        key_strindex: 0,
    }
}

/// Samples of one attribute set: the attributes (key, value) and the stacks.
type Group<'a> = (Vec<(String, String)>, &'a HashMap<String, u64>);

/// Builds the OTLP dictionary model from folded stacks, as an exporter converting a
/// pprof profile would: interned strings, functions, one location per call site
/// (leaf first in each stack) and, with `inline`, every pair of adjacent frames one
/// location with two lines (the callee inlined into its caller).
#[derive(Default)]
struct Builder {
    dict: ProfilesDictionary,
    strings: HashMap<String, i32>,
    functions: HashMap<String, i32>,
    locations: HashMap<Vec<String>, i32>,
    stacks: HashMap<Vec<i32>, i32>,
    attributes: HashMap<(String, String), i32>,
}

impl Builder {
    fn new() -> Builder {
        let mut b = Builder::default();
        // Every table starts with its zero value.
        b.string("");
        b.dict.function_table.push(Function::default());
        b.dict.location_table.push(Location::default());
        b.dict.mapping_table.push(Mapping::default());
        b.dict.stack_table.push(Stack::default());
        b.dict.attribute_table.push(KeyValueAndUnit::default());
        b
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = self.dict.string_table.len() as i32;
        self.dict.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn function(&mut self, name: &str) -> i32 {
        if let Some(i) = self.functions.get(name) {
            return *i;
        }
        let n = self.string(name);
        let i = self.dict.function_table.len() as i32;
        self.dict.function_table.push(Function {
            name_strindex: n,
            system_name_strindex: n,
            ..Default::default()
        });
        self.functions.insert(name.to_owned(), i);
        i
    }

    /// A location of `frames`, innermost first.
    fn location(&mut self, frames: &[&str]) -> i32 {
        let key: Vec<String> = frames.iter().map(|s| s.to_string()).collect();
        if let Some(i) = self.locations.get(&key) {
            return *i;
        }
        let lines = frames
            .iter()
            .map(|f| Line {
                function_index: self.function(f),
                line: 0,
                column: 0,
            })
            .collect();
        let i = self.dict.location_table.len() as i32;
        self.dict.location_table.push(Location {
            lines,
            address: 0x1000 + i as u64,
            ..Default::default()
        });
        self.locations.insert(key, i);
        i
    }

    /// The stack index of a folded (root first) stack.
    fn stack(&mut self, folded: &str, inline: bool) -> i32 {
        let leaf_first: Vec<&str> = folded.split(';').rev().collect();
        let chunk = if inline { 2 } else { 1 };
        let locs: Vec<i32> = leaf_first.chunks(chunk).map(|c| self.location(c)).collect();
        if let Some(i) = self.stacks.get(&locs) {
            return *i;
        }
        let i = self.dict.stack_table.len() as i32;
        self.dict.stack_table.push(Stack {
            location_indices: locs.clone(),
        });
        self.stacks.insert(locs, i);
        i
    }

    fn attribute(&mut self, k: &str, v: &str) -> i32 {
        let key = (k.to_owned(), v.to_owned());
        if let Some(i) = self.attributes.get(&key) {
            return *i;
        }
        let ks = self.string(k);
        let i = self.dict.attribute_table.len() as i32;
        self.dict.attribute_table.push(KeyValueAndUnit {
            key_strindex: ks,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            unit_strindex: 0,
        });
        self.attributes.insert(key, i);
        i
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            type_strindex: self.string(ty),
            unit_strindex: self.string(unit),
        }
    }

    /// A CPU profile (`samples/count` over a `cpu/nanoseconds` period, the OpenTelemetry
    /// eBPF profiler's shape) of `groups`: each `(attributes, stacks)`.
    fn cpu_profile(&mut self, period_ns: u64, groups: &[Group<'_>], inline: bool) -> Profile {
        let mut samples = Vec::new();
        for (attrs, stacks) in groups {
            let attribute_indices: Vec<i32> =
                attrs.iter().map(|(k, v)| self.attribute(k, v)).collect();
            let mut sorted: Vec<(&String, &u64)> = stacks.iter().collect();
            sorted.sort();
            for (stack, count) in sorted {
                samples.push(Sample {
                    stack_index: self.stack(stack, inline),
                    attribute_indices: attribute_indices.clone(),
                    values: vec![*count as i64],
                    ..Default::default()
                });
            }
        }
        Profile {
            sample_type: Some(self.value_type("samples", "count")),
            period_type: Some(self.value_type("cpu", "nanoseconds")),
            period: period_ns as i64,
            time_unix_nano: now_ns() - 2_000_000_000,
            duration_nano: 1_000_000_000,
            samples,
            ..Default::default()
        }
    }

    fn request(
        self,
        resources: Vec<(Vec<KeyValue>, Vec<Profile>)>,
    ) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: resources
                .into_iter()
                .map(|(attributes, profiles)| ResourceProfiles {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_profiles: vec![ScopeProfiles {
                        profiles,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            dictionary: Some(self.dict),
        }
    }
}

/// A request of one resource (`service.name` = `service`) and one CPU profile of
/// `stacks`, unlabeled.
fn simple(service: &str, stacks: &[(&str, u64)]) -> ExportProfilesServiceRequest {
    let stacks: HashMap<String, u64> = stacks.iter().map(|(s, c)| (s.to_string(), *c)).collect();
    let mut b = Builder::new();
    let p = b.cpu_profile(10_000_000, &[(vec![], &stacks)], false);
    b.request(vec![(vec![attr("service.name", service)], vec![p])])
}

/// OTLP/JSON of a request, as the OpenTelemetry Collector writes it (lowerCamelCase,
/// 64-bit integers as strings, zero values left out).
fn to_json(req: &ExportProfilesServiceRequest) -> Value {
    fn any(v: &Option<AnyValue>) -> Value {
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => json!({"stringValue": s}),
            Some(any_value::Value::IntValue(i)) => json!({"intValue": i.to_string()}),
            Some(any_value::Value::BoolValue(b)) => json!({"boolValue": b}),
            Some(any_value::Value::StringValueStrindex(i)) => json!({"stringValueStrindex": i}),
            _ => json!({}),
        }
    }
    fn vt(v: &Option<ValueType>) -> Value {
        let v = v.unwrap_or_default();
        json!({"typeStrindex": v.type_strindex, "unitStrindex": v.unit_strindex})
    }
    let d = req.dictionary.clone().unwrap_or_default();
    json!({
        "resourceProfiles": req.resource_profiles.iter().map(|rp| json!({
            "resource": {"attributes": rp.resource.as_ref().map(|r| r.attributes.iter().map(|kv| json!({
                "key": kv.key, "value": any(&kv.value)})).collect::<Vec<_>>()).unwrap_or_default()},
            "scopeProfiles": rp.scope_profiles.iter().map(|sp| json!({
                "scope": {"name": "test"},
                "profiles": sp.profiles.iter().map(|p| json!({
                    "sampleType": vt(&p.sample_type),
                    "periodType": vt(&p.period_type),
                    "period": p.period.to_string(),
                    "timeUnixNano": p.time_unix_nano.to_string(),
                    "durationNano": p.duration_nano.to_string(),
                    "profileId": "0102030405060708090a0b0c0d0e0f10",
                    "samples": p.samples.iter().map(|s| {
                        let mut o = json!({"stackIndex": s.stack_index,
                            "values": s.values.iter().map(|v| v.to_string()).collect::<Vec<_>>()});
                        if !s.attribute_indices.is_empty() {
                            o["attributeIndices"] = json!(s.attribute_indices);
                        }
                        o
                    }).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "dictionary": {
            "mappingTable": d.mapping_table.iter().map(|m| json!({
                "memoryStart": m.memory_start.to_string(),
                "filenameStrindex": m.filename_strindex})).collect::<Vec<_>>(),
            "locationTable": d.location_table.iter().map(|l| json!({
                "mappingIndex": l.mapping_index,
                "address": l.address.to_string(),
                "lines": l.lines.iter().map(|x| json!({"functionIndex": x.function_index})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "functionTable": d.function_table.iter().map(|f| json!({
                "nameStrindex": f.name_strindex, "systemNameStrindex": f.system_name_strindex})).collect::<Vec<_>>(),
            "linkTable": [{}],
            "stringTable": d.string_table,
            "attributeTable": d.attribute_table.iter().map(|a| json!({
                "keyStrindex": a.key_strindex, "value": any(&a.value)})).collect::<Vec<_>>(),
            "stackTable": d.stack_table.iter().map(|s| json!({
                "locationIndices": s.location_indices})).collect::<Vec<_>>(),
        }
    })
}

/// `stacks` as a sorted map (what the collector's folded text parses into).
fn sorted(stacks: &HashMap<String, u64>) -> BTreeMap<String, u64> {
    stacks.iter().map(|(s, c)| (s.clone(), *c)).collect()
}

#[inline(never)]
fn busy_otlp_worker(until: Instant) -> u64 {
    let mut x = 0u64;
    while Instant::now() < until {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
    x
}

#[inline(never)]
fn busy_otlp_main(until: Instant) -> u64 {
    let mut x = 1u64;
    while Instant::now() < until {
        for i in 0..5_000u64 {
            x = x.rotate_left(7) ^ i;
        }
        std::hint::black_box(x);
    }
    x
}

/// A real profile: the sampler over a second of two busy threads, one of them under
/// `thread_kind=worker`. Returns the unlabeled stacks, the worker's, and the period.
fn real_profile() -> (HashMap<String, u64>, HashMap<String, u64>, u64) {
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .start()
        .expect("the sampler starts");
    // The first samples come once the aggregator has loaded the unwind tables and armed
    // the threads' timers (a few hundred ms in a debug build, longer on a loaded
    // machine); the workload's 1.2 s start after that.
    let ready = Instant::now() + Duration::from_secs(60);
    while profiler.stats().samples == 0 {
        assert!(Instant::now() < ready, "no sample within 60 s");
        std::hint::black_box((0..10_000u64).sum::<u64>());
    }
    let capture = profiler.start_capture();
    let until = Instant::now() + Duration::from_millis(1200);
    let worker = std::thread::spawn(move || {
        let _g = stackwatch::label("thread_kind", "worker");
        busy_otlp_worker(until)
    });
    busy_otlp_main(until);
    worker.join().unwrap();
    let split = capture.finish_labeled(&Default::default());
    let period = split.unlabeled.period_ns;
    profiler.stop();
    let mut worker = HashMap::new();
    for (labels, stacks) in &split.labeled {
        assert_eq!(
            labels.get("thread_kind").map(String::as_str),
            Some("worker")
        );
        for (s, c) in stacks {
            *worker.entry(s.clone()).or_insert(0) += c;
        }
    }
    (split.unlabeled.stacks, worker, period)
}

#[test]
fn a_real_profile_round_trips_as_protobuf_and_json() {
    let (unlabeled, worker, period) = real_profile();
    assert!(
        worker.keys().any(|s| s.contains("busy_otlp_worker")),
        "the worker's samples: {worker:?}"
    );
    assert!(unlabeled.keys().any(|s| s.contains("busy_otlp_main")));
    let h = otlp_collector(|_| {});
    for (service, inline, json) in [
        ("otlp-real", false, false),
        ("otlp-inlined", true, false),
        ("otlp-json", false, true),
    ] {
        let mut b = Builder::new();
        let groups = vec![
            (vec![], &unlabeled),
            (
                vec![("thread.kind".to_string(), "worker".to_string())],
                &worker,
            ),
        ];
        let p = b.cpu_profile(period, &groups, inline);
        let req = b.request(vec![(
            vec![
                attr("service.name", service),
                attr("host.name", "test-host"),
                KeyValue {
                    key: "process.pid".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(4242)),
                    }),
                    key_strindex: 0,
                },
            ],
            vec![p],
        )]);
        if json {
            let body = serde_json::to_vec(&to_json(&req)).unwrap();
            let (status, ctype, answer) = h.post_raw(
                &[
                    ("content-type", "application/json"),
                    ("authorization", &format!("Bearer {TOKEN}")),
                ],
                &body,
            );
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            assert!(ctype.starts_with("application/json"), "{ctype}");
            assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap(), json!({}));
        } else {
            let answer = h.post_ok(&req);
            assert_eq!(answer.partial_success, None);
        }
        let sel = format!("{{service=\"{service}\"}}");
        let mut all = sorted(&unlabeled);
        for (s, c) in &worker {
            *all.entry(s.clone()).or_insert(0) += c;
        }
        let got = h.folded(&sel, None);
        assert_eq!(got, all, "{service}: the same stacks, the same totals");
        // Resource attributes are target labels (and the token's tenant one).
        let got = h.folded(
            &format!("{{service=\"{service}\",host_name=\"test-host\",process_pid=\"4242\",tenant=\"team-a\"}}"),
            None,
        );
        assert_eq!(total(&got), total(&all));
        // The sample attribute is a sample label.
        let w = h.folded(
            &format!("{{service=\"{service}\",thread_kind=\"worker\"}}"),
            None,
        );
        assert_eq!(w, sorted(&worker), "{service}: the worker's samples alone");
        let rest = h.folded(
            &format!("{{service=\"{service}\",thread_kind!=\"worker\"}}"),
            None,
        );
        assert_eq!(rest, sorted(&unlabeled));
    }
    // The source is on the Fleet page as an OTLP one.
    let (status, body) = h.get("/api/push-sources", &[]);
    assert_eq!(status, 200, "{body}");
    let sources: Value = serde_json::from_str(&body).unwrap();
    let real = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "otlp-real")
        .unwrap_or_else(|| panic!("{sources}"));
    assert_eq!(real["tenant"], "team-a");
    assert_eq!(real["series"][0]["protocol"], "otlp");
}

#[test]
fn other_types_are_their_own_series_and_retries_are_stored_once() {
    let h = otlp_collector(|_| {});
    let mut b = Builder::new();
    let cpu: HashMap<String, u64> = [("main;compute".to_string(), 5)].into();
    let cpu_profile = b.cpu_profile(10_000_000, &[(vec![], &cpu)], false);
    let heap = Profile {
        sample_type: Some(b.value_type("alloc_space", "bytes")),
        period_type: Some(b.value_type("space", "bytes")),
        period: 524_288,
        time_unix_nano: now_ns() - 2_000_000_000,
        duration_nano: 10_000_000_000,
        samples: vec![
            Sample {
                stack_index: b.stack("main;alloc;Vec::with_capacity", false),
                values: vec![1_048_576],
                ..Default::default()
            },
            Sample {
                stack_index: b.stack("main;parse", false),
                values: vec![4096, 4096],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    // Off-CPU time, a type stackwatch does not store: refused alone.
    let off_cpu = Profile {
        sample_type: Some(b.value_type("events", "nanoseconds")),
        samples: vec![Sample {
            stack_index: b.stack("main;sleep", false),
            values: vec![1],
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = b.request(vec![(
        vec![attr("service.name", "otlp-heap")],
        vec![cpu_profile, heap, off_cpu],
    )]);
    let answer = h.post_ok(&req);
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_profiles, 1);
    assert!(
        partial.error_message.contains("\"events\"/\"nanoseconds\""),
        "{}",
        partial.error_message
    );
    let heap_expected: BTreeMap<String, u64> = [
        ("main;alloc;Vec::with_capacity".to_string(), 1_048_576),
        ("main;parse".to_string(), 8192),
    ]
    .into();
    assert_eq!(
        h.folded("{service=\"otlp-heap\"}", Some("alloc_space")),
        heap_expected
    );
    assert_eq!(h.folded("{service=\"otlp-heap\"}", None), sorted(&cpu));
    assert_eq!(
        h.folded("{service=\"otlp-heap\"}", Some("cpu")),
        sorted(&cpu)
    );
    // The same request again (an exporter's retry): acknowledged, stored once.
    let again = h.post_ok(&req);
    assert_eq!(again.partial_success.map(|p| p.rejected_profiles), Some(1));
    assert_eq!(
        h.folded("{service=\"otlp-heap\"}", Some("alloc_space")),
        heap_expected
    );
    assert_eq!(h.folded("{service=\"otlp-heap\"}", None), sorted(&cpu));
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
    assert!(
        metrics.contains(r#"stackwatch_push_requests_total{protocol="otlp",outcome="accepted"} 2"#)
    );
}

#[test]
fn partial_success_stores_the_good_profile() {
    let h = otlp_collector(|_| {});
    let mut b = Builder::new();
    let good: HashMap<String, u64> = [("main;good".to_string(), 4)].into();
    let good_profile = b.cpu_profile(10_000_000, &[(vec![], &good)], false);
    let mut broken = b.cpu_profile(10_000_000, &[(vec![], &good)], false);
    broken.samples[0].stack_index = 9_999;
    let req = b.request(vec![
        (vec![attr("service.name", "otlp-good")], vec![good_profile]),
        (vec![attr("service.name", "otlp-broken")], vec![broken]),
        // A resource without service.name: its profiles are refused too.
        (vec![attr("host.name", "h")], vec![]),
    ]);
    let answer = h.post_ok(&req);
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_profiles, 1, "{}", partial.error_message);
    assert!(
        partial
            .error_message
            .contains("stack index 9999 out of range"),
        "{}",
        partial.error_message
    );
    assert_eq!(h.folded("{service=\"otlp-good\"}", None), sorted(&good));
    assert!(h.folded("{service=\"otlp-broken\"}", None).is_empty());
    // The refused profile is counted though its request was accepted.
    let (_, metrics) = h.get("/metrics", &[]);
    assert!(
        metrics.contains("\nstackwatch_push_profiles_refused_total 1\n"),
        "{metrics}"
    );
    // The same in OTLP/JSON: the answer in JSON, int64 as a string.
    let mut b = Builder::new();
    let good_profile = b.cpu_profile(10_000_000, &[(vec![], &good)], false);
    let req = b.request(vec![
        (
            vec![attr("service.name", "otlp-good-json")],
            vec![good_profile],
        ),
        (
            vec![attr("host.name", "no-service")],
            vec![Profile::default()],
        ),
    ]);
    let (status, _, body) = h.post_raw(
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("authorization", &format!("Bearer {TOKEN}")),
        ],
        &serde_json::to_vec(&to_json(&req)).unwrap(),
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedProfiles"], "1", "{v}");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("service.name"));
    assert_eq!(
        h.folded("{service=\"otlp-good-json\"}", None),
        sorted(&good)
    );
}

/// Status and the `google.rpc.Status` message of a refusal.
fn refusal(h: &Collector, req: &ExportProfilesServiceRequest) -> (u16, String) {
    let (status, body) = h.post_otlp(req);
    assert!(
        (400..500).contains(&status),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    (status, rpc_message(&body))
}

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn rpc_message(body: &[u8]) -> String {
    RpcStatus::decode(body)
        .map(|s| s.message)
        .unwrap_or_else(|e| panic!("not a google.rpc.Status ({e}): {body:?}"))
}

#[test]
fn hostile_requests_are_refused_clearly_and_touch_nothing_else() {
    let h = otlp_collector(|_| {});
    let bystander = simple("otlp-bystander", &[("main;steady", 9)]);
    h.post_ok(&bystander);
    let before = h.folded("{service=\"otlp-bystander\"}", None);
    assert_eq!(total(&before), 9);
    let auth = format!("Bearer {TOKEN}");
    let proto = [
        ("content-type", "application/x-protobuf"),
        ("authorization", auth.as_str()),
    ];

    // Garbage protobuf.
    let (status, ctype, body) = h.post_raw(&proto, b"\xff\xff\xff\xff not a protobuf at all");
    assert_eq!(status, 400);
    assert_eq!(ctype, "application/x-protobuf");
    assert!(rpc_message(&body).contains("bad protobuf"));
    // Garbage JSON.
    let (status, _, body) = h.post_raw(
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        b"{\"resourceProfiles\": [{\"scopeProfiles\": 3}]}",
    );
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["message"].as_str().unwrap().contains("OTLP/JSON"), "{v}");
    // No token, a wrong one, and a content type that is neither.
    let (status, _, _) = h.post_raw(
        &[("content-type", "application/x-protobuf")],
        &bystander.encode_to_vec(),
    );
    assert_eq!(status, 401);
    let (status, _, _) = h.post_raw(
        &[
            ("content-type", "application/x-protobuf"),
            ("authorization", "Bearer nope"),
        ],
        &bystander.encode_to_vec(),
    );
    assert_eq!(status, 401);
    let (status, _, _) = h.post_raw(
        &[("content-type", "text/plain"), ("authorization", &auth)],
        &bystander.encode_to_vec(),
    );
    assert_eq!(status, 415);

    // Absurd, negative and dangling indices.
    for stack_index in [i32::MAX, -1, i32::MIN] {
        let mut req = simple("otlp-hostile", &[("main;a", 1)]);
        req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = stack_index;
        let (status, why) = refusal(&h, &req);
        assert_eq!(status, 400);
        assert!(
            why.contains(&format!("stack index {stack_index} out of range")),
            "{why}"
        );
    }
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.dictionary.as_mut().unwrap().stack_table[1]
        .location_indices
        .push(1_000_000);
    assert!(refusal(&h, &req)
        .1
        .contains("location index 1000000 out of range"));
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.dictionary.as_mut().unwrap().function_table[1].name_strindex = 77_777;
    assert!(refusal(&h, &req)
        .1
        .contains("string index 77777 out of range"));
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.dictionary.as_mut().unwrap().location_table[1].lines[0].function_index = -5;
    assert!(refusal(&h, &req)
        .1
        .contains("function index -5 out of range"));
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].attribute_indices = vec![123];
    assert!(refusal(&h, &req)
        .1
        .contains("attribute index 123 out of range"));
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.resource_profiles[0].scope_profiles[0].profiles[0].sample_type = Some(ValueType {
        type_strindex: 1 << 30,
        unit_strindex: 0,
    });
    assert!(refusal(&h, &req)
        .1
        .contains("string index 1073741824 out of range"));
    // A dictionary missing altogether.
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.dictionary = None;
    assert!(refusal(&h, &req).1.contains("out of range"));

    // Counts that overflow an i64 sum, and negative ones.
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].values =
        vec![i64::MAX, i64::MAX];
    assert!(refusal(&h, &req).1.contains("overflow"));
    let mut req = simple("otlp-hostile", &[("main;a", 1), ("main;b", 1)]);
    for s in &mut req.resource_profiles[0].scope_profiles[0].profiles[0].samples {
        s.values = vec![i64::MAX];
    }
    assert!(refusal(&h, &req).1.contains("max_samples"));
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].values = vec![-3];
    assert!(refusal(&h, &req).1.contains("negative"));

    // A stack of a million location indices: cut at the depth budget (root side kept),
    // in bounded time.
    let mut req = simple("otlp-deep", &[("main;a", 1)]);
    req.dictionary.as_mut().unwrap().stack_table[1].location_indices = vec![1; 1_000_000];
    let t = Instant::now();
    h.post_ok(&req);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let deep = h.folded("{service=\"otlp-deep\"}", None);
    let (stack, count) = deep.iter().next().unwrap();
    assert_eq!(*count, 1);
    assert_eq!(stack.split(';').count(), 513, "512 frames and [truncated]");
    assert!(stack.ends_with(";[truncated]"));

    // Attribute values of 10 KB: cut to the label budget, on target labels refused.
    let huge = "v".repeat(10_000);
    let mut b = Builder::new();
    let stacks: HashMap<String, u64> = [("main;big".to_string(), 2)].into();
    let p = b.cpu_profile(
        10_000_000,
        &[(vec![("big".to_string(), huge.clone())], &stacks)],
        false,
    );
    let req = b.request(vec![(vec![attr("service.name", "otlp-big-attr")], vec![p])]);
    h.post_ok(&req);
    let (status, body) = h.get("/api/label/big/values", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&"v".repeat(256)) && !body.contains(&"v".repeat(257)),
        "{}",
        body.len()
    );
    let mut req = simple("otlp-hostile", &[("main;a", 1)]);
    req.resource_profiles[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(attr("process.command_line", &huge));
    let (status, why) = refusal(&h, &req);
    assert_eq!(status, 400);
    assert!(why.contains("process_command_line"), "{why}");

    // 100 000 distinct attribute sets: folded to the label budget, totals exact.
    let mut b = Builder::new();
    let stack = b.stack("main;tenant_work", false);
    let samples: Vec<Sample> = (0..100_000)
        .map(|i| Sample {
            stack_index: stack,
            attribute_indices: vec![b.attribute("request_id", &format!("r{i}"))],
            values: vec![1],
            ..Default::default()
        })
        .collect();
    let p = Profile {
        sample_type: Some(b.value_type("samples", "count")),
        period_type: Some(b.value_type("cpu", "nanoseconds")),
        period: 10_000_000,
        time_unix_nano: now_ns() - 2_000_000_000,
        samples,
        ..Default::default()
    };
    let req = b.request(vec![(vec![attr("service.name", "otlp-sets")], vec![p])]);
    let t = Instant::now();
    h.post_ok(&req);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let sets = h.folded("{service=\"otlp-sets\"}", None);
    assert_eq!(total(&sets), 100_000);
    // Past the stack budget (50 000 distinct rows) the rarest rows fold into the
    // unlabeled [pruned] stack; of the labeled rest, the sets past the label budget
    // (256) into the [labels pruned] set.
    let unlabeled = h.folded("{service=\"otlp-sets\",request_id=\"\"}", None);
    assert_eq!(unlabeled.keys().collect::<Vec<_>>(), ["[pruned]"]);
    let pruned = h.folded(
        "{service=\"otlp-sets\",request_id=\"[labels pruned]\"}",
        None,
    );
    assert!(
        total(&unlabeled) + total(&pruned) >= 100_000 - 256,
        "{} {}",
        total(&unlabeled),
        total(&pruned)
    );
    let (_, values) = h.get("/api/label/request_id/values", &[]);
    let values: Vec<String> = serde_json::from_str(&values).unwrap();
    assert!(values.len() <= 257, "{}", values.len());

    // A gzip bomb: 200 MiB of zeros in a small body.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let (status, _, body) = h.post_raw(
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
            ("authorization", &auth),
        ],
        &bomb,
    );
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(rpc_message(&body).contains("max_decompressed_bytes"));
    // A body over push.max_body_bytes as sent.
    let (status, _, _) = h.post_raw(&proto, &vec![0u8; (8 << 20) + 1]);
    assert_eq!(status, 413);
    // A gzipped request is read like a plain one.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&simple("otlp-gzip", &[("main;z", 3)]).encode_to_vec())
        .unwrap();
    let (status, _, _) = h.post_raw(
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
            ("authorization", &auth),
        ],
        &gz.finish().unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(total(&h.folded("{service=\"otlp-gzip\"}", None)), 3);

    // Still up, the bystander untouched, nothing of the refused requests stored.
    assert_eq!(h.folded("{service=\"otlp-bystander\"}", None), before);
    assert!(h.folded("{service=\"otlp-hostile\"}", None).is_empty());
    let (_, metrics) = h.get("/metrics", &[]);
    assert!(
        metrics.contains(r#"stackwatch_push_requests_total{protocol="otlp",outcome="rejected"}"#)
    );
}

#[test]
fn a_source_over_its_rate_is_told_to_wait() {
    let h = otlp_collector(|cfg| cfg.push.max_requests_per_second = 1);
    let mut statuses = Vec::new();
    for i in 0..4 {
        let req = simple("otlp-rate", &[(&format!("main;f{i}"), 1)]);
        let (status, _, _) = h.post_raw(
            &[
                ("content-type", "application/x-protobuf"),
                ("authorization", &format!("Bearer {TOKEN}")),
            ],
            &req.encode_to_vec(),
        );
        statuses.push(status);
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}

/// Issue #24, item 1: a request is admitted whole or not at all. A push of `svc-a`
/// (100 periods) beside a rate-limited `svc-b` is `429`; its identical retry, once
/// `svc-b` may push again, stores `svc-a` too (it used to be acknowledged as a repeat of
/// the refused request and never stored). Over OTLP/JSON.
#[test]
fn a_request_refused_for_one_source_is_stored_whole_when_retried() {
    let h = otlp_collector(|cfg| cfg.push.max_requests_per_second = 1);
    // svc-b spends its burst (two requests at 1/s).
    for i in 0..2 {
        h.post_ok(&simple("otlp-svc-b", &[(&format!("main;warm{i}"), 1)]));
    }
    let a_stacks: HashMap<String, u64> = [
        ("main;a;work".to_string(), 60),
        ("main;a;idle".to_string(), 40),
    ]
    .into();
    let b_stacks: HashMap<String, u64> = [("main;b".to_string(), 3)].into();
    let mut b = Builder::new();
    let pa = b.cpu_profile(10_000_000, &[(vec![], &a_stacks)], false);
    let pb = b.cpu_profile(10_000_000, &[(vec![], &b_stacks)], false);
    let req = b.request(vec![
        (vec![attr("service.name", "otlp-svc-a")], vec![pa]),
        (vec![attr("service.name", "otlp-svc-b")], vec![pb]),
    ]);
    let body = serde_json::to_vec(&to_json(&req)).unwrap();
    let post = || {
        let (status, _, body) = h.post_raw(
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {TOKEN}")),
            ],
            &body,
        );
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, reason) = post();
    assert_eq!(status, 429, "{reason}");
    // Nothing of the refused request was recorded: svc-a is not a source.
    let sources = h.json("/api/push-sources", &[]);
    assert!(
        !sources.to_string().contains("otlp-svc-a"),
        "a refused request left its source behind: {sources}"
    );
    // The identical retry, once svc-b's rate allows it, stores both services.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, reason) = post();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{reason}");
        assert!(Instant::now() < deadline, "still refused: {reason}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let a = h.folded("{service=\"otlp-svc-a\"}", None);
    assert_eq!(a, sorted(&a_stacks));
    assert_eq!(total(&a), 100);
    assert_eq!(
        h.folded("{service=\"otlp-svc-b\"}", None).get("main;b"),
        Some(&3)
    );
    let sources = h.json("/api/push-sources", &[]);
    let a = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "otlp-svc-a")
        .unwrap_or_else(|| panic!("otlp-svc-a not listed: {sources}"));
    assert_eq!(a["series"][0]["pushes"], 1, "{a}");
    assert_eq!(a["series"][0]["duplicates"], 0, "{a}");
}

/// Issue #24, item 6: a request past `push.max_series_per_source` (1 001 new series of
/// one source) is `400` and keeps no series slot: the next legitimate series of that
/// source is accepted (it used to find 1 000 slots taken by the refused request).
#[test]
fn a_request_past_the_series_cap_takes_no_slots() {
    let h = otlp_collector(|_| {});
    let stacks: HashMap<String, u64> = [("main;shard".to_string(), 1)].into();
    let mut b = Builder::new();
    let resources = (0..1001)
        .map(|i| {
            let p = b.cpu_profile(10_000_000, &[(vec![], &stacks)], false);
            (
                vec![
                    attr("service.name", "otlp-wide"),
                    attr("shard", &i.to_string()),
                ],
                vec![p],
            )
        })
        .collect();
    let (status, message) = refusal(&h, &b.request(resources));
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("max_series_per_source"), "{message}");
    assert!(h.folded("{service=\"otlp-wide\"}", None).is_empty());
    h.post_ok(&simple("otlp-wide", &[("main;legit", 7)]));
    assert_eq!(
        h.folded("{service=\"otlp-wide\"}", None),
        [("main;legit".to_string(), 7)].into()
    );
    let (_, metrics) = h.get("/metrics", &[]);
    assert!(
        metrics.contains("\nstackwatch_push_series_refused_total 1\n"),
        "{metrics}"
    );
}

/// Issue #24, item 1: a retry that arrives while its original is still being written
/// (the store busy: SQLite locked past its busy timeout) waits for the original's
/// outcome instead of being acknowledged as a repeat; whatever the outcomes, a client
/// that retries what is not acknowledged (`503`, `429`) gets the push stored exactly
/// once. It used to be acknowledged at once while the original then failed with `400`
/// ("database is locked"), which a client does not retry: nothing stored.
#[test]
fn a_retry_during_its_original_write_waits_and_the_push_is_stored_once() {
    let h = otlp_collector(|_| {});
    let stacks: HashMap<String, u64> = [
        ("main;locked;a".to_string(), 70),
        ("main;locked;b".to_string(), 30),
    ]
    .into();
    let mut b = Builder::new();
    let p = b.cpu_profile(10_000_000, &[(vec![], &stacks)], false);
    let req = b.request(vec![(vec![attr("service.name", "otlp-locked")], vec![p])]);
    // The collector is up, its writer running (it opens the store when it starts).
    h.post_ok(&simple("otlp-locked-warm-up", &[("main", 1)]));
    // Another connection holds SQLite's write lock for longer than the store's busy
    // timeout (5 s).
    let db = stackwatch_server::db_path(h.data_dir());
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(db).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(6_500));
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    // Pushes until acknowledged, as an exporter does; returns every status.
    let push_until_acknowledged = |h: &Collector| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut statuses = Vec::new();
        loop {
            let (status, body) = h.post_otlp(&req);
            statuses.push(status);
            if status == 200 {
                return statuses;
            }
            assert!(
                status == 503 || status == 429,
                "{statuses:?}: {}",
                rpc_message(&body)
            );
            assert!(Instant::now() < deadline, "{statuses:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let (original, retry) = std::thread::scope(|s| {
        let original = s.spawn(|| push_until_acknowledged(&h));
        // The retry arrives while the original is in the writer (it flushes every 50 ms
        // and then waits for the lock).
        std::thread::sleep(Duration::from_millis(500));
        let retry = s.spawn(|| push_until_acknowledged(&h));
        (original.join().unwrap(), retry.join().unwrap())
    });
    holder.join().unwrap();
    // Acknowledged means stored, or kept in the writer's backlog while the store was
    // locked: it is stored once the lock is gone (the backlog is retried every flush).
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored = h.folded("{service=\"otlp-locked\"}", None);
        if !stored.is_empty() || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        stored,
        sorted(&stacks),
        "original {original:?}, retry {retry:?}"
    );
    // And stays stored once: the backlog holds nothing more of it.
    let (_, metrics) = h.get("/metrics", &[]);
    assert!(
        metrics.contains("\nstackwatch_store_backlog_rows 0\n"),
        "{metrics}"
    );
    assert_eq!(h.folded("{service=\"otlp-locked\"}", None), sorted(&stacks));
    let (_, metrics) = h.get("/metrics", &[]);
    let waited: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stackwatch_push_retries_waited_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(waited >= 1, "original {original:?}, retry {retry:?}");
}

const TOKEN_B: &str = "otlp-s3cret-b";

/// A collector with push on for two tenants, `team-a` ([`TOKEN`]) and `team-b`
/// ([`TOKEN_B`]).
fn two_tenant_collector(tune: impl FnOnce(&mut Config)) -> Collector {
    Collector::with_push(&[(TOKEN, "team-a"), (TOKEN_B, "team-b")], tune)
}

impl Collector {
    /// POSTs a request as protobuf with `token`; returns the status and, for a refusal,
    /// its message.
    fn post_as(&self, token: &str, req: &ExportProfilesServiceRequest) -> (u16, String) {
        let (status, _, body) = self.post_raw(
            &[
                ("content-type", "application/x-protobuf"),
                ("authorization", &format!("Bearer {token}")),
            ],
            &req.encode_to_vec(),
        );
        let message = if status == 200 {
            String::new()
        } else {
            rpc_message(&body)
        };
        (status, message)
    }
}

/// A request of one CPU profile of `stacks` per service of `services`, each with the
/// target labels `extra`.
fn services(
    services: &[String],
    extra: &[(&str, &str)],
    stacks: &[(&str, u64)],
) -> ExportProfilesServiceRequest {
    let stacks: HashMap<String, u64> = stacks.iter().map(|(s, c)| (s.to_string(), *c)).collect();
    let mut b = Builder::new();
    let resources = services
        .iter()
        .map(|s| {
            let p = b.cpu_profile(10_000_000, &[(vec![], &stacks)], false);
            let mut attrs = vec![attr("service.name", s)];
            attrs.extend(extra.iter().map(|(k, v)| attr(k, v)));
            (attrs, vec![p])
        })
        .collect();
    b.request(resources)
}

/// The value of an unlabeled (or exactly labeled) sample in `/metrics`.
fn metric(h: &Collector, sample: &str) -> u64 {
    let (_, metrics) = h.get("/metrics", &[]);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in {metrics}"))
}

/// Issue #24, item 5: sources are limited per tenant (`push.max_sources_per_tenant`,
/// 1 000 by default) under the global `push.max_sources`. One request of team-a with
/// 2 500 new services is refused whole (it used to take 2 500 of the global sources,
/// and with more, lock every tenant out); team-a then fills its own 1 000 and is
/// refused past them, while team-b still pushes.
#[test]
fn one_tenant_cannot_lock_the_others_out_of_sources() {
    let h = two_tenant_collector(|cfg| cfg.push.max_sources = 3_000);
    let names = |from: usize, n: usize| -> Vec<String> {
        (from..from + n).map(|i| format!("many-{i}")).collect()
    };
    let (status, message) = h.post_as(TOKEN, &services(&names(0, 2_500), &[], &[("main", 1)]));
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("push.max_sources_per_tenant"), "{message}");
    assert_eq!(
        h.json("/api/push-sources", &[]),
        json!([]),
        "a refused request recorded sources"
    );
    for chunk in 0..4 {
        let (status, message) = h.post_as(
            TOKEN,
            &services(&names(chunk * 250, 250), &[], &[("main", 1)]),
        );
        assert_eq!(status, 200, "chunk {chunk}: {message}");
    }
    let (status, message) = h.post_as(TOKEN, &services(&names(1_000, 250), &[], &[("main", 1)]));
    assert_eq!(status, 429, "{message}");
    let (status, message) = h.post_as(TOKEN, &services(&names(1_000, 1), &[], &[("main", 1)]));
    assert_eq!(status, 429, "{message}");
    // team-a's known services still push.
    let (status, message) = h.post_as(TOKEN, &services(&names(0, 1), &[], &[("main;again", 1)]));
    assert_eq!(status, 200, "{message}");
    // team-b is not locked out.
    let (status, message) = h.post_as(TOKEN_B, &services(&["b-new".into()], &[], &[("main;b", 4)]));
    assert_eq!(status, 200, "{message}");
    assert_eq!(
        h.folded("{service=\"b-new\",tenant=\"team-b\"}", None),
        [("main;b".to_string(), 4)].into()
    );
    let sources = h.json("/api/push-sources", &[("limit", "5000")]);
    let team_a = sources
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["tenant"] == "team-a")
        .count();
    assert_eq!(team_a, 1_000);
    assert_eq!(
        metric(
            &h,
            "stackwatch_push_limit_refused_total{limit=\"max_sources_per_tenant\"}"
        ),
        3
    );
}

/// Issue #24, item 5: series (`push.max_series_per_tenant`) and bytes per second
/// (`push.max_bytes_per_second_per_tenant`) are limited per tenant; past them team-a
/// is refused and team-b is not.
#[test]
fn a_tenant_past_its_series_or_bytes_is_refused_and_another_is_not() {
    let h = two_tenant_collector(|cfg| cfg.push.max_series_per_tenant = 5);
    for (service, shards) in [("series-x", 3), ("series-y", 2)] {
        for shard in 0..shards {
            let req = services(
                &[service.into()],
                &[("shard", &shard.to_string())],
                &[("main", 1)],
            );
            let (status, message) = h.post_as(TOKEN, &req);
            assert_eq!(status, 200, "{message}");
        }
    }
    let sixth = services(&["series-y".into()], &[("shard", "9")], &[("main", 1)]);
    let (status, message) = h.post_as(TOKEN, &sixth);
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("push.max_series_per_tenant"), "{message}");
    // Its known series still take pushes; team-b its own series.
    let again = services(&["series-x".into()], &[("shard", "0")], &[("main;more", 2)]);
    assert_eq!(h.post_as(TOKEN, &again).0, 200);
    let (status, message) = h.post_as(TOKEN_B, &sixth);
    assert_eq!(status, 200, "{message}");
    assert_eq!(
        metric(
            &h,
            "stackwatch_push_limit_refused_total{limit=\"max_series_per_tenant\"}"
        ),
        1
    );
    drop(h);

    // 1 000 bytes a second, a burst of 2 000: one push of ~10 000 bytes of stack text
    // is admitted (the tenant was within its budget) and charged; the next waits.
    let h = two_tenant_collector(|cfg| cfg.push.max_bytes_per_second_per_tenant = 1_000);
    let frame = "f".repeat(1_000);
    let big: String = [frame.as_str(); 10].join(";");
    let (status, message) = h.post_as(TOKEN, &services(&["bytes-a".into()], &[], &[(&big, 1)]));
    assert_eq!(status, 200, "{message}");
    let (status, message) = h.post_as(
        TOKEN,
        &services(&["bytes-a".into()], &[], &[("main;small", 1)]),
    );
    assert_eq!(status, 429, "{message}");
    assert!(
        message.contains("push.max_bytes_per_second_per_tenant"),
        "{message}"
    );
    let (status, message) = h.post_as(
        TOKEN_B,
        &services(&["bytes-b".into()], &[], &[("main;small", 1)]),
    );
    assert_eq!(status, 200, "{message}");
    assert_eq!(
        metric(
            &h,
            "stackwatch_push_limit_refused_total{limit=\"max_bytes_per_second_per_tenant\"}"
        ),
        1
    );
    assert_eq!(total(&h.folded("{service=\"bytes-a\"}", None)), 1);
}

/// Issue #24, item 7: target labels are budgeted per series
/// (`push.max_label_bytes_per_series`) and per tenant (`push.max_label_bytes_per_tenant`):
/// past either, the request is `400` and records nothing; another tenant still pushes.
#[test]
fn label_bytes_are_budgeted_per_series_and_per_tenant() {
    let h = two_tenant_collector(|cfg| {
        cfg.push.max_label_bytes_per_series = 600;
        cfg.push.max_label_bytes_per_tenant = 1_000;
    });
    // Three tags of 200 bytes: past 600 bytes, though each value is within the
    // 256 bytes a tag may have.
    let long = "v".repeat(200);
    let req = services(
        &["wide".into()],
        &[("a", &long), ("b", &long), ("c", &long)],
        &[("main", 1)],
    );
    let (status, message) = h.post_as(TOKEN, &req);
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("push.max_label_bytes_per_series"),
        "{message}"
    );
    // service (7 + 4), tenant (6 + 6), tag (3 + 250): 276 bytes a series; three fit in
    // 1 000, a fourth does not.
    let value = |i: usize| format!("{i}{}", "x".repeat(249));
    for i in 0..3 {
        let (status, message) = h.post_as(
            TOKEN,
            &services(&["wide".into()], &[("tag", &value(i))], &[("main", 1)]),
        );
        assert_eq!(status, 200, "{message}");
    }
    let (status, message) = h.post_as(
        TOKEN,
        &services(&["wide".into()], &[("tag", &value(3))], &[("main", 1)]),
    );
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("push.max_label_bytes_per_tenant"),
        "{message}"
    );
    let (status, message) = h.post_as(
        TOKEN_B,
        &services(&["wide".into()], &[("tag", &value(3))], &[("main", 1)]),
    );
    assert_eq!(status, 200, "{message}");
    for (limit, n) in [
        ("max_label_bytes_per_series", 1),
        ("max_label_bytes_per_tenant", 1),
    ] {
        assert_eq!(
            metric(
                &h,
                &format!("stackwatch_push_limit_refused_total{{limit=\"{limit}\"}}")
            ),
            n
        );
    }
}

/// Issue #24, item 7: `/api/push-sources` is paged by series (`limit`, default 500,
/// at most 5 000; `cursor` from the `X-Next-Cursor` header): following the cursors lists
/// every series once, in order; a bad `limit` or `cursor` is `400`.
#[test]
fn push_sources_are_paged() {
    let h = otlp_collector(|_| {});
    let names: Vec<String> = (0..3).map(|i| format!("paged-{i}")).collect();
    for shard in 0..4 {
        let req = services(&names, &[("shard", &shard.to_string())], &[("main", 1)]);
        h.post_ok(&req);
    }
    let page = |params: &[(&str, &str)]| {
        let r = h
            .agent
            .get(&h.url("/api/push-sources", params))
            .call()
            .unwrap();
        let next = r
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, _, body) = read_answer(r);
        (status, next, body)
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("limit", "5")];
        if let Some(c) = &cursor {
            params.push(("cursor", c.as_str()));
        }
        let (status, next, body) = page(&params);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let sources: Value = serde_json::from_slice(&body).unwrap();
        let mut n = 0;
        for s in sources.as_array().unwrap() {
            for x in s["series"].as_array().unwrap() {
                seen.push(format!(
                    "{}/{}",
                    x["labels"]["service"], x["labels"]["shard"]
                ));
                n += 1;
            }
        }
        assert!((1..=5).contains(&n), "{n} series in a page of 5");
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut want: Vec<String> = names
        .iter()
        .flat_map(|s| (0..4).map(move |i| format!("\"{s}\"/\"{i}\"")))
        .collect();
    want.sort();
    assert_eq!(seen, want);
    // The default page holds them all, without a cursor.
    let (_, next, _) = page(&[]);
    assert_eq!(next, None);
    for bad in [
        &[("limit", "0")][..],
        &[("limit", "5001")],
        &[("cursor", "nope")],
    ] {
        let (status, _, body) = page(bad);
        assert_eq!(status, 400, "{bad:?}: {}", String::from_utf8_lossy(&body));
    }
}

/// A client that sends its headers and 2 of 100 body bytes, then nothing, is answered
/// `408` within `push.body_timeout` and its connection closed; it held a connection (and
/// the collector's graceful shutdown) for as long as it liked before. Pushes from others
/// go on meanwhile.
#[test]
fn a_stalled_body_is_answered_408_within_the_body_timeout() {
    use std::io::{Read, Write};
    let h = otlp_collector(|c| c.push.body_timeout = Duration::from_secs(2));
    let addr = h.api.trim_start_matches("http://").to_string();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\nab"
    )
    .unwrap();
    stalled.flush().unwrap();
    // Meanwhile another push is stored.
    h.post_ok(&simple("otlp-beside-a-stall", &[("main;ok", 3)]));
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("push.body_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the connection was closed after the answer"
    );
    assert_eq!(
        h.folded("{service=\"otlp-beside-a-stall\"}", None),
        [("main;ok".to_string(), 3)].into()
    );
    let (_, metrics) = h.get("/metrics", &[]);
    assert!(
        metrics.contains("\nstackwatch_push_body_timeouts_total 1\n"),
        "{metrics}"
    );
}
