//! Soak (issue 24): the demo's fleet (three profiled binlog-streamer workers scraped by a
//! `stackwatch server` process storing into SQLite) beside 20 hostile pushers and bursts
//! of queries, for an hour by default. It shows two things:
//!
//! - the collector's memory stays bounded: its RSS (VmRSS, every 10 s) is written to a
//!   CSV with the caches that fill as the store grows (`stackwatch_sqlite_memory_bytes`
//!   and `stackwatch_store_cache_bytes` of its `/metrics`), and the second half's range
//!   and trend (least-squares slope, MiB per hour) are printed, of RSS and of its floor
//!   (the least of each five minutes) with and without those caches. SQLite's page caches are bounded below what the store reaches by the
//!   half-way point ([`STORE_CACHE_BYTES`], [`QUERY_CACHE_BYTES`]), so the second half
//!   shows what else grows;
//! - nothing acknowledged is lost: every window each worker closed is stored exactly once
//!   (its periods and stacks equal what the worker served), and every push a legitimate
//!   pusher saw acknowledged (200) is stored exactly once (its service's stored total
//!   equals the sum of the acknowledged pushes, though each was also sent a second time
//!   as a retry).
//!
//! The hostile pushers (a second tenant's token) cycle through: gzip bombs (an OTLP
//! profile of 33.5 M empty samples: 64 KiB sent, just under 64 MiB inflated), new services with 31
//! long tags each (cardinality), malformed protobuf, truncated gzip and JSON, and bursts
//! over the rate limit. Every 60 s a burst of 16 concurrent queries reads flamegraphs,
//! top functions, a version comparison, time series by table and the source list.
//!
//! `cargo bench -p stackwatch-cli --bench soak` (`STACKWATCH_SOAK_SECONDS` changes the
//! 3 600 s; `STACKWATCH_SOAK_CSV` where the RSS series goes, default
//! `target/soak-rss.csv`). `scripts/soak-hostile.sh` runs it in release and has
//! `scripts/soak_report.py` plot and fit the CSV.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::profiles::v1development::{Profile, Sample, ScopeProfiles};
use prost::Message;
use stackwatch_profile::protocol::WindowsResponse;
use stackwatch_store::{ProfileReader, Selector, SqliteStore};

mod common;

use common::otlp_request::request;
use common::spawn_server;

const LEGIT_TOKEN: &str = "soak-legit-token";
const HOSTILE_TOKEN: &str = "soak-hostile-token";
/// Empty samples in the gzip bomb: two bytes each, just under `push.max_decompressed_bytes`
/// (64 MiB) with the request around them.
const BOMB_SAMPLES: usize = (32 << 20) - 4096;
/// Requests of one rate-limit burst: past `push.max_requests_per_second`'s burst of 10
/// (the soak sets 5 per second).
const BURST: usize = 100;
/// Windows a worker keeps: 2 s windows over the soak and the final wait.
const WINDOW_SECS: u64 = 2;

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A demo worker: `stackwatch worker` on the generator, as `stackwatch demo` starts it.
fn worker(seed: u64, format: &str, retain: u64) -> (Reaped, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackwatch"))
        .args(["worker", "--source", "generate", "--rate", "5000"])
        .args([
            "--seed",
            &seed.to_string(),
            "--sink",
            "null",
            "--format",
            format,
        ])
        .args(["--http-addr", "127.0.0.1:0"])
        .args(["--profile-window-secs", &WINDOW_SECS.to_string()])
        .args(["--profile-retain-windows", &retain.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stackwatch worker");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(a) = line.strip_prefix("binlog-streamer: listening on http://") {
                    let _ = tx.send(a.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the worker prints its address");
    (Reaped(child), addr)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// POSTs an OTLP body; the status, or 0 when the request failed below HTTP.
fn post(agent: &ureq::Agent, url: &str, token: &str, ctype: &str, gzip: bool, body: &[u8]) -> u16 {
    let mut req = agent
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", ctype);
    if gzip {
        req = req.header("Content-Encoding", "gzip");
    }
    match req.send(body) {
        Ok(mut r) => {
            let _ = r.body_mut().read_to_vec();
            r.status().as_u16()
        }
        Err(_) => 0,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The key byte protobuf writes for the first field of `encoded` (a message holding one
/// empty child in that field): the field numbers come from the generated types, not from
/// memory.
fn first_key(encoded: &[u8]) -> u8 {
    assert!(encoded[0] & 0x80 == 0, "a field number below 16");
    encoded[0]
}

fn length_delimited(key: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![key];
    prost::encoding::encode_varint(inner.len() as u64, &mut out);
    out.extend_from_slice(inner);
    out
}

/// An OTLP request whose one profile holds `n` empty samples, written on the wire
/// directly (materialised, it would take gigabytes here too), around a real request's
/// resource (`service.name`).
fn sample_bomb(n: usize) -> Vec<u8> {
    let sample_key = first_key(
        &Profile {
            samples: vec![Sample::default()],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let profile_key = first_key(
        &ScopeProfiles {
            profiles: vec![Profile::default()],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let mut profile = Vec::with_capacity(2 * n);
    for _ in 0..n {
        profile.extend_from_slice(&[sample_key, 0]);
    }
    let scope = length_delimited(profile_key, &profile);
    // The rest from a real request: its scope profiles replaced by the bomb's.
    let mut shell = request("soak-bomb", "bomb-host", &[("main;f".into(), 1)]);
    shell.resource_profiles[0].scope_profiles.clear();
    let resource = shell.resource_profiles[0].encode_to_vec();
    let scope_key = first_key(
        &opentelemetry_proto::tonic::profiles::v1development::ResourceProfiles {
            scope_profiles: vec![ScopeProfiles::default()],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let mut resource_profiles = resource;
    resource_profiles.extend(length_delimited(scope_key, &scope));
    let rp_key = first_key(
        &ExportProfilesServiceRequest {
            resource_profiles: vec![Default::default()],
            dictionary: None,
        }
        .encode_to_vec(),
    );
    let mut out = length_delimited(rp_key, &resource_profiles);
    shell.resource_profiles.clear();
    out.extend(shell.encode_to_vec());
    out
}

/// What the pushers and query bursts saw.
#[derive(Default)]
struct Outcomes {
    /// Status code → count, per role.
    by_role: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Outcomes {
    fn add(&self, role: &'static str, status: u16) {
        *self
            .by_role
            .lock()
            .unwrap()
            .entry((role, status))
            .or_default() += 1;
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 once the process is gone.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The collector's `stackwatch_sqlite_memory_bytes` and `stackwatch_store_cache_bytes`,
/// in KiB (None if /metrics did not answer in time: the sample is then left empty, not
/// guessed).
fn cache_kib(agent: &ureq::Agent, url: &str) -> Option<(u64, u64)> {
    let mut response = agent.get(url).call().ok()?;
    let body = response.body_mut().read_to_string().ok()?;
    let gauge = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|b| b as u64 / 1024)
    };
    Some((
        gauge("stackwatch_sqlite_memory_bytes")?,
        gauge("stackwatch_store_cache_bytes")?,
    ))
}

fn unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    cov / var
}

fn windows(agent: &ureq::Agent, addr: &str) -> WindowsResponse {
    let body = agent
        .get(&format!("http://{addr}/windows?after=0"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// SQLite's page caches fill as the store grows, up to their bounds (64 MiB for the
/// writer, 16 MiB per idle query connection by default), which the hour's ~30 MB store
/// never reaches: RSS would then grow all hour by design. The soak bounds them below
/// what the store reaches by the half-way point (8 MiB and 2 x 4 MiB), so a second half
/// that still grows is something else.
const STORE_CACHE_BYTES: usize = 8 << 20;
/// See [`STORE_CACHE_BYTES`].
const QUERY_CACHE_BYTES: usize = 4 << 20;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = std::env::var("STACKWATCH_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    let csv_path = std::env::var("STACKWATCH_SOAK_CSV").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/soak-rss.csv").into()
    });
    println!(
        "# soak: 3 workers, 20 hostile pushers, 3 legitimate pushers, query bursts; {} cores, {secs} s",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let retain = secs / WINDOW_SECS + 600;
    let workers: Vec<(Reaped, String, &str)> =
        [("main-1", "json"), ("main-2", "json"), ("canary", "avro")]
            .iter()
            .enumerate()
            .map(|(i, (name, format))| {
                let (p, addr) = worker(i as u64 + 1, format, retain);
                (p, addr, *name)
            })
            .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"5s\"\n\
         [push]\nenabled = true\nmax_requests_per_second = 5\n\
         [[push.tokens]]\ntoken = \"{LEGIT_TOKEN}\"\ntenant = \"legit\"\n\
         [[push.tokens]]\ntoken = \"{HOSTILE_TOKEN}\"\ntenant = \"hostile\"\n\
         [store]\ncache_bytes = {STORE_CACHE_BYTES}\n[query]\ncache_bytes = {QUERY_CACHE_BYTES}\n",
        dir.path().join("data").display()
    );
    for (_, addr, name) in &workers {
        let version = if *name == "canary" { "canary" } else { "main" };
        cfg.push_str(&format!(
            "[[targets]]\nurl = \"http://{addr}\"\nlabels = {{ service = \"binlog-streamer\", instance = \"{name}\", version = \"{version}\" }}\n"
        ));
    }
    std::fs::write(dir.path().join("s.toml"), cfg).unwrap();
    let (server, api) = spawn_server(
        &dir.path().join("s.toml"),
        "stackwatch-soak.log",
        "STACKWATCH_SOAK_LOG",
    );
    let server = Reaped(server);
    let pid = server.0.id();
    let push_url = format!("{api}/v1development/profiles");
    let from_s = unix_s();
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Outcomes::default());

    // The hostile bodies, built once.
    let bomb = gzip(&sample_bomb(BOMB_SAMPLES));
    println!(
        "# gzip bomb: {} bytes sent, {} MiB inflated",
        bomb.len(),
        64
    );
    let bomb = Arc::new(bomb);
    let t_start = Instant::now();
    let mut threads = Vec::new();
    for p in 0..20usize {
        let (stop, outcomes, url, bomb) = (
            stop.clone(),
            outcomes.clone(),
            push_url.clone(),
            bomb.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let agent = agent();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match (p + n as usize) % 5 {
                    0 => {
                        let s = post(&agent, &url, HOSTILE_TOKEN, "application/x-protobuf", true, &bomb);
                        outcomes.add("bomb", s);
                    }
                    1 => {
                        // A new service each time: with 31 long tags every other time
                        // (past the label-byte budget), else one short tag (new
                        // sources until the tenant's limit).
                        let mut r = request(
                            &format!("hostile-{p}-{n}"),
                            &format!("host-{p}"),
                            &[("main;hostile::work".into(), 10)],
                        );
                        if n.is_multiple_of(2) {
                            let res = r.resource_profiles[0].resource.as_mut().unwrap();
                            for k in 0..30 {
                                let mut kv = res.attributes[1].clone();
                                kv.key = format!("tag_{k}");
                                kv.value = Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(format!(
                                        "{p}-{n}-{k}-{}",
                                        "x".repeat(240)
                                    ))),
                                });
                                res.attributes.push(kv);
                            }
                        }
                        let s = post(
                            &agent,
                            &url,
                            HOSTILE_TOKEN,
                            "application/x-protobuf",
                            true,
                            &gzip(&r.encode_to_vec()),
                        );
                        outcomes.add("cardinality", s);
                    }
                    2 => {
                        let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
                        let s = post(&agent, &url, HOSTILE_TOKEN, "application/x-protobuf", false, &junk);
                        outcomes.add("malformed", s);
                        let mut g = gzip(&junk);
                        g.truncate(g.len() / 2);
                        let s = post(&agent, &url, HOSTILE_TOKEN, "application/x-protobuf", true, &g);
                        outcomes.add("malformed", s);
                        let s = post(&agent, &url, HOSTILE_TOKEN, "application/json", false, b"{\"resourceProfiles\":[{\"scopeProfiles\":[{\"profiles\":[{\"samples\":");
                        outcomes.add("malformed", s);
                    }
                    _ => {
                        // A burst over the rate limit from one source: ten senders
                        // at once (one waits for its commit, the flush interval), each
                        // request distinct (repeats are acknowledged without counting).
                        std::thread::scope(|scope| {
                            for t in 0..10 {
                                let (agent, url, outcomes) = (&agent, &url, &outcomes);
                                scope.spawn(move || {
                                    for i in 0..BURST / 10 {
                                        let body = gzip(
                                            &request(
                                                &format!("burst-{p}"),
                                                "h",
                                                &[(format!("main;burst;n{n}_{t}_{i}"), 1)],
                                            )
                                            .encode_to_vec(),
                                        );
                                        let s = post(
                                            agent,
                                            url,
                                            HOSTILE_TOKEN,
                                            "application/x-protobuf",
                                            true,
                                            &body,
                                        );
                                        outcomes.add("burst", s);
                                    }
                                });
                            }
                        });
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }
    // Legitimate pushers: a distinct profile every 10 s, each sent twice (a retry after
    // its acknowledgement), retried on 429/503 until acknowledged; acknowledged totals kept.
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let pushes_acked = Arc::new(AtomicU64::new(0));
    for p in 0..3usize {
        let (stop, outcomes, url, acked, pushes_acked) = (
            stop.clone(),
            outcomes.clone(),
            push_url.clone(),
            acked.clone(),
            pushes_acked.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let agent = agent();
            let service = format!("legit-{p}");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let stacks: Vec<(String, u64)> = (0..50u64)
                    .map(|k| {
                        (
                            format!("main;legit::handle;legit::step_{k};push_{}", n % 7),
                            1 + (n * 31 + k * 17) % 97,
                        )
                    })
                    .collect();
                let total: u64 = stacks.iter().map(|(_, c)| c).sum();
                let mut r = request(&service, &format!("host-{p}"), &stacks);
                // A distinct time range per push: the same content at another time is
                // another push, not a retry.
                let prof = &mut r.resource_profiles[0].scope_profiles[0].profiles[0];
                prof.time_unix_nano = (SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64)
                    / 1_000_000_000
                    * 1_000_000_000;
                let body = gzip(&r.encode_to_vec());
                let mut stored = false;
                for attempt in 0..60 {
                    let s = post(
                        &agent,
                        &url,
                        LEGIT_TOKEN,
                        "application/x-protobuf",
                        true,
                        &body,
                    );
                    outcomes.add("legit", s);
                    if s == 200 {
                        stored = true;
                        break;
                    }
                    if stop.load(Ordering::Relaxed) && attempt > 5 {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                if stored {
                    *acked.lock().unwrap().entry(service.clone()).or_default() += total;
                    pushes_acked.fetch_add(1, Ordering::Relaxed);
                    // The retry of an acknowledged push: acknowledged, not stored again.
                    let s = post(
                        &agent,
                        &url,
                        LEGIT_TOKEN,
                        "application/x-protobuf",
                        true,
                        &body,
                    );
                    outcomes.add("legit-retry", s);
                }
                let until = Instant::now() + Duration::from_secs(10);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }));
    }
    // Query bursts every 60 s.
    {
        let (stop, outcomes, api) = (stop.clone(), outcomes.clone(), api.clone());
        threads.push(std::thread::spawn(move || {
            let q = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            let bs = q("{service=\"binlog-streamer\"}");
            let urls = [
                format!("{api}/api/profile.svg?query={bs}&from=now-1h"),
                format!("{api}/api/top?query={bs}&from=now-15m"),
                format!(
                    "{api}/api/changes?base={}&query={}&from=now-15m",
                    q("{version=\"main\"}"),
                    q("{version=\"canary\"}")
                ),
                format!("{api}/api/timeseries?query={bs}&group_by=table&from=now-1h"),
                format!("{api}/api/push-sources"),
                format!("{api}/api/targets"),
                format!(
                    "{api}/api/profile.folded?query={}&from=now-1h",
                    q("{tenant=\"hostile\"}")
                ),
                format!(
                    "{api}/api/diff.svg?base={}&query={}&from=now-15m",
                    q("{version=\"main\"}"),
                    q("{version=\"canary\"}")
                ),
            ];
            let mut next = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    next += Duration::from_secs(60);
                    let burst: Vec<_> = (0..16)
                        .map(|i| {
                            let (url, outcomes) = (urls[i % urls.len()].clone(), outcomes.clone());
                            std::thread::spawn(move || {
                                let s = match agent().get(&url).call() {
                                    Ok(mut r) => {
                                        let _ = r.body_mut().read_to_vec();
                                        r.status().as_u16()
                                    }
                                    Err(_) => 0,
                                };
                                outcomes.add("query", s);
                            })
                        })
                        .collect();
                    for t in burst {
                        let _ = t.join();
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }));
    }

    // RSS every 10 s, in scripts/soak_report.py's CSV format (it plots and fits it).
    let mut csv = std::fs::File::create(&csv_path).unwrap();
    writeln!(
        csv,
        "# stackwatch soak with hostile pushers: {} cores, {secs} s, a sample every 10 s",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
    .unwrap();
    let names: Vec<&str> = workers.iter().map(|(_, _, n)| *n).collect();
    let pids: Vec<u32> = std::iter::once(pid)
        .chain(workers.iter().map(|(p, _, _)| p.0.id()))
        .collect();
    let cols: Vec<String> = std::iter::once("collector")
        .chain(names.iter().copied())
        .collect::<Vec<_>>()
        .iter()
        .map(|n| n.to_string())
        .collect();
    writeln!(
        csv,
        "elapsed_s,{},{},store_bytes,collector_sqlite_kib,collector_store_cache_kib",
        cols.iter()
            .map(|c| format!("{c}_rss_kib"))
            .collect::<Vec<_>>()
            .join(","),
        cols.iter()
            .map(|c| format!("{c}_hwm_kib"))
            .collect::<Vec<_>>()
            .join(",")
    )
    .unwrap();
    let mut series: Vec<(f64, f64)> = Vec::new();
    // The caches that grow with the store up to their bounds (SQLite's page caches, the
    // store's id and stack-text caches), read from the collector's /metrics, so RSS less
    // them can be fitted too.
    let mut less_caches: Vec<(f64, f64)> = Vec::new();
    let metrics_agent = agent();
    let metrics_url = format!("{api}/metrics");
    while t_start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(10));
        let t = t_start.elapsed().as_secs_f64();
        let rss: Vec<u64> = pids.iter().map(|p| proc_kib(*p, "VmRSS:")).collect();
        let hwm: Vec<u64> = pids.iter().map(|p| proc_kib(*p, "VmHWM:")).collect();
        assert!(rss[0] > 0, "the collector died");
        let store_bytes: u64 = std::fs::read_dir(dir.path().join("data"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let caches = cache_kib(&metrics_agent, &metrics_url);
        let (sqlite_kib, store_kib) = caches.unzip();
        let show = |k: Option<u64>| k.map_or(String::new(), |k| k.to_string());
        writeln!(
            csv,
            "{t:.0},{},{},{store_bytes},{},{}",
            join(&rss),
            join(&hwm),
            show(sqlite_kib),
            show(store_kib)
        )
        .unwrap();
        let mib = rss[0] as f64 / 1024.0;
        series.push((t, mib));
        if let Some((sqlite, store)) = caches {
            less_caches.push((t, mib - (sqlite + store) as f64 / 1024.0));
        }
        if series.len().is_multiple_of(30) {
            println!(
                "# {t:>5.0} s: collector RSS {mib:.1} MiB, {} legitimate pushes acknowledged",
                pushes_acked.load(Ordering::Relaxed)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }

    // Every worker's windows stored exactly once.
    let agent = agent();
    let db = dir.path().join("data/stackwatch.db");
    let snaps: Vec<(&str, WindowsResponse)> = workers
        .iter()
        .map(|(_, addr, name)| (*name, windows(&agent, addr)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let store = SqliteStore::open_reader(&db).unwrap();
        let behind: Vec<&str> = snaps
            .iter()
            .filter(|(name, snap)| {
                let version = if *name == "canary" { "canary" } else { "main" };
                let labels = [
                    ("service".to_string(), "binlog-streamer".to_string()),
                    ("instance".to_string(), name.to_string()),
                    ("version".to_string(), version.to_string()),
                ]
                .into();
                store
                    .checkpoints(&labels)
                    .unwrap()
                    .into_iter()
                    .find(|c| c.instance == snap.instance)
                    .map_or(0, |c| c.last_seq)
                    < snap.latest_seq
            })
            .map(|(n, _)| *n)
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not catch up with {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let store = SqliteStore::open_reader(&db).unwrap();
    let (mut checked, mut wrong) = (0u64, 0u64);
    for (name, snap) in &snaps {
        let sel = Selector::parse(&format!("{{instance=\"{name}\"}}")).unwrap();
        for w in &snap.windows {
            let ts = (w.start_unix_ms / 1000) as i64;
            let stored = store.profile(&sel, ts, ts + 1).unwrap();
            if stored.total() != w.samples || stored.stacks.len() != w.stacks.len() {
                wrong += 1;
                if wrong <= 5 {
                    println!("# {name} window {} at {ts}: stored {} periods in {} stacks, served {} in {}", w.seq, stored.total(), stored.stacks.len(), w.samples, w.stacks.len());
                }
            }
            checked += 1;
        }
    }
    // Every acknowledged legitimate push stored once.
    let mut push_wrong = Vec::new();
    for (service, total) in acked.lock().unwrap().iter() {
        let sel = Selector::parse(&format!("{{service=\"{service}\",tenant=\"legit\"}}")).unwrap();
        let stored = store
            .profile(&sel, from_s - 60, unix_s() + 60)
            .unwrap()
            .total();
        if stored != *total {
            push_wrong.push(format!("{service}: stored {stored}, acknowledged {total}"));
        }
    }

    // Memory: the second half's range and trend; and the trend of its floor (the least
    // of each five minutes: the spikes are decodes in flight), of RSS and of RSS less
    // SQLite's caches.
    let floor_trend = |points: &[(f64, f64)]| -> (f64, f64, f64) {
        // Whole five minutes only: a last, partial one may hold a single spike.
        let whole = (secs / 300 * 300) as f64;
        let minima: Vec<(f64, f64)> = points
            .iter()
            .filter(|(t, _)| *t >= secs as f64 / 2.0 && *t < whole)
            .fold(Vec::<(f64, f64)>::new(), |mut acc, &(t, r)| {
                let bucket = (t / 300.0).floor();
                match acc.last_mut() {
                    Some((b, m)) if *b == bucket => *m = m.min(r),
                    _ => acc.push((bucket, r)),
                }
                acc
            });
        let xs: Vec<f64> = minima
            .iter()
            .map(|(b, _)| (b * 300.0 + 150.0) / 3600.0)
            .collect();
        let ys: Vec<f64> = minima.iter().map(|(_, m)| *m).collect();
        let first = ys.first().copied().unwrap_or(0.0);
        let last = ys.last().copied().unwrap_or(0.0);
        let k = if xs.len() > 1 { slope(&xs, &ys) } else { 0.0 };
        (first, last, k)
    };
    let (f0, f1, fk) = floor_trend(&series);
    let (g0, g1, gk) = floor_trend(&less_caches);
    let half: Vec<&(f64, f64)> = series
        .iter()
        .filter(|(t, _)| *t >= secs as f64 / 2.0)
        .collect();
    let xs: Vec<f64> = half.iter().map(|(t, _)| t / 3600.0).collect();
    let ys: Vec<f64> = half.iter().map(|(_, r)| *r).collect();
    let (lo, hi) = ys
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let lo = if ys.is_empty() { 0.0 } else { lo };
    let peak = series.iter().map(|(_, r)| *r).fold(0f64, f64::max);
    println!("# outcomes (role, status: count):");
    for ((role, status), n) in outcomes.by_role.lock().unwrap().iter() {
        println!("#   {role:<12} {status}: {n}");
    }
    println!(
        "collector RSS: peak {peak:.1} MiB; second half {lo:.1}-{hi:.1} MiB, trend {:+.1} MiB/h ({} points, {csv_path})",
        if xs.len() > 1 { slope(&xs, &ys) } else { 0.0 },
        xs.len()
    );
    println!(
        "collector RSS floor (least of each 5 min), second half: {f0:.1} -> {f1:.1} MiB, trend {fk:+.1} MiB/h; \
         less the bounded caches (SQLite's, the store's): {g0:.1} -> {g1:.1} MiB, trend {gk:+.1} MiB/h"
    );
    println!(
        "windows: {checked} checked, {wrong} not stored exactly once ({} workers)",
        snaps.len()
    );
    println!(
        "legitimate pushes: {} acknowledged, {} services wrong{}",
        pushes_acked.load(Ordering::Relaxed),
        push_wrong.len(),
        if push_wrong.is_empty() {
            String::new()
        } else {
            format!(": {}", push_wrong.join("; "))
        }
    );
    drop(server);
    if wrong > 0 || !push_wrong.is_empty() {
        std::process::exit(1);
    }
}
