//! The HTTP endpoints: the window protocol, hostile query strings, auth, metrics, pprof.

mod support;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stackwatch::http::{self, HttpOptions};
use stackwatch::protocol::WindowsResponse;

/// One profiler per process: tests in this file take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let mut r = agent().get(url).call().expect("request");
    let status = r.status().as_u16();
    let mut body = Vec::new();
    r.body_mut().as_reader().read_to_end(&mut body).unwrap();
    (status, body)
}

/// Burns CPU until `running` turns false.
fn burn_while(running: &AtomicBool) {
    while running.load(Ordering::Relaxed) {
        support::burn_cpu(Duration::from_millis(5));
    }
}

#[test]
fn window_protocol_returns_each_sample_exactly_once_across_polls() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(250)
        .window(Duration::from_millis(200))
        .retain_windows(100)
        .start()
        .unwrap();
    let server = http::serve(&profiler, "127.0.0.1:0".parse().unwrap()).unwrap();
    let base = format!("http://{}", server.local_addr());
    let worker = std::thread::spawn(|| support::burn_cpu(Duration::from_millis(2500)));
    let mut after = 0u64;
    let mut seqs = Vec::new();
    let mut polled_samples = 0u64;
    let mut instance = None;
    // Polls at uneven intervals (some skip windows) until the worker is done and the
    // polls have seen enough windows and samples; on a busy machine the worker takes
    // longer to burn its CPU time and windows close later, so this waits for them, up
    // to a generous deadline.
    let deadline = Instant::now() + support::DEADLINE;
    let mut round = 0;
    while round < 12
        || ((!worker.is_finished() || seqs.len() < 8 || polled_samples <= 200)
            && Instant::now() < deadline)
    {
        std::thread::sleep(Duration::from_millis(if round % 3 == 0 {
            450
        } else {
            150
        }));
        round += 1;
        let (status, body) = get(&format!("{base}/windows?after={after}"));
        assert_eq!(status, 200);
        let r: WindowsResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(r.version, stackwatch::protocol::PROTOCOL_VERSION);
        assert_eq!(*instance.get_or_insert(r.instance.clone()), r.instance);
        for w in &r.windows {
            assert!(w.seq > after, "window {} served again after {after}", w.seq);
            assert_eq!(w.samples, w.stacks.iter().map(|s| s.1).sum::<u64>());
            seqs.push(w.seq);
            polled_samples += w.samples;
        }
        if let Some(last) = r.windows.last() {
            after = last.seq;
        }
    }
    worker.join().unwrap();
    profiler.stop();
    // Contiguous, no duplicates: nothing lost or doubled across polls (even those that
    // skipped windows).
    assert!(seqs.len() >= 8, "too few windows: {seqs:?}");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // Everything the windows hold equals a fresh read of all of them.
    let all = profiler.windows_after(0);
    let upto: u64 = all
        .windows
        .iter()
        .filter(|w| w.seq <= after)
        .map(|w| w.samples)
        .sum();
    assert_eq!(polled_samples, upto);
    assert!(polled_samples > 200, "{polled_samples}");
}

#[test]
fn malformed_queries_get_400_and_the_server_keeps_serving() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder().start().unwrap();
    let server = http::serve(&profiler, "127.0.0.1:0".parse().unwrap()).unwrap();
    let base = format!("http://{}", server.local_addr());
    for path in [
        "/?seconds=abc",
        "/?seconds=-1",
        "/?seconds=0",
        "/stacks?seconds=1e3",
        "/?seconds=99999999999999999999999",
        "/flamegraph.svg?seconds=%ff%fe",
        "/windows?after=x",
        "/windows?after=-5",
        "/debug/pprof/profile?seconds=0",
        "/debug/pprof/profile?seconds=100000",
        "/?seconds=1&seconds=2",
    ] {
        let (status, body) = get(&format!("{base}{path}"));
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(!body.is_empty(), "{path}: a 400 says why");
    }
    let (status, _) = get(&format!("{base}/?seconds=5"));
    assert_eq!(status, 200);
    let (status, _) = get(&format!("{base}/nope"));
    assert_eq!(status, 404);
}

#[test]
fn every_endpoint_answers_with_its_format() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .start()
        .unwrap();
    let server = http::serve(&profiler, "127.0.0.1:0".parse().unwrap()).unwrap();
    let base = format!("http://{}", server.local_addr());
    // Burns through the capture below, however long the machine makes it take.
    let running = Arc::new(AtomicBool::new(true));
    let worker = std::thread::Builder::new()
        .name("endpoint-burner".into())
        .spawn({
            let running = running.clone();
            move || burn_while(&running)
        })
        .unwrap();
    // Sampled already before the capture starts (on a busy machine the burner may wait
    // for a core, and for the aggregator's drain, well past its start).
    support::wait_for(|| {
        let p = profiler.profile(Duration::from_secs(60));
        (
            p.stacks.keys().any(|s| s.starts_with("endpoint-burner;")),
            (),
        )
    });
    // The pprof capture blocks for its duration, as Go's does.
    let t = Instant::now();
    let (status, pb) = get(&format!("{base}/debug/pprof/profile?seconds=1"));
    assert_eq!(status, 200);
    assert!(t.elapsed() >= Duration::from_secs(1));
    let p = stackwatch_profile::pprof::decode(&pb, 64 << 20, &Default::default()).unwrap();
    assert!(
        p.stacks.keys().any(|s| s.starts_with("endpoint-burner;")),
        "{:?}",
        p.stacks.keys().take(5).collect::<Vec<_>>()
    );
    running.store(false, Ordering::Relaxed);
    worker.join().unwrap();

    let (status, folded) = get(&format!("{base}/"));
    assert_eq!(status, 200);
    let folded = String::from_utf8(folded).unwrap();
    let stacks = stackwatch_profile::parse_folded(&folded).unwrap();
    assert!(stacks.keys().any(|s| s.starts_with("endpoint-burner;")));
    let (status, svg) = get(&format!("{base}/flamegraph.svg?seconds=60"));
    assert_eq!(status, 200);
    assert!(String::from_utf8(svg).unwrap().contains("endpoint-burner"));
    let (status, metrics) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    for name in [
        "stackwatch_samples_total",
        "stackwatch_dropped_samples_total",
        "stackwatch_pruned_stacks_total",
        "stackwatch_handler_seconds_total",
        "stackwatch_aggregator_cpu_seconds_total",
        "stackwatch_memory_bytes",
        "stackwatch_threads_tracked",
    ] {
        assert!(
            metrics.contains(&format!("\n{name} ")),
            "{name} missing:\n{metrics}"
        );
    }
    assert!(metrics.contains("stackwatch_per_thread_timers 1"));
}

#[test]
fn a_bearer_token_guards_every_endpoint() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder().start().unwrap();
    let server = http::serve_with(
        &profiler,
        "127.0.0.1:0".parse().unwrap(),
        HttpOptions {
            bearer_token: Some("s3cret".into()),
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    for path in [
        "/",
        "/stacks",
        "/flamegraph.svg",
        "/windows",
        "/metrics",
        "/debug/pprof/profile?seconds=1",
    ] {
        assert_eq!(get(&format!("{base}{path}")).0, 401, "{path}");
        let r = agent()
            .get(&format!("{base}{path}"))
            .header("Authorization", "Bearer wrong")
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let r = agent()
        .get(&format!("{base}/metrics"))
        .header("Authorization", "Bearer s3cret")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// `go tool pprof` reads what we serve. Needs Debian's golang-go, which .ci/run installs.
#[test]
#[ignore = "needs golang-go: run via scripts/test.sh"]
fn go_tool_pprof_reads_our_profile() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .start()
        .unwrap();
    let worker = std::thread::Builder::new()
        .name("go-reads-this".into())
        .spawn(|| support::burn_cpu(Duration::from_millis(1000)))
        .unwrap();
    worker.join().unwrap();
    let bytes = profiler.profile(Duration::from_secs(60)).to_pprof();
    let dir = std::env::temp_dir().join(format!("stackwatch-go-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("profile.pb.gz");
    std::fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(&file)
        .env("HOME", &dir)
        .env("PPROF_TMPDIR", &dir)
        .output()
        .expect("go is installed (apt-get install golang-go)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("cpu/nanoseconds"), "{text}");
    assert!(text.contains("samples/count"), "{text}");
    assert!(text.contains("go-reads-this"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
