//! Memory a profiler adds to a service, by how much debug info the service was built
//! with: the same workload (`examples/debuginfo_workload.rs`) built three times, with
//! `CARGO_PROFILE_RELEASE_DEBUG=0`, `1` and `2` (each into its own target directory under
//! `target/debuginfo-rss/`), run bare, under stackwatch and under pprof-rs (999 Hz, two
//! busy threads), rounds interleaved, medians reported.
//!
//! `cargo bench -p stackwatch --bench debuginfo_rss`
//! (STACKWATCH_BENCH_ROUNDS, default 3; STACKWATCH_BENCH_SECONDS of workload, default 3;
//! STACKWATCH_BENCH_WORKSPACE builds the workload from another checkout, to compare).
//!
//! RSS added = (RssAnon, RssFile after the workload − before the profiler started) of
//! the profiled run minus the same of the bare run; peak = VmHWM − RSS before, minus the
//! bare run's. `memory_bytes` is what the profiler reports (`stackwatch_memory_bytes`),
//! compared with the anonymous memory it added.

use std::path::{Path, PathBuf};
use std::process::Command;

include!("support/child_result.rs");

const LEVELS: [&str; 3] = ["0", "1", "2"];
const VARIANTS: [&str; 3] = ["none", "stackwatch", "pprof-rs"];

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    anon_before: f64,
    file_before: f64,
    anon_after: f64,
    file_after: f64,
    hwm: f64,
    memory_bytes: f64,
    samples: f64,
}

fn build(workspace: &Path, level: &str) -> PathBuf {
    let target = workspace
        .join("target")
        .join("debuginfo-rss")
        .join(format!("debug-{level}"));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "stackwatch",
            "--example",
            "debuginfo_workload",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_PROFILE_RELEASE_DEBUG", level)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the workload at debug = {level}");
    target.join("release/examples/debuginfo_workload")
}

fn run(bin: &Path, variant: &str, secs: &str) -> Run {
    let out = Command::new(bin)
        .args([variant, secs])
        .output()
        .expect("workload runs");
    let f: Vec<f64> = result_fields(&out, variant)
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    Run {
        anon_before: f[0],
        file_before: f[1],
        anon_after: f[2],
        file_after: f[3],
        hwm: f[4],
        memory_bytes: f[5],
        samples: f[6],
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn mib(kb: f64) -> String {
    format!("{:+.1}", kb / 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("STACKWATCH_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let secs = std::env::var("STACKWATCH_BENCH_SECONDS").unwrap_or_else(|_| "3".into());
    let workspace = std::env::var_os("STACKWATCH_BENCH_WORKSPACE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    println!(
        "# debug info and profiler memory: {rounds} rounds, {secs} s of workload on 2 threads at 999 Hz, workspace {}",
        workspace.display()
    );
    println!();
    println!("| debug | binary | profiler | RSS added: anon | file-backed | total | peak RSS added | memory_bytes | memory_bytes / anon added | samples |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for level in LEVELS {
        let bin = build(&workspace, level);
        let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0) as f64;
        let mut runs: Vec<(&str, Run)> = Vec::new();
        for _ in 0..rounds {
            for v in VARIANTS {
                runs.push((v, run(&bin, v, &secs)));
            }
        }
        let of = |v: &str, f: &dyn Fn(&Run) -> f64| -> f64 {
            median(
                runs.iter()
                    .filter(|(x, _)| *x == v)
                    .map(|(_, r)| f(r))
                    .collect(),
            )
        };
        let anon = |r: &Run| r.anon_after - r.anon_before;
        let file = |r: &Run| r.file_after - r.file_before;
        let peak = |r: &Run| r.hwm - (r.anon_before + r.file_before);
        let (bare_anon, bare_file, bare_peak) =
            (of("none", &anon), of("none", &file), of("none", &peak));
        for v in VARIANTS {
            if v == "none" {
                println!(
                    "| {level} | {:.1} MiB | none | {:.1} MiB (abs {:.1}) | {:.1} MiB (abs {:.1}) | | | | | |",
                    size / 1048576.0,
                    bare_anon / 1024.0,
                    of("none", &|r| r.anon_after) / 1024.0,
                    bare_file / 1024.0,
                    of("none", &|r| r.file_after) / 1024.0,
                );
                continue;
            }
            let a = of(v, &anon) - bare_anon;
            let f = of(v, &file) - bare_file;
            let total = of(v, &|r| anon(r) + file(r)) - (bare_anon + bare_file);
            let p = of(v, &peak) - bare_peak;
            let mb = of(v, &|r| r.memory_bytes);
            let (mb_text, ratio) = if v == "stackwatch" {
                (
                    format!("{:.1} MiB", mb / 1048576.0),
                    if a > 0.0 {
                        format!("{:.0}%", mb / 1024.0 / a * 100.0)
                    } else {
                        "n/a".into()
                    },
                )
            } else {
                ("n/a".into(), "n/a".into())
            };
            println!(
                "| {level} | {:.1} MiB | {v} | {} MiB | {} MiB | {} MiB | {} MiB | {mb_text} | {ratio} | {:.0} |",
                size / 1048576.0,
                mib(a),
                mib(f),
                mib(total),
                mib(p),
                of(v, &|r| r.samples),
            );
        }
    }
}
