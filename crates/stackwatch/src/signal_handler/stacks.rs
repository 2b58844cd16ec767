//! Where each thread's stack is, so that the handler can read it directly instead of
//! copying it with `process_vm_readv` (a syscall of about 1 µs per call).
//!
//! A direct read is only safe when the address is certainly mapped. The handler runs on
//! the interrupted thread itself (SIGPROF is delivered to the thread its timer belongs
//! to, and the handler does not use an alternate stack), so it knows the thread's tid,
//! its stack pointer and its thread pointer (`%fs:0`, the TCB). What it does not know is
//! where the mapping holding the stack ends: that comes from this table.
//!
//! How an entry is made:
//! 1. a handler that finds no entry for its thread posts `(tid, TCB, sp)` in a small
//!    mailbox (one compare-exchange) and asks for a module refresh;
//! 2. on its next refresh the aggregator reads `/proc/self/maps` (it does anyway) and
//!    accepts the thread if its `sp` lies in either
//!    - the `[stack]` mapping (the main thread): readable from `sp` to that mapping's
//!      end, which never moves (the main stack only grows down); or
//!    - a private anonymous read-write mapping that also holds the TCB, directly above a
//!      `---p` guard mapping: glibc and musl allocate a thread's guard, stack, TLS and TCB
//!      in one `mmap`, so everything from `sp` up to the TCB is that thread's own block,
//!      which stays mapped while the thread lives. Readable from `sp` to the TCB.
//! 3. The entry `(tid, TCB, lo, hi)` is written under a sequence counter (one writer, the
//!    aggregator). The handler uses it only when the tid and the TCB both match and `sp`
//!    is in `[lo, hi)`; any doubt (no entry, a write in progress, another TCB: a new
//!    thread that got a dead one's tid) falls back to `process_vm_readv`.
//!
//! Entries of threads that are gone are cleared at each refresh. x86_64 only (elsewhere
//! the handler always copies).

use std::collections::HashSet;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Threads whose stack bounds are kept at the same time.
pub const STACK_SLOTS: usize = 4096;
/// Slots probed from a tid's home slot, by the handler and when inserting.
const PROBES: usize = 8;
/// Observations waiting for the aggregator.
const MAILBOX: usize = 64;

struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU32,
    tid: AtomicU32,
    tcb: AtomicU64,
    lo: AtomicU64,
    hi: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise SLOTS
const FREE: Slot = Slot {
    seq: AtomicU32::new(0),
    tid: AtomicU32::new(0),
    tcb: AtomicU64::new(0),
    lo: AtomicU64::new(0),
    hi: AtomicU64::new(0),
};

/// Static, so the handler reads it without a pointer that could dangle.
static SLOTS: [Slot; STACK_SLOTS] = [FREE; STACK_SLOTS];

const OBS_EMPTY: u32 = 0;
const OBS_WRITING: u32 = 1;
const OBS_FULL: u32 = 2;

struct Observation {
    state: AtomicU32,
    tid: AtomicU32,
    tcb: AtomicU64,
    sp: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise MAILBOX_SLOTS
const NO_OBSERVATION: Observation = Observation {
    state: AtomicU32::new(OBS_EMPTY),
    tid: AtomicU32::new(0),
    tcb: AtomicU64::new(0),
    sp: AtomicU64::new(0),
};

static MAILBOX_SLOTS: [Observation; MAILBOX] = [NO_OBSERVATION; MAILBOX];

fn home(tid: u32) -> usize {
    (tid.wrapping_mul(0x9E37_79B9) >> 12) as usize % STACK_SLOTS
}

/// The interrupted thread's TCB address (`%fs:0` holds the thread pointer itself, as the
/// x86_64 TLS ABI requires of glibc and musl). A load through the segment register of
/// the running thread, which is always mapped: async-signal-safe.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reads the first word of the current thread's TCB, which the ABI requires to
    // be mapped and to hold its own address; no memory is written.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// `[lo, hi)` of the stack of thread `tid` whose TCB is `tcb`, if the aggregator verified
/// it. Atomic loads on a static table, bounded probes, no waiting (a write in progress is
/// a miss): async-signal-safe.
#[inline]
pub fn bounds(tid: u32, tcb: u64) -> Option<(u64, u64)> {
    let start = home(tid);
    for i in 0..PROBES {
        let slot = &SLOTS[(start + i) % STACK_SLOTS];
        let seq = slot.seq.load(Ordering::Acquire);
        if seq & 1 != 0 {
            continue;
        }
        if slot.tid.load(Ordering::Relaxed) != tid {
            continue;
        }
        let (t, lo, hi) = (
            slot.tcb.load(Ordering::Relaxed),
            slot.lo.load(Ordering::Relaxed),
            slot.hi.load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != seq || t != tcb {
            return None;
        }
        return Some((lo, hi));
    }
    None
}

/// Asks the aggregator to find thread `tid`'s stack (it was at `sp`, with TCB `tcb`).
/// One compare-exchange on a static mailbox slot, then plain atomic stores; a busy slot
/// drops the request (the next sample asks again): async-signal-safe.
pub fn post(tid: u32, tcb: u64, sp: u64) {
    let o = &MAILBOX_SLOTS[tid as usize % MAILBOX];
    if o.state
        .compare_exchange(OBS_EMPTY, OBS_WRITING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    o.tid.store(tid, Ordering::Relaxed);
    o.tcb.store(tcb, Ordering::Relaxed);
    o.sp.store(sp, Ordering::Relaxed);
    o.state.store(OBS_FULL, Ordering::Release);
}

/// One mapping of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vma<'a> {
    start: u64,
    end: u64,
    perms: &'a str,
    name: &'a str,
}

fn parse_vmas(maps: &str) -> Vec<Vma<'_>> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(_inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let name = f.next().unwrap_or("").trim_start();
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else {
            continue;
        };
        out.push(Vma {
            start,
            end,
            perms,
            name,
        });
    }
    out
}

/// The readable range `[lo, hi)` for a thread seen at `sp` with TCB `tcb`, by the rules
/// of the module comment; `None` if the layout is not one we can vouch for.
fn verify(vmas: &[Vma<'_>], tcb: u64, sp: u64) -> Option<(u64, u64)> {
    let i = vmas.partition_point(|v| v.start <= sp).checked_sub(1)?;
    let v = &vmas[i];
    if sp >= v.end {
        return None;
    }
    if v.name == "[stack]" {
        return Some((v.start, v.end));
    }
    let anonymous = v.name.is_empty() || v.name.starts_with("[anon:");
    let guarded = i > 0 && vmas[i - 1].end == v.start && vmas[i - 1].perms == "---p";
    if anonymous && v.perms == "rw-p" && guarded && sp < tcb && tcb < v.end {
        return Some((v.start, tcb));
    }
    None
}

/// Writes an entry (aggregator thread only: the single writer of `SLOTS`).
fn store(slot: &Slot, tid: u32, tcb: u64, lo: u64, hi: u64) {
    let seq = slot.seq.load(Ordering::Relaxed);
    slot.seq.store(seq.wrapping_add(1) | 1, Ordering::Relaxed);
    fence(Ordering::Release);
    slot.tid.store(tid, Ordering::Relaxed);
    slot.tcb.store(tcb, Ordering::Relaxed);
    slot.lo.store(lo, Ordering::Relaxed);
    slot.hi.store(hi, Ordering::Relaxed);
    slot.seq.store((seq | 1).wrapping_add(1), Ordering::Release);
}

fn insert(tid: u32, tcb: u64, lo: u64, hi: u64) {
    let start = home(tid);
    let mut free = None;
    for i in 0..PROBES {
        let slot = &SLOTS[(start + i) % STACK_SLOTS];
        let t = slot.tid.load(Ordering::Relaxed);
        if t == tid {
            store(slot, tid, tcb, lo, hi);
            return;
        }
        if t == 0 && free.is_none() {
            free = Some(slot);
        }
    }
    // No room near home: take over the home slot (its thread falls back to copying until
    // it is seen again).
    store(free.unwrap_or(&SLOTS[start]), tid, tcb, lo, hi);
}

/// Verifies the threads the handler asked about against `maps` (the text of
/// `/proc/self/maps`), and clears the entries of threads that are gone. Returns how many
/// threads were verified. Aggregator thread only.
pub fn refresh(maps: &str) -> usize {
    let vmas = parse_vmas(maps);
    let mut verified = 0;
    for o in MAILBOX_SLOTS.iter() {
        if o.state.load(Ordering::Acquire) != OBS_FULL {
            continue;
        }
        let (tid, tcb, sp) = (
            o.tid.load(Ordering::Relaxed),
            o.tcb.load(Ordering::Relaxed),
            o.sp.load(Ordering::Relaxed),
        );
        o.state.store(OBS_EMPTY, Ordering::Release);
        if tid == 0 {
            continue;
        }
        if let Some((lo, hi)) = verify(&vmas, tcb, sp) {
            insert(tid, tcb, lo, hi);
            verified += 1;
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        let live: HashSet<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for slot in SLOTS.iter() {
            let t = slot.tid.load(Ordering::Relaxed);
            if t != 0 && !live.contains(&t) {
                store(slot, 0, 0, 0, 0);
            }
        }
    }
    verified
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a10000 r-xp 00000000 08:01 1234 /usr/bin/x\n\
7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n\
7f0000001000-7f0000201000 rw-p 00000000 00:00 0 \n\
7f0000201000-7f0000202000 rw-p 00000000 00:00 0 \n\
7f0000300000-7f0000400000 rw-p 00000000 00:00 0 \n\
7ffd00000000-7ffd00100000 rw-p 00000000 00:00 0                          [stack]\n";

    #[test]
    fn a_guarded_thread_block_reads_up_to_its_tcb() {
        let v = parse_vmas(MAPS);
        let tcb = 0x7f0000200700;
        assert_eq!(verify(&v, tcb, 0x7f00001ff000), Some((0x7f0000001000, tcb)));
        // TCB in another mapping, or below sp: not vouched for.
        assert_eq!(verify(&v, 0x7f0000201800, 0x7f00001ff000), None);
        assert_eq!(verify(&v, tcb, 0x7f0000200800), None);
        // No guard below.
        assert_eq!(verify(&v, 0x7f00003ff000, 0x7f0000300800), None);
        // Unmapped sp.
        assert_eq!(verify(&v, tcb, 0x7f0000250000), None);
    }

    #[test]
    fn the_main_stack_reads_up_to_its_end() {
        let v = parse_vmas(MAPS);
        assert_eq!(
            verify(&v, 0x55d0c0a00100, 0x7ffd000ff000),
            Some((0x7ffd00000000, 0x7ffd00100000))
        );
    }

    #[test]
    fn this_threads_stack_is_verified_from_its_own_maps_and_found_by_tid_and_tcb() {
        let t = std::thread::spawn(|| {
            // SAFETY: no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            let tcb = thread_pointer();
            let here = 0u64;
            let sp = &here as *const u64 as u64;
            assert_eq!(bounds(tid, tcb), None);
            post(tid, tcb, sp);
            // (Another test's module refresh may be the one that verifies it.)
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            refresh(&maps);
            let (lo, hi) = bounds(tid, tcb).expect("a std thread's stack is verified");
            assert!(lo <= sp && sp < hi && hi == tcb, "{lo:x} {sp:x} {hi:x}");
            // Another TCB for the same tid (a new thread that got the tid) is not vouched for.
            assert_eq!(bounds(tid, tcb + 4096), None);
            tid
        });
        let tid = t.join().unwrap();
        // The thread is gone: its entry is cleared at the next refresh.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        refresh(&maps);
        assert!(SLOTS.iter().all(|s| s.tid.load(Ordering::Relaxed) != tid));
    }
}
