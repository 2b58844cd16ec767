//! Issue #24, item 4: memory amplification on push decode. A 64 KiB gzip body of 33.5
//! million empty `Sample`s (64 MiB inflated) took 2.6 GiB of RSS to refuse over OTLP,
//! 2.4 GiB as pprof to `/ingest`, and three at once 7.6 GiB: the decompression cap
//! bounds bytes, not what protobuf decoding builds from them.
//!
//! Each hostile body (OTLP protobuf and JSON, Connect protobuf and JSON, pprof to
//! `/ingest` and inside a Connect `raw_profile`, each gzip-bombed) must be refused
//! clearly (`413` naming `scrape.max_decoded_bytes`) while this process's peak RSS
//! (VmHWM, reset before each case, allocator trimmed) grows by at most 256 MiB; and 20
//! hostile pushers at once must keep it under 1 GiB while a scraped worker loses no
//! window (`#[ignore]`d, long: `cargo test -p stackwatch-server --test decode_bombs --
//! --ignored`).
//!
//! The cases run one at a time (one lock), so each one's peak RSS is its own.

// This test measures its own process (peak RSS): it keeps a binary of its own.
#[path = "it/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use flate2::write::GzEncoder;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use stackwatch_profile::pprof::{proto, PprofProfile};
use stackwatch_profile::protocol::{Window, WindowsResponse};
use stackwatch_server::config::{PushToken, TargetKind};

use common::{read_answer, target, Collector};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The system allocator, counting the bytes asked for and live (and their peak), so a
/// test can see what a decode really allocates.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count_alloc(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator with the caller's layout and
// pointer unchanged; the counters are atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every block is).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller's contract
        // for `realloc` is `System.realloc`'s.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            count_alloc(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, over what was live before it.
fn peak_allocated<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const TOKEN: &str = "bomb-token";
/// What a request may cost in this process's RSS, at most.
const MAX_REQUEST_MIB: u64 = 256;
/// Bytes the bombs inflate to: the default `push.max_decompressed_bytes`.
const INFLATED: usize = 64 << 20;

/// Resets this process's peak RSS (VmHWM) to its current RSS, after handing the
/// allocator's free pages back (so a case cannot reuse what an earlier one left
/// resident and look cheap).
fn reset_peak_rss() {
    // SAFETY: malloc_trim takes no pointers and only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
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

/// `prefix`, `unit` `n` times, `suffix`, gzipped without ever holding them inflated.
fn gz_repeat(prefix: &[u8], unit: &[u8], n: usize, suffix: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(prefix).unwrap();
    let per_chunk = (1 << 16) / unit.len();
    let chunk = unit.repeat(per_chunk);
    let mut left = n;
    while left > 0 {
        let k = left.min(per_chunk);
        gz.write_all(&chunk[..k * unit.len()]).unwrap();
        left -= k;
    }
    gz.write_all(suffix).unwrap();
    gz.finish().unwrap()
}

/// A length-delimited field header: key and length.
fn field(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// An empty message in field 2 (`Profile.samples`, `RawProfileSeries.samples`,
/// `pprof Profile.sample`): two bytes each.
const EMPTY_FIELD_2: [u8; 2] = [0x12, 0x00];

/// Empty samples to fill `INFLATED` bytes less `headers`.
fn samples_within(headers: usize, unit: usize) -> usize {
    (INFLATED - headers) / unit
}

/// An OTLP `ExportProfilesServiceRequest` of one profile of 33.5 million empty samples.
fn otlp_protobuf_bomb() -> Vec<u8> {
    let n = samples_within(64, 2);
    let profile_len = 2 * n;
    // ScopeProfiles.profiles, ResourceProfiles.scope_profiles, the request's
    // resource_profiles: one each around the samples.
    let mut profile = Vec::new();
    field(2, profile_len, &mut profile);
    let scope_len = profile.len() + profile_len;
    let mut scope = Vec::new();
    field(2, scope_len, &mut scope);
    let resource_len = scope.len() + scope_len;
    let mut prefix = Vec::new();
    field(1, resource_len, &mut prefix);
    prefix.extend(scope);
    prefix.extend(profile);
    assert!(prefix.len() + profile_len <= INFLATED);
    gz_repeat(&prefix, &EMPTY_FIELD_2, n, &[])
}

/// The same as OTLP/JSON: `{}` per sample (22 million of them).
fn otlp_json_bomb() -> Vec<u8> {
    let prefix = br#"{"resourceProfiles":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"bomb"}}]},"scopeProfiles":[{"profiles":[{"samples":[{}"#;
    let suffix = b"]}]}]}]}";
    let n = samples_within(prefix.len() + suffix.len(), 3);
    gz_repeat(prefix, b",{}", n, suffix)
}

/// A Connect `PushRequest`: one series (`service_name=bomb`) of 33.5 million empty
/// `RawSample`s.
fn connect_protobuf_bomb() -> Vec<u8> {
    let mut label = Vec::new();
    field(1, "service_name".len(), &mut label);
    label.extend(b"service_name");
    field(2, 4, &mut label);
    label.extend(b"bomb");
    let mut labels = Vec::new();
    field(1, label.len(), &mut labels);
    labels.extend(label);
    let n = samples_within(64 + labels.len(), 2);
    let series = labels.len() + 2 * n;
    let mut prefix = Vec::new();
    field(1, series, &mut prefix);
    prefix.extend(labels);
    gz_repeat(&prefix, &EMPTY_FIELD_2, n, &[])
}

/// The same as Connect JSON.
fn connect_json_bomb() -> Vec<u8> {
    let prefix = br#"{"series":[{"labels":[{"name":"service_name","value":"bomb"}],"samples":[{}"#;
    let suffix = b"]}]}";
    let n = samples_within(prefix.len() + suffix.len(), 3);
    gz_repeat(prefix, b",{}", n, suffix)
}

/// A gzipped pprof `Profile` of 33.5 million empty samples.
fn pprof_bomb() -> Vec<u8> {
    gz_repeat(&[], &EMPTY_FIELD_2, samples_within(0, 2), &[])
}

/// A Connect `PushRequest` whose one `raw_profile` is [`pprof_bomb`].
fn connect_with_pprof_bomb() -> Vec<u8> {
    let bomb = pprof_bomb();
    let mut label = Vec::new();
    field(1, "service_name".len(), &mut label);
    label.extend(b"service_name");
    field(2, 4, &mut label);
    label.extend(b"bomb");
    let mut sample = Vec::new();
    field(1, bomb.len(), &mut sample);
    sample.extend(&bomb);
    let mut series = Vec::new();
    field(1, label.len(), &mut series);
    series.extend(label);
    field(2, sample.len(), &mut series);
    series.extend(sample);
    let mut req = Vec::new();
    field(1, series.len(), &mut req);
    req.extend(series);
    req
}

/// Parts, each `(bytes, times)`, gzipped without ever holding them inflated.
fn gz_parts(parts: &[(&[u8], usize)]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    for (bytes, times) in parts {
        let per_chunk = ((1 << 16) / bytes.len().max(1)).max(1);
        let chunk = bytes.repeat(per_chunk);
        let mut left = *times;
        while left > 0 {
            let k = left.min(per_chunk);
            gz.write_all(&chunk[..k * bytes.len()]).unwrap();
            left -= k;
        }
    }
    gz.finish().unwrap()
}

/// Empty samples and one sample of values just under the bound on decoded messages:
/// 2^20 samples (one with 4 Mi values: 32 MiB decoded), filled up to `INFLATED` with
/// an unknown field of zeros. `values_tag` is the field number of a sample's values.
/// Returns the big sample's head (its values follow), the filler's head and the
/// filler's length.
fn under_the_bound(values_tag: u32) -> (Vec<u8>, Vec<u8>, usize) {
    let values = 4 << 20;
    let mut big = Vec::new();
    field(values_tag, values, &mut big);
    let mut head = Vec::new();
    field(2, big.len() + values, &mut head);
    head.extend(big);
    let empty = (1 << 20) - 1;
    let profile_len = empty * 2 + head.len() + values;
    let mut filler_head = Vec::new();
    let filler = INFLATED - profile_len - 64 - 16;
    field(20, filler, &mut filler_head);
    (head, filler_head, filler)
}

/// An OTLP request just under the bound on what decoding builds (112 MiB of structs)
/// that inflates to 64 MiB: it is decoded, the worst a request can cost.
fn otlp_under_the_bound() -> Vec<u8> {
    let (big, filler_head, filler) = under_the_bound(4);
    let values = 4 << 20;
    let profile_len = ((1 << 20) - 1) * 2 + big.len() + values;
    let mut profile = Vec::new();
    field(2, profile_len, &mut profile);
    let scope_len = profile.len() + profile_len;
    let mut scope = Vec::new();
    field(2, scope_len, &mut scope);
    let resource_len = scope.len() + scope_len;
    let mut head = Vec::new();
    field(1, resource_len, &mut head);
    head.extend(scope);
    head.extend(profile);
    gz_parts(&[
        (&head, 1),
        (&EMPTY_FIELD_2, (1 << 20) - 1),
        (&big, 1),
        (&[1], values),
        (&filler_head, 1),
        (&[0], filler),
    ])
}

/// A pprof profile just under the bound, the same way.
fn pprof_under_the_bound() -> Vec<u8> {
    let (big, filler_head, filler) = under_the_bound(2);
    gz_parts(&[
        (&EMPTY_FIELD_2, (1 << 20) - 1),
        (&big, 1),
        (&[1], 4 << 20),
        (&filler_head, 1),
        (&[0], filler),
    ])
}

/// One hostile request: where it goes, its headers and body.
struct Bomb {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
}

/// Requests just under the bound on decoded messages, with the reason each is then
/// refused for.
fn edge_bombs() -> Vec<(Bomb, &'static str)> {
    let gz = ("content-encoding", "gzip");
    vec![
        (
            Bomb {
                name: "OTLP just under the bound",
                path: "/v1development/profiles",
                headers: vec![("content-type", "application/x-protobuf"), gz],
                body: otlp_under_the_bound(),
            },
            "service.name",
        ),
        (
            Bomb {
                name: "pprof just under the bound",
                path: "/ingest?name=edge.cpu&format=pprof",
                headers: vec![("content-type", "application/octet-stream")],
                body: pprof_under_the_bound(),
            },
            "no sample type",
        ),
    ]
}

fn bombs() -> Vec<Bomb> {
    let gz = ("content-encoding", "gzip");
    vec![
        Bomb {
            name: "OTLP protobuf",
            path: "/v1development/profiles",
            headers: vec![("content-type", "application/x-protobuf"), gz],
            body: otlp_protobuf_bomb(),
        },
        Bomb {
            name: "OTLP JSON",
            path: "/v1development/profiles",
            headers: vec![("content-type", "application/json"), gz],
            body: otlp_json_bomb(),
        },
        Bomb {
            name: "Connect protobuf",
            path: "/push.v1.PusherService/Push",
            headers: vec![("content-type", "application/proto"), gz],
            body: connect_protobuf_bomb(),
        },
        Bomb {
            name: "Connect JSON",
            path: "/push.v1.PusherService/Push",
            headers: vec![("content-type", "application/json"), gz],
            body: connect_json_bomb(),
        },
        Bomb {
            name: "pprof to /ingest",
            path: "/ingest?name=bomb.cpu&format=pprof",
            headers: vec![("content-type", "application/octet-stream")],
            body: pprof_bomb(),
        },
        Bomb {
            name: "pprof in a Connect raw_profile",
            path: "/push.v1.PusherService/Push",
            headers: vec![("content-type", "application/proto")],
            body: connect_with_pprof_bomb(),
        },
    ]
}

impl Collector {
    /// POSTs `bomb` with the token; returns status and body.
    fn send(&self, bomb: &Bomb) -> (u16, String) {
        let mut req = self
            .agent
            .post(format!("{}{}", self.api, bomb.path))
            .header("authorization", format!("Bearer {TOKEN}"));
        for (k, v) in &bomb.headers {
            req = req.header(*k, *v);
        }
        let (status, _, body) =
            read_answer(req.send(&bomb.body[..]).expect("the collector answers"));
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// A pprof profile of `samples` samples of `depth` locations each (out of 2 000), with
/// two values and a label each.
fn real_pprof(samples: usize, depth: usize) -> Vec<u8> {
    let mut msg = proto::Profile {
        string_table: vec!["".into(), "samples".into(), "count".into(), "thread".into()],
        sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
        ..Default::default()
    };
    for i in 1..=2000u64 {
        msg.string_table
            .push(format!("crate::module::function_{i}"));
        msg.function.push(proto::Function {
            id: i,
            name: msg.string_table.len() as i64 - 1,
            ..Default::default()
        });
        msg.location.push(proto::Location {
            id: i,
            address: 0x1000 + i,
            line: vec![proto::Line {
                function_id: i,
                line: i as i64,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    for s in 0..samples as u64 {
        msg.sample.push(proto::Sample {
            location_id: (0..depth as u64)
                .map(|d| 1 + (s * 7 + d * 13) % 2000)
                .collect(),
            value: vec![1 + s as i64 % 5, 10_000_000],
            label: vec![proto::Label {
                key: 3,
                str: 4 + (s % 8) as i64,
                ..Default::default()
            }],
        });
    }
    msg.encode_to_vec()
}

/// The cost `wire_scan` counts before decoding against what decoding then allocates
/// (this binary's allocator counts it): at least that, and not far above it, for real
/// profiles and for hostile shapes alike.
#[test]
fn the_counted_cost_is_what_decoding_allocates() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let empty_samples = EMPTY_FIELD_2.repeat(200_000);
    let mut many_labels = Vec::new();
    for _ in 0..20_000 {
        // A sample of 8 empty labels.
        field(2, 16, &mut many_labels);
        for _ in 0..8 {
            field(3, 0, &mut many_labels);
        }
    }
    let long_ids = {
        let ids: Vec<u8> = vec![1; 3 << 20];
        let mut s = Vec::new();
        field(1, ids.len(), &mut s);
        s.extend(ids);
        let mut p = Vec::new();
        field(2, s.len(), &mut p);
        p.extend(s);
        p
    };
    for (name, bytes) in [
        ("real, 20 000 samples of 24 frames", real_pprof(20_000, 24)),
        ("real, 500 samples of 64 frames", real_pprof(500, 64)),
        ("200 000 empty samples", empty_samples),
        ("20 000 samples of 8 empty labels", many_labels),
        ("one sample of 3 million ids", long_ids),
    ] {
        let (parsed, allocated) =
            peak_allocated(|| PprofProfile::parse(&bytes, 1 << 30, 1 << 30).unwrap());
        let counted = parsed.message_bytes();
        drop(parsed);
        let ratio = counted as f64 / allocated as f64;
        eprintln!(
            "{name}: {} B on the wire, {counted} B counted, {allocated} B allocated (x{ratio:.2})",
            bytes.len()
        );
        assert!(
            (1.0..=1.5).contains(&ratio),
            "{name}: counted {counted} B, allocated {allocated} B"
        );
    }
}

#[test]
fn each_hostile_body_is_refused_within_256_mib() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let h = Collector::with_push(&[(TOKEN, "team-a")], |_| {});
    for bomb in bombs() {
        assert!(
            bomb.body.len() <= 256 << 10,
            "{}: {} bytes",
            bomb.name,
            bomb.body.len()
        );
        reset_peak_rss();
        let (before, _) = rss_mib();
        let started = Instant::now();
        let (status, body) = h.send(&bomb);
        let (_, peak) = rss_mib();
        let grown = peak.saturating_sub(before);
        eprintln!(
            "{}: {} B sent, {status} in {:.2} s, peak RSS +{grown} MiB: {}",
            bomb.name,
            bomb.body.len(),
            started.elapsed().as_secs_f64(),
            body.trim()
        );
        assert_eq!(status, 413, "{}: {body}", bomb.name);
        assert!(
            body.contains("scrape.max_decoded_bytes") && body.contains("refused before decoding"),
            "{}: {body}",
            bomb.name
        );
        assert!(
            grown <= MAX_REQUEST_MIB,
            "{}: the peak RSS grew by {grown} MiB",
            bomb.name
        );
    }
    // Just under the bound, the most a request can make the collector build: decoded,
    // then refused for what it holds (no service, no sample type).
    for (bomb, reason) in edge_bombs() {
        reset_peak_rss();
        let (before, _) = rss_mib();
        let started = Instant::now();
        let (status, body) = h.send(&bomb);
        let (_, peak) = rss_mib();
        let grown = peak.saturating_sub(before);
        eprintln!(
            "{}: {} B sent, {status} in {:.2} s, peak RSS +{grown} MiB: {}",
            bomb.name,
            bomb.body.len(),
            started.elapsed().as_secs_f64(),
            body.trim()
        );
        assert_eq!(status, 400, "{}: {body}", bomb.name);
        assert!(body.contains(reason), "{}: {body}", bomb.name);
        assert!(
            grown <= MAX_REQUEST_MIB,
            "{}: the peak RSS grew by {grown} MiB",
            bomb.name
        );
    }
}

/// A well-behaved worker: one window a second since it started, 10 periods each;
/// `latest` is the newest window it serves.
fn healthy_worker(latest: Arc<AtomicU64>) -> axum::Router {
    let started = stackwatch_profile::clock::unix_ms() / 1000 * 1000;
    axum::Router::new().route(
        "/windows",
        get(
            move |q: axum::extract::Query<HashMap<String, String>>| async move {
                let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let newest = (stackwatch_profile::clock::unix_ms() - started) / 1000;
                latest.store(newest, Ordering::Relaxed);
                let oldest = newest.saturating_sub(59).max(1);
                let windows = (after.max(oldest - 1) + 1..=newest)
                    .map(|seq| Window {
                        seq,
                        start_unix_ms: started + (seq - 1) * 1000,
                        end_unix_ms: started + seq * 1000,
                        samples: 10,
                        dropped: 0,
                        pruned_stacks: 0,
                        stacks: vec![("healthy;work".into(), 10)],
                        labeled: Vec::new(),
                    })
                    .collect();
                let body = serde_json::to_vec(&WindowsResponse {
                    version: 1,
                    instance: "healthy".into(),
                    frequency_hz: 99,
                    period_ns: 10_101_010,
                    window_seconds: 1,
                    oldest_seq: oldest,
                    latest_seq: newest,
                    windows,
                })
                .unwrap();
                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            },
        ),
    )
}

/// How long the pushers of [`twenty_hostile_pushers_stay_under_1_gib`] push.
fn hostile_seconds() -> u64 {
    std::env::var("STACKWATCH_BOMB_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

#[test]
#[ignore = "long (30 s of 20 hostile pushers): run via scripts/test.sh"]
fn twenty_hostile_pushers_stay_under_1_gib_and_a_scraped_worker_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let latest = Arc::new(AtomicU64::new(0));
    let worker = common::serve(&rt, healthy_worker(latest.clone()));
    let mut cfg = common::scrape_config(dir.path(), Duration::from_secs(3));
    cfg.targets = vec![target(
        format!("http://{worker}"),
        TargetKind::Stackwatch,
        "healthy",
    )];
    cfg.push.enabled = true;
    cfg.push.tokens = vec![PushToken {
        token: Some(TOKEN.into()),
        token_file: None,
        tenant: "team-a".into(),
    }];
    // The pushers are one source each: no rate limit in the way of the decodes.
    cfg.push.max_requests_per_second = 1000;
    let h = Arc::new(Collector::start(rt, dir, cfg, Duration::from_secs(120)));
    h.wait_target("healthy", |t| t["scrapes_total"].as_u64().unwrap() >= 2);
    // The bombs refused before decoding, and those just under the bound (decoded).
    let mut all = bombs();
    all.extend(edge_bombs().into_iter().map(|(b, _)| b));
    let bombs = Arc::new(all);
    reset_peak_rss();
    let (before, _) = rss_mib();
    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
    let pushers: Vec<_> = (0..20)
        .map(|i| {
            let (h, bombs, stop, statuses) =
                (h.clone(), bombs.clone(), stop.clone(), statuses.clone());
            std::thread::spawn(move || {
                let mut k = i;
                while !stop.load(Ordering::Relaxed) {
                    let bomb = &bombs[k % bombs.len()];
                    let (status, body) = h.send(bomb);
                    assert!(
                        matches!(status, 400 | 413 | 503),
                        "{}: {status} {body}",
                        bomb.name
                    );
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                    k += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut peak_seen = 0;
    while started.elapsed() < Duration::from_secs(hostile_seconds()) {
        std::thread::sleep(Duration::from_millis(200));
        peak_seen = peak_seen.max(rss_mib().1);
    }
    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        p.join().unwrap();
    }
    let (_, peak) = rss_mib();
    let statuses = statuses.lock().unwrap().clone();
    // The worker's windows up to the newest it served while the bombs fell: every one
    // stored, once.
    let newest = latest.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored = common::total(&h.folded(r#"{service="healthy"}"#, None));
        if stored >= 10 * newest || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let t = h.targets().remove("healthy").unwrap();
    eprintln!(
        "20 hostile pushers for {} s: answers {statuses:?}; RSS {before} MiB before, peak {peak} MiB; \
         healthy worker: {stored} periods stored for windows 1..={newest}, {t}",
        hostile_seconds()
    );
    assert!(peak < 1024, "the peak RSS reached {peak} MiB");
    assert!(statuses.get(&413).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert!(
        stored >= 10 * newest,
        "{stored} periods for {newest} windows"
    );
    assert_eq!(stored % 10, 0, "{stored}");
    assert_eq!(t["scrape_failures_total"], 0, "{t}");
    assert_eq!(t["windows_lost_total"], 0, "{t}");
    assert_eq!(t["samples_ingested_total"].as_u64(), Some(stored), "{t}");
}
