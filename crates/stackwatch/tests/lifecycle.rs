//! Threads that appear late, code that is dlopen'd, stop/restart, a pending SIGPROF after
//! stop, and a short stress run (the long one is the `stress` bench binary).

mod support;

use std::ffi::CString;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{burn_cpu, burnt, thread_cpu_seconds, wait_for};

/// One profiler per process: tests in this file take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn roots(p: &stackwatch::Profile) -> std::collections::BTreeMap<String, u64> {
    let mut roots = std::collections::BTreeMap::new();
    for (s, c) in &p.stacks {
        *roots
            .entry(s.split(';').next().unwrap_or("").to_string())
            .or_insert(0) += c;
    }
    roots
}

fn worker_total(p: &stackwatch::Profile, thread: &str) -> u64 {
    p.stacks
        .iter()
        .filter(|(s, _)| s.split(';').next() == Some(thread))
        .map(|(_, c)| c)
        .sum()
}

#[test]
fn threads_started_after_start_are_sampled_and_unnamed_ones_share_a_root_without_their_tid() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(199)
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let late = std::thread::Builder::new()
        .name("late-thread".into())
        .spawn(|| burn_cpu(Duration::from_millis(800)))
        .unwrap();
    let late_cpu = late.join().unwrap();
    // A thread nobody named inherits its creator's name; make ours the process name (as
    // the main thread's is) so the child counts as unnamed.
    let process_name = std::fs::read_to_string("/proc/self/comm").unwrap();
    let cname = CString::new(process_name.trim_end()).unwrap();
    unsafe { libc::prctl(libc::PR_SET_NAME, cname.as_ptr()) };
    let unnamed = std::thread::spawn(|| {
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let cpu = burn_cpu(Duration::from_millis(600));
        (tid, cpu)
    });
    let (unnamed_tid, unnamed_cpu) = unnamed.join().unwrap();
    // Its CPU time at 199 Hz, less what it burnt before discovery (one 20 ms scan, more
    // when the machine is loaded and the aggregator waits for a core).
    let late_expected = (late_cpu - 0.05) * 199.0;
    let unnamed_expected = (unnamed_cpu - 0.05) * 199.0;
    let (p, n, unnamed_periods) = wait_for(|| {
        let p = profiler.profile(Duration::from_secs(60));
        let (n, unnamed) = (worker_total(&p, "late-thread"), worker_total(&p, "thread"));
        let done = n as f64 >= 0.75 * late_expected
            && unnamed as f64 >= 0.8 * unnamed_expected
            && unnamed > 0;
        (done, (p, n, unnamed))
    });
    profiler.stop();
    assert!(
        n as f64 >= 0.75 * late_expected,
        "late thread got {n} periods for {late_cpu:.3} s of CPU; by thread: {:?}",
        roots(&p)
    );
    assert!(
        unnamed_periods as f64 >= 0.8 * unnamed_expected && unnamed_periods > 0,
        "thread (tid {unnamed_tid}): {unnamed_periods} periods for {unnamed_cpu:.3} s\n{}",
        p.to_folded()
    );
    for root in roots(&p).keys() {
        assert!(
            !root.contains(&unnamed_tid.to_string()) && !root.starts_with("thread-"),
            "a tid in a thread root: {root}"
        );
    }
}

#[test]
fn code_loaded_with_dlopen_is_unwound_and_named() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // libz is not linked by this test; load it now and burn CPU inside it.
    let lib = CString::new("libz.so.1").unwrap();
    let sym = CString::new("crc32").unwrap();
    let handle = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "libz.so.1 is on every Debian system");
    let crc32: extern "C" fn(u64, *const u8, u32) -> u64 =
        unsafe { std::mem::transmute(libc::dlsym(handle, sym.as_ptr())) };
    let t = std::thread::Builder::new()
        .name("dlopen-user".into())
        .spawn(move || {
            let buf = vec![7u8; 1 << 20];
            let (start, began) = (thread_cpu_seconds(), Instant::now());
            let mut c = 0;
            while !burnt(start, Duration::from_millis(1200), began) {
                c = crc32(c, buf.as_ptr(), buf.len() as u32);
            }
            std::hint::black_box(c);
            thread_cpu_seconds()
        })
        .unwrap();
    let cpu = t.join().unwrap();
    let (p, total) = wait_for(|| {
        let p = profiler.profile(Duration::from_secs(60));
        let total = worker_total(&p, "dlopen-user");
        (
            total as f64 >= 0.8 * (cpu - 0.05) * 499.0 && total > 20,
            (p, total),
        )
    });
    profiler.stop();
    unsafe { libc::dlclose(handle) };
    let in_crc: u64 = p
        .stacks
        .iter()
        .filter(|(s, _)| s.starts_with("dlopen-user;") && s.contains("crc32"))
        .map(|(_, c)| c)
        .sum();
    // And the walk continues out of the library into our closure.
    let through: u64 = p
        .stacks
        .iter()
        .filter(|(s, _)| {
            s.starts_with("dlopen-user;") && s.contains("crc32") && s.contains("lifecycle")
        })
        .map(|(_, c)| c)
        .sum();
    assert!(
        total as f64 >= 0.8 * (cpu - 0.05) * 499.0 && total > 20,
        "{total} periods for {cpu:.3} s of CPU; by thread: {:?}",
        roots(&p)
    );
    // Samples taken before the aggregator learns of libz (one tick, 20 ms) cannot unwind
    // out of it; everything after can.
    assert!(
        in_crc * 10 >= total * 9,
        "{in_crc} of {total} in crc32:\n{}",
        p.to_folded()
    );
    assert!(
        through * 10 >= in_crc * 9,
        "{through} of {in_crc} unwound out of libz"
    );
}

#[test]
fn stop_and_restart_100_times_and_a_pending_sigprof_after_stop_is_harmless() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A thread burning CPU (so signals arrive) for as long as the restarts take.
    let restarting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let busy = std::thread::spawn({
        let restarting = restarting.clone();
        move || {
            while restarting.load(std::sync::atomic::Ordering::Relaxed) {
                burn_cpu(Duration::from_millis(5));
            }
        }
    });
    for i in 0..100 {
        let p = stackwatch::Profiler::builder()
            .frequency_hz(999)
            .window(Duration::from_millis(100))
            .start()
            .unwrap_or_else(|e| panic!("start #{i}: {e}"));
        // A second profiler in the same process is refused, not half-started.
        assert!(matches!(
            stackwatch::Profiler::builder().start(),
            Err(stackwatch::Error::AlreadyRunning)
        ));
        std::thread::sleep(Duration::from_millis(5));
        p.stop();
        assert!(!p.is_running());
    }
    // A SIGPROF arriving when nothing samples (pprof-rs #288 killed the process here).
    for _ in 0..10 {
        unsafe { libc::raise(libc::SIGPROF) };
    }
    restarting.store(false, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
}

#[test]
fn the_setitimer_fallback_still_samples() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(199)
        .timer_mode(stackwatch::TimerMode::ProcessWide)
        .start()
        .unwrap();
    let t = std::thread::Builder::new()
        .name("itimer-burner".into())
        .spawn(|| burn_cpu(Duration::from_millis(600)))
        .unwrap();
    let cpu = t.join().unwrap();
    // setitimer under-counts (that is why it is only the fallback: the kernel picks the
    // thread and merges expiries), but it samples the busy thread.
    let (stats, n) = wait_for(|| {
        let n = worker_total(&profiler.profile(Duration::from_secs(60)), "itimer-burner");
        let stats = profiler.stats();
        (n > 0 && stats.signals > 0, (stats, n))
    });
    profiler.stop();
    assert!(!stats.per_thread_timers);
    assert!(
        n > 0 && stats.signals > 0,
        "{n} periods for {cpu:.3} s of CPU"
    );
}

/// Short stress: 999 Hz with malloc/free storms, dlopen/dlclose loops, thread churn and
/// fork+exec at once. No deadlock (bounded by the deadline), no crash, bounded memory.
#[test]
fn stress_at_999_hz_survives_malloc_dlopen_thread_churn_and_fork_exec() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let secs: u64 = std::env::var("STACKWATCH_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // At least `secs`, and on until each stressor has done what is checked below.
    let at_least = stackwatch_stress::AtLeast {
        threads: 100,
        forks: 5,
        dlopens: 50,
    };
    let report =
        stackwatch_stress::run_at_least(Duration::from_secs(secs), at_least, support::DEADLINE);
    assert!(report.samples > 0);
    assert!(report.threads_spawned >= 100, "{report:?}");
    assert!(report.forks >= 5, "{report:?}");
    assert!(report.dlopens >= 50, "{report:?}");
    assert!(
        report.profiler_memory_bytes < 64 << 20,
        "profiler memory {} bytes",
        report.profiler_memory_bytes
    );
}

/// The stress workload, shared with the long-running bench binary.
#[allow(dead_code)]
mod stackwatch_stress {
    include!("../benches/support/stress_workload.rs");
}
