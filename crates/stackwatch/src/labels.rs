//! Sample labels: which table, tenant or endpoint the sampled work was for.
//!
//! A service sets a label set on the current thread ([`label`], [`with_labels`],
//! [`LabelSet::enter`]) or on a future ([`LabeledFuture`], which sets it during each poll
//! only, so the labels follow a task across an async runtime's worker threads). Every
//! sample taken while a set is current carries it.
//!
//! How a label set reaches the signal handler without a lock or an allocation:
//!
//! - Label sets are interned here, outside the handler, into [`LabelSet`] ids (`u32`);
//!   id 0 is the empty set. Interning takes a lock and may allocate; entering an
//!   interned set does neither.
//! - Each thread that ever sets labels claims one slot of a fixed, static table of
//!   [`THREAD_SLOTS`] `(tid, set id)` pairs of atomics (a thread-local remembers which).
//!   Entering a set is one atomic store into the thread's own slot.
//! - The handler knows the interrupted thread's tid (it asks the kernel) and finds the
//!   slot by probing the table from `tid`'s hash: atomic loads on static memory, no TLS
//!   access (a `__tls_get_addr` may allocate), no lock. See [`current_set_for`].
//!
//! Caps: key and value text is cut at [`MAX_INTERNED_TEXT`] bytes when interned, and at
//! most [`MAX_INTERNED_SETS`] distinct sets are interned per process (past it, new sets
//! become one overflow set whose keys take the value [`LABELS_PRUNED`]). The per-window
//! caps (sets per window, key and value lengths on the wire) are the builder's
//! [`LabelBudget`](stackwatch_profile::LabelBudget).

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use stackwatch_profile::labels::SampleLabels;
use stackwatch_profile::LABELS_PRUNED;

/// Threads that can carry labels at the same time; a thread past it runs unlabeled
/// (and is counted in [`unlabeled_threads`]).
pub const THREAD_SLOTS: usize = 4096;
/// Distinct label sets interned per process.
pub const MAX_INTERNED_SETS: usize = 65_536;
/// Bytes of a key or value kept when interning.
pub const MAX_INTERNED_TEXT: usize = 1024;

/// Slot states beside a tid: never used, and freed by an exited thread.
const SLOT_EMPTY: u32 = 0;
const SLOT_FREED: u32 = u32::MAX;

/// One thread's entry in the table the handler reads.
struct ThreadSlot {
    tid: AtomicU32,
    set: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise TABLE
const FREE_SLOT: ThreadSlot = ThreadSlot {
    tid: AtomicU32::new(SLOT_EMPTY),
    set: AtomicU32::new(0),
};

/// `(tid, current set)` of every thread that set labels. Static: the handler reads it
/// without any pointer that could dangle.
static TABLE: [ThreadSlot; THREAD_SLOTS] = [FREE_SLOT; THREAD_SLOTS];

/// Threads that wanted labels but found the table full.
static UNLABELED_THREADS: AtomicU32 = AtomicU32::new(0);

fn home(tid: u32) -> usize {
    // Fibonacci hashing spreads consecutive tids.
    (tid.wrapping_mul(0x9E37_79B9) as usize) % THREAD_SLOTS
}

/// The current label set id of thread `tid`; 0 when it never set one.
///
/// Async-signal-safe, for the SIGPROF handler: it reads only atomics in a static array
/// (no allocation, no lock, no thread-local access), and stops at the first never-used
/// slot or after one pass over the table, so it always terminates.
#[inline]
pub(crate) fn current_set_for(tid: u32) -> u32 {
    let start = home(tid);
    for i in 0..THREAD_SLOTS {
        let slot = &TABLE[(start + i) % THREAD_SLOTS];
        let t = slot.tid.load(Ordering::Relaxed);
        if t == tid {
            return slot.set.load(Ordering::Relaxed);
        }
        if t == SLOT_EMPTY {
            return 0;
        }
    }
    0
}

/// The kernel's id of this thread (what the signal handler looks slots up by).
#[cfg(target_os = "linux")]
fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Elsewhere nothing samples; a per-thread number keeps the slots distinct.
#[cfg(not(target_os = "linux"))]
fn current_tid() -> u32 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(1);
    thread_local! {
        static ID: u32 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

/// This thread's slot, claimed on first use and freed when the thread exits.
struct SlotClaim(Option<&'static ThreadSlot>);

impl SlotClaim {
    fn claim() -> Self {
        let tid = current_tid();
        if tid == SLOT_EMPTY || tid == SLOT_FREED {
            return SlotClaim(None);
        }
        let start = home(tid);
        for i in 0..THREAD_SLOTS {
            let slot = &TABLE[(start + i) % THREAD_SLOTS];
            let t = slot.tid.load(Ordering::Relaxed);
            if t == SLOT_EMPTY || t == SLOT_FREED {
                // The set first, then the tid: a handler that finds the tid finds set 0
                // or ours, never a previous thread's.
                slot.set.store(0, Ordering::Relaxed);
                if slot
                    .tid
                    .compare_exchange(t, tid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return SlotClaim(Some(slot));
                }
            }
        }
        UNLABELED_THREADS.fetch_add(1, Ordering::Relaxed);
        SlotClaim(None)
    }
}

impl Drop for SlotClaim {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.set.store(0, Ordering::Relaxed);
            // FREED, not EMPTY: lookups for tids placed after this slot keep probing.
            slot.tid.store(SLOT_FREED, Ordering::Release);
        }
    }
}

thread_local! {
    static SLOT: SlotClaim = SlotClaim::claim();
}

/// Sets this thread's current set, returning the previous one. `None` when the thread
/// has no slot (table full, or the thread is exiting).
#[inline]
pub(crate) fn swap_current(set: u32) -> Option<u32> {
    SLOT.try_with(|s| s.0.map(|slot| slot.set.swap(set, Ordering::Relaxed)))
        .ok()
        .flatten()
}

#[inline]
fn current_id() -> u32 {
    SLOT.try_with(|s| s.0.map_or(0, |slot| slot.set.load(Ordering::Relaxed)))
        .unwrap_or(0)
}

/// Threads that wanted labels when all [`THREAD_SLOTS`] were taken (their samples carry
/// no labels).
pub fn unlabeled_threads() -> u32 {
    UNLABELED_THREADS.load(Ordering::Relaxed)
}

/// The interned label sets of this process.
struct Registry {
    sets: Vec<Arc<SampleLabels>>,
    index: HashMap<Arc<SampleLabels>, u32>,
    overflow: Option<u32>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let empty = Arc::new(SampleLabels::new());
        let mut index = HashMap::new();
        index.insert(empty.clone(), 0);
        Mutex::new(Registry {
            sets: vec![empty],
            index,
            overflow: None,
        })
    })
}

fn lock() -> std::sync::MutexGuard<'static, Registry> {
    registry().lock().unwrap_or_else(|e| e.into_inner())
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_INTERNED_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_INTERNED_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Registry {
    fn intern(&mut self, labels: SampleLabels) -> u32 {
        if let Some(id) = self.index.get(&labels) {
            return *id;
        }
        // The last id is kept for the overflow set.
        if self.sets.len() >= MAX_INTERNED_SETS - 1 {
            return self.overflow_for(&labels);
        }
        let id = self.sets.len() as u32;
        let labels = Arc::new(labels);
        self.sets.push(labels.clone());
        self.index.insert(labels, id);
        id
    }

    /// Past the cap every new set becomes one overflow set, keyed by all keys seen
    /// there, each valued `[labels pruned]`; the overflow set is grown in place.
    fn overflow_for(&mut self, labels: &SampleLabels) -> u32 {
        let id = match self.overflow {
            Some(id) => id,
            None => {
                let id = self.sets.len() as u32;
                self.sets.push(Arc::new(SampleLabels::new()));
                self.overflow = Some(id);
                id
            }
        };
        let mut merged = (*self.sets[id as usize]).clone();
        for k in labels.keys() {
            merged.insert(k.clone(), LABELS_PRUNED.to_owned());
        }
        if merged != *self.sets[id as usize] {
            self.index.remove(&self.sets[id as usize]);
            let merged = Arc::new(merged);
            self.sets[id as usize] = merged.clone();
            self.index.insert(merged, id);
        }
        id
    }
}

/// The labels of set `id` (the empty set for an unknown id).
pub(crate) fn labels_of(id: u32) -> Arc<SampleLabels> {
    let reg = lock();
    reg.sets
        .get(id as usize)
        .cloned()
        .unwrap_or_else(|| reg.sets[0].clone())
}

/// An interned label set: cheap to copy, cheap to enter.
///
/// ```
/// let orders = stackwatch::LabelSet::new(&[("table", "orders"), ("op", "insert")]);
/// let _g = orders.enter(); // samples on this thread carry table=orders, op=insert
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LabelSet(u32);

impl LabelSet {
    /// The empty set: no labels.
    pub const EMPTY: LabelSet = LabelSet(0);

    /// Interns a set of `(key, value)` pairs (a later pair with the same key wins; keys
    /// and values are cut at [`MAX_INTERNED_TEXT`] bytes; an empty key is dropped).
    /// Takes a lock and may allocate: intern once, enter often.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Self {
        LabelSet::EMPTY.with(pairs)
    }

    /// This set plus `pairs` (which replace values of the same keys), interned.
    pub fn with<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        if pairs.is_empty() {
            return self;
        }
        let mut reg = lock();
        let mut labels = (*reg.sets.get(self.0 as usize).cloned().unwrap_or_default()).clone();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            if k.is_empty() {
                continue;
            }
            labels.insert(cut(k), cut(v));
        }
        LabelSet(reg.intern(labels))
    }

    /// The set current on this thread.
    pub fn current() -> Self {
        LabelSet(current_id())
    }

    /// The pairs of this set.
    pub fn labels(self) -> Arc<SampleLabels> {
        labels_of(self.0)
    }

    /// Makes this set current on this thread until the guard drops (which restores the
    /// previous one). One atomic store each way: no lock, no allocation.
    #[inline]
    pub fn enter(self) -> LabelGuard {
        LabelGuard {
            prev: swap_current(self.0),
            _not_send: PhantomData,
        }
    }

    /// The id (0 for the empty set), as samples carry it.
    #[cfg_attr(not(any(test, feature = "tracing")), allow(dead_code))]
    pub(crate) fn id(self) -> u32 {
        self.0
    }
}

/// Restores the previous label set when dropped. Not `Send`: it belongs to the thread
/// whose labels it changed.
#[must_use = "the labels are unset as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LabelGuard {
    prev: Option<u32>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for LabelGuard {
    #[inline]
    fn drop(&mut self) {
        if let Some(prev) = self.prev {
            swap_current(prev);
        }
    }
}

/// Adds `key=value` to this thread's labels until the guard drops.
///
/// ```
/// let _g = stackwatch::label("table", "orders");
/// ```
///
/// Interns the combined set (a lock, and an allocation the first time a combination is
/// seen); on hot paths intern a [`LabelSet`] once and [`enter`](LabelSet::enter) it.
pub fn label(key: &str, value: &str) -> LabelGuard {
    LabelSet::current().with(&[(key, value)]).enter()
}

/// Runs `f` with `pairs` added to this thread's labels.
///
/// ```
/// let rows = stackwatch::with_labels(&[("table", "orders")], || 42);
/// assert_eq!(rows, 42);
/// ```
pub fn with_labels<K: AsRef<str>, V: AsRef<str>, R>(pairs: &[(K, V)], f: impl FnOnce() -> R) -> R {
    let _g = LabelSet::current().with(pairs).enter();
    f()
}

/// A future that runs with a label set current during each of its polls, whatever
/// thread polls it; between polls the thread's own labels are back.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct LabeledFuture<F> {
    set: LabelSet,
    inner: F,
}

impl<F: Future> Future for LabeledFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`, and
        // `LabeledFuture` has no Drop impl or `Unpin` impl that would move it.
        let this = unsafe { self.get_unchecked_mut() };
        let _g = this.set.enter();
        // SAFETY: as above, `inner` stays where the pinned `self` holds it.
        unsafe { Pin::new_unchecked(&mut this.inner) }.poll(cx)
    }
}

/// Attaches labels to futures: `fut.with_labels(set)`.
pub trait LabelFutureExt: Future + Sized {
    /// This future, with `set` current during each poll.
    fn with_labels(self, set: LabelSet) -> LabeledFuture<Self> {
        LabeledFuture { set, inner: self }
    }
}

impl<F: Future> LabelFutureExt for F {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid() -> u32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::syscall(libc::SYS_gettid) as u32 }
    }

    #[test]
    fn guards_nest_and_restore_and_the_handler_view_follows() {
        let a = LabelSet::new(&[("table", "orders")]);
        let me = tid();
        assert_eq!(current_set_for(me), LabelSet::current().id());
        {
            let _g = a.enter();
            assert_eq!(current_set_for(me), a.id());
            {
                let _h = label("op", "insert");
                let now = LabelSet::current();
                assert_eq!(current_set_for(me), now.id());
                assert_eq!(
                    now.labels().get("table").map(String::as_str),
                    Some("orders")
                );
                assert_eq!(now.labels().get("op").map(String::as_str), Some("insert"));
            }
            assert_eq!(current_set_for(me), a.id());
        }
        assert_eq!(current_set_for(me), 0);
        assert_eq!(
            with_labels(&[("k", "v")], || LabelSet::current().labels()["k"].clone()),
            "v"
        );
        assert_eq!(LabelSet::new(&[("table", "orders")]), a);
    }

    #[test]
    fn an_exited_thread_frees_its_slot_and_other_threads_are_unaffected() {
        let set = LabelSet::new(&[("tenant", "acme")]);
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _g = set.enter();
            tx.send(tid()).unwrap();
            done_rx.recv().unwrap();
        });
        let other = rx.recv().unwrap();
        assert_eq!(current_set_for(other), set.id());
        assert_eq!(current_set_for(tid()), LabelSet::current().id());
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(current_set_for(other), 0);
    }

    #[test]
    fn long_text_is_cut_and_empty_keys_dropped() {
        let long = "é".repeat(MAX_INTERNED_TEXT);
        let s = LabelSet::new(&[("", "x"), ("k", long.as_str())]);
        let l = s.labels();
        assert_eq!(l.len(), 1);
        assert!(l["k"].len() <= MAX_INTERNED_TEXT);
    }

    #[test]
    fn a_labeled_future_sets_labels_only_while_polled() {
        let set = LabelSet::new(&[("task", "a")]);
        let fut = async { LabelSet::current() }.with_labels(set);
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = std::task::Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(set));
        assert_eq!(LabelSet::current(), LabelSet::EMPTY);
    }
}
