//! What the collector's benchmarks share: a `stackwatch server` child process and its
//! /metrics, the CPU time /proc reports for a process, the simulated fleet's windows,
//! and medians (of a profile query's time).

// Every bench binary compiles this module and uses a subset of it.
#![allow(dead_code)]

pub mod otlp_request;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use stackwatch_store::{IngestWindow, Labels, ProfileReader, Selector};

/// Starts `stackwatch server --config <config>`, logging to `<temp dir>/<log_file>` at the
/// level `$<log_env>` names (`warn` if unset); returns the child and the base URL it
/// prints on its first line.
pub fn spawn_server(config: &Path, log_file: &str, log_env: &str) -> (Child, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_stackwatch"))
        .args(["server", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(std::env::temp_dir().join(log_file)).unwrap())
        .env(
            "RUST_LOG",
            std::env::var(log_env).unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let api = line.trim().rsplit(' ').next().unwrap().to_string();
    (server, api)
}

/// The sum of the samples of every series in the collector's /metrics at `api` whose
/// line starts with `name` (a metric name, or a name and `{` for labeled series only).
pub fn metric_sum(api: &str, name: &str) -> f64 {
    let m = ureq::get(&format!("{api}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    m.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds (user and system) process `pid` has used, from /proc/<pid>/stat.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Milliseconds to read the merged profile of every target from `from` to `to` (Unix
/// seconds) out of `store`: the median of five reads, each asserted non-empty.
pub fn median_profile_ms(store: &dyn ProfileReader, from: i64, to: i64) -> f64 {
    let all = Selector::all();
    median(
        (0..5)
            .map(|_| {
                let t0 = Instant::now();
                let p = store.profile(&all, from, to).unwrap();
                assert!(p.total() > 0);
                t0.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    )
}

/// The median (the upper one of an even count) of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Target `t`'s window `seq` of the simulated fleet, starting at `start_unix_s` with
/// `stacks` (periods of 99 Hz). Its labels: service `svc-<t % 20>`, instance `i-<t>`,
/// version `canary` for every tenth target and `main` for the rest.
pub fn fleet_window(
    t: u64,
    seq: u64,
    start_unix_s: i64,
    stacks: Vec<(String, u64)>,
) -> IngestWindow {
    let target: Labels = [
        ("service".to_string(), format!("svc-{}", t % 20)),
        ("instance".to_string(), format!("i-{t}")),
        (
            "version".to_string(),
            if t.is_multiple_of(10) {
                "canary".into()
            } else {
                "main".to_string()
            },
        ),
    ]
    .into();
    IngestWindow {
        labeled: Vec::new(),
        target,
        instance: format!("inst-{t}"),
        seq,
        start_unix_s,
        period_ns: 10_101_010,
        stacks,
    }
}
