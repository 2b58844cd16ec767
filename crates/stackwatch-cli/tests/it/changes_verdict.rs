//! Issue #15's proof of `/api/changes` on real workers: a canary that encodes with Avro
//! where main encodes JSON shows the Avro encoder as significant growth and no thread
//! root; main against itself (its two instances over the same time) shows nothing
//! significant.

use crate::common;

use std::time::{Duration, Instant};

use common::{binlog_worker, spawn_listening};

fn get_json(agent: &ureq::Agent, url: &str) -> serde_json::Value {
    let mut r = agent.get(url).call().unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn enc(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn the_canary_s_avro_encoder_is_significant_and_main_against_itself_is_not() {
    // 499 Hz: enough periods per 1 s window for the test in a debug or release build.
    let main_flags = ["--profile-hz", "499"];
    let mut canary_flags: Vec<&str> = main_flags.to_vec();
    canary_flags.extend(["--format", "avro", "--batch-size", "500", "--seed", "3"]);
    let (_m1, a1) = binlog_worker(&[&main_flags[..], &["--seed", "1"]].concat());
    let (_m2, a2) = binlog_worker(&[&main_flags[..], &["--seed", "2"]].concat());
    let (_c1, a3) = binlog_worker(&canary_flags);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stackwatch.toml");
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"1s\"\n",
        dir.path().join("data").display()
    );
    for (addr, instance, version) in [
        (&a1, "main-1", "main"),
        (&a2, "main-2", "main"),
        (&a3, "canary-1", "canary"),
    ] {
        text.push_str(&format!(
            "[[targets]]\nurl = \"http://{addr}\"\nlabels = {{ service = \"binlog-streamer\", instance = \"{instance}\", version = \"{version}\" }}\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stackwatch"));
    cmd.args(["server", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn");
    let (_server, api) = spawn_listening(cmd);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    // 1 s windows: wait for ~50 of them per worker.
    let start = stackwatch_profile::clock::unix_s();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stackwatch_profile::clock::unix_s() < start + 55 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_secs(1));
    }
    let (from, to) = (start + 5, start + 51);
    let v = get_json(
        &agent,
        &format!(
            "http://{api}/api/changes?base={}&base_from={from}&base_to={to}&query={}&from={from}&to={to}",
            enc("{version=\"main\"}"),
            enc("{version=\"canary\"}")
        ),
    );
    let changes = v["changes"].as_array().unwrap();
    let significant: Vec<&serde_json::Value> = changes
        .iter()
        .filter(|c| c["significant"] == true)
        .collect();
    assert!(
        significant.iter().any(|c| {
            let f = c["function"].as_str().unwrap();
            f.contains("apache_avro") && c["delta"].as_f64().unwrap() > 0.0
        }),
        "the Avro encoder grew significantly: {v:#}"
    );
    for c in changes {
        let f = c["function"].as_str().unwrap();
        assert!(
            !f.starts_with("thread") && f != "stackwatch" && !f.starts_with("binlog-streamer"),
            "a thread root was tested: {f}"
        );
    }
    assert!(v["target"]["cores"].as_f64().unwrap() > 0.0);
    assert!(
        v["base"]["instances"]["main-1"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    // Main against itself: its two instances over the same time. (Two halves of one run
    // are not "no change" this early: the profiler's own symbolizer is still warming up in
    // the first half of a debug build, and the verdict rightly says so.)
    let v = get_json(
        &agent,
        &format!(
            "http://{api}/api/changes?base={}&base_from={from}&base_to={to}&query={}&from={from}&to={to}",
            enc("{instance=\"main-1\"}"),
            enc("{instance=\"main-2\"}")
        ),
    );
    let flagged: Vec<&serde_json::Value> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["significant"] == true)
        .collect();
    assert!(flagged.is_empty(), "main-1 vs main-2 flagged: {flagged:#?}");
    assert!(v["base"]["windows"].as_u64().unwrap() >= 15, "{v}");
}
