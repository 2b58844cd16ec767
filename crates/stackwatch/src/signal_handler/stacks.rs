//! Which thread was interrupted and where its stack is, so that the handler can read the
//! stack directly instead of copying it with `process_vm_readv` (a syscall of about 1 µs
//! per call), and know its tid without asking the kernel (`gettid`, a syscall too).
//!
//! The handler runs on the interrupted thread itself (SIGPROF is delivered to the thread
//! its timer belongs to, and the handler does not use an alternate stack), so it knows
//! the thread's stack pointer and its thread pointer (`%fs:0`, the TCB, which the x86_64
//! TLS ABI requires to hold its own address). A direct read is only safe when the address
//! is certainly mapped, and the thread pointer alone does not say where the stack's
//! mapping ends: that comes from this table, filled by the aggregator.
//!
//! How an entry is made:
//! 1. a handler that finds no entry for its TCB asks the kernel for its tid, posts
//!    `(tid, TCB, sp)` in a small mailbox (one compare-exchange) and asks for a module
//!    refresh;
//! 2. on its next refresh the aggregator reads `/proc/self/maps` (it does anyway) and
//!    accepts the thread if its `sp` lies in either
//!    - the `[stack]` mapping (the main thread): readable from `sp` to that mapping's
//!      end, which never moves (the main stack only grows down); or
//!    - a private anonymous read-write mapping that also holds the TCB, directly above a
//!      `---p` guard mapping: glibc and musl allocate a thread's guard, stack, TLS and TCB
//!      in one `mmap`, so everything from `sp` up to the TCB is that thread's own block,
//!      which stays mapped while the thread lives. Readable from `sp` to the TCB;
//!
//!    and if the thread's tid is where the C library keeps it in the TCB (glibc's and
//!    musl's `struct pthread` hold the tid at a fixed offset, which the kernel writes at
//!    thread creation and clears at exit; the offset is found once, on the aggregator's
//!    own thread, and checked for every thread with `process_vm_readv`).
//! 3. The entry `(TCB, tid, lo, hi)` is written under a sequence counter (one writer, the
//!    aggregator). The handler trusts it only when the TCB matches, `sp` is in `[lo, hi)`
//!    and the tid word of the TCB still holds the entry's tid: a thread that reuses a
//!    dead thread's cached stack block (same TCB, another tid) is sent back to step 1.
//!    Reading that word is what glibc itself does to learn a thread's tid
//!    (`THREAD_GETMEM (THREAD_SELF, tid)`, a load at `%fs:offset`); it is done only for
//!    a TCB the aggregator saw inside a thread block holding that word.
//!
//! Any doubt (no entry, a write in progress, another tid, `sp` elsewhere, as on a
//! coroutine's stack) falls back to `gettid` and `process_vm_readv`. Entries of threads
//! that are gone are cleared at each refresh. x86_64 only (elsewhere the handler always
//! asks and copies).

use std::collections::HashSet;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Threads whose stack bounds are kept at the same time.
pub const STACK_SLOTS: usize = 4096;
/// Slots probed from a TCB's home slot, by the handler and when inserting.
const PROBES: usize = 8;
/// Observations waiting for the aggregator.
const MAILBOX: usize = 64;
/// Bytes of its own TCB the aggregator searches for its tid.
const TID_SEARCH: usize = 2048;

/// Offset of the tid in the C library's thread descriptor, from the TCB (0: unknown,
/// then no entry is made and the handler always asks the kernel).
static TID_OFFSET: AtomicU64 = AtomicU64::new(0);

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

fn home(tcb: u64) -> usize {
    // TCBs are at least 64-byte aligned; mix the page and line bits.
    ((tcb >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % STACK_SLOTS
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

/// `(tid, lo, hi)` for the thread with TCB `tcb`, if the aggregator verified it: a
/// seqlock read of a static table, bounded probes, no waiting (a write in progress is a
/// miss). Atomic loads only: async-signal-safe.
#[inline]
fn entry(tcb: u64) -> Option<(u32, u64, u64)> {
    let start = home(tcb);
    for i in 0..PROBES {
        let slot = &SLOTS[(start + i) % STACK_SLOTS];
        let seq = slot.seq.load(Ordering::Acquire);
        if seq & 1 != 0 || slot.tcb.load(Ordering::Relaxed) != tcb {
            continue;
        }
        let (tid, lo, hi) = (
            slot.tid.load(Ordering::Relaxed),
            slot.lo.load(Ordering::Relaxed),
            slot.hi.load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != seq || tid == 0 {
            return None;
        }
        return Some((tid, lo, hi));
    }
    None
}

/// The interrupted thread's tid and the range `[lo, hi)` of its stack that may be read
/// directly, when the aggregator has verified them (see the module comment); `None`:
/// ask the kernel and copy. `tcb` is [`thread_pointer`], `sp` the interrupted stack
/// pointer. Signal context: atomics on a static table, then one load from the current
/// thread's own descriptor.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn known_thread(tcb: u64, sp: u64) -> Option<(u32, u64, u64)> {
    let offset = TID_OFFSET.load(Ordering::Relaxed);
    if offset == 0 {
        return None;
    }
    let (tid, lo, hi) = entry(tcb)?;
    if sp < lo || sp >= hi {
        return None;
    }
    // SAFETY: `tcb` is this thread's own TCB and the aggregator found `tcb + offset`
    // inside the mapping of a thread block with that TCB, holding a tid: the C library's
    // descriptor of the thread running this handler, which it reads the same way. A
    // volatile load: the kernel writes this word.
    let now = unsafe { std::ptr::read_volatile(tcb.wrapping_add(offset) as *const u32) };
    (now == tid).then_some((tid, lo, hi))
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

/// Reads `len` bytes of our own memory at `addr` without risking a fault (the
/// aggregator's view of another thread's descriptor, which may be unmapped by the time
/// it looks). Not for signal context use (it would be safe, but is not needed there).
fn read_own(addr: u64, buf: &mut [u8]) -> bool {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` is our own buffer of `buf.len()` bytes; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}

/// Finds where the C library keeps the tid in the TCB: the one 4-byte word of the
/// calling thread's first [`TID_SEARCH`] TCB bytes that holds its tid. x86_64 only.
#[cfg(target_arch = "x86_64")]
fn find_tid_offset() -> u64 {
    let tcb = thread_pointer();
    // SAFETY: no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    let mut buf = vec![0u8; TID_SEARCH];
    // Its descriptor may end before TID_SEARCH bytes: take what can be read.
    let mut len = TID_SEARCH;
    while len >= 64 && !read_own(tcb, &mut buf[..len]) {
        len /= 2;
    }
    let hits: Vec<usize> = (8..len.saturating_sub(3))
        .step_by(4)
        .filter(|&o| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap()) == tid)
        .collect();
    match hits[..] {
        [one] => one as u64,
        _ => 0,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn find_tid_offset() -> u64 {
    0
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
/// of the module comment; `None` if the layout is not one we can vouch for. The TCB's
/// word at `offset` must lie in a read-write mapping too.
fn verify(vmas: &[Vma<'_>], tcb: u64, sp: u64, offset: u64) -> Option<(u64, u64)> {
    let find = |a: u64| {
        let i = vmas.partition_point(|v| v.start <= a).checked_sub(1)?;
        (a < vmas[i].end).then_some(i)
    };
    let i = find(sp)?;
    let v = &vmas[i];
    let tid_word = tcb.checked_add(offset + 4)?;
    let t = find(tcb)?;
    let tcb_ok = t == find(tid_word - 1)? && vmas[t].perms.starts_with("rw");
    if v.name == "[stack]" {
        return tcb_ok.then_some((v.start, v.end));
    }
    let anonymous = v.name.is_empty() || v.name.starts_with("[anon:");
    let guarded = i > 0 && vmas[i - 1].end == v.start && vmas[i - 1].perms == "---p";
    if anonymous && v.perms == "rw-p" && guarded && t == i && tcb_ok && sp < tcb {
        return Some((v.start, tcb));
    }
    None
}

/// Writes an entry (aggregator thread only: the single writer of `SLOTS`).
fn store(slot: &Slot, tcb: u64, tid: u32, lo: u64, hi: u64) {
    let seq = slot.seq.load(Ordering::Relaxed);
    slot.seq.store(seq.wrapping_add(1) | 1, Ordering::Relaxed);
    fence(Ordering::Release);
    slot.tcb.store(tcb, Ordering::Relaxed);
    slot.tid.store(tid, Ordering::Relaxed);
    slot.lo.store(lo, Ordering::Relaxed);
    slot.hi.store(hi, Ordering::Relaxed);
    slot.seq.store((seq | 1).wrapping_add(1), Ordering::Release);
}

fn insert(tcb: u64, tid: u32, lo: u64, hi: u64) {
    let start = home(tcb);
    let mut free = None;
    for i in 0..PROBES {
        let slot = &SLOTS[(start + i) % STACK_SLOTS];
        let t = slot.tcb.load(Ordering::Relaxed);
        if t == tcb {
            store(slot, tcb, tid, lo, hi);
            return;
        }
        if t == 0 && free.is_none() {
            free = Some(slot);
        }
    }
    // No room near home: take over the home slot (its thread falls back to asking and
    // copying until it is seen again).
    store(free.unwrap_or(&SLOTS[start]), tcb, tid, lo, hi);
}

/// Verifies the threads the handler asked about against `maps` (the text of
/// `/proc/self/maps`), and clears the entries of threads that are gone. Returns how many
/// threads were verified. Aggregator thread only.
pub fn refresh(maps: &str) -> usize {
    let mut offset = TID_OFFSET.load(Ordering::Relaxed);
    if offset == 0 {
        offset = find_tid_offset();
        TID_OFFSET.store(offset, Ordering::Relaxed);
    }
    // Parsed only if a thread is waiting (most refreshes find none).
    let mut vmas = None;
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
        if tid == 0 || offset == 0 {
            continue;
        }
        let vmas = vmas.get_or_insert_with(|| parse_vmas(maps));
        let Some((lo, hi)) = verify(vmas, tcb, sp, offset) else {
            continue;
        };
        // The tid is where the offset says, in this thread's descriptor (read safely:
        // the thread may have exited since).
        let mut word = [0u8; 4];
        if read_own(tcb + offset, &mut word) && u32::from_ne_bytes(word) == tid {
            insert(tcb, tid, lo, hi);
            verified += 1;
        }
    }
    let held = SLOTS
        .iter()
        .any(|slot| slot.tid.load(Ordering::Relaxed) != 0);
    if !held {
        return verified;
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a10000 r-xp 00000000 08:01 1234 /usr/bin/x\n\
7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n\
7f0000001000-7f0000201000 rw-p 00000000 00:00 0 \n\
7f0000201000-7f0000202000 rw-p 00000000 00:00 0 \n\
7f0000300000-7f0000400000 rw-p 00000000 00:00 0 \n\
7ffd00000000-7ffd00100000 rw-p 00000000 00:00 0                          [stack]\n";

    /// glibc's offset on x86_64, for the made-up maps.
    const OFF: u64 = 0x2d0;

    #[test]
    fn a_guarded_thread_block_reads_up_to_its_tcb() {
        let v = parse_vmas(MAPS);
        let tcb = 0x7f0000200700;
        assert_eq!(
            verify(&v, tcb, 0x7f00001ff000, OFF),
            Some((0x7f0000001000, tcb))
        );
        // TCB in another mapping, or below sp: not vouched for.
        assert_eq!(verify(&v, 0x7f0000201800, 0x7f00001ff000, OFF), None);
        assert_eq!(verify(&v, tcb, 0x7f0000200800, OFF), None);
        // The tid word past the end of the block's mapping.
        assert_eq!(verify(&v, 0x7f0000200f00, 0x7f00001ff000, OFF), None);
        // No guard below.
        assert_eq!(verify(&v, 0x7f00003ff000, 0x7f0000300800, OFF), None);
        // Unmapped sp.
        assert_eq!(verify(&v, tcb, 0x7f0000250000, OFF), None);
    }

    #[test]
    fn the_main_stack_reads_up_to_its_end() {
        let v = parse_vmas(MAPS);
        assert_eq!(
            verify(&v, 0x7f0000300100, 0x7ffd000ff000, OFF),
            Some((0x7ffd00000000, 0x7ffd00100000))
        );
        // A TCB that is not in writable memory is no thread's.
        assert_eq!(verify(&v, 0x55d0c0a00100, 0x7ffd000ff000, OFF), None);
    }

    /// Posts this thread, refreshes, and returns (tid, tcb, sp) once it is known.
    fn verify_this_thread() -> (u32, u64, u64) {
        // SAFETY: no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        let tcb = thread_pointer();
        let here = 0u64;
        let sp = std::hint::black_box(&here) as *const u64 as u64;
        post(tid, tcb, sp);
        // (Another test's module refresh may be the one that verifies it.)
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        refresh(&maps);
        (tid, tcb, sp)
    }

    #[test]
    fn this_threads_stack_and_tid_are_verified_from_its_own_maps_and_descriptor() {
        let t = std::thread::spawn(|| {
            let (tid, tcb, sp) = verify_this_thread();
            assert_ne!(
                TID_OFFSET.load(Ordering::Relaxed),
                0,
                "glibc's tid offset found"
            );
            let (t, lo, hi) = known_thread(tcb, sp).expect("a std thread is verified");
            assert_eq!(t, tid);
            assert!(lo <= sp && sp < hi && hi == tcb, "{lo:x} {sp:x} {hi:x}");
            // A stack pointer elsewhere (another stack), or another TCB: not vouched for.
            assert_eq!(known_thread(tcb, hi + 64), None);
            assert_eq!(entry(tcb + 64), None);
            (tid, tcb)
        });
        let (tid, tcb) = t.join().unwrap();
        // The next thread likely gets the same cached block, TCB included, and another
        // tid: the stale entry must not be taken for it.
        std::thread::spawn(move || {
            // SAFETY: no preconditions.
            let now = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            let here = 0u64;
            let sp = std::hint::black_box(&here) as *const u64 as u64;
            if thread_pointer() == tcb {
                assert_ne!(now, tid);
                assert_eq!(known_thread(tcb, sp), None);
            }
        })
        .join()
        .unwrap();
        // Both are gone: their entries are cleared at the next refresh.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        refresh(&maps);
        assert!(SLOTS.iter().all(|s| s.tid.load(Ordering::Relaxed) != tid));
    }
}
