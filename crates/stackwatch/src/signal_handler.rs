//! The SIGPROF handler and the state it may touch. This is the only code that runs in
//! signal context; everything in it is async-signal-safe, and each call says why.
//!
//! What the handler does, in order:
//! 1. saves `errno` (the syscalls below may change it; the interrupted code must not see that);
//! 2. marks itself running in [`HANDLERS_RUNNING`], so [`deactivate`] and
//!    [`SignalState::publish_unwinder`] can wait for it before freeing what it reads;
//! 3. finds out which thread it interrupted: on x86_64 its TCB (`%fs:0`) finds the
//!    thread's tid and stack bounds in a static table the aggregator verified
//!    ([`stacks`]); otherwise, and on other architectures, it asks the kernel (`gettid`);
//! 4. for a signal of the process-wide CPU timer (told from a thread timer's by its
//!    `si_value`), records nothing if the thread has a timer of its own; else arms the
//!    thread's own timer with raw system calls and records a sample standing for the
//!    CPU the thread used so far (`armed_threads.rs`: a static table, no lock, no
//!    allocation);
//! 5. reads the interrupted thread's label set id from the static table of labels.rs
//!    (atomic loads, found by tid: no thread-local access, no lock);
//! 6. claims one preallocated unwind scratch area and one [`SampleRing`] slot (atomics);
//! 7. walks the interrupted stack. On x86_64 each frame's rule comes from compact rows
//!    precomputed from `.eh_frame` on the aggregator thread ([`unwind_table`]: a table
//!    lookup, no CFI evaluation); rows the compact form cannot express, and every frame
//!    on other architectures, are unwound by framehop from the same eh_frame. Stack memory
//!    is read directly when the thread's stack bounds were verified by the aggregator and
//!    the address is inside them ([`stacks`]), else only through `process_vm_readv` into
//!    the scratch copy; either way a wild frame pointer or CFA gives an error, never a
//!    fault;
//! 8. publishes the addresses and the label set id, and returns. Symbolisation happens on
//!    the aggregator thread.
//!
//! There is no allocation, no lock, no libgcc/`backtrace` unwinding and no
//! `dl_iterate_phdr` on this path, and on x86_64, once the thread is verified, no
//! syscall (but the few that arm a thread's timer, once per thread). Its own duration is
//! measured with the time-stamp counter (no clock call) into [`SignalState::handler_ns`]
//! and a histogram.

mod stacks;
mod unwind_table;

pub(crate) use stacks::refresh as refresh_thread_stacks;
pub(crate) use unwind_table::{ModuleRows, SectionBases};

use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use framehop::{CacheNative, Module, MustNotAllocateDuringUnwind, Unwinder, UnwinderNative};

use crate::handler_cost::{
    calibrate_ticks, cost_ticks, thread_cpu_ns, ticks_to_ns, CostHistogram, CostSnapshot,
    COST_ON_CPU,
};
use crate::sample_ring::{SampleRing, MAX_FRAMES};
use unwind_table::UnwindTable;

/// framehop's unwinder over owned eh_frame bytes, allocation-free unwinding.
type FramehopUnwinder = UnwinderNative<Vec<u8>, MustNotAllocateDuringUnwind>;

/// The unwinder the handler uses: framehop over each module's eh_frame, and the compact
/// rows precomputed from the same eh_frame (x86_64), which answer most frames without
/// framehop.
pub struct NativeUnwinder {
    framehop: FramehopUnwinder,
    table: UnwindTable,
}

impl Default for NativeUnwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl NativeUnwinder {
    /// No modules yet.
    pub fn new() -> Self {
        NativeUnwinder {
            framehop: FramehopUnwinder::new(),
            table: UnwindTable::default(),
        }
    }

    /// Adds a module, and its compact rows when it has them.
    pub fn add_module(&mut self, module: Module<Vec<u8>>, rows: Option<Arc<ModuleRows>>) {
        if let Some(rows) = rows {
            self.table.add(module.avma_range(), rows);
        }
        self.framehop.add_module(module);
    }
}

/// What the aggregator publishes for the handler: the unwinder and the code ranges it
/// knows, so the handler can flag a PC in a module loaded since (a fresh `dlopen`).
pub struct PublishedUnwinder {
    /// The unwinder.
    pub unwinder: NativeUnwinder,
    /// Executable ranges `[start, end)` of the modules the unwinder has, sorted.
    pub code_ranges: Box<[(u64, u64)]>,
}

impl PublishedUnwinder {
    /// Whether `pc` lies in a known module. Pure computation on read-only memory:
    /// async-signal-safe.
    fn knows(&self, pc: u64) -> bool {
        let i = self.code_ranges.partition_point(|r| r.0 <= pc);
        i > 0 && pc < self.code_ranges[i - 1].1
    }
}
type NativeCache = CacheNative<MustNotAllocateDuringUnwind>;

/// Bytes of stack copied at most per sample when it cannot be read directly (deeper
/// frames end the walk).
const STACK_COPY_BYTES: usize = 64 * 1024;
const PAGE: u64 = 4096;
/// `si_code` of a signal sent by a POSIX timer.
const SI_TIMER: libc::c_int = -2;

/// Number of handlers currently between entry and exit, on all threads.
static HANDLERS_RUNNING: AtomicUsize = AtomicUsize::new(0);
/// The state of the running profiler, or null when none runs.
static ACTIVE: AtomicPtr<SignalState> = AtomicPtr::new(ptr::null_mut());
/// Whether our handler is installed for SIGPROF (it stays installed once it is, see
/// [`install`]).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Everything the handler reads or writes, allocated before the first signal.
pub struct SignalState {
    /// Where finished samples go.
    pub ring: SampleRing,
    scratch: Box<[UnwindScratch]>,
    unwinder: AtomicPtr<PublishedUnwinder>,
    /// Set by the handler when a sample's PC is in no known module, or its thread's stack
    /// is not yet verified for direct reads: the aggregator then re-reads the module list
    /// (and verifies waiting threads' stacks, see [`stacks`]) at once instead of at its
    /// next periodic refresh.
    pub unknown_pc: AtomicBool,
    /// Signals that reached the handler while this state was active.
    pub signals: AtomicU64,
    /// Nanoseconds spent inside the handler, entry to exit (time-stamp counter).
    pub handler_ns: AtomicU64,
    /// Process-timer signals that recorded nothing: they reached a thread with a timer of
    /// its own (which counts its periods), or one that had used less than a period.
    pub process_signals_skipped: AtomicU64,
    /// Each handler run's duration, measured by the handler itself (see [`CostHistogram`]).
    cost: CostHistogram,
}

/// Per-handler working memory: the framehop rule cache and a copy of the stack.
struct UnwindScratch {
    busy: AtomicBool,
    cache: UnsafeCell<NativeCache>,
    stack: UnsafeCell<StackCopy>,
}

// SAFETY: `cache` and `stack` are only touched by the handler that flipped `busy` from
// false to true, until it stores false again.
unsafe impl Sync for UnwindScratch {}

/// A lazily filled copy of `[base, base + STACK_COPY_BYTES)` of the interrupted stack.
struct StackCopy {
    base: u64,
    filled: usize,
    exhausted: bool,
    /// Our pid for `process_vm_readv`, asked once per sample (0: not yet).
    pid: libc::pid_t,
    /// Pages the next copy asks for (doubles with each copy).
    chunk_pages: u64,
    bytes: [u8; STACK_COPY_BYTES],
}

impl StackCopy {
    fn reset(&mut self, sp: u64) {
        self.base = sp & !7;
        self.filled = 0;
        self.exhausted = false;
        self.pid = 0;
        self.chunk_pages = 2;
    }

    /// Reads a word of the interrupted thread's stack, copying more of it on demand.
    /// Async-signal-safe: `process_vm_readv` is a plain syscall on our own process that
    /// returns `EFAULT` or a short count for unmapped memory instead of faulting, and
    /// takes no user-space lock.
    fn read(&mut self, addr: u64) -> Result<u64, ()> {
        let off = addr.checked_sub(self.base).ok_or(())? as usize;
        let end = off.checked_add(8).ok_or(())?;
        if end > STACK_COPY_BYTES {
            return Err(());
        }
        while self.filled < end {
            if self.exhausted {
                return Err(());
            }
            let from = self.base + self.filled as u64;
            // To a page boundary, 2 pages ahead at first and twice as far with each
            // further copy: stacks are read upwards, and each copy is a syscall.
            let page_end = (from & !(PAGE - 1)) + self.chunk_pages * PAGE;
            self.chunk_pages *= 2;
            let want = ((page_end - from) as usize).min(STACK_COPY_BYTES - self.filled);
            let local = libc::iovec {
                iov_base: self.bytes[self.filled..].as_mut_ptr().cast(),
                iov_len: want,
            };
            let remote = libc::iovec {
                iov_base: from as *mut libc::c_void,
                iov_len: want,
            };
            if self.pid == 0 {
                // getpid is async-signal-safe (POSIX); asked per sample, not cached
                // across a fork.
                // SAFETY: no preconditions.
                self.pid = unsafe { libc::getpid() };
            }
            // SAFETY: `local` points into our own buffer with `want` bytes of room;
            // the kernel validates `remote`.
            let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
            if n <= 0 {
                self.exhausted = true;
                return Err(());
            }
            self.filled += n as usize;
            if (n as usize) < want {
                self.exhausted = true;
            }
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.bytes[off..end]);
        Ok(u64::from_ne_bytes(word))
    }
}

impl SignalState {
    /// Preallocates a ring of `ring_capacity` samples and `scratch_count` unwind
    /// scratch areas (one per handler that may run at the same time).
    pub fn new(ring_capacity: usize, scratch_count: usize) -> Self {
        calibrate_ticks();
        let scratch = (0..scratch_count.max(1))
            .map(|_| UnwindScratch {
                busy: AtomicBool::new(false),
                cache: UnsafeCell::new(NativeCache::new_in()),
                stack: UnsafeCell::new(StackCopy {
                    base: 0,
                    filled: 0,
                    exhausted: false,
                    pid: 0,
                    chunk_pages: 2,
                    bytes: [0; STACK_COPY_BYTES],
                }),
            })
            .collect();
        SignalState {
            ring: SampleRing::new(ring_capacity),
            scratch,
            unwinder: AtomicPtr::new(ptr::null_mut()),
            unknown_pc: AtomicBool::new(false),
            signals: AtomicU64::new(0),
            handler_ns: AtomicU64::new(0),
            process_signals_skipped: AtomicU64::new(0),
            cost: CostHistogram::new(),
        }
    }

    /// Bytes preallocated for the handler (ring plus scratch).
    pub fn memory_bytes(&self) -> usize {
        self.ring.memory_bytes()
            + self.scratch.len() * std::mem::size_of::<UnwindScratch>()
            + std::mem::size_of::<CostHistogram>()
    }

    /// Replaces the unwinder the handler uses (after modules were loaded or unloaded).
    /// The old one is freed once no handler can still be reading it.
    pub fn publish_unwinder(&self, unwinder: PublishedUnwinder) {
        let new = Box::into_raw(Box::new(unwinder));
        let old = self.unwinder.swap(new, Ordering::SeqCst);
        if !old.is_null() {
            // SAFETY: `old` came from Box::into_raw above and is no longer reachable
            // through `self.unwinder`; free it only when no handler is mid-walk.
            retire(unsafe { Box::from_raw(old) });
        }
    }
}

impl Drop for SignalState {
    fn drop(&mut self) {
        let p = self.unwinder.swap(ptr::null_mut(), Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: Drop runs only after `deactivate` waited for every handler.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// Frees `value` once every handler that might have seen it has returned: a handler
/// that enters after the swap that made `value` unreachable cannot read it, so when
/// the running count is observed at zero, nobody holds it. If handlers never quiesce
/// within two seconds, the value is leaked rather than freed under a reader.
fn retire<T>(value: T) {
    if wait_for_handlers(Duration::from_secs(2)) {
        drop(value);
    } else {
        tracing::warn!("signal handlers did not quiesce; leaking a retired structure");
        std::mem::forget(value);
    }
}

fn wait_for_handlers(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while HANDLERS_RUNNING.load(Ordering::SeqCst) != 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// Why the handler could not be installed.
#[derive(Debug)]
pub enum InstallError {
    /// Someone else's SIGPROF handler is installed; we do not replace it.
    Foreign,
    /// `sigaction` failed.
    Os(std::io::Error),
}

/// Installs the SIGPROF handler (once per process). It is never uninstalled: a SIGPROF
/// still pending after a profiler stops must find a handler (the default action would
/// kill the process, pprof-rs #288); with no active state the handler just returns.
pub fn install() -> Result<(), InstallError> {
    if INSTALLED.load(Ordering::SeqCst) {
        return Ok(());
    }
    // SAFETY: plain sigaction calls with zeroed, then filled, structs.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, ptr::null(), &mut old) != 0 {
            return Err(InstallError::Os(std::io::Error::last_os_error()));
        }
        let ours = on_sigprof as *const () as usize;
        if old.sa_sigaction != libc::SIG_DFL
            && old.sa_sigaction != libc::SIG_IGN
            && old.sa_sigaction != ours
        {
            return Err(InstallError::Foreign);
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ours;
        // No SA_ONSTACK: Rust gives every thread a small sigaltstack for stack-overflow
        // reports, too small for a DWARF unwind; the interrupted stack has room.
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGPROF, &sa, ptr::null_mut()) != 0 {
            return Err(InstallError::Os(std::io::Error::last_os_error()));
        }
    }
    INSTALLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Makes `state` the one the handler writes to. Fails if another is active.
pub fn activate(state: &'static SignalState) -> bool {
    ACTIVE
        .compare_exchange(
            ptr::null_mut(),
            state as *const SignalState as *mut SignalState,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_ok()
}

/// Detaches the active state and waits until no handler can still be using it.
/// Returns false if handlers did not quiesce (the caller must then leak the state).
pub fn deactivate() -> bool {
    ACTIVE.store(ptr::null_mut(), Ordering::SeqCst);
    wait_for_handlers(Duration::from_secs(2))
}

/// The POSIX-timer view of `siginfo_t` on 64-bit Linux: after `si_signo`, `si_errno`,
/// `si_code` and padding, the union starts at offset 16 with `si_tid`, `si_overrun` and
/// `si_value` (the timer's `sigev_value`, at offset 24).
#[repr(C)]
struct SigInfoTimer {
    si_signo: libc::c_int,
    si_errno: libc::c_int,
    si_code: libc::c_int,
    _pad: libc::c_int,
    si_tid: libc::c_int,
    si_overrun: libc::c_int,
    si_value: usize,
}

/// Waits (at most 2 s) until no handler runs on any thread. Returns false if they did
/// not quiesce. Not for signal context.
pub(crate) fn wait_for_quiescence() -> bool {
    wait_for_handlers(Duration::from_secs(2))
}

/// The SIGPROF handler. See the module comment for what it does and why each step is
/// async-signal-safe.
extern "C" fn on_sigprof(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // errno is thread-local storage set up by libc for every thread; reading and writing
    // it through __errno_location is async-signal-safe and restores what the interrupted
    // code had.
    // SAFETY: __errno_location always returns this thread's errno slot.
    let saved_errno = unsafe { *libc::__errno_location() };
    // Atomics are lock-free on every target we build for: safe in a handler.
    HANDLERS_RUNNING.fetch_add(1, Ordering::SeqCst);
    let state = ACTIVE.load(Ordering::SeqCst);
    if !state.is_null() {
        // SAFETY: a non-null ACTIVE points to a SignalState that `deactivate` will not
        // let be freed while HANDLERS_RUNNING counts us.
        let state = unsafe { &*state };
        // Reads the time-stamp counter (one instruction, no syscall), or for benchmarks
        // the thread's CPU clock (clock_gettime, async-signal-safe by POSIX): either is
        // async-signal-safe.
        let on_cpu = COST_ON_CPU.load(Ordering::Relaxed);
        let entry = if on_cpu {
            thread_cpu_ns()
        } else {
            cost_ticks()
        };
        // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler.
        let recorded = unsafe { record_sample(state, info, ctx) };
        let ns = if on_cpu {
            thread_cpu_ns().saturating_sub(entry)
        } else {
            ticks_to_ns(cost_ticks().wrapping_sub(entry))
        };
        // Atomic adds on preallocated memory: async-signal-safe.
        state.signals.fetch_add(1, Ordering::Relaxed);
        state.handler_ns.fetch_add(ns, Ordering::Relaxed);
        match recorded {
            // Relaxed atomic adds into preallocated buckets: async-signal-safe.
            Some((tid, walked)) => {
                state
                    .cost
                    .record_for(tid, ns, walked.frames, walked.delegated, walked.direct)
            }
            // An atomic add: async-signal-safe.
            None => {
                state
                    .process_signals_skipped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    HANDLERS_RUNNING.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Unwinds the interrupted thread into a ring slot and returns its tid and what the
/// walk did; `None` for a process-timer signal that records nothing (the thread's own
/// timer counts its periods, or it had used less than one). Signal context only.
unsafe fn record_sample(
    state: &SignalState,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) -> Option<(u32, Walked)> {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler, and
    // `SigInfoTimer` is the layout of its first fields on 64-bit Linux (reading
    // si_value of a non-timer signal reads other union members: only compared).
    let timer_info = unsafe { &*(info as *const SigInfoTimer) };
    let from_process_timer = timer_info.si_code == SI_TIMER
        && timer_info.si_value == crate::armed_threads::PROCESS_TIMER_TAG;
    // Each expiry of a thread's POSIX CPU timer that the scheduler tick could not deliver
    // is counted in si_overrun; the sample stands for all of those periods.
    let mut weight = if timer_info.si_code == SI_TIMER {
        1 + timer_info.si_overrun.max(0) as u32
    } else {
        1
    };
    // SAFETY: `ctx` is the ucontext the kernel saved for this signal.
    let (pc, regs) = unsafe { registers(ctx) };
    let sp = sp_of(&regs);
    // Which thread, and whether its stack may be read directly (see `identify`).
    let (tid, stack_bounds) = identify(state, sp);
    if from_process_timer {
        // The process CPU timer's signal reached this thread (its overruns are periods
        // of the whole process, not of this thread). Nothing is recorded if the thread
        // has a timer of its own; else it arms one, and the sample stands for the CPU
        // it used before (atomics on a static table, clock_gettime and raw timer
        // system calls: async-signal-safe, see armed_threads.rs).
        weight = crate::armed_threads::on_process_timer(tid);
        if weight == 0 {
            return None;
        }
    }
    // The thread's label set: atomic loads from a static table probed by tid, no TLS
    // access, no lock, no allocation, bounded by the table's size (labels.rs).
    let labels = crate::labels::current_set_for(tid);

    let Some(scratch) = state.scratch.iter().find(|s| {
        s.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }) else {
        state.ring.count_drop();
        return Some((tid, Walked::default()));
    };
    let mut walked = Walked::default();
    if let Some(mut writer) = state.ring.claim() {
        let sample = writer.sample();
        sample.tid = tid;
        sample.weight = weight;
        sample.labels = labels;
        sample.truncated = false;
        sample.frames[0] = pc;
        sample.depth = 1;
        let published = state.unwinder.load(Ordering::Acquire);
        // SAFETY: the published unwinder stays alive while we are counted in
        // HANDLERS_RUNNING (see `retire`).
        if published.is_null() || !unsafe { (*published).knows(pc) } {
            // An atomic store: async-signal-safe.
            state.unknown_pc.store(true, Ordering::Relaxed);
        }
        if !published.is_null() {
            // SAFETY: as above, the unwinder outlives this handler run.
            let unwinder = unsafe { &(*published).unwinder };
            // SAFETY: the scratch is ours alone while `busy` is set (we set it above).
            let cache = unsafe { &mut *scratch.cache.get() };
            // SAFETY: as for `cache`.
            let copy = unsafe { &mut *scratch.stack.get() };
            let mut memory = match stack_bounds {
                // From sp (8-aligned, as the copy starts): nothing below it is read.
                Some((_, hi)) => StackMemory::Direct { lo: sp & !7, hi },
                None => {
                    copy.reset(sp);
                    StackMemory::Copy(copy)
                }
            };
            let (depth, truncated, delegated) =
                walk(unwinder, pc, regs, cache, &mut memory, &mut sample.frames);
            sample.depth = depth as u32;
            sample.truncated = truncated;
            walked = Walked {
                frames: depth as u32,
                delegated,
                direct: matches!(memory, StackMemory::Direct { .. }),
            };
        }
        // One atomic store (release): the sample is the aggregator's from here.
        writer.publish();
    }
    scratch.busy.store(false, Ordering::Release);
    Some((tid, walked))
}

/// What one sample's walk did, for the cost histogram.
#[derive(Debug, Clone, Copy, Default)]
struct Walked {
    /// Frames recorded (0: the sample was dropped).
    frames: u32,
    /// Frames unwound by framehop rather than a compact row.
    delegated: u32,
    /// The stack was read directly, not copied.
    direct: bool,
}

/// The interrupted thread's tid, and the range of its stack that may be read directly
/// when the aggregator has verified it (x86_64, see [`stacks`]): then no syscall at all.
/// Otherwise the tid comes from `gettid` (a plain syscall: async-signal-safe) and the
/// thread is posted for verification. Signal context: `thread_pointer` is one load
/// through `%fs`, `known_thread` and `post` are atomics on static tables and a load from
/// the thread's own descriptor, and the flag is an atomic store.
fn identify(state: &SignalState, sp: u64) -> (u32, Option<(u64, u64)>) {
    #[cfg(target_arch = "x86_64")]
    {
        let tcb = stacks::thread_pointer();
        if let Some((tid, lo, hi)) = stacks::known_thread(tcb, sp) {
            return (tid, Some((lo, hi)));
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        stacks::post(tid, tcb, sp);
        state.unknown_pc.store(true, Ordering::Relaxed);
        (tid, None)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (state, sp);
        // SAFETY: gettid has no preconditions.
        (unsafe { libc::syscall(libc::SYS_gettid) } as u32, None)
    }
}

/// Where the walk reads the interrupted stack from.
enum StackMemory<'a> {
    /// The thread's own stack, verified mapped in `[lo, hi)` ([`stacks`]): plain loads.
    Direct { lo: u64, hi: u64 },
    /// Copied on demand with `process_vm_readv`.
    Copy(&'a mut StackCopy),
}

impl StackMemory<'_> {
    /// The word at `addr`, or `Err` outside what may be read.
    #[inline(always)]
    fn read(&mut self, addr: u64) -> Result<u64, ()> {
        match self {
            StackMemory::Direct { lo, hi } => {
                if addr < *lo || addr.checked_add(8).is_none_or(|end| end > *hi) {
                    return Err(());
                }
                // SAFETY: `[lo, hi)` is inside the stack mapping of the thread this handler
                // interrupted and runs on, which the aggregator found in /proc/self/maps
                // and which stays mapped while the thread lives (see stacks.rs); the
                // thread is stopped in this handler, so nothing writes it meanwhile.
                Ok(unsafe { ptr::read_unaligned(addr as *const u64) })
            }
            StackMemory::Copy(copy) => copy.read(addr),
        }
    }
}

/// Walks from the interrupted registers into `frames` (index 0, the PC, is already
/// there). Returns the frames recorded and whether the walk stopped at `MAX_FRAMES`
/// with more to go. Each frame's rule is a lookup in the compact rows; `Delegate` rows
/// are unwound by framehop (allocation-free, no locks, reads only through `memory`).
#[cfg(target_arch = "x86_64")]
fn walk(
    unwinder: &NativeUnwinder,
    pc: u64,
    regs: framehop::UnwindRegsNative,
    cache: &mut NativeCache,
    memory: &mut StackMemory<'_>,
    frames: &mut [u64; MAX_FRAMES],
) -> (usize, bool, u32) {
    use framehop::FrameAddress;
    use unwind_table::{exec, Regs, Rule};
    let mut r = Regs {
        ip: pc,
        sp: regs.sp(),
        bp: regs.bp(),
    };
    let mut address = FrameAddress::InstructionPointer(pc);
    let mut depth = 1;
    let mut delegated = 0;
    let mut module_hint = 0;
    let mut read = |addr: u64| memory.read(addr);
    loop {
        let first_frame = !address.is_return_address();
        let next = match unwinder.table.rule_for(
            address.address_for_lookup(),
            first_frame,
            &mut module_hint,
        ) {
            Rule::Delegate => {
                delegated += 1;
                let mut fregs = framehop::x86_64::UnwindRegsX86_64::new(r.ip, r.sp, r.bp);
                let next = unwinder
                    .framehop
                    .unwind_frame(address, &mut fregs, cache, &mut read);
                r = Regs {
                    ip: fregs.ip(),
                    sp: fregs.sp(),
                    bp: fregs.bp(),
                };
                next.map_err(|_| ())
            }
            rule => exec(rule, first_frame, &mut r, &mut read),
        };
        // The end of the stack, or a frame that cannot be unwound: keep what was walked.
        let Ok(Some(return_address)) = next else {
            break;
        };
        let Some(return_address) = FrameAddress::from_return_address(return_address) else {
            break;
        };
        if depth == MAX_FRAMES {
            return (depth, true, delegated);
        }
        frames[depth] = return_address.address_for_lookup();
        depth += 1;
        address = return_address;
    }
    (depth, false, delegated)
}

/// framehop's own frame iterator (no compact rows off x86_64).
#[cfg(not(target_arch = "x86_64"))]
fn walk(
    unwinder: &NativeUnwinder,
    pc: u64,
    regs: framehop::UnwindRegsNative,
    cache: &mut NativeCache,
    memory: &mut StackMemory<'_>,
    frames: &mut [u64; MAX_FRAMES],
) -> (usize, bool, u32) {
    let mut read = |addr: u64| memory.read(addr);
    let mut iter = unwinder.framehop.iter_frames(pc, regs, cache, &mut read);
    let _ip = iter.next();
    let mut depth = 1;
    while let Ok(Some(frame)) = iter.next() {
        if depth == MAX_FRAMES {
            return (depth, true, depth as u32);
        }
        frames[depth] = frame.address_for_lookup();
        depth += 1;
    }
    (depth, false, depth as u32 - 1)
}

#[cfg(target_arch = "x86_64")]
unsafe fn registers(ctx: *mut libc::c_void) -> (u64, framehop::UnwindRegsNative) {
    // Reading the interrupted registers from the ucontext the kernel saved: plain memory.
    // SAFETY: the caller passes the kernel's ucontext for this signal.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let g = &uc.uc_mcontext.gregs;
    let pc = g[libc::REG_RIP as usize] as u64;
    let sp = g[libc::REG_RSP as usize] as u64;
    let bp = g[libc::REG_RBP as usize] as u64;
    (pc, framehop::x86_64::UnwindRegsX86_64::new(pc, sp, bp))
}

#[cfg(target_arch = "x86_64")]
fn sp_of(regs: &framehop::UnwindRegsNative) -> u64 {
    regs.sp()
}

#[cfg(target_arch = "aarch64")]
unsafe fn registers(ctx: *mut libc::c_void) -> (u64, framehop::UnwindRegsNative) {
    // SAFETY: the caller passes the kernel's ucontext for this signal.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let m = &uc.uc_mcontext;
    let pc = m.pc;
    (
        pc,
        framehop::aarch64::UnwindRegsAarch64::new(m.regs[30], m.sp, m.regs[29]),
    )
}

#[cfg(target_arch = "aarch64")]
fn sp_of(regs: &framehop::UnwindRegsNative) -> u64 {
    regs.sp()
}

// ---------------------------------------------------------------------------------------
// The handler's own cost (the histogram and the clocks are in handler_cost.rs).

/// The active profiler's handler cost histogram, or `None` when no profiler runs.
/// For benchmarks.
#[doc(hidden)]
pub fn handler_cost() -> Option<CostSnapshot> {
    // Counted as a running handler, so `deactivate` does not free the state under us.
    HANDLERS_RUNNING.fetch_add(1, Ordering::SeqCst);
    let state = ACTIVE.load(Ordering::SeqCst);
    // SAFETY: as in the handler: non-null ACTIVE stays alive while we are counted.
    let snap = (!state.is_null()).then(|| unsafe { &*state }.cost.snapshot());
    HANDLERS_RUNNING.fetch_sub(1, Ordering::SeqCst);
    snap
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use framehop::FrameAddress;
    use unwind_table::{exec, Regs, Rule};

    /// For addresses all over this test binary and the libraries it maps, the compact row
    /// applied to a made-up stack gives exactly what framehop's own unwind of that frame
    /// gives (both as the interrupted frame and as a caller).
    #[test]
    fn compact_rows_unwind_every_frame_as_framehop_does() {
        let mut modules = crate::modules::ModuleTable::default();
        let unwinder = modules.refresh().unwrap().expect("a first unwinder");
        const WORDS: u64 = 8192;
        let base = 0x7000_0000_0000u64;
        // Words that point back into the stack (frame pointers), code-like values and zeros.
        let stack: Vec<u64> = (0..WORDS)
            .map(|i| match i % 5 {
                0 => 0,
                1 | 2 => base + ((i * 37 + 64) % WORDS) * 8,
                _ => 0x5555_0000_0000 + i * 0x101,
            })
            .collect();
        let read = |addr: u64| -> Result<u64, ()> {
            if addr < base || addr >= base + WORDS * 8 || !addr.is_multiple_of(8) {
                return Err(());
            }
            Ok(stack[((addr - base) / 8) as usize])
        };
        let mut cache = NativeCache::new_in();
        let (mut compared, mut delegated, mut fp_assumed, mut mismatches) =
            (0u64, 0u64, 0u64, Vec::new());
        for m in modules.modules() {
            let stride = ((m.avma.end - m.avma.start) / 20_000).max(1) | 1;
            for addr in (m.avma.start..m.avma.end).step_by(stride as usize) {
                for first in [true, false] {
                    let address = if first {
                        FrameAddress::InstructionPointer(addr)
                    } else {
                        FrameAddress::from_return_address(addr + 1).unwrap()
                    };
                    let ip = if first { addr } else { addr + 1 };
                    let (sp, bp) = (base + 512 * 8, base + 600 * 8 + (addr % 3) * 8);
                    let rule = unwinder
                        .table
                        .rule_for(address.address_for_lookup(), first, &mut 0);
                    if rule == Rule::Delegate {
                        delegated += 1;
                        continue;
                    }
                    let row = unwinder
                        .table
                        .rule_for(address.address_for_lookup(), true, &mut 0);
                    if rule != row {
                        // A return address in a run of frame-pointer functions is taken
                        // to be in a body row. The other rows there are the prologue and
                        // epilogue shapes (or padding), where no call returns to.
                        assert!(
                            matches!(
                                row,
                                Rule::Delegate
                                    | Rule::OffsetSp {
                                        sp_offset: 8 | 16,
                                        ..
                                    }
                            ),
                            "{addr:#x}: {row:?} in a frame-pointer run"
                        );
                        fp_assumed += 1;
                        continue;
                    }
                    let mut fregs = framehop::x86_64::UnwindRegsX86_64::new(ip, sp, bp);
                    let mut read_f = read;
                    let theirs = unwinder
                        .framehop
                        .unwind_frame(address, &mut fregs, &mut cache, &mut read_f)
                        .map_err(|_| ());
                    let mut r = Regs { ip, sp, bp };
                    let mut read_c = read;
                    let ours = exec(rule, first, &mut r, &mut read_c);
                    compared += 1;
                    let same = ours == theirs
                        && (ours.is_err()
                            || (r.ip, r.sp, r.bp) == (fregs.ip(), fregs.sp(), fregs.bp()));
                    if !same && mismatches.len() < 10 {
                        mismatches.push(format!(
                            "{} {addr:#x} first={first} {rule:?}: ours {ours:?} {:x?}, framehop {theirs:?} {:x?}",
                            m.path.display(),
                            (r.ip, r.sp, r.bp),
                            (fregs.ip(), fregs.sp(), fregs.bp())
                        ));
                    }
                }
            }
        }
        eprintln!("compared {compared}, delegated {delegated}, frame-pointer runs {fp_assumed}");
        assert!(mismatches.is_empty(), "{mismatches:#?}");
        assert!(
            compared > 4 * delegated,
            "most frames have a compact row: {compared} compared, {delegated} delegated"
        );
    }

    /// Real stacks of this thread, taken at a few depths: the walk with compact rows and
    /// frame-pointer runs records exactly the frames framehop's own iterator records.
    #[test]
    fn real_stacks_walk_as_framehop_walks_them() {
        let mut modules = crate::modules::ModuleTable::default();
        let unwinder = modules.refresh().unwrap().expect("a first unwinder");
        let fp_runs: Vec<usize> = unwinder.table.fp_runs();
        eprintln!("frame-pointer runs per module: {fp_runs:?}");
        eprintln!("unwind tables: {} bytes", modules.memory_bytes());

        /// Everything the walks need, on the heap: the frame that takes the registers
        /// stays small, so its whole stack fits the copy.
        struct Scratch {
            ours: Box<StackCopy>,
            theirs: Box<StackCopy>,
            cache: NativeCache,
            frames: [u64; MAX_FRAMES],
        }
        #[inline(never)]
        fn new_copy() -> Box<StackCopy> {
            Box::new(StackCopy {
                base: 0,
                filled: 0,
                exhausted: false,
                pid: 0,
                chunk_pages: 2,
                bytes: [0; STACK_COPY_BYTES],
            })
        }
        #[inline(never)]
        fn new_scratch() -> Box<Scratch> {
            Box::new(Scratch {
                ours: new_copy(),
                theirs: new_copy(),
                cache: NativeCache::new_in(),
                frames: [0; MAX_FRAMES],
            })
        }

        #[inline(never)]
        fn here(unwinder: &NativeUnwinder, depth: u32, s: &mut Scratch) -> usize {
            if depth > 0 {
                return std::hint::black_box(here(unwinder, depth - 1, s)) + 1;
            }
            let (pc, sp, bp): (u64, u64, u64);
            // SAFETY: reads rip, rsp and rbp into registers; touches no memory.
            unsafe {
                std::arch::asm!(
                    "lea {pc}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp",
                    pc = out(reg) pc, sp = out(reg) sp, bp = out(reg) bp,
                    options(nomem, nostack, preserves_flags)
                )
            };
            walk_both(unwinder, pc, sp, bp, s)
        }

        #[inline(never)]
        fn walk_both(
            unwinder: &NativeUnwinder,
            pc: u64,
            sp: u64,
            bp: u64,
            s: &mut Scratch,
        ) -> usize {
            let regs = framehop::x86_64::UnwindRegsX86_64::new(pc, sp, bp);
            s.ours.reset(sp);
            s.frames[0] = pc;
            let mut memory = StackMemory::Copy(&mut s.ours);
            let (depth, _, _) = walk(unwinder, pc, regs, &mut s.cache, &mut memory, &mut s.frames);
            s.theirs.reset(sp);
            let mut cache = NativeCache::new_in();
            let theirs_copy = &mut s.theirs;
            let mut read = |a: u64| theirs_copy.read(a);
            let mut it = unwinder
                .framehop
                .iter_frames(pc, regs, &mut cache, &mut read);
            let mut theirs = Vec::new();
            while let Ok(Some(f)) = it.next() {
                theirs.push(f.address_for_lookup());
                if theirs.len() == MAX_FRAMES {
                    break;
                }
            }
            assert_eq!(&s.frames[..depth], &theirs[..], "depth {depth}");
            depth
        }
        let mut scratch = new_scratch();
        for d in [0, 1, 5, 20] {
            let frames = here(&unwinder, d, &mut scratch);
            assert!(frames > d as usize + 3, "{frames} frames");
        }
        // And on a fresh thread (its own stack, std's thread start below it).
        std::thread::scope(|s| {
            s.spawn(|| {
                let frames = here(&unwinder, 3, &mut new_scratch());
                assert!(frames > 6, "{frames} frames");
            });
        });
    }
}
