//! The SIGPROF handler's own cost per sample, against stack depth, measured inside the
//! handler: the handler reads the time-stamp counter (`rdtsc`) at entry and exit and counts
//! the difference in a histogram of atomics (`stackwatch::__handler_cost::handler_cost`),
//! for one worker thread only. pprof-rs's handler is timed the same way: its SIGPROF
//! handler is wrapped by one that reads the counter around the call.
//!
//! `cargo bench -p stackwatch --bench handler_cost`
//!
//! What runs: a child process per (build, profiler, round). Its worker thread calls down a
//! chain of distinct non-inlined functions (a table of 256 monomorphised `step::<I>`)
//! to a fixed depth, then burns CPU at the bottom: every sample sees the same stack
//! (`fixed N`). In `varied 32` the worker returns to the top every ~30 µs and calls down
//! a new random path (4 call sites per function), so consecutive samples see different
//! stacks and ~1 000 distinct return addresses (more than an unwind-rule cache holds).
//! In `cold N` the bottom of the fixed path streams through 64 MiB, so every sample finds
//! the profiler's tables evicted from the caches and TLBs.
//!
//! Environment:
//! - `STACKWATCH_HANDLER_COST_EXES=label=path,...`: more builds of this bench to run beside
//!   this one in the same rounds (an older commit's, a frame-pointer build's); this
//!   binary is `this`, or `STACKWATCH_HANDLER_COST_LABEL`.
//! - `STACKWATCH_HANDLER_COST_PPROF=label,...`: builds that also run pprof-rs (default:
//!   all).
//! - `STACKWATCH_HANDLER_COST_CLOCK=cpu`: time with the thread's CPU clock instead of
//!   `rdtsc` (a cross-check against time spent descheduled; the clock is a syscall, so
//!   its own cost, printed as the empty interval, lands in every figure).
//! - `STACKWATCH_HANDLER_COST_SECS` (CPU seconds per cell, default 2),
//!   `STACKWATCH_HANDLER_COST_ROUNDS` (default 3), `STACKWATCH_HANDLER_COST_HZ` (default 999).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use stackwatch::__handler_cost::{self as sh, CostHistogram, CostSnapshot};

const CHILD_ENV: &str = "STACKWATCH_HANDLER_COST_CHILD";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// The same path every time, burning CPU in registers at the bottom.
    Fixed,
    /// A new random path every ~30 µs.
    Varied,
    /// The same path, the bottom streaming through 64 MiB, so every sample finds the
    /// caches and TLBs emptied of the profiler's tables (a memory-bound service, or a
    /// thread that was just switched in after another process).
    Cold,
}

/// (name, depth of the call chain, shape)
const SCENARIOS: [(&str, u32, Shape); 7] = [
    ("fixed 8", 8, Shape::Fixed),
    ("fixed 16", 16, Shape::Fixed),
    ("fixed 32", 32, Shape::Fixed),
    ("fixed 64", 64, Shape::Fixed),
    ("varied 32", 32, Shape::Varied),
    ("cold 16", 16, Shape::Cold),
    ("cold 32", 32, Shape::Cold),
];

/// What the cold shape streams through.
static COLD: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn gettid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// The walk down the chain: which function next, and when to stop.
struct Walk {
    shape: Shape,
    rng: u64,
    /// Thread CPU time at which the fixed walk's leaf returns.
    until_ns: u64,
    sink: u64,
}

impl Walk {
    fn next(&mut self, i: usize) -> (usize, u64) {
        if self.shape != Shape::Varied {
            return ((i + 1) % STEPS.len(), 0);
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (
            (self.rng % STEPS.len() as u64) as usize,
            (self.rng >> 32) % 4,
        )
    }

    #[inline(never)]
    fn leaf(&mut self) -> u64 {
        let mut x = self.sink | 1;
        if self.shape == Shape::Cold {
            let cold = COLD.get_or_init(|| vec![1u64; 8 << 20]);
            while thread_cpu_ns() < self.until_ns {
                // One word per cache line, so each pass evicts everything.
                for w in cold.iter().step_by(8) {
                    x = x.wrapping_add(*w).rotate_left(1);
                }
                x = black_box(x);
            }
        } else if self.shape == Shape::Varied {
            // About 30 µs, then back to the top.
            for i in 0..20_000u64 {
                x = black_box(x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(13) ^ i);
            }
        } else {
            while thread_cpu_ns() < self.until_ns {
                for i in 0..20_000u64 {
                    x = black_box(x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(13) ^ i);
                }
            }
        }
        self.sink = x;
        x
    }
}

type Step = fn(u32, &mut Walk) -> u64;

/// One link of the chain: a distinct function per `I` (the constant keeps them from being
/// merged), four distinct call sites.
#[inline(never)]
fn step<const I: usize>(d: u32, w: &mut Walk) -> u64 {
    let pad = black_box([I as u64; 4]);
    if d == 0 {
        return w.leaf() ^ pad[0];
    }
    let (next, site) = w.next(I);
    let r = match site {
        0 => black_box(STEPS[next])(d - 1, w).wrapping_add(black_box(1)),
        1 => black_box(STEPS[next])(d - 1, w).rotate_left(black_box(3)),
        2 => black_box(STEPS[next])(d - 1, w) ^ black_box(5),
        _ => black_box(STEPS[next])(d - 1, w).wrapping_mul(black_box(7)),
    };
    black_box(r ^ pad[1] ^ pad[2] ^ pad[3])
}

macro_rules! steps {
    ($($i:literal)*) => { [$(step::<$i> as Step),*] };
}

static STEPS: [Step; 256] = steps!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144 145 146 147 148 149 150 151 152 153 154 155 156 157 158 159 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191 192 193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216 217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255);

/// Runs one scenario on the calling thread for `cpu_ns` of its CPU time.
fn run_scenario(depth: u32, shape: Shape, cpu_ns: u64) {
    let start = thread_cpu_ns();
    let mut w = Walk {
        shape,
        rng: 0x2545_F491_4F6C_DD1D,
        until_ns: start + cpu_ns,
        sink: 0,
    };
    // The chain below `step::<0>` is `depth` calls deep.
    loop {
        black_box(step::<0>(depth - 1, &mut w));
        if thread_cpu_ns() >= start + cpu_ns {
            break;
        }
    }
}

// ---- pprof-rs: its handler, wrapped in one that times it ----------------------------

static PPROF_HANDLER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PPROF_TID: AtomicU32 = AtomicU32::new(0);
static PPROF_ON_CPU: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static PPROF_COST: std::sync::OnceLock<CostHistogram> = std::sync::OnceLock::new();

extern "C" fn timed_pprof_handler(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let inner = PPROF_HANDLER.load(Ordering::Relaxed);
    if inner == 0 {
        return;
    }
    // SAFETY: `inner` is pprof-rs's SA_SIGINFO handler, read back from sigaction.
    let inner: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        unsafe { std::mem::transmute(inner) };
    let on_cpu = PPROF_ON_CPU.load(Ordering::Relaxed);
    let t0 = if on_cpu {
        sh::thread_cpu_ns()
    } else {
        sh::cost_ticks()
    };
    inner(sig, info, ctx);
    let ns = if on_cpu {
        sh::thread_cpu_ns() - t0
    } else {
        sh::ticks_to_ns(sh::cost_ticks().wrapping_sub(t0))
    };
    if gettid() == PPROF_TID.load(Ordering::Relaxed) {
        if let Some(h) = PPROF_COST.get() {
            h.record(ns, 0);
        }
    }
}

/// Puts the timing wrapper around whatever SIGPROF handler pprof-rs installed.
fn wrap_pprof_handler() {
    // SAFETY: plain sigaction calls with zeroed, then filled, structs.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old);
        assert!(
            old.sa_flags & libc::SA_SIGINFO != 0,
            "pprof-rs installs an SA_SIGINFO handler"
        );
        PPROF_HANDLER.store(old.sa_sigaction, Ordering::SeqCst);
        let mut sa = old;
        sa.sa_sigaction = timed_pprof_handler as *const () as usize;
        libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut());
    }
}

fn print_cell(profiler: &str, scenario: &str, s: &CostSnapshot) {
    let counts: Vec<String> = s
        .counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| format!("{i}:{c}"))
        .collect();
    println!(
        "CELL {profiler}|{scenario}|{}|{}|{}|{}",
        s.depth_sum,
        counts.join(","),
        s.delegated_sum,
        s.direct
    );
}

/// What the handler's clock adds to an interval by itself: the median of 1 001 empty
/// intervals read the way the handler reads them.
fn clock_floor_ns(on_cpu: bool) -> u64 {
    let mut v: Vec<u64> = (0..1001)
        .map(|_| {
            if on_cpu {
                let t = sh::thread_cpu_ns();
                sh::thread_cpu_ns() - t
            } else {
                let t = sh::cost_ticks();
                sh::ticks_to_ns(sh::cost_ticks().wrapping_sub(t))
            }
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}

fn child(profiler: &str, hz: u32, cpu_ns: u64) {
    let on_cpu = std::env::var("STACKWATCH_HANDLER_COST_CLOCK").is_ok_and(|c| c == "cpu");
    sh::cost_on_cpu(on_cpu);
    sh::calibrate_ticks();
    println!("FLOOR {}", clock_floor_ns(on_cpu));
    if profiler == "stackwatch" {
        let p = stackwatch::Profiler::builder()
            .frequency_hz(hz)
            .start()
            .unwrap();
        let worker = std::thread::Builder::new()
            .name("cost-worker".into())
            .spawn(move || {
                sh::cost_filter_tid(gettid());
                // Warm-up: the aggregator arms this thread's timer within a scan.
                std::thread::sleep(Duration::from_millis(50));
                run_scenario(8, Shape::Fixed, 200_000_000);
                let mut out = Vec::new();
                for (name, depth, shape) in SCENARIOS {
                    let before = sh::handler_cost().unwrap();
                    run_scenario(depth, shape, cpu_ns);
                    out.push((name, sh::handler_cost().unwrap().since(&before)));
                }
                out
            })
            .unwrap();
        for (name, snap) in worker.join().unwrap() {
            print_cell(profiler, name, &snap);
        }
        p.stop();
    } else {
        PPROF_ON_CPU.store(on_cpu, Ordering::SeqCst);
        let _ = PPROF_COST.set(CostHistogram::new());
        let worker = std::thread::Builder::new()
            .name("cost-worker".into())
            .spawn(move || {
                PPROF_TID.store(gettid(), Ordering::SeqCst);
                let mut out = Vec::new();
                for (i, (name, depth, shape)) in SCENARIOS.into_iter().enumerate() {
                    let guard = pprof::ProfilerGuardBuilder::default()
                        .frequency(hz as i32)
                        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                        .build()
                        .unwrap();
                    wrap_pprof_handler();
                    if i == 0 {
                        run_scenario(8, Shape::Fixed, 200_000_000);
                    }
                    let before = PPROF_COST.get().unwrap().snapshot();
                    run_scenario(depth, shape, cpu_ns);
                    let mut snap = PPROF_COST.get().unwrap().snapshot().since(&before);
                    let report = guard.report().build().unwrap();
                    drop(guard);
                    // Frames per sample of this thread, from pprof-rs's own report.
                    let (mut frames, mut samples) = (0u64, 0u64);
                    for (f, c) in &report.data {
                        if f.thread_name == "cost-worker" {
                            frames += f.frames.len() as u64 * *c as u64;
                            samples += *c as u64;
                        }
                    }
                    snap.depth_sum =
                        (frames as f64 / samples.max(1) as f64 * snap.count() as f64) as u64;
                    out.push((name, snap));
                }
                out
            })
            .unwrap();
        for (name, snap) in worker.join().unwrap() {
            print_cell(profiler, name, &snap);
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Merged {
    snap: CostSnapshot,
}

fn main() {
    let hz: u32 = env_or("STACKWATCH_HANDLER_COST_HZ", 999);
    let secs: f64 = env_or("STACKWATCH_HANDLER_COST_SECS", 2.0);
    if let Ok(profiler) = std::env::var(CHILD_ENV) {
        child(&profiler, hz, (secs * 1e9) as u64);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = env_or("STACKWATCH_HANDLER_COST_ROUNDS", 3);
    let mut builds: Vec<(String, String)> = vec![(
        std::env::var("STACKWATCH_HANDLER_COST_LABEL").unwrap_or_else(|_| "this".into()),
        std::env::current_exe()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    )];
    if let Ok(exes) = std::env::var("STACKWATCH_HANDLER_COST_EXES") {
        for spec in exes.split(',').filter(|s| !s.is_empty()) {
            let (label, path) = spec.split_once('=').expect("label=path");
            builds.push((label.into(), path.into()));
        }
    }
    let pprof_for: Option<Vec<String>> = std::env::var("STACKWATCH_HANDLER_COST_PPROF")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    println!(
        "# handler cost: {rounds} rounds, {hz} Hz, {secs} CPU s per cell, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (label, path) in &builds {
        println!("# build {label}: {path}");
    }
    let mut merged: BTreeMap<(usize, usize, usize), Merged> = BTreeMap::new();
    let mut floors: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for _ in 0..rounds {
        for (b, (label, path)) in builds.iter().enumerate() {
            for (p, profiler) in ["stackwatch", "pprof-rs"].into_iter().enumerate() {
                if p == 1 && pprof_for.as_ref().is_some_and(|l| !l.contains(label)) {
                    continue;
                }
                let out = Command::new(path)
                    .env(CHILD_ENV, profiler)
                    .env("STACKWATCH_HANDLER_COST_HZ", hz.to_string())
                    .env("STACKWATCH_HANDLER_COST_SECS", secs.to_string())
                    .output()
                    .expect("child runs");
                let stdout = String::from_utf8_lossy(&out.stdout);
                if let Some(f) = stdout.lines().find_map(|l| l.strip_prefix("FLOOR ")) {
                    floors.entry(b).or_default().push(f.parse::<u64>().unwrap());
                }
                let mut cells = 0;
                for line in stdout.lines().filter_map(|l| l.strip_prefix("CELL ")) {
                    let f: Vec<&str> = line.split('|').collect();
                    let s = SCENARIOS.iter().position(|x| x.0 == f[1]).unwrap();
                    let m = merged.entry((b, p, s)).or_default();
                    if m.snap.counts.is_empty() {
                        m.snap.counts = vec![0; sh::COST_BUCKETS];
                    }
                    m.snap.depth_sum += f[2].parse::<u64>().unwrap();
                    // Older builds print neither.
                    m.snap.delegated_sum += f.get(4).map_or(0, |x| x.parse::<u64>().unwrap());
                    m.snap.direct += f.get(5).map_or(0, |x| x.parse::<u64>().unwrap());
                    for kv in f[3].split(',').filter(|x| !x.is_empty()) {
                        let (i, c) = kv.split_once(':').unwrap();
                        m.snap.counts[i.parse::<usize>().unwrap()] += c.parse::<u64>().unwrap();
                    }
                    cells += 1;
                }
                if cells == 0 {
                    panic!(
                        "child {label} {profiler} failed: {}\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }
    let clock = match std::env::var("STACKWATCH_HANDLER_COST_CLOCK") {
        Ok(c) if c == "cpu" => "the thread's CPU clock (CLOCK_THREAD_CPUTIME_ID)",
        _ => "the time-stamp counter (rdtsc)",
    };
    println!("# timed with {clock}; not subtracted below, an empty interval of that clock:");
    for (b, f) in &floors {
        let mut f = f.clone();
        f.sort_unstable();
        println!("#   {}: {} ns", builds[*b].0, f[f.len() / 2]);
    }
    println!();
    println!("| build | profiler | stack | frames | samples | median ns | p90 ns | p99 ns | p99.9 ns | ns/frame (median) | framehop frames | direct reads |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((b, p, s), m) in &merged {
        let snap = &m.snap;
        let depth = snap.mean_depth();
        let stackwatch = *p == 0;
        let pct = |x: u64, of: u64| {
            if stackwatch {
                format!("{:.0}%", x as f64 * 100.0 / of.max(1) as f64)
            } else {
                "n/a".into()
            }
        };
        println!(
            "| {} | {} | {} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {} |",
            builds[*b].0,
            ["stackwatch", "pprof-rs"][*p],
            SCENARIOS[*s].0,
            depth,
            snap.count(),
            snap.quantile(0.5),
            snap.quantile(0.9),
            snap.quantile(0.99),
            snap.quantile(0.999),
            snap.quantile(0.5) / depth.max(1.0),
            pct(snap.delegated_sum, snap.depth_sum),
            pct(snap.direct, snap.count()),
        );
    }
}
