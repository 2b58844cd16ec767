//! Sample labels end to end: labels follow tokio tasks across worker threads, through
//! the guard API and through `tracing` spans, with shares that match the true CPU
//! split; and they reach the window protocol, the `?label=` filters and pprof.

mod support;

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use stackwatch::protocol::WindowsResponse;
use stackwatch::{LabelFilter, LabelFutureExt, LabelSet};
use tracing::Instrument;
use tracing_subscriber::prelude::*;

/// One profiler per process: tests in this file take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A future whose polls are timed on the polling thread's CPU clock: the truth the
/// profile is compared with.
struct Measured<F> {
    inner: Pin<Box<F>>,
    cpu_ns: Arc<AtomicU64>,
}

impl<F: Future> Future for Measured<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = thread_cpu_ns();
        let r = self.inner.as_mut().poll(cx);
        self.cpu_ns
            .fetch_add(thread_cpu_ns().saturating_sub(start), Ordering::Relaxed);
        r
    }
}

fn spin(d: Duration) -> u64 {
    let until = Instant::now() + d;
    let mut x = 1u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(0x9E3779B97F4A7C15).rotate_left(7));
    }
    x
}

/// Burns CPU in slices of 0.3 to 1.7 ms, yielding between them so the task moves
/// between workers. The lengths are random: with equal slices, a worker's round of
/// tasks can last exactly a multiple of the kernel's tick (which is when CPU timers
/// fire), and every sample would land on the same task: aliasing, which would hit any
/// timer-based profiler and is not what this test is about.
async fn work(until: Instant, seed: u64) {
    let mut x = seed | 1;
    while Instant::now() < until {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        spin(Duration::from_micros(300 + x % 1400));
        tokio::task::yield_now().await;
    }
}

#[derive(Clone, Copy)]
enum How {
    Guard,
    Tracing,
}

/// Runs 3 tasks labeled `task=a` and 7 labeled `task=b` on a 4-worker runtime, in rounds
/// of 3 s until the profile holds `want` labeled periods (at most [`support::DEADLINE`]:
/// on a loaded machine the process gets less CPU, and the shares need the samples), and
/// returns
/// (profile share of a, true share of a, labeled periods).
fn run_split(hz: u32, want: u64, how: How) -> (f64, f64, u64) {
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(hz)
        .window(Duration::from_secs(1))
        .retain_windows(120)
        .start()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let cpu_a = Arc::new(AtomicU64::new(0));
    let cpu_b = Arc::new(AtomicU64::new(0));
    let set_a = LabelSet::new(&[("task", "a")]);
    let set_b = LabelSet::new(&[("task", "b")]);
    let totals = || {
        let of = |t: &str| {
            profiler
                .profile_cumulative_matching(&LabelFilter::new(&[("task", t)]))
                .total()
        };
        (of("a"), of("b"))
    };
    let started = Instant::now();
    let mut round = 0u64;
    loop {
        let until = Instant::now() + Duration::from_secs(3);
        rt.block_on(async {
            let mut handles = Vec::new();
            for i in 0..10 {
                let (name, set, cpu) = if i < 3 {
                    ("a", set_a, cpu_a.clone())
                } else {
                    ("b", set_b, cpu_b.clone())
                };
                let seed = round * 100 + i + 1;
                let task: Pin<Box<dyn Future<Output = ()> + Send>> = match how {
                    How::Guard => Box::pin(work(until, seed).with_labels(set)),
                    How::Tracing => Box::pin(
                        work(until, seed).instrument(tracing::info_span!("job", task = name)),
                    ),
                };
                handles.push(tokio::spawn(Measured {
                    inner: Box::pin(task),
                    cpu_ns: cpu,
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
        round += 1;
        let (a, b) = totals();
        if a + b >= want || started.elapsed() > support::DEADLINE {
            break;
        }
    }
    drop(rt);
    profiler.stop();
    let (a, b) = totals();
    let (ta, tb) = (
        cpu_a.load(Ordering::Relaxed) as f64,
        cpu_b.load(Ordering::Relaxed) as f64,
    );
    (a as f64 / (a + b).max(1) as f64, ta / (ta + tb), a + b)
}

fn check(hz: u32, want: u64, how: How) {
    let (profile, truth, periods) = run_split(hz, want, how);
    eprintln!("{hz} Hz: profile share of a {profile:.4}, true share {truth:.4}, {periods} periods");
    assert!(periods >= want / 2, "too few labeled periods: {periods}");
    assert!(
        (profile - truth).abs() <= 0.03,
        "{hz} Hz: the profile gives task=a {:.1}% of labeled CPU, the threads' CPU clocks {:.1}%",
        profile * 100.0,
        truth * 100.0
    );
}

#[test]
fn labels_follow_tokio_tasks_across_workers_with_true_shares() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    check(99, 3000, How::Guard);
    check(999, 12000, How::Guard);
}

#[test]
fn labels_from_tracing_spans_follow_tasks_with_true_shares() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _sub = tracing_subscriber::registry()
        .with(stackwatch::LabelLayer::new(["task"]))
        .set_default();
    // Spans entered on runtime threads need the subscriber there too.
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let _global = tracing::dispatcher::set_global_default(dispatch);
    check(99, 3000, How::Tracing);
    check(999, 12000, How::Tracing);
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut r = agent.get(url).call().expect("request");
    let status = r.status().as_u16();
    let mut body = Vec::new();
    r.body_mut().as_reader().read_to_end(&mut body).unwrap();
    (status, body)
}

#[test]
fn the_endpoints_carry_labels_and_old_clients_see_sums() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .window(Duration::from_millis(300))
        .retain_windows(100)
        .start()
        .unwrap();
    let server = stackwatch::http::serve(&profiler, "127.0.0.1:0".parse().unwrap()).unwrap();
    let base = format!("http://{}", server.local_addr());
    let t = std::thread::Builder::new()
        .name("labeled-worker".into())
        .spawn(|| {
            // 1.5 s of the thread's CPU time, however long a busy machine makes it take.
            let (start, began) = (support::thread_cpu_seconds(), Instant::now());
            // Slice lengths vary: a fixed 3 + 1 ms loop lines up with a 4 ms kernel tick
            // (when CPU timers fire), and every sample could land in the same slice.
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            while !support::burnt(start, Duration::from_millis(1500), began) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                stackwatch::with_labels(&[("table", "orders"), ("op", "<script>")], || {
                    spin(Duration::from_micros(1500 + x % 3000))
                });
                let _g = stackwatch::label("table", "users");
                spin(Duration::from_micros(500 + (x >> 20) % 1000));
            }
        })
        .unwrap();
    t.join().unwrap();
    // A new collector asks with labels=1: labeled stacks per set, totals exact. Every
    // sample the worker took is in a closed window once a window that started after it
    // ended has closed (the aggregator drains before it closes a window); on a busy
    // machine the aggregator closes them late, so wait for that.
    let worker_done_ms = support::unix_ms();
    let labeled = support::wait_for(|| {
        let (status, body) = get(&format!("{base}/windows?after=0&labels=1"));
        assert_eq!(status, 200);
        let labeled: WindowsResponse = serde_json::from_slice(&body).unwrap();
        let complete = labeled
            .windows
            .iter()
            .any(|w| w.start_unix_ms >= worker_done_ms);
        (complete, labeled)
    });
    let mut orders = 0u64;
    let mut users = 0u64;
    for w in &labeled.windows {
        let sum: u64 = w.stacks.iter().map(|s| s.1).sum::<u64>()
            + w.labeled
                .iter()
                .flat_map(|l| l.stacks.iter())
                .map(|s| s.1)
                .sum::<u64>();
        assert_eq!(sum, w.samples);
        for l in &w.labeled {
            let n: u64 = l.stacks.iter().map(|s| s.1).sum();
            match l.labels.get("table").map(String::as_str) {
                Some("orders") => {
                    assert_eq!(l.labels["op"], "<script>");
                    orders += n
                }
                Some("users") => users += n,
                other => panic!("unexpected label set {other:?}"),
            }
            assert!(
                l.stacks
                    .iter()
                    .all(|(s, _)| s.starts_with("labeled-worker;")),
                "{:?}",
                l.stacks
            );
        }
    }
    assert!(
        orders > users && users > 0,
        "orders {orders}, users {users}"
    );
    // An old collector does not ask: the same windows, summed, no `labeled` field.
    let (_, body) = get(&format!("{base}/windows?after=0"));
    assert!(!String::from_utf8_lossy(&body).contains("\"labeled\""));
    let old: WindowsResponse = serde_json::from_slice(&body).unwrap();
    for (o, n) in old.windows.iter().zip(&labeled.windows) {
        assert_eq!(o.seq, n.seq);
        assert_eq!(o.stacks.iter().map(|s| s.1).sum::<u64>(), n.samples);
    }
    // ?label= filters the folded text, the SVG and pprof.
    let folded = |q: &str| {
        let (status, body) = get(&format!("{base}/{q}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        stackwatch_profile::parse_folded(&String::from_utf8(body).unwrap()).unwrap()
    };
    let all: u64 = folded("").values().sum();
    let only_orders: u64 = folded("?label=table=orders").values().sum();
    let both: u64 = folded("?label=table=orders&label=op=%3Cscript%3E")
        .values()
        .sum();
    let none: u64 = folded("?label=table=nothing").values().sum();
    assert!(
        only_orders > 0 && only_orders < all,
        "{only_orders} of {all}"
    );
    assert_eq!(both, only_orders);
    assert_eq!(none, 0);
    let recent: u64 = folded("?seconds=60&label=table=users").values().sum();
    assert!(recent > 0);
    let (status, body) = get(&format!("{base}/flamegraph.svg?label=table=orders"));
    assert_eq!(status, 200);
    let svg = String::from_utf8(body).unwrap();
    assert!(svg.contains("labeled-worker") && !svg.contains("<script>"));
    let (status, body) = get(&format!("{base}/?label=novalue"));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _) = get(&format!("{base}/?label==x"));
    assert_eq!(status, 400);
    drop(server);
}

/// `go tool pprof -tags` lists our labels and `-tagfocus` selects them. Needs Debian's
/// golang-go, which .ci/run installs.
#[test]
#[ignore = "needs golang-go: run via scripts/test.sh"]
fn go_tool_pprof_reads_our_labels() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .start()
        .unwrap();
    let capture = profiler.start_capture();
    std::thread::Builder::new()
        .name("go-reads-labels".into())
        .spawn(|| {
            // 1.2 s of this thread's CPU, however long a busy machine takes to give it
            // (at most `support::DEADLINE`): both label values then have many samples. A fixed
            // 1.2 s of wall time gave it 18 ms beside a CPU hog, all of it "orders".
            let deadline = Instant::now() + support::DEADLINE;
            while support::thread_cpu_seconds() < 1.2 && Instant::now() < deadline {
                stackwatch::with_labels(&[("table", "orders")], || spin(Duration::from_millis(2)));
                stackwatch::with_labels(&[("table", "users")], || spin(Duration::from_millis(1)));
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let p = capture.finish_labeled(&LabelFilter::default());
    let labeled: Vec<_> = p.labeled.iter().map(|(l, s)| (&**l, s)).collect();
    let bytes = stackwatch_profile::pprof::encode_labeled(&p.unlabeled, &labeled);
    let dir = std::env::temp_dir().join(format!("stackwatch-go-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("profile.pb.gz");
    std::fs::write(&file, bytes).unwrap();
    let pprof = |args: &[&str]| {
        let out = std::process::Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(&file)
            .env("HOME", &dir)
            .env("PPROF_TMPDIR", &dir)
            .output()
            .expect("go is installed (apt-get install golang-go)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tags = pprof(&["-tags"]);
    assert!(tags.contains("table"), "{tags}");
    assert!(tags.contains("orders") && tags.contains("users"), "{tags}");
    // -tagfocus keeps only the orders samples: about 2/3 of the worker's.
    let all = pprof(&["-raw", "-sample_index=samples"]);
    let orders = pprof(&["-raw", "-sample_index=samples", "-tagfocus=table=orders"]);
    let count = |raw: &str| -> u64 {
        raw.lines()
            .skip_while(|l| !l.starts_with("Samples:"))
            .skip(2)
            .take_while(|l| !l.starts_with("Locations"))
            .filter_map(|l| {
                l.split_whitespace()
                    .next()?
                    .split(':')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let (a, o) = (count(&all), count(&orders));
    assert!(o > 0 && o < a, "orders {o} of {a}\n{orders}");
    let _ = std::fs::remove_dir_all(&dir);
}
