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

/// A real profiled worker (`stackwatch-fleet-sim real`) with 1 s windows.
pub fn real_worker(extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackwatch-fleet-sim"));
    cmd.args(["real", "--window-ms", "1000"]).args(extra);
    spawn_listening(cmd)
}
