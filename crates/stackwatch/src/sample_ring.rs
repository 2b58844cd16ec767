//! The preallocated, lock-free buffer between the signal handler and the aggregator.
//!
//! Handlers on any thread claim a slot with one `fetch_add` and one compare-exchange,
//! write a raw stack into it and publish it with a release store; the aggregator scans
//! all slots, reads the published ones and frees them. No allocation, no lock, and a
//! full buffer drops the sample and counts it instead of waiting.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Deepest stack recorded; deeper stacks keep their innermost frames and are marked
/// truncated.
pub const MAX_FRAMES: usize = 128;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const FULL: u8 = 2;

/// One stack as the signal handler saw it: addresses, innermost first.
#[repr(C)]
pub struct RawSample {
    /// Kernel thread id of the sampled thread.
    pub tid: u32,
    /// Sampling periods this sample stands for (`1 + timer overruns`).
    pub weight: u32,
    /// The sampled thread's label set id when it was interrupted (0: none).
    pub labels: u32,
    /// Number of valid entries in `frames`.
    pub depth: u32,
    /// The walk stopped at `MAX_FRAMES` before reaching the root.
    pub truncated: bool,
    /// Lookup addresses: the interrupted instruction pointer first, then return
    /// addresses minus one (so they fall inside the calling instruction).
    pub frames: [u64; MAX_FRAMES],
}

struct Slot {
    state: AtomicU8,
    sample: UnsafeCell<RawSample>,
}

/// A fixed set of [`RawSample`] slots shared by all signal handlers and one reader.
pub struct SampleRing {
    slots: Box<[Slot]>,
    next: AtomicUsize,
    dropped: AtomicU64,
}

// SAFETY: a slot's `sample` is only written through the one `SlotWriter` whose claim
// moved its state EMPTY -> WRITING, and only read by the aggregator after it observed
// FULL (acquire), until it stores EMPTY (release). Those states make access exclusive.
unsafe impl Sync for SampleRing {}
// SAFETY: the slots are plain data and atomics; ownership can move between threads.
unsafe impl Send for SampleRing {}

/// A claimed slot: the only way to write it. The `&mut RawSample` it lends
/// ([`SlotWriter::sample`]) cannot outlive it, and [`SlotWriter::publish`] consumes it,
/// so no reference to a slot survives its publication (after which the aggregator reads
/// it). Dropped unpublished, the slot is given back empty.
pub struct SlotWriter<'a> {
    ring: &'a SampleRing,
    index: usize,
}

impl SlotWriter<'_> {
    /// The sample to fill.
    pub fn sample(&mut self) -> &mut RawSample {
        // SAFETY: this writer moved the slot EMPTY -> WRITING and is the only one that
        // can touch it until it stores FULL or EMPTY; the borrow is tied to `&mut self`,
        // so it ends before `publish` or drop.
        unsafe { &mut *self.ring.slots[self.index].sample.get() }
    }

    /// Makes the sample visible to the reader. Async-signal-safe: one atomic store.
    pub fn publish(self) {
        self.ring.slots[self.index]
            .state
            .store(FULL, Ordering::Release);
        std::mem::forget(self);
    }
}

impl Drop for SlotWriter<'_> {
    fn drop(&mut self) {
        self.ring.slots[self.index]
            .state
            .store(EMPTY, Ordering::Release);
    }
}

impl SampleRing {
    /// Allocates `capacity` slots up front (this is the only allocation).
    pub fn new(capacity: usize) -> Self {
        let slots = (0..capacity.max(2))
            .map(|_| Slot {
                state: AtomicU8::new(EMPTY),
                sample: UnsafeCell::new(RawSample {
                    tid: 0,
                    weight: 0,
                    labels: 0,
                    depth: 0,
                    truncated: false,
                    frames: [0; MAX_FRAMES],
                }),
            })
            .collect();
        SampleRing {
            slots,
            next: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Bytes held by the slots.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    /// Claims the next slot for writing. Async-signal-safe: atomics only. Returns `None`
    /// (and counts a drop) when that slot still holds an unread sample.
    pub fn claim(&self) -> Option<SlotWriter<'_>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[i];
        if slot
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(SlotWriter {
            ring: self,
            index: i,
        })
    }

    /// Counts a sample dropped for another reason (no unwind scratch free).
    pub fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Total samples dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Hands every published sample to `f` and frees its slot. Only one thread may
    /// drain (the aggregator). Returns how many samples were read.
    pub fn drain(&self, mut f: impl FnMut(&RawSample)) -> usize {
        let mut n = 0;
        for slot in self.slots.iter() {
            if slot.state.load(Ordering::Acquire) == FULL {
                // SAFETY: FULL means the writer is done and no other writer can claim
                // the slot until we store EMPTY below.
                f(unsafe { &*slot.sample.get() });
                slot.state.store(EMPTY, Ordering::Release);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn full_ring_drops_and_counts_instead_of_overwriting() {
        let ring = SampleRing::new(4);
        for i in 0..6u32 {
            if let Some(mut w) = ring.claim() {
                let s = w.sample();
                s.tid = i;
                s.depth = 0;
                w.publish();
            }
        }
        assert_eq!(ring.dropped(), 2);
        let mut tids = Vec::new();
        ring.drain(|s| tids.push(s.tid));
        tids.sort();
        assert_eq!(tids, vec![0, 1, 2, 3]);
        assert_eq!(ring.drain(|_| {}), 0);
    }

    #[test]
    fn a_writer_dropped_unpublished_gives_its_slot_back() {
        let ring = SampleRing::new(2);
        {
            let mut w = ring.claim().unwrap();
            w.sample().tid = 7;
        }
        assert_eq!(ring.drain(|_| {}), 0);
        let mut w = ring.claim().unwrap();
        w.sample().tid = 8;
        w.publish();
        let w = ring.claim().unwrap();
        w.publish();
        assert_eq!(ring.dropped(), 0);
        let mut tids = Vec::new();
        ring.drain(|s| tids.push(s.tid));
        assert_eq!(tids.len(), 2);
        assert!(tids.contains(&8));
    }

    #[test]
    fn concurrent_writers_lose_nothing_they_did_not_count() {
        let ring = Arc::new(SampleRing::new(256));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    let mut ok = 0u64;
                    for _ in 0..20_000 {
                        if let Some(mut w) = ring.claim() {
                            let s = w.sample();
                            s.tid = t;
                            s.weight = 1;
                            w.publish();
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let reader = {
            let ring = ring.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut read = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ring.drain(|s| read += s.weight as u64);
                }
                ring.drain(|s| read += s.weight as u64);
                read
            })
        };
        let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        let read = reader.join().unwrap();
        assert_eq!(read, written);
        assert_eq!(written + ring.dropped(), 80_000);
    }
}
