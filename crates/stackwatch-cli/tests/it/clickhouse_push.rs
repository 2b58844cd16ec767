//! Pushed profiles on the ClickHouse store: a Pyroscope push (CPU folded text and a
//! heap pprof with an allocation type) lands in ClickHouse, is selected by its tags and
//! type, and a retried push counts once, also after the collector restarted (the row
//! identity holds the push's content digest, so ClickHouse keeps one copy).

use crate::common;

use crate::clickhouse;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clickhouse::ClickHouse;
use common::Proc;

fn collector(dir: &Path, ch: &ClickHouse) -> (Proc, String) {
    let config = dir.join("stackwatch.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[storage]\nflush_interval = \"100ms\"\n\
             [store]\nkind = \"clickhouse\"\nurl = \"{}\"\ndatabase = \"pushed\"\nuser = \"{}\"\npassword = \"{}\"\n\
             [push]\nenabled = true\nallow_anonymous = true\n",
            dir.join("data").display(),
            ch.http_url,
            ch.user,
            ch.password
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackwatch"));
    cmd.args(["server", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    common::spawn_listening(cmd)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn push(addr: &str, name: &str, format: &str, from: i64, body: &[u8]) -> u16 {
    agent()
        .post(&format!("http://{addr}/ingest"))
        .query("name", name)
        .query("format", format)
        .query("from", from.to_string())
        .query("until", (from + 10).to_string())
        .query("sampleRate", "100")
        .send(body)
        .unwrap()
        .status()
        .as_u16()
}

fn total(addr: &str, query: &str, ty: &str) -> u64 {
    let mut r = agent()
        .get(&format!("http://{addr}/api/profile.folded"))
        .query("query", query)
        .query("type", ty)
        .query("from", "now-1h")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.body_mut().read_to_string().unwrap();
    stackwatch_profile::parse_folded(&text)
        .unwrap()
        .values()
        .sum()
}

/// Waits until `f` holds (the writer flushes every 100 ms).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn pushes_land_in_clickhouse_by_type_and_a_retry_counts_once_across_restarts() {
    let ch = ClickHouse::start();
    ch.query("CREATE DATABASE pushed").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut c, addr) = collector(dir.path(), &ch);
    let from = stackwatch_profile::clock::unix_s() - 60;
    let cpu = b"main;decode;parse 30\nmain;encode 12\n";
    assert_eq!(push(&addr, "chpush.cpu{env=ci}", "folded", from, cpu), 200);
    let heap = stackwatch_profile::pprof::encode_typed(
        &stackwatch_profile::Profile::from_folded("main;alloc_rows 65536\n", 0).unwrap(),
        "alloc_space",
        "bytes",
    );
    assert_eq!(push(&addr, "chpush{env=ci}", "pprof", from, &heap), 200);
    eventually("the CPU push is stored", || {
        total(&addr, r#"{service="chpush"}"#, "cpu") == 42
    });
    assert_eq!(total(&addr, r#"{service="chpush", env="ci"}"#, "cpu"), 42);
    assert_eq!(total(&addr, r#"{service="chpush", env="prod"}"#, "cpu"), 0);
    eventually("the allocation push is stored as its own type", || {
        total(&addr, r#"{service="chpush"}"#, "alloc_space") == 65536
    });
    // A retry while the collector remembers it: acknowledged, not stored again.
    assert_eq!(push(&addr, "chpush.cpu{env=ci}", "folded", from, cpu), 200);
    // A retry after a restart (the collector's memory of pushes is gone): ClickHouse
    // keeps one row per (content digest, stack), so it still counts once.
    c.0.kill().unwrap();
    c.0.wait().unwrap();
    let (_c2, addr) = collector(dir.path(), &ch);
    assert_eq!(push(&addr, "chpush.cpu{env=ci}", "folded", from, cpu), 200);
    // A different push of the same interval (another process of the service) adds.
    assert_eq!(
        push(
            &addr,
            "chpush.cpu{env=ci}",
            "folded",
            from,
            b"main;encode 8\n"
        ),
        200
    );
    eventually("the second process's push is stored", || {
        total(&addr, r#"{service="chpush"}"#, "cpu") == 50
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(total(&addr, r#"{service="chpush"}"#, "cpu"), 50);
    assert_eq!(total(&addr, r#"{service="chpush"}"#, "alloc_space"), 65536);
}
