// The stress workload shared by `tests/lifecycle.rs` (short) and `benches/stress.rs`
// (long): 999 Hz sampling while threads storm malloc/free, dlopen/dlclose a library,
// churn through thousands of short threads and fork+exec children.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a stress run did.
#[derive(Debug, Clone, Default)]
pub struct StressReport {
    /// Sampling periods recorded.
    pub samples: u64,
    /// Short threads spawned and joined.
    pub threads_spawned: u64,
    /// fork+exec children run.
    pub forks: u64,
    /// dlopen/dlclose pairs.
    pub dlopens: u64,
    /// malloc/free pairs.
    pub allocations: u64,
    /// The profiler's own memory at the end.
    pub profiler_memory_bytes: u64,
    /// Samples dropped.
    pub dropped: u64,
}

/// How much each stressor does at least, whatever the time it takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct AtLeast {
    /// Short threads spawned and joined.
    pub threads: u64,
    /// fork+exec children run.
    pub forks: u64,
    /// dlopen/dlclose pairs.
    pub dlopens: u64,
}

/// Runs every stressor for `duration` under a 999 Hz profiler.
pub fn run(duration: Duration) -> StressReport {
    run_at_least(duration, AtLeast::default(), duration)
}

/// Runs every stressor for `duration`, then on until each has done `at_least` (on a
/// busy machine they get less CPU per second), but no longer than `deadline` in all;
/// the report is read once the profiler has folded samples (or the deadline passed).
pub fn run_at_least(duration: Duration, at_least: AtLeast, deadline: Duration) -> StressReport {
    let began = Instant::now();
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(999)
        .window(Duration::from_secs(1))
        .start()
        .expect("profiler starts");
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let mut workers = Vec::new();
    // malloc/free storms on two threads.
    for _ in 0..2 {
        let (stop, c) = (stop.clone(), counters.clone());
        workers.push(std::thread::spawn(move || {
            let mut keep: Vec<Vec<u8>> = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let size = 16 + (i * 7919) % 4096;
                keep.push(vec![i as u8; size]);
                if keep.len() > 256 {
                    keep.swap_remove(i % 256);
                }
                i += 1;
                c[0].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // dlopen/dlclose loop.
    {
        let (stop, c) = (stop.clone(), counters.clone());
        workers.push(std::thread::spawn(move || {
            let lib = CString::new("libz.so.1").unwrap();
            let sym = CString::new("crc32").unwrap();
            let buf = vec![1u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: libz is a plain C library; crc32 has this signature.
                unsafe {
                    let h = libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
                    if !h.is_null() {
                        let f: extern "C" fn(u64, *const u8, u32) -> u64 =
                            std::mem::transmute(libc::dlsym(h, sym.as_ptr()));
                        std::hint::black_box(f(0, buf.as_ptr(), buf.len() as u32));
                        libc::dlclose(h);
                    }
                }
                c[1].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Thread churn: thousands of short threads.
    {
        let (stop, c) = (stop.clone(), counters.clone());
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..8)
                    .map(|i| {
                        std::thread::spawn(move || {
                            let mut x = i as u64;
                            for _ in 0..20_000 {
                                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                            }
                            x
                        })
                    })
                    .collect();
                for t in batch {
                    let _ = t.join();
                }
                c[2].fetch_add(8, Ordering::Relaxed);
            }
        }));
    }
    // fork+exec children.
    {
        let (stop, c) = (stop.clone(), counters.clone());
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(status) = std::process::Command::new("/bin/true").status() {
                    assert!(status.success());
                }
                c[3].fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let enough = || {
        counters[2].load(Ordering::Relaxed) >= at_least.threads
            && counters[3].load(Ordering::Relaxed) >= at_least.forks
            && counters[1].load(Ordering::Relaxed) >= at_least.dlopens
    };
    while began.elapsed() < duration || (!enough() && began.elapsed() < deadline) {
        std::thread::sleep(Duration::from_millis(50));
        // Readers run concurrently with all of it.
        let _ = profiler.windows_after(0);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("stress worker");
    }
    // The aggregator folds what was sampled (later on a busy machine).
    let mut stats = profiler.stats();
    while stats.samples == 0 && began.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        stats = profiler.stats();
    }
    profiler.stop();
    StressReport {
        samples: stats.samples,
        threads_spawned: counters[2].load(Ordering::Relaxed),
        forks: counters[3].load(Ordering::Relaxed),
        dlopens: counters[1].load(Ordering::Relaxed),
        allocations: counters[0].load(Ordering::Relaxed),
        profiler_memory_bytes: stats.memory_bytes,
        dropped: stats.dropped,
    }
}
