//! Push cardinality benchmark (issue 24, item 7): what 100 000 pushed series cost a
//! real `stackwatch server` process storing into SQLite.
//!
//! One tenant pushes 1 000 services × 100 series (every series its own `host`, `pod`,
//! `region` and `version` target labels, about 190 bytes of labels with `tenant` and
//! `service`), each series one CPU profile of 5 stacks drawn from 50, as OTLP protobuf,
//! one request per service (100 resources), four requests at a time. The collector's
//! limits are raised to let them in (`max_sources_per_tenant`, `max_series_per_tenant`,
//! `max_label_bytes_per_tenant`). Then it reports the collector's resident memory
//! (before, after, peak), the SQLite file (with its WAL), the time of
//! `/api/push-sources` (the default page of 500 series, the largest of 5 000, and every
//! page one after the other), and of a query (`/api/profile.folded` of one service and
//! of the whole tenant over the last hour): medians of five.
//!
//! `cargo bench -p stackwatch-cli --bench push_cardinality`
//! (`STACKWATCH_CARDINALITY_SERVICES` and `STACKWATCH_CARDINALITY_SERIES` change the
//! 1 000 services and the 100 series each.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Location, Mapping, Profile, ProfilesDictionary,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

mod common;

use common::{median, spawn_server};

const TOKEN: &str = "cardinality-bench-token";

fn attr(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        key_strindex: 0,
    }
}

/// The 50 stacks series draw from, root first, 12 frames deep.
fn stack_pool() -> Vec<Vec<String>> {
    (0..50)
        .map(|s| {
            (0..12)
                .map(|d| format!("bench::module_{}::function_{}", d, (s * 7 + d) % 23))
                .collect()
        })
        .collect()
}

/// The request of service `svc`: `series` resources, each a CPU profile of 5 stacks.
fn request(
    svc: usize,
    series: usize,
    pool: &[Vec<String>],
    now_ns: u64,
) -> ExportProfilesServiceRequest {
    let mut d = ProfilesDictionary {
        mapping_table: vec![Mapping::default()],
        location_table: vec![Location::default()],
        function_table: vec![Function::default()],
        stack_table: vec![Stack::default()],
        attribute_table: vec![KeyValueAndUnit::default()],
        string_table: vec![String::new()],
        ..Default::default()
    };
    let mut strings: HashMap<String, i32> = HashMap::new();
    let mut string = |d: &mut ProfilesDictionary, s: &str| -> i32 {
        *strings.entry(s.to_owned()).or_insert_with(|| {
            d.string_table.push(s.to_owned());
            d.string_table.len() as i32 - 1
        })
    };
    let samples_ty = ValueType {
        type_strindex: string(&mut d, "samples"),
        unit_strindex: string(&mut d, "count"),
    };
    let period_ty = ValueType {
        type_strindex: string(&mut d, "cpu"),
        unit_strindex: string(&mut d, "nanoseconds"),
    };
    let mut locations: HashMap<String, i32> = HashMap::new();
    let mut stacks: HashMap<usize, i32> = HashMap::new();
    let mut stack_index = |d: &mut ProfilesDictionary, i: usize| -> i32 {
        if let Some(s) = stacks.get(&i) {
            return *s;
        }
        let mut indices = Vec::new();
        for f in pool[i].iter().rev() {
            let loc = match locations.get(f) {
                Some(l) => *l,
                None => {
                    let name = string(d, f);
                    d.function_table.push(Function {
                        name_strindex: name,
                        system_name_strindex: name,
                        ..Default::default()
                    });
                    d.location_table.push(Location {
                        lines: vec![Line {
                            function_index: d.function_table.len() as i32 - 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    });
                    let l = d.location_table.len() as i32 - 1;
                    locations.insert(f.clone(), l);
                    l
                }
            };
            indices.push(loc);
        }
        d.stack_table.push(Stack {
            location_indices: indices,
        });
        let s = d.stack_table.len() as i32 - 1;
        stacks.insert(i, s);
        s
    };
    let resource_profiles = (0..series)
        .map(|i| {
            let samples = (0..5)
                .map(|k| Sample {
                    stack_index: stack_index(&mut d, (svc * 13 + i * 5 + k) % pool.len()),
                    values: vec![1 + k as i64],
                    ..Default::default()
                })
                .collect();
            ResourceProfiles {
                resource: Some(Resource {
                    attributes: vec![
                        attr("service.name", &format!("cardinality-service-{svc:04}")),
                        attr(
                            "host.name",
                            &format!("host-{svc:04}-{i:03}.eu-west-1.compute.internal"),
                        ),
                        attr(
                            "k8s.pod.name",
                            &format!("cardinality-service-{svc:04}-7d9f8c6b5-{i:05}"),
                        ),
                        attr("cloud.region", "eu-west-1"),
                        attr("service.version", &format!("1.{}.{}", svc % 7, i % 3)),
                    ],
                    ..Default::default()
                }),
                scope_profiles: vec![ScopeProfiles {
                    profiles: vec![Profile {
                        sample_type: Some(samples_ty),
                        period_type: Some(period_ty),
                        period: 10_000_000,
                        time_unix_nano: now_ns - 20_000_000_000,
                        duration_nano: 10_000_000_000,
                        samples,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportProfilesServiceRequest {
        resource_profiles,
        dictionary: Some(d),
    }
}

/// A field of /proc/<pid>/status, KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Milliseconds of a GET (body read), and the answer's `X-Next-Cursor` and body length.
fn timed_get(agent: &ureq::Agent, url: &str) -> (f64, Option<String>, usize) {
    let t0 = Instant::now();
    let mut r = agent.get(url).call().unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let next = r
        .headers()
        .get("x-next-cursor")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    (t0.elapsed().as_secs_f64() * 1000.0, next, body.len())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = |k: &str, d: usize| -> usize {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let n_services = env("STACKWATCH_CARDINALITY_SERVICES", 1000);
    let per_service = env("STACKWATCH_CARDINALITY_SERIES", 100);
    let total_series = n_services * per_service;
    println!(
        "# push cardinality benchmark, {} cores, {n_services} services × {per_service} series = {total_series} series",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[storage]\nflush_interval = \"200ms\"\n[push]\nenabled = true\nmax_requests_per_second = 1000\nmax_sources = {}\nmax_sources_per_tenant = {}\nmax_series_per_tenant = {}\nmax_label_bytes_per_tenant = {}\n[[push.tokens]]\ntoken = \"{TOKEN}\"\ntenant = \"bench\"\n",
        data.display(),
        // The warm-up push is one more service.
        (n_services + 1).max(10_000),
        (n_services + 1).max(1_000),
        (total_series + 1).max(10_000),
        ((total_series + 1) * 512).max(4 << 20),
    );
    std::fs::write(dir.path().join("s.toml"), cfg).unwrap();
    let (mut server, api) = spawn_server(
        &dir.path().join("s.toml"),
        "stackwatch-push-cardinality.log",
        "STACKWATCH_BENCH_LOG",
    );
    let pid = server.id();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    // One push first: the store open and the writer running, then the baseline.
    let pool = stack_pool();
    let now_ns = stackwatch_profile::clock::unix_ms() * 1_000_000;
    let warm = request(n_services, 1, &pool, now_ns).encode_to_vec();
    let post = |body: &[u8]| {
        let r = agent
            .post(format!("{api}/v1development/profiles"))
            .header("content-type", "application/x-protobuf")
            .header("authorization", &format!("Bearer {TOKEN}"))
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(
            status,
            200,
            "{}",
            r.into_body().read_to_string().unwrap_or_default()
        );
    };
    post(&warm);
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = status_kib(pid, "VmRSS:");

    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let svc = next.fetch_add(1, Ordering::Relaxed);
                if svc >= n_services {
                    return;
                }
                post(&request(svc, per_service, &pool, now_ns).encode_to_vec());
            });
        }
    });
    let push_secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = status_kib(pid, "VmRSS:");
    let rss_peak = status_kib(pid, "VmHWM:");
    let file_bytes: u64 = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("stackwatch.db"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    println!(
        "pushed {total_series} series in {push_secs:.1} s ({:.0} series/s)",
        total_series as f64 / push_secs
    );
    println!(
        "collector RSS: {:.1} MiB before, {:.1} MiB after ({:.0} bytes per series), peak {:.1} MiB",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / total_series as f64,
        rss_peak as f64 / 1024.0
    );
    println!(
        "SQLite file with WAL: {:.1} MiB ({:.0} bytes per series)",
        file_bytes as f64 / (1 << 20) as f64,
        file_bytes as f64 / total_series as f64
    );

    let sources = format!("{api}/api/push-sources");
    let page = |limit: Option<usize>| {
        let url = match limit {
            Some(l) => format!("{sources}?limit={l}"),
            None => sources.clone(),
        };
        let runs: Vec<(f64, usize)> = (0..5)
            .map(|_| {
                let (ms, _, len) = timed_get(&agent, &url);
                (ms, len)
            })
            .collect();
        (median(runs.iter().map(|r| r.0).collect()), runs[0].1)
    };
    let (ms, len) = page(None);
    println!("/api/push-sources, default page (500 series): {ms:.1} ms, {len} bytes");
    let (ms, len) = page(Some(5_000));
    println!("/api/push-sources?limit=5000: {ms:.1} ms, {len} bytes");
    let t = Instant::now();
    let (mut pages, mut bytes, mut cursor) = (0, 0, None::<String>);
    loop {
        let url = match &cursor {
            Some(c) => format!("{sources}?limit=5000&cursor={c}"),
            None => format!("{sources}?limit=5000"),
        };
        let (_, next, len) = timed_get(&agent, &url);
        pages += 1;
        bytes += len;
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    println!(
        "/api/push-sources, every page of 5 000: {pages} pages, {:.0} ms, {:.1} MiB",
        t.elapsed().as_secs_f64() * 1000.0,
        bytes as f64 / (1 << 20) as f64
    );
    for (what, selector) in [
        ("one service", "{service=\"cardinality-service-0007\"}"),
        ("the whole tenant", "{tenant=\"bench\"}"),
    ] {
        let url = format!(
            "{api}/api/profile.folded?query={}&from=now-1h",
            percent_encoding::utf8_percent_encode(selector, percent_encoding::NON_ALPHANUMERIC)
        );
        let ms = median((0..5).map(|_| timed_get(&agent, &url).0).collect());
        println!("query of {what}, last hour: {ms:.0} ms");
    }
    // Label bytes per series as stored (names and values, tenant included).
    let first = agent
        .get(&format!("{sources}?limit=100"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let labels: Vec<usize> = first
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["series"].as_array().unwrap().iter())
        .map(|x| {
            x["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| k.len() + v.as_str().unwrap().len())
                .sum()
        })
        .collect();
    println!(
        "# {:.0} bytes of target labels per series (names and values, tenant included)",
        labels.iter().sum::<usize>() as f64 / labels.len() as f64
    );
    server.kill().ok();
    server.wait().ok();
}
