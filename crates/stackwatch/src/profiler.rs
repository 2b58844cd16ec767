//! [`Profiler`] and its builder: the public handle services hold.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use stackwatch_profile::protocol::{WindowSeq, WindowsResponse};
use stackwatch_profile::Profile;

use crate::sampler::Sampler;
use crate::settings::ProfilerBuilder;
use crate::shared::{Shared, Stats};
use crate::windows::{LabelFilter, LabeledProfile, WindowConfig, WindowStore};
use crate::Error;

impl ProfilerBuilder {
    /// Starts sampling every thread of the process.
    pub fn start(self) -> Result<Profiler, Error> {
        if !(1..=4000).contains(&self.frequency_hz) {
            return Err(Error::InvalidConfig(format!(
                "frequency_hz must be 1..=4000, got {}",
                self.frequency_hz
            )));
        }
        if self.window < Duration::from_millis(100) {
            return Err(Error::InvalidConfig(
                "window must be at least 100 ms".into(),
            ));
        }
        if self.labels.max_sets_per_window == 0
            || self.labels.max_pairs == 0
            || self.labels.max_key_bytes == 0
        {
            return Err(Error::InvalidConfig(
                "labels: max_sets_per_window, max_pairs and max_key_bytes must be positive".into(),
            ));
        }
        if self.retain_windows == 0 || self.max_stacks == 0 || self.sample_buffer < 2 {
            return Err(Error::InvalidConfig(
                "retain_windows and max_stacks must be positive, sample_buffer at least 2".into(),
            ));
        }
        let instance = random_instance_id();
        let shared = Arc::new(Shared {
            store: Mutex::new(WindowStore::new(
                WindowConfig {
                    instance: instance.clone(),
                    frequency_hz: self.frequency_hz,
                    window: self.window,
                    retain: self.retain_windows,
                    max_stacks: self.max_stacks,
                    labels: self.labels,
                },
                unix_ms(),
            )),
            stats: Stats::default(),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            settings: self.clone(),
            instance,
        });
        let sampler = Sampler::start(&self, shared.clone())?;
        Ok(Profiler {
            inner: Arc::new(ProfilerInner {
                shared,
                running: Mutex::new(Some(sampler)),
            }),
        })
    }
}

struct ProfilerInner {
    shared: Arc<Shared>,
    running: Mutex<Option<Sampler>>,
}

impl ProfilerInner {
    fn stop(&self) {
        let Some(sampler) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.stop_cv.notify_all();
        // The aggregator disarms every timer before it exits.
        sampler.stop();
    }
}

impl Drop for ProfilerInner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running profiler. Cheap to clone; sampling stops when [`Profiler::stop`] is called or
/// the last clone is dropped. Windows stay readable after stop.
#[derive(Clone)]
#[must_use = "sampling stops when the last clone of the Profiler is dropped"]
pub struct Profiler {
    inner: Arc<ProfilerInner>,
}

/// A snapshot of the profiler's own counters (what `/metrics` exports). More counters
/// may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProfilerStats {
    /// Sampling periods recorded (the sum of all stack counts).
    pub samples: u64,
    /// SIGPROF deliveries handled.
    pub signals: u64,
    /// Samples dropped because the buffer was full.
    pub dropped: u64,
    /// Distinct stacks folded into `[pruned]`.
    pub pruned_stacks: u64,
    /// Time spent in the signal handler, ns.
    pub handler_ns: u64,
    /// CPU time of the aggregator thread, ns.
    pub aggregator_ns: u64,
    /// Threads with a timer.
    pub threads: u64,
    /// Bytes held by the profiler (buffers, unwind tables, windows).
    pub memory_bytes: u64,
    /// Per-thread timers in use (false: the setitimer fallback).
    pub per_thread_timers: bool,
    /// Threads arm their own timer on their first period of CPU, through the process-wide
    /// CPU timer's signal (false: the aggregator's scan arms them when it finds them).
    pub arms_on_first_cpu: bool,
    /// Live threads whose timer was armed on their first period of CPU.
    pub armed_on_first_cpu: u64,
    /// Process-timer signals that recorded nothing: they reached a thread with a timer of
    /// its own (which counts its periods), or one that had used less than a period.
    pub process_signals_skipped: u64,
    /// Label sets folded into `[labels pruned]` by the per-window cap.
    pub label_sets_folded: u64,
    /// Threads that set labels while every label slot was taken (their samples carry
    /// no labels).
    pub unlabeled_threads: u64,
}

impl Profiler {
    /// A builder with the defaults (99 Hz, 10 s windows, 60 retained, 10 000 stacks).
    pub fn builder() -> ProfilerBuilder {
        ProfilerBuilder::default()
    }

    /// Stops sampling (idempotent). Waits for the aggregator to drain what was sampled.
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// Whether sampling is still on.
    pub fn is_running(&self) -> bool {
        self.inner
            .running
            .lock()
            .map(|r| r.is_some())
            .unwrap_or(false)
    }

    /// Random id of this profiler instance (served in the window protocol).
    pub fn instance_id(&self) -> &str {
        &self.inner.shared.instance
    }

    /// Sampling frequency in Hz.
    pub fn frequency_hz(&self) -> u32 {
        self.inner.shared.settings.frequency_hz
    }

    /// The last `last` of samples: retained windows overlapping it plus the open window,
    /// including every sample taken before this call.
    pub fn profile(&self, last: Duration) -> Profile {
        self.profile_matching(last, &LabelFilter::default())
    }

    /// [`Profiler::profile`] of the samples whose label set holds every pair of
    /// `filter`.
    pub fn profile_matching(&self, last: Duration, filter: &LabelFilter) -> Profile {
        self.wait_drained();
        self.store().profile_last(last, unix_ms(), filter)
    }

    /// Everything since start (bounded by `max_stacks`), open window included.
    pub fn profile_cumulative(&self) -> Profile {
        self.profile_cumulative_matching(&LabelFilter::default())
    }

    /// [`Profiler::profile_cumulative`] of the samples whose label set holds every pair
    /// of `filter`.
    pub fn profile_cumulative_matching(&self, filter: &LabelFilter) -> Profile {
        self.wait_drained();
        self.store().profile_cumulative(unix_ms(), filter)
    }

    /// Waits (at most 2 s) until the aggregator has drained every sample taken before
    /// this call. It drains every 20 ms, but on a loaded machine, or while it loads debug
    /// info for the first time, it can lag; readers should not miss those samples.
    fn wait_drained(&self) {
        let end = unix_ms();
        let stats = &self.inner.shared.stats;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while stats.drained_through_ms.load(Ordering::Acquire) <= end
            && self.is_running()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closed windows with a sequence number above `after` (the collector protocol),
    /// labeled samples per label set.
    pub fn windows_after(&self, after: WindowSeq) -> WindowsResponse {
        self.store().windows_after(after, true)
    }

    /// `GET /windows?after=SEQ` body: [`Profiler::windows_after`] serialised as JSON;
    /// without `labels` (a collector that did not ask with `labels=1`) each window's
    /// stacks are summed over label sets.
    pub fn windows_after_json(&self, after: WindowSeq, labels: bool) -> Vec<u8> {
        self.store().windows_after_json(after, labels)
    }

    /// Folded text of [`Profiler::profile_cumulative`], built without an intermediate
    /// [`Profile`]. For the hot `GET /` path it does not wait for the aggregator's next
    /// drain: samples of the last tick (20 ms) may be missing from the answer (they are
    /// in the next one).
    pub fn cumulative_folded(&self) -> String {
        self.store().cumulative_folded(&LabelFilter::default())
    }

    /// [`Profiler::cumulative_folded`] of the samples whose label set holds every pair
    /// of `filter`.
    pub fn cumulative_folded_matching(&self, filter: &LabelFilter) -> String {
        self.store().cumulative_folded(filter)
    }

    /// Samples from now for `duration`, like Go's `/debug/pprof/profile?seconds=N`.
    /// Blocks the calling thread; see [`Profiler::start_capture`] for the async form.
    pub fn capture(&self, duration: Duration) -> Profile {
        let c = self.start_capture();
        std::thread::sleep(duration);
        c.finish()
    }

    /// Starts collecting every new sample until [`Capture::finish`].
    pub fn start_capture(&self) -> Capture {
        let id = self.store().start_capture();
        Capture {
            profiler: self.clone(),
            id: Some(id),
            start_ms: unix_ms(),
        }
    }

    /// The profiler's counters.
    pub fn stats(&self) -> ProfilerStats {
        let st = &self.inner.shared.stats;
        let (samples, pruned, folded) = {
            let s = self.store();
            (s.samples_total, s.pruned_total, s.label_sets_folded_total)
        };
        ProfilerStats {
            samples,
            signals: st.signals.load(Ordering::Relaxed),
            dropped: st.dropped.load(Ordering::Relaxed),
            pruned_stacks: pruned,
            handler_ns: st.handler_ns.load(Ordering::Relaxed),
            aggregator_ns: st.aggregator_ns.load(Ordering::Relaxed),
            threads: st.threads.load(Ordering::Relaxed),
            memory_bytes: st.memory_bytes.load(Ordering::Relaxed),
            per_thread_timers: st.per_thread_timers.load(Ordering::Relaxed),
            arms_on_first_cpu: st.arms_on_first_cpu.load(Ordering::Relaxed),
            armed_on_first_cpu: st.armed_on_first_cpu.load(Ordering::Relaxed),
            process_signals_skipped: st.process_signals_skipped.load(Ordering::Relaxed),
            label_sets_folded: folded,
            unlabeled_threads: u64::from(crate::labels::unlabeled_threads()),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, WindowStore> {
        self.inner
            .shared
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// An in-progress capture started by [`Profiler::start_capture`].
/// Dropping it unfinished (a client that hung up) discards what it collected.
pub struct Capture {
    profiler: Profiler,
    id: Option<u64>,
    start_ms: u64,
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.profiler.store().cancel_capture(id);
        }
    }
}

impl Capture {
    /// Ends the capture and returns its profile. Waits (up to 2 s) until the aggregator
    /// has drained every sample taken before this call, so the tail is not lost even when
    /// the aggregator is busy (for instance loading debug info for the first time).
    pub fn finish(self) -> Profile {
        let split = self.finish_labeled(&LabelFilter::default());
        let mut p = split.unlabeled;
        for (_, stacks) in &split.labeled {
            for (s, c) in stacks {
                p.add(s, *c);
            }
        }
        p
    }

    /// [`Capture::finish`] split by label set, only the samples whose label set holds
    /// every pair of `filter` (what the pprof endpoint writes as `Sample.label`s).
    pub fn finish_labeled(mut self, filter: &LabelFilter) -> LabeledProfile {
        self.profiler.wait_drained();
        let id = self.id.take().expect("a capture is finished once");
        self.profiler
            .store()
            .finish_capture(id, self.start_ms, unix_ms(), filter)
    }
}

pub(crate) use stackwatch_profile::clock::unix_ms;

fn random_instance_id() -> String {
    let mut bytes = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        let seed = unix_ms() ^ ((std::process::id() as u64) << 32);
        bytes = seed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
