//! What setting and clearing a label set costs on the service's threads: entering an
//! interned [`stackwatch::LabelSet`] and dropping its guard, in ns per pair, with the
//! allocations counted by a counting global allocator (target: ≤ 50 ns, none). Also
//! the convenience forms that intern on the way (`label`, `with_labels`), for contrast.
//!
//! `cargo bench -p stackwatch --bench labels` (STACKWATCH_BENCH_ITERS, default 20 M).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

struct Counting;

thread_local! {
    /// Allocations by this thread (the profiler's own thread allocates meanwhile; only
    /// the measuring thread's count). Const-initialised, no destructor: safe to touch
    /// from inside the allocator.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` `n` times; returns (median ns per call over 5 runs, allocations per call).
fn measure(n: u64, mut f: impl FnMut(u64)) -> (f64, f64) {
    f(0); // warm: the thread's label slot is claimed on first use
    let mut ns = Vec::with_capacity(5);
    let mut total = 0;
    for _ in 0..5 {
        let a0 = allocs();
        let t = Instant::now();
        for i in 0..n {
            f(i);
        }
        let elapsed = t.elapsed();
        total += allocs() - a0;
        ns.push(elapsed.as_nanos() as f64 / n as f64);
    }
    ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (ns[2], total as f64 / (5 * n) as f64)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = std::env::var("STACKWATCH_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    // Labels are read by the profiler's signal handler; run it so the cost is measured
    // in the setting it has in a service.
    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(99)
        .start()
        .unwrap();
    let sets: Vec<stackwatch::LabelSet> = (0..4)
        .map(|i| stackwatch::LabelSet::new(&[("table", format!("t{i}")), ("op", "insert".into())]))
        .collect();
    println!("# stackwatch labels bench: {n} iterations per run, median of 5");
    println!();
    println!("| operation | ns per set+clear | allocations per set+clear |");
    println!("|---|---:|---:|");
    let (ns, allocs) = measure(n, |i| {
        let g = sets[(i & 3) as usize].enter();
        std::hint::black_box(&g);
        drop(g);
    });
    println!("| `LabelSet::enter` + drop (interned) | {ns:.1} | {allocs:.3} |");
    let target = ns <= 50.0 && allocs == 0.0;
    let (ns2, allocs2) = measure(n / 20, |i| {
        let g = stackwatch::label("table", if i & 1 == 0 { "orders" } else { "users" });
        std::hint::black_box(&g);
        drop(g);
    });
    println!("| `stackwatch::label(k, v)` + drop (interns) | {ns2:.1} | {allocs2:.3} |");
    let (ns3, allocs3) = measure(n / 20, |i| {
        std::hint::black_box(stackwatch::with_labels(&[("table", "orders")], || i));
    });
    println!("| `with_labels(&[..], f)` (interns) | {ns3:.1} | {allocs3:.3} |");
    println!();
    println!(
        "target (interned set+clear <= 50 ns, no allocation): {}",
        if target { "met" } else { "NOT met" }
    );
    profiler.stop();
}
