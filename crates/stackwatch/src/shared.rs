//! What a running profiler's handles and its aggregator thread share ([`Shared`]): the
//! window store, the counters of `/metrics` ([`Stats`]), the stop signal and the
//! settings it started with.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::settings::ProfilerBuilder;
use crate::windows::WindowStore;

/// Counters the aggregator publishes for `/metrics`.
#[derive(Default)]
pub(crate) struct Stats {
    pub signals: AtomicU64,
    pub dropped: AtomicU64,
    pub handler_ns: AtomicU64,
    pub aggregator_ns: AtomicU64,
    pub threads: AtomicU64,
    pub memory_bytes: AtomicU64,
    pub per_thread_timers: AtomicBool,
    pub arms_on_first_cpu: AtomicBool,
    pub armed_on_first_cpu: AtomicU64,
    pub process_signals_skipped: AtomicU64,
    /// Unix ms before which every sample has been drained into the windows.
    pub drained_through_ms: AtomicU64,
}

/// What the aggregator thread and the handles share.
pub(crate) struct Shared {
    pub store: Mutex<WindowStore>,
    pub stats: Stats,
    pub(crate) stop: Mutex<bool>,
    pub(crate) stop_cv: Condvar,
    pub(crate) settings: ProfilerBuilder,
    pub(crate) instance: String,
}

impl Shared {
    /// Directories searched for separate debug files.
    #[cfg_attr(
        not(all(target_os = "linux", not(stackwatch_unsupported_platform))),
        allow(dead_code)
    )]
    pub fn debug_dirs(&self) -> &[std::path::PathBuf] {
        &self.settings.debug_dirs
    }

    /// Sleeps up to `d`; returns true when the profiler is stopping.
    #[cfg_attr(
        not(all(target_os = "linux", not(stackwatch_unsupported_platform))),
        allow(dead_code)
    )]
    pub fn wait_stop(&self, d: Duration) -> bool {
        let guard = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        if *guard {
            return true;
        }
        let (guard, _) = self
            .stop_cv
            .wait_timeout(guard, d)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}
