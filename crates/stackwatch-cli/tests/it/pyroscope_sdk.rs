//! Issue #13: a Python program profiled by Grafana's real Pyroscope SDK (PyPI's
//! `pyroscope-io`, which pushes to `/push.v1.PusherService/Push`) with the collector as
//! its server address: its two hot functions appear in the store under its service,
//! its configured tags are target labels, the `tag_wrapper` tag is a sample label that
//! selects only the function run under it, and the Fleet page lists the source.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::spawn_listening;

const APP: &str = "sdk-ci-app";
const PUSH_TOKEN: &str = "push-token-5f1c";
const API_TOKEN: &str = "api-token-77aa";

/// Burns CPU in two named functions for 12 s, the second under a `tag_wrapper` tag.
const PROGRAM: &str = r#"
import sys, time
import pyroscope

pyroscope.configure(
    application_name="sdk-ci-app",
    server_address=sys.argv[1],
    basic_auth_username="pyroscope",
    basic_auth_password=sys.argv[2],
    tags={"env": "ci", "region": "eu"},
    sample_rate=100,
)

def burn_alpha_cpu(seconds):
    end = time.time() + seconds
    x = 0
    while time.time() < end:
        x += 1
    return x

def burn_beta_cpu(seconds):
    end = time.time() + seconds
    x = 0
    while time.time() < end:
        x += 1
    return x

end = time.time() + 12
while time.time() < end:
    burn_alpha_cpu(0.1)
    with pyroscope.tag_wrapper({"phase": "beta"}):
        burn_beta_cpu(0.1)
pyroscope.shutdown()
print("done", flush=True)
"#;

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn get(agent: &ureq::Agent, url: &str) -> String {
    let mut r = agent
        .get(url)
        .header("Authorization", &format!("Bearer {API_TOKEN}"))
        .call()
        .expect("the collector answers");
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    body
}

/// The folded profile of a selection over the last hour, by stack.
fn folded(agent: &ureq::Agent, api: &str, query: &str) -> BTreeMap<String, u64> {
    let body = get(
        agent,
        &format!(
            "{api}/api/profile.folded?query={}&from=now-1h",
            encode(query)
        ),
    );
    body.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(s, c)| (s.to_owned(), c.parse().unwrap()))
        .collect()
}

fn has(profile: &BTreeMap<String, u64>, function: &str) -> bool {
    profile.keys().any(|s| s.split(';').any(|f| f == function))
}

#[test]
#[ignore = "needs python3 and pyroscope-io: run via scripts/test.sh"]
fn the_pyroscope_python_sdk_pushes_to_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stackwatch.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nbearer_token = \"{API_TOKEN}\"\n\
             [storage]\nflush_interval = \"100ms\"\n\
             [push]\nenabled = true\n[[push.tokens]]\ntoken = \"{PUSH_TOKEN}\"\ntenant = \"ci-team\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_stackwatch"));
    server
        .args(["server", "--config"])
        .arg(&config)
        .stderr(Stdio::null());
    let (_server, addr) = spawn_listening(server);
    let api = format!("http://{addr}");

    let program = dir.path().join("burn.py");
    std::fs::write(&program, PROGRAM).unwrap();
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(&program)
        .arg(&api)
        .arg(PUSH_TOKEN)
        .output()
        .expect("python3 runs (apt-get install python3; pip install pyroscope-io)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
        "the SDK program failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() >= Duration::from_secs(12));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let service = format!(r#"{{service="{APP}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = folded(&agent, &api, &service);
        if has(&all, "burn_alpha_cpu") && has(&all, "burn_beta_cpu") {
            // The SDK's last push (at shutdown) is written too: nothing changes any more.
            std::thread::sleep(Duration::from_secs(1));
            if folded(&agent, &api, &service) == all {
                break all;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the SDK's functions never appeared under {service}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // About 12 s at 100 Hz of one busy thread, in periods (the SDK's nanoseconds / 10 ms).
    let total: u64 = all.values().sum();
    assert!((300..=2000).contains(&total), "{total} periods: {all:?}");

    // The SDK's tags are target labels.
    let ci = folded(
        &agent,
        &api,
        &format!(r#"{{service="{APP}",env="ci",region="eu"}}"#),
    );
    assert_eq!(ci, all, "env=ci selects the whole service");
    let elsewhere = folded(&agent, &api, &format!(r#"{{service="{APP}",env="prod"}}"#));
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    // The tag_wrapper tag is a sample label: it selects only the function run under it.
    let beta = folded(
        &agent,
        &api,
        &format!(r#"{{service="{APP}",phase="beta"}}"#),
    );
    // The SDK samples Python's threads from its own thread and reads the tags separately,
    // so a sample taken as the tag changes can carry the other function's tag (the
    // SDK's race, not the collector's): allow at most 2% of either side.
    let share = |p: &BTreeMap<String, u64>, f: &str| {
        let of: u64 = p
            .iter()
            .filter(|(s, _)| s.contains(f))
            .map(|(_, c)| *c)
            .sum();
        of as f64 / p.values().sum::<u64>().max(1) as f64
    };
    assert!(has(&beta, "burn_beta_cpu"), "{beta:?}");
    assert!(share(&beta, "burn_alpha_cpu") <= 0.02, "{beta:?}");
    let not_beta = folded(&agent, &api, &format!(r#"{{service="{APP}",phase=""}}"#));
    assert!(has(&not_beta, "burn_alpha_cpu"), "{not_beta:?}");
    assert!(share(&not_beta, "burn_beta_cpu") <= 0.02, "{not_beta:?}");
    assert_eq!(
        beta.values().sum::<u64>() + not_beta.values().sum::<u64>(),
        total
    );

    // The Fleet page lists the source, its series and when it was last seen.
    let sources: serde_json::Value =
        serde_json::from_str(&get(&agent, &format!("{api}/api/push-sources"))).unwrap();
    let source = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == APP)
        .unwrap_or_else(|| panic!("{APP} not in /api/push-sources: {sources}"));
    assert_eq!(source["tenant"], "ci-team", "{source}");
    assert_eq!(source["rejected"], 0, "{source}");
    let series = &source["series"][0];
    assert_eq!(series["protocol"], "pyroscope", "{source}");
    assert_eq!(series["profile_type"], "cpu", "{source}");
    assert_eq!(series["labels"]["env"], "ci", "{source}");
    assert_eq!(series["labels"]["tenant"], "ci-team", "{source}");
    assert!(series["pushes"].as_u64().unwrap() >= 1, "{source}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let last_seen = series["last_seen_unix_ms"].as_u64().unwrap();
    assert!(
        now_ms.saturating_sub(last_seen) < 120_000,
        "last seen {last_seen}, now {now_ms}: {source}"
    );

    let metrics = get(&agent, &format!("{api}/metrics"));
    let accepted = metrics
        .lines()
        .find(|l| {
            l.starts_with("stackwatch_push_requests_total{")
                && l.contains(r#"protocol="pyroscope""#)
                && l.contains(r#"outcome="accepted""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(accepted >= 1, "{metrics}");
}
