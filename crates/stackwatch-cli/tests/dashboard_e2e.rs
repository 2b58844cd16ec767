//! The dashboard in a real headless browser (Debian's chromium driven by playwright-core,
//! tests/e2e/dashboard.mjs) against a live collector fed by three real profiled workers
//! (two `version="main"`, one `version="canary"`), plus stored targets with a hostile
//! frame name and with 10 000 distinct stacks. Screenshots go to
//! `target/e2e-screenshots/` (or `$STACKWATCH_SCREENSHOTS`); with
//! `STACKWATCH_DOC_IMAGES=1` the two the README shows are also copied to `docs/images/`.
//! A release build also asserts that Explore on the 10 000-stack profile is ready within
//! 1 s (a debug build only reports it).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{binlog_worker, spawn_listening, Proc};

use stackwatch_store::{IngestWindow, ProfileStore, SqliteStore, StoreOptions};

#[test]
#[ignore = "needs chromium and playwright-core (tests/e2e): run via scripts/test.sh"]
fn dashboard_fleet_explore_compare_and_hostile_names_in_chromium() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let e2e = repo.join("tests/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/e2e first (scripts/test.sh does)"
    );
    let shots = std::env::var_os("STACKWATCH_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/e2e-screenshots"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Stored targets: a hostile frame name, and a profile with 10 000 distinct stacks.
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut s =
            SqliteStore::open(&data.join("stackwatch.db"), StoreOptions::default()).unwrap();
        let evil = [("service".to_string(), "evil".to_string())].into();
        let big = [("service".to_string(), "big".to_string())].into();
        s.ingest(&[
            IngestWindow {
                labeled: Vec::new(),
                target: evil,
                instance: "x".into(),
                seq: 1,
                start_unix_s: now - 300,
                period_ns: 10_101_010,
                stacks: vec![
                    ("main;<script>window.__pwned=1</script>".into(), 50),
                    (
                        "main;<img src=x onerror=\"window.__pwned=2\">;\"quoted\" & 'apostrophe'"
                            .into(),
                        30,
                    ),
                ],
            },
            IngestWindow {
                labeled: Vec::new(),
                target: big,
                instance: "y".into(),
                seq: 1,
                start_unix_s: now - 300,
                period_ns: 10_101_010,
                stacks: (0..10_000)
                    .map(|i| {
                        let frames: Vec<String> = (0..14)
                            .map(|d| format!("app::module_{}::function_{}", d, (i >> d) & 3))
                            .collect();
                        (
                            format!("worker;{};leaf_{i}", frames.join(";")),
                            1 + (i % 7) as u64,
                        )
                    })
                    .collect(),
            },
        ])
        .unwrap();
    }
    let workers: Vec<(Proc, String, &str, &str)> = [("a", "main"), ("b", "main"), ("c", "canary")]
        .into_iter()
        .map(|(i, v)| {
            // The canary tries Avro, as in `stackwatch demo`: Compare has a real change.
            // 999 Hz: a release build's worker uses a few hundredths of a core, and the
            // verdict needs more than a handful of periods per window to see it.
            let extra: &[&str] = if v == "canary" {
                &["--profile-hz", "999", "--format", "avro"]
            } else {
                &["--profile-hz", "999"]
            };
            let (p, addr) = binlog_worker(extra);
            (p, addr, i, v)
        })
        .collect();
    let mut cfg = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"1s\"\ntimeout = \"2s\"\n[storage]\nflush_interval = \"200ms\"\n",
        data.display()
    );
    for (_, addr, inst, version) in &workers {
        cfg.push_str(&format!(
            "[[targets]]\nurl = \"http://{addr}\"\nlabels = {{ service = \"binlog-streamer\", instance = \"{inst}\", version = \"{version}\" }}\n"
        ));
    }
    let config = dir.path().join("stackwatch.toml");
    std::fs::write(&config, cfg).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_stackwatch"));
    server.args(["server", "--config"]).arg(&config);
    let (_server, addr) = spawn_listening(server);
    let url = format!("http://{addr}");
    // Let a few windows arrive (for the README's pictures, a minute and a half of them).
    let doc_images = std::env::var_os("STACKWATCH_DOC_IMAGES").is_some_and(|v| v == "1");
    std::thread::sleep(Duration::from_secs(if doc_images { 90 } else { 6 }));
    let out = Command::new("node")
        .arg(e2e.join("dashboard.mjs"))
        .arg(&url)
        .arg(&shots)
        .env(
            "STACKWATCH_E2E_RELEASE",
            if cfg!(debug_assertions) { "0" } else { "1" },
        )
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\nscreenshots in {}",
        shots.display()
    );
    assert!(stdout.contains("dashboard e2e: ok"));
    for s in [
        "fleet.png",
        "explore.png",
        "explore-function.png",
        "compare.png",
        "hostile.png",
        "dashboard-explore.png",
        "dashboard-compare.png",
    ] {
        assert!(shots.join(s).exists(), "{s} written");
    }
    if doc_images {
        for s in ["dashboard-explore.png", "dashboard-compare.png"] {
            std::fs::copy(shots.join(s), repo.join("docs/images").join(s)).unwrap();
        }
    }
    drop(workers);
}
