//! Hostile and broken binlogs: each is a clear error naming file and position, exits
//! non-zero and leaves the checkpoint where it was; `--skip-unknown` goes past unknown
//! event types; a half-written last event waits under `--follow`.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use binlog_streamer::frame::BINLOG_MAGIC;
use binlog_streamer::generate::BinlogGenerator;
use common::*;

/// A binlog file of `rows` generated row changes; returns its bytes.
fn write_binlog(path: &Path, rows: usize) -> Vec<u8> {
    let mut bytes = BINLOG_MAGIC.to_vec();
    BinlogGenerator::new(11).write_rows(&mut bytes, rows, 1_700_000_000);
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// Offsets of the events in a binlog file.
fn event_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 4;
    while off + 19 <= bytes.len() {
        out.push(off);
        off += u32::from_le_bytes(bytes[off + 9..off + 13].try_into().unwrap()) as usize;
    }
    out
}

fn file_arg(p: &Path) -> String {
    format!("file:{}", p.display())
}

#[test]
fn a_corrupt_byte_is_a_checksum_error_at_its_position_and_the_checkpoint_stays() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("generated-bin.000001");
    let mut bytes = write_binlog(&bin, 500);
    let offsets = event_offsets(&bytes);
    let victim = offsets[offsets.len() / 2];
    bytes[victim + 25] ^= 0x40;
    std::fs::write(&bin, &bytes).unwrap();
    let cp = dir.path().join("cp.json");
    let before = r#"{"position":{"file":"generated-bin.000001","pos":4},"rows_acked":0}"#;
    std::fs::write(&cp, before).unwrap();
    let (ok, stdout, stderr) = run_worker(&[
        "--source",
        &file_arg(&bin),
        "--checkpoint",
        &cp.display().to_string(),
        "--sink",
        "stdout",
        "--profile-hz",
        "0",
    ]);
    assert!(!ok, "must exit non-zero");
    assert!(
        stderr.contains(&format!("generated-bin.000001:{victim}"))
            && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&cp).unwrap(),
        before,
        "checkpoint untouched"
    );
    assert!(
        stdout.is_empty(),
        "nothing published past a bad event: {stdout}"
    );
}

#[test]
fn truncated_files_and_impossible_lengths_are_errors_without_follow() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("generated-bin.000001");
    let bytes = write_binlog(&bin, 50);
    let offsets = event_offsets(&bytes);
    let cut = offsets[offsets.len() - 2] + 10;
    std::fs::write(&bin, &bytes[..cut]).unwrap();
    let (ok, _, stderr) = run_worker(&[
        "--source",
        &file_arg(&bin),
        "--sink",
        "null",
        "--profile-hz",
        "0",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("file ends inside an event") && stderr.contains("--follow"),
        "{stderr}"
    );

    let mut bad = bytes.clone();
    let at = offsets[3];
    bad[at + 9..at + 13].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&bin, &bad).unwrap();
    let (ok, _, stderr) = run_worker(&[
        "--source",
        &file_arg(&bin),
        "--sink",
        "null",
        "--profile-hz",
        "0",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(":{at}: event length 7 is impossible")),
        "{stderr}"
    );

    std::fs::write(&bin, b"GIF89a not a binlog").unwrap();
    let (ok, _, stderr) = run_worker(&[
        "--source",
        &file_arg(&bin),
        "--sink",
        "null",
        "--profile-hz",
        "0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("not a binlog file"), "{stderr}");
}

#[test]
fn unknown_event_types_stop_the_worker_unless_skip_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("generated-bin.000001");
    let bytes = write_binlog(&bin, 40);
    let offsets = event_offsets(&bytes);
    // Insert a well-formed, checksummed event of type 200 after the format description.
    let at = offsets[1];
    let mut ev = Vec::new();
    ev.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    ev.push(200);
    ev.extend_from_slice(&1u32.to_le_bytes());
    ev.extend_from_slice(&(19u32 + 6 + 4).to_le_bytes());
    ev.extend_from_slice(&0u32.to_le_bytes());
    ev.extend_from_slice(&0u16.to_le_bytes());
    ev.extend_from_slice(b"future");
    let crc = crc32fast::hash(&ev);
    ev.extend_from_slice(&crc.to_le_bytes());
    let mut with_unknown = bytes[..at].to_vec();
    with_unknown.extend_from_slice(&ev);
    with_unknown.extend_from_slice(&bytes[at..]);
    std::fs::write(&bin, &with_unknown).unwrap();

    let (ok, stdout, stderr) = run_worker(&[
        "--source",
        &file_arg(&bin),
        "--sink",
        "stdout",
        "--profile-hz",
        "0",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("generated-bin.000001:{at}"))
            && stderr.contains("unknown event type 200")
            && stderr.contains("--skip-unknown"),
        "{stderr}"
    );
    assert!(stdout.is_empty());

    let (ok, stdout, stderr) = run_worker(&[
        "--source",
        &file_arg(&bin),
        "--sink",
        "stdout",
        "--skip-unknown",
        "--profile-hz",
        "0",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 40);
    assert!(stderr.contains("binlog-streamer: 40 events"), "{stderr}");
}

#[test]
fn follow_waits_for_the_rest_of_a_half_written_event() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("generated-bin.000001");
    let bytes = write_binlog(&bin, 30);
    let offsets = event_offsets(&bytes);
    let cut = offsets[offsets.len() / 2] + 7; // inside an event's header
    std::fs::write(&bin, &bytes[..cut]).unwrap();
    let out = dir.path().join("out.jsonl");
    let mut child = worker(&[
        "--source",
        &file_arg(&bin),
        "--follow",
        "--sink",
        &format!("file:{}", out.display()),
        "--linger-ms",
        "5",
        "--profile-hz",
        "0",
    ])
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting, not failed"
    );
    // The rest arrives in two writes, the second splitting an event body.
    let mut f = std::fs::OpenOptions::new().append(true).open(&bin).unwrap();
    let mid = cut + (bytes.len() - cut) / 2;
    f.write_all(&bytes[cut..mid]).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    f.write_all(&bytes[mid..]).unwrap();
    f.flush().unwrap();
    wait_until("all 30 rows", Duration::from_secs(20), || {
        read_lines(&out).len() >= 30
    });
    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("binlog-streamer: 30 events"), "{stderr}");
}

#[test]
fn generate_stops_after_exactly_n_events_and_bad_flags_are_refused() {
    let (ok, stdout, stderr) = run_worker(&[
        "--source",
        "generate",
        "--events",
        "1234",
        "--sink",
        "stdout",
        "--profile-hz",
        "0",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1234);
    for line in stdout.lines().take(50) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["database"], "shop");
    }
    let (ok, _, stderr) = run_worker(&["--source", "postgres://x", "--sink", "null"]);
    assert!(!ok);
    assert!(stderr.contains("expected mysql://"), "{stderr}");
    let (ok, _, stderr) = run_worker(&["--source", "generate", "--sink", "kafka://x"]);
    assert!(!ok);
    assert!(stderr.contains("--sink"), "{stderr}");
    let (ok, _, stderr) = run_worker(&[
        "--source", "generate", "--format", "avro", "--sink", "stdout",
    ]);
    assert!(!ok);
    assert!(stderr.contains("JSON lines"), "{stderr}");
}

#[test]
fn sigterm_flushes_checkpoints_and_prints_the_summary_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let port = free_port();
    let mut child = worker(&[
        "--source",
        "generate",
        "--rate",
        "2000",
        "--sink",
        "null",
        "--checkpoint",
        &cp.display().to_string(),
        "--http-addr",
        &format!("127.0.0.1:{port}"),
    ])
    .spawn()
    .unwrap();
    let stderr = drain_stderr(&mut child);
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| -> Option<String> {
        ureq::get(&format!("{base}{path}"))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    };
    let mut metrics = String::new();
    wait_until(
        "published events in /metrics",
        Duration::from_secs(20),
        || {
            metrics = get("/metrics").unwrap_or_default();
            metrics.lines().any(|l| {
                l.starts_with("binlog_streamer_events_published_total ") && !l.ends_with(" 0")
            })
        },
    );
    assert!(
        metrics.contains("binlog_streamer_latency_seconds_bucket{le=\"+Inf\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stackwatch_samples_total"),
        "the profiler's metrics too: {metrics}"
    );
    let windows = get("/windows?after=0").expect("/windows");
    assert!(windows.contains("\"instance\""), "{windows}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success());
    // The child has exited, so its stderr ends and the drain thread closes the channel
    // once it has passed on every line: wait for that, not for what arrived so far (on a
    // busy machine the summary line can still be in flight).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while let Ok(line) =
        stderr.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        lines.push(line);
    }
    let summary = lines
        .iter()
        .find(|l| l.starts_with("binlog-streamer: ") && l.contains(" events in "))
        .unwrap_or_else(|| panic!("no summary line in {lines:?}"));
    assert!(
        summary.contains("p50") && summary.contains("p99"),
        "{summary}"
    );
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert!(
        checkpoint["rows_acked"].as_u64().unwrap() > 0,
        "{checkpoint}"
    );
}
