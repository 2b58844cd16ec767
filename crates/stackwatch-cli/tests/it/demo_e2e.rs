//! `stackwatch demo` end to end: the binary itself, its printed curl lines run as printed
//! (the profile, and CPU by table: a series per generated table), the canary-vs-main
//! diff, Ctrl-C stopping every worker, and a second run serving what the first one
//! stored.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use stackwatch_store::{ProfileReader, Selector, SqliteStore};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn alive(pid: i32) -> bool {
    // Safety: signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A running `stackwatch demo`: the process, its stdout lines, its workers' pids and the
/// curl lines it printed.
struct DemoRun {
    demo: Child,
    lines: Receiver<String>,
    pids: Vec<i32>,
    curl: Option<String>,
    by_table: Option<String>,
}

/// Starts the demo on `port` with its data in `dir/data` and waits until it says ready.
fn start_demo(dir: &Path, port: u16) -> DemoRun {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_stackwatch"))
        .args(["demo", "--port", &port.to_string(), "--rate", "5000"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut pids = Vec::new();
    let mut curl = None;
    let mut by_table = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo reports readiness within 2 minutes");
        if let Some(rest) = line.trim_start().strip_prefix("worker ") {
            let pid: i32 = rest
                .split_whitespace()
                .skip_while(|w| *w != "pid")
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            pids.push(pid);
        }
        if let Some(cmd) = line.strip_prefix("profile: ") {
            curl = Some(cmd.to_string());
        }
        if let Some(cmd) = line.strip_prefix("CPU by table: curl ") {
            by_table = Some(format!("curl {cmd}"));
        }
        if line.contains("ready after") {
            break;
        }
    }
    DemoRun {
        demo,
        lines: rx,
        pids,
        curl,
        by_table,
    }
}

/// Ctrl-C: the demo exits successfully, says so, and leaves no worker behind.
fn stop_demo(mut run: DemoRun) {
    unsafe { libc::kill(run.demo.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = run.demo.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo stops on SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    for pid in &run.pids {
        assert!(!alive(*pid), "worker {pid} still running after Ctrl-C");
    }
    // The reader thread sees EOF once the demo has exited; collect everything it sent.
    let stopped: Vec<String> = run.lines.iter().collect();
    assert!(
        stopped
            .iter()
            .any(|l| l.contains("stopped the collector and 3 workers")),
        "{stopped:?}"
    );
}

/// Sum of the samples stored for the demo's service between two Unix seconds.
fn stored_samples(dir: &Path, from: i64, to: i64) -> u64 {
    let store = SqliteStore::open_reader(&dir.join("data/stackwatch.db")).unwrap();
    let sel = Selector::parse(r#"{service="binlog-streamer"}"#).unwrap();
    store.profile(&sel, from, to).unwrap().total()
}

/// The body of a GET that must succeed.
fn get_text(url: &str) -> String {
    ureq::get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Names where debuggers find them (issue 14): with Debian's `libc6-dbg` installed
/// (scripts/test.sh installs it), libc's internals are named from its debug file, so no
/// more than 2% of self time is left in `[libc.so.6]`; and no stack is rooted at a
/// thread's tid (`thread-<digits>`).
fn names_libc_and_roots_threads_without_tids(port: u16) {
    let top: serde_json::Value = serde_json::from_str(&get_text(&format!(
        "http://127.0.0.1:{port}/api/top?query=%7Bservice%3D%22binlog-streamer%22%7D&from=now-15m&limit=10000"
    )))
    .unwrap();
    let functions = top["functions"].as_array().expect("functions");
    let total: f64 = functions.iter().filter_map(|f| f["self"].as_f64()).sum();
    assert!(total > 0.0, "{top}");
    let libc: f64 = functions
        .iter()
        .filter(|f| f["name"] == "[libc.so.6]")
        .filter_map(|f| f["self"].as_f64())
        .sum();
    let installed = std::path::Path::new("/usr/share/doc/libc6-dbg").exists();
    assert!(
        libc / total <= 0.02,
        "[libc.so.6] has {:.1}% of self time (libc6-dbg installed: {installed}); top: {}",
        libc / total * 100.0,
        functions
            .iter()
            .take(15)
            .map(|f| format!("{} {}", f["name"], f["self"]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let folded = get_text(&format!(
        "http://127.0.0.1:{port}/api/profile.folded?query=%7Bservice%3D%22binlog-streamer%22%7D&from=now-15m"
    ));
    assert!(folded.lines().count() > 10, "{folded}");
    for line in folded.lines() {
        let root = line.split(';').next().unwrap_or("");
        let tid_root = root
            .strip_prefix("thread-")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
        assert!(!tid_root, "a stack rooted at a tid: {line}");
    }
}

#[test]
#[ignore = "needs curl: run via scripts/test.sh"]
fn the_demo_serves_its_workers_stops_them_on_ctrl_c_and_a_rerun_serves_the_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let started = unix_now() - 1;
    let run = start_demo(dir.path(), port);
    assert_eq!(run.pids.len(), 3, "three workers");
    let curl = run.curl.clone().expect("a curl line");
    assert!(
        curl.starts_with("curl ") && curl.ends_with("> profile.svg"),
        "{curl}"
    );

    // Let a few windows arrive (the store holds the workers' samples for 6 s or more of
    // their time), then run the line exactly as printed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = unix_now();
        let seconds_with_samples = (now - 60..=now)
            .filter(|t| stored_samples(dir.path(), *t, t + 1) > 0)
            .count();
        if seconds_with_samples >= 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo stored samples in {seconds_with_samples} seconds of the last minute"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(&curl)
        .current_dir(dir.path())
        .status()
        .expect("sh");
    assert!(status.success(), "{curl}");
    let svg = std::fs::read_to_string(dir.path().join("profile.svg")).unwrap();
    assert!(
        svg.starts_with("<?xml") || svg.contains("<svg"),
        "{}",
        &svg[..svg.len().min(300)]
    );
    assert!(
        svg.contains("binlog_streamer::decode::RowDecoder::decode"),
        "the decode path shows in the profile"
    );

    // CPU by table, as printed: a series per table the generator writes, each with CPU.
    let by_table = run.by_table.clone().expect("a CPU by table curl line");
    assert!(by_table.contains("group_by=table"), "{by_table}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&by_table)
        .output()
        .expect("sh");
    assert!(out.status.success(), "{by_table}");
    let ts: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{by_table}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let cores = |name: &str| -> f64 {
        ts["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"] == name)
            .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p[1].as_f64())
            .sum()
    };
    for table in binlog_streamer::generate::TABLES {
        assert!(cores(table) > 0.0, "no CPU for table={table}: {ts}");
    }
    assert!(
        cores("orders") > cores("users"),
        "orders costs more than users: {ts}"
    );

    names_libc_and_roots_threads_without_tids(port);

    let diff_url = format!(
        "http://127.0.0.1:{port}/api/diff.folded?base=%7Bversion%3D%22main%22%7D&query=%7Bversion%3D%22canary%22%7D&from=now-15m"
    );
    let diff = get_text(&diff_url);
    assert!(
        diff.lines().count() > 10,
        "diff of canary vs main is not empty: {diff}"
    );
    let svg_url = diff_url.replace("diff.folded", "diff.svg");
    let diff_svg = get_text(&svg_url);
    assert!(
        diff_svg.contains("binlog_streamer"),
        "diff SVG names worker frames"
    );

    // Ctrl-C, then a second run on the same data directory serves the first run's data.
    stop_demo(run);
    let stopped = unix_now() + 1;
    let first = stored_samples(dir.path(), started, stopped);
    assert!(first > 0, "the first run stored samples");
    // The second run's windows start after `stopped`, outside the range compared.
    std::thread::sleep(Duration::from_secs(2));
    let second = start_demo(dir.path(), port);
    let url = format!(
        "http://127.0.0.1:{port}/api/profile.folded?query=%7Bservice%3D%22binlog-streamer%22%7D&from={started}&to={stopped}"
    );
    let folded = get_text(&url);
    let served: u64 = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(
        served, first,
        "the second run serves every sample the first run stored"
    );
    stop_demo(second);
}

#[test]
fn a_taken_port_is_named_with_the_flag_to_change_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stackwatch"))
        .args(["demo", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port} is taken")) && err.contains("--port"),
        "{err}"
    );
}
