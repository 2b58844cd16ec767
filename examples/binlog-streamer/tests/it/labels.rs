//! CPU by table out of the box: the worker's profile, over the built-in generator's three
//! tables, has samples under every `table`, every `op` and the `sink` label, both through
//! the profiler's API (in this process) and through `/windows?labels=1` of the worker
//! binary (what a collector scrapes).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use binlog_streamer::encode::MessageFormat;
use binlog_streamer::generate::{DATABASE, TABLES};
use binlog_streamer::metrics::WorkerMetrics;
use binlog_streamer::pipeline::{self, PipelineOptions};
use binlog_streamer::sink::SinkSpec;
use binlog_streamer::source::GeneratorSource;
use common::*;
use stackwatch::LabelFilter;

#[test]
fn the_profile_has_samples_under_every_table_op_and_the_sink() {
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .window(Duration::from_secs(1))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = SinkSpec::File(dir.path().join("rows.jsonl"))
        .open(MessageFormat::Json)
        .unwrap();
    // Deterministic input (seed 1); the run is long enough for a few hundred samples
    // on the reader thread even on a fast machine.
    let events = 150_000;
    let summary = pipeline::run(
        Box::new(GeneratorSource::new(1, None, Some(events))),
        sink,
        PipelineOptions::default(),
        Arc::new(WorkerMetrics::default()),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    assert_eq!(summary.events, events);

    let samples = |pairs: &[(&str, &str)]| {
        profiler
            .profile_cumulative_matching(&LabelFilter::new(pairs))
            .total()
    };
    // The reader thread generates, frames, decodes and encodes; the last two are
    // labeled. (The profiler's own threads and the publisher are not the reader.)
    let reader: u64 = profiler
        .profile_cumulative()
        .to_folded()
        .lines()
        .filter(|l| l.starts_with("binlog-reader;"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    let tables: u64 = TABLES.iter().map(|t| samples(&[("table", t)])).sum();
    let mut shares = BTreeMap::new();
    for table in TABLES {
        let n = samples(&[("table", table), ("db", DATABASE)]);
        assert!(n > 0, "no samples under table={table}");
        shares.insert(table, n as f64 / tables as f64);
    }
    for op in ["insert", "update", "delete"] {
        assert!(samples(&[("op", op)]) > 0, "no samples under op={op}");
    }
    assert!(
        samples(&[("table", "orders"), ("op", "update")]) > 0,
        "no samples of updates to orders"
    );
    assert_eq!(
        samples(&[("table", "events"), ("op", "update")]),
        0,
        "the generator never updates events"
    );
    let published = samples(&[("sink", "file")]);
    assert!(published > 0, "no samples under sink=file");
    eprintln!(
        "reader thread {reader} samples, {tables} under a table, per table {shares:.3?}; \
         {published} under sink=file"
    );
    // Decoding and encoding rows is most of the reader's work, and the tables differ:
    // the narrow users table costs visibly less than the wide orders.
    assert!(
        tables * 2 > reader,
        "{tables} of {reader} samples under a table"
    );
    assert!(shares["orders"] > shares["users"] * 1.5, "{shares:?}");
    // The folded text of a table's samples holds the decoder and the encoder.
    let orders = profiler
        .profile_cumulative_matching(&LabelFilter::new(&[("table", "orders")]))
        .to_folded();
    assert!(orders.contains("RowDecoder::decode"), "{orders}");
    profiler.stop();
}

#[test]
fn the_worker_serves_labeled_windows_to_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("file:{}", dir.path().join("rows.jsonl").display());
    let mut child = worker(&[
        "--source",
        "generate",
        "--rate",
        "20000",
        "--sink",
        &out,
        "--http-addr",
        "127.0.0.1:0",
        "--profile-hz",
        "499",
        "--profile-window-secs",
        "1",
    ])
    .spawn()
    .unwrap();
    let lines = drain_stderr(&mut child);
    let addr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker says where it listens");
        if let Some(a) = line.strip_prefix("binlog-streamer: listening on http://") {
            break a.trim().to_string();
        }
    };
    // Everything seen so far, per label key.
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let want = |seen: &BTreeMap<String, BTreeSet<String>>| {
        let has = |k: &str, v: &str| seen.get(k).is_some_and(|s| s.contains(v));
        TABLES.iter().all(|t| has("table", t))
            && ["insert", "update", "delete"].iter().all(|o| has("op", o))
            && has("db", DATABASE)
            && has("sink", "file")
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut after = 0u64;
    let mut unlabeled_response_has_no_labeled = true;
    while !want(&seen) {
        assert!(
            Instant::now() < deadline,
            "labels seen in /windows?labels=1 within 90 s: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let body = ureq::get(&format!("http://{addr}/windows?after={after}&labels=1"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
        for w in resp["windows"].as_array().unwrap() {
            after = after.max(w["seq"].as_u64().unwrap());
            for set in w["labeled"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                for (k, v) in set["labels"].as_object().unwrap() {
                    seen.entry(k.clone())
                        .or_default()
                        .insert(v.as_str().unwrap().to_string());
                }
            }
        }
        // A collector that does not ask for labels gets none.
        let plain = ureq::get(&format!("http://{addr}/windows?after=0"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        unlabeled_response_has_no_labeled &= !plain.contains("\"labeled\"");
    }
    assert!(unlabeled_response_has_no_labeled);
    let (ok, stderr) = terminate(child);
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(ok, "worker failed: {stderr}{}", rest.join("\n"));
}
