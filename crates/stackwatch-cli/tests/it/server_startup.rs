//! Issue #10, item 7, at the process level: `stackwatch server` refuses a store it
//! cannot write before it listens, an address in use is one line (no backtrace, even
//! with RUST_BACKTRACE set), and a worker started with a token file serves nobody
//! without it while a collector given the same file scrapes it.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

fn server(config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackwatch"));
    cmd.args(["server", "--config"]).arg(config);
    cmd.env("RUST_BACKTRACE", "1").env("RUST_LOG", "warn");
    cmd
}

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("stackwatch.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn an_address_in_use_is_one_line_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    );
    let out = server(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_store_it_cannot_write_is_refused_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    // An existing store whose file is read-only to the server's user.
    drop(
        stackwatch_store::SqliteStore::open(&data.join("stackwatch.db"), Default::default())
            .unwrap(),
    );
    for leftover in ["stackwatch.db-wal", "stackwatch.db-shm"] {
        let _ = std::fs::remove_file(data.join(leftover));
    }
    std::fs::set_permissions(
        data.join("stackwatch.db"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Root writes any file, so as root the server runs as nobody (setpriv, util-linux).
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        // A copy nobody can reach: the build directory may sit below a private home.
        let exe = dir.path().join("stackwatch");
        std::fs::copy(env!("CARGO_BIN_EXE_stackwatch"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_stackwatch"))
    };
    let out = cmd
        .args(["server", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running the server (as root this needs setpriv from util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        !stdout.contains("listening"),
        "it must not listen: {stdout}"
    );
    assert!(stderr.contains("cannot be written"), "{stderr}");
}

#[test]
fn a_worker_with_a_token_file_is_scraped_only_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("worker.token");
    std::fs::write(&token, "t0ken-for-the-worker\n").unwrap();
    let token_arg = token.to_string_lossy().into_owned();
    let (_worker, addr) = common::binlog_worker(&["--http-token-file", &token_arg]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    for path in ["/windows?after=0", "/metrics", "/"] {
        let r = agent.get(format!("http://{addr}{path}")).call().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
    }
    let r = agent
        .get(format!("http://{addr}/metrics"))
        .header("Authorization", "Bearer t0ken-for-the-worker")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A collector with the same file scrapes it.
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"500ms\"\n[[targets]]\nurl = \"http://{addr}\"\nbearer_token_file = \"worker.token\"\nlabels = {{ service = \"private\" }}\n",
            dir.path().join("data").display()
        ),
    );
    let (_server, api) = common::spawn_listening(server(&config));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut r = agent
            .get(format!("http://{api}/api/targets"))
            .call()
            .unwrap();
        let body = r.body_mut().read_to_string().unwrap();
        let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
        if targets[0]["samples_ingested_total"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(targets[0]["up"], true, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "never scraped: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
