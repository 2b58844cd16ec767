//! The aggregator thread: everything the signal handler must not do.
//!
//! Every tick (20 ms) it rescans threads and arms their timers, refreshes the module list
//! when it may have changed, drains the sample ring, symbolises and folds the stacks, and
//! closes windows on time. It is the only reader of the ring and the only owner of the
//! symbolizer and the timers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handler_cost::thread_cpu_ns;
use crate::modules::ModuleTable;
use crate::sample_ring::RawSample;
use crate::shared::Shared;
use crate::signal_handler::{PublishedUnwinder, SignalState};
use crate::symbolizer::Symbolizer;
use crate::thread_timers::ThreadTimers;

const TICK: Duration = Duration::from_millis(20);
const MODULE_REFRESH: Duration = Duration::from_secs(1);
/// At most this often when the handler saw a PC outside every known module...
const MODULE_REFRESH_ON_UNKNOWN: Duration = Duration::from_millis(20);
/// ... or this often when the last such refresh found nothing new (JIT code, say).
const MODULE_REFRESH_ON_UNKNOWN_UNCHANGED: Duration = Duration::from_millis(500);
/// Raw stacks remembered with their folded form before the cache is cleared.
const STACK_CACHE_LIMIT: usize = 50_000;

/// State owned by the aggregator thread.
pub struct Aggregator {
    shared: Arc<Shared>,
    signal: &'static SignalState,
    timers: ThreadTimers,
    modules: ModuleTable,
    symbolizer: Symbolizer,
    stack_cache: HashMap<(u32, Box<[u64]>), Arc<str>>,
    last_refresh: Instant,
    last_refresh_changed: bool,
    last_memory_update: Instant,
    last_dropped: u64,
    batch: Vec<(u32, Arc<str>, u64)>,
    folded: String,
}

impl Aggregator {
    /// Prepares the aggregator: the module list and unwinder are published before the
    /// first timer is armed, so the very first samples are unwound.
    pub fn new(shared: Arc<Shared>, signal: &'static SignalState, timers: ThreadTimers) -> Self {
        let symbolizer = Symbolizer::new(shared.debug_dirs().to_vec());
        let mut agg = Aggregator {
            shared,
            signal,
            timers,
            modules: ModuleTable::default(),
            symbolizer,
            stack_cache: HashMap::new(),
            last_refresh: Instant::now(),
            last_refresh_changed: true,
            last_memory_update: Instant::now() - Duration::from_secs(1),
            last_dropped: 0,
            batch: Vec::new(),
            folded: String::new(),
        };
        agg.refresh_modules();
        agg
    }

    /// Runs until the profiler is stopped, then disarms every timer.
    pub fn run(mut self) {
        if let Err(e) = self.timers.scan() {
            tracing::warn!(error = %e, "thread scan failed");
        }
        loop {
            let stopping = self.shared.wait_stop(TICK);
            match self.timers.scan() {
                // Folded stacks start with the thread's name: rebuild them.
                Ok(true) => self.stack_cache.clear(),
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "thread scan failed"),
            }
            if self.last_refresh.elapsed() >= MODULE_REFRESH {
                self.refresh_modules();
            }
            self.refresh_if_unknown_pc();
            self.drain();
            self.update_stats();
            if stopping {
                break;
            }
        }
        self.timers.stop();
        // Samples taken after the last drain but before the timers stopped.
        self.drain();
        self.update_stats();
    }

    /// Re-reads the module list early when the handler met code it could not place (a
    /// library loaded since the last refresh) or a thread whose stack block is not yet
    /// verified (the refresh verifies it from the same maps, so the handler can read that
    /// stack directly): checked every tick and while folding, so a slow drain does not
    /// leave the handler without unwind tables for long.
    fn refresh_if_unknown_pc(&mut self) {
        let limit = if self.last_refresh_changed {
            MODULE_REFRESH_ON_UNKNOWN
        } else {
            MODULE_REFRESH_ON_UNKNOWN_UNCHANGED
        };
        if self.last_refresh.elapsed() >= limit
            && self.signal.unknown_pc.swap(false, Ordering::Relaxed)
        {
            self.refresh_modules();
        }
    }

    fn refresh_modules(&mut self) {
        self.last_refresh = Instant::now();
        self.last_refresh_changed = false;
        match self.modules.refresh() {
            Ok(Some(unwinder)) => {
                self.last_refresh_changed = true;
                let code_ranges = self
                    .modules
                    .modules()
                    .iter()
                    .map(|m| (m.avma.start, m.avma.end))
                    .collect();
                self.signal.publish_unwinder(PublishedUnwinder {
                    unwinder,
                    code_ranges,
                });
                self.symbolizer.set_modules(self.modules.modules());
                self.stack_cache.clear();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading /proc/self/maps failed"),
        }
    }

    fn drain(&mut self) {
        // Every sample published before this instant is in the ring now.
        let drain_start = stackwatch_profile::clock::unix_ms();
        let mut samples: Vec<(u32, u32, u32, Box<[u64]>)> = Vec::new();
        self.signal.ring.drain(|s: &RawSample| {
            samples.push((
                s.tid,
                s.weight,
                s.labels,
                s.frames[..s.depth as usize].into(),
            ));
        });
        self.batch.clear();
        for (i, (tid, weight, labels, frames)) in samples.into_iter().enumerate() {
            if i % 64 == 0 {
                self.refresh_if_unknown_pc();
            }
            let key = (tid, frames);
            let folded = match self.stack_cache.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = self.fold(key.0, &key.1);
                    if self.stack_cache.len() >= STACK_CACHE_LIMIT {
                        self.stack_cache.clear();
                    }
                    self.stack_cache.insert(key, f.clone());
                    f
                }
            };
            self.batch.push((labels, folded, weight as u64));
        }
        self.symbolizer.end_batch();
        let dropped = self.signal.ring.dropped();
        let new_drops = dropped - self.last_dropped;
        self.last_dropped = dropped;
        let now = stackwatch_profile::clock::unix_ms();
        let mut store = self.shared.store.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, stack, weight) in &self.batch {
            store.add(*labels, stack, *weight);
        }
        store.add_dropped(new_drops);
        if now >= store.open_end_ms() {
            store.close(now);
        }
        drop(store);
        self.shared
            .stats
            .drained_through_ms
            .store(drain_start, Ordering::Release);
    }

    fn fold(&mut self, tid: u32, frames: &[u64]) -> Arc<str> {
        self.folded.clear();
        self.folded.push_str(&self.timers.thread_name(tid));
        // Raw frames are innermost first; folded stacks are root first.
        for &addr in frames.iter().rev() {
            for name in self.symbolizer.frames(addr).iter() {
                self.folded.push(';');
                self.folded.push_str(name);
            }
        }
        Arc::from(self.folded.as_str())
    }

    fn update_stats(&mut self) {
        let st = &self.shared.stats;
        st.signals.store(
            self.signal.signals.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        st.dropped
            .store(self.signal.ring.dropped(), Ordering::Relaxed);
        st.handler_ns.store(
            self.signal.handler_ns.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        st.aggregator_ns.store(thread_cpu_ns(), Ordering::Relaxed);
        st.threads
            .store(self.timers.thread_count() as u64, Ordering::Relaxed);
        st.per_thread_timers.store(
            self.timers.mode() == crate::TimerMode::PerThread,
            Ordering::Relaxed,
        );
        st.arms_on_first_cpu
            .store(self.timers.arms_on_first_cpu(), Ordering::Relaxed);
        st.armed_on_first_cpu.store(
            crate::armed_threads::armed_count() as u64,
            Ordering::Relaxed,
        );
        st.process_signals_skipped.store(
            self.signal.process_signals_skipped.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        // Summing every stored stack's size is not free: once a second is enough.
        if self.last_memory_update.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_memory_update = Instant::now();
        let store_bytes = self
            .shared
            .store
            .lock()
            .map(|s| s.memory_bytes())
            .unwrap_or(0);
        let bytes = self.signal.memory_bytes()
            + self.modules.memory_bytes()
            + self.symbolizer.memory_bytes()
            + self.stack_cache_bytes()
            + store_bytes;
        st.memory_bytes.store(bytes as u64, Ordering::Relaxed);
    }
}

impl Aggregator {
    /// Bytes of the raw-stack cache: its table and each key's frames (the folded text is
    /// shared with the windows, which count it).
    fn stack_cache_bytes(&self) -> usize {
        let chunk = |n: usize| (n + 8).div_ceil(16).max(2) * 16;
        self.stack_cache.capacity() * 48
            + self
                .stack_cache
                .keys()
                .map(|(_, frames)| chunk(frames.len() * 8))
                .sum::<usize>()
    }
}
