//! Helpers shared by the process-level tests: child processes that are always reaped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process killed and reaped on drop, so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with stdout piped and returns it with the address from its first line
/// (`listening on ADDR` or `... listening on http://ADDR`).
pub fn spawn_listening(mut cmd: Command) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or("")
        .trim_start_matches("http://")
        .to_string();
    (Proc(child), addr)
}

/// A real `binlog-streamer` worker (run as `stackwatch worker`) on the generator, with
/// its profiler's 1 s windows on a free port; `extra` flags are appended.
pub fn binlog_worker(extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackwatch"))
        .args([
            "worker", "--source", "generate", "--rate", "5000", "--sink", "null",
        ])
        .args(["--http-addr", "127.0.0.1:0", "--profile-window-secs", "1"])
        .args(extra)
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
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the worker prints its address");
    (Proc(child), addr)
}

/// A real profiled worker (`stackwatch-fleet-sim real`) with 1 s windows.
pub fn real_worker(extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackwatch-fleet-sim"));
    cmd.args(["real", "--window-ms", "1000"]).args(extra);
    spawn_listening(cmd)
}

/// The windows a stackwatch worker at `addr` serves (`GET /windows?after=0`).
pub fn windows(addr: &str) -> stackwatch_profile::protocol::WindowsResponse {
    let body = ureq::get(&format!("http://{addr}/windows?after=0"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// Polls the worker at `addr` (up to 90 s: a busy machine closes windows late) until it
/// serves at least `min` closed windows, and returns them.
pub fn wait_windows(addr: &str, min: usize) -> stackwatch_profile::protocol::WindowsResponse {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let snap = windows(addr);
        if snap.windows.len() >= min {
            return snap;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} served {} windows after 90 s, waited for {min}",
            snap.windows.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
