//! stackwatch: an always-on sampling CPU profiler that a Rust service links.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let profiler = stackwatch::Profiler::builder()
//!     .frequency_hz(99)
//!     .window(Duration::from_secs(10))
//!     .retain_windows(60)
//!     .max_stacks(10_000)
//!     .start()?;
//! // Keep the handle: the server stops when it is dropped.
//! let _server = stackwatch::http::serve(&profiler, "127.0.0.1:6060".parse()?)?;
//! let last_minute = profiler.profile(Duration::from_secs(60));
//! println!("{}", last_minute.to_folded());
//! # Ok(()) }
//! ```
//!
//! Features: `http` (default) — the endpoints, on axum and tokio; `tracing` — a
//! `tracing_subscriber` layer that turns span fields into sample labels.
//!
//! Where things live (imports run one way, `settings` and `handler_cost` at the bottom,
//! `profiler` on top; the workspace's `module_graph` test fails on any cycle):
//! - `settings`: [`ProfilerBuilder`]'s settings and defaults, [`TimerMode`].
//! - `handler_cost`: the handler's clocks (time-stamp counter, thread CPU clock) and the
//!   histogram of its own cost.
//! - `signal_handler`: the SIGPROF handler (async-signal-safe), private: nothing outside
//!   the crate can reach the state it writes.
//! - `thread_timers`: per-thread CPU-time timers, thread discovery, setitimer fallback.
//! - `armed_threads`: the process-wide CPU timer whose signal makes a thread arm its own
//!   timer on its first period of CPU, and the table of those timers.
//! - `modules`: `/proc/self/maps` and eh_frame tables for the unwinder.
//! - `shared`: what a running profiler's handles and its aggregator share.
//! - `aggregator`: the thread that symbolises, folds and windows samples; `sampler`
//!   starts and stops it with the handler; `profiler`: the public [`Profiler`].
//! - `labels`: sample labels ([`label`], [`LabelSet`], [`LabeledFuture`]) and the table
//!   the handler reads them from.
//! - `windows`: windows, retention, pruning; [`http`]: the endpoints.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// Off Linux only the portable half is built (windows, labels, endpoints); what only the
// sampler calls is unused there by design.
#![cfg_attr(
    not(all(target_os = "linux", not(stackwatch_unsupported_platform))),
    allow(dead_code)
)]

#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod aggregator;
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod armed_threads;
mod error;
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod handler_cost;
#[cfg(feature = "http")]
pub mod http;
mod labels;
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod modules;
mod profiler;
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod sample_ring;
mod sampler;
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod scratch;
mod settings;
mod shared;
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod signal_handler;
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod symbolizer;
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod thread_timers;
#[cfg(feature = "tracing")]
mod tracing_labels;
mod windows;

pub use error::Error;
pub use labels::{
    label, unlabeled_threads, with_labels, LabelFutureExt, LabelGuard, LabelSet, LabeledFuture,
    MAX_INTERNED_SETS, MAX_INTERNED_TEXT, THREAD_SLOTS,
};
pub use profiler::{Capture, Profiler, ProfilerStats};
pub use settings::{ProfilerBuilder, TimerMode};
pub use stackwatch_profile::labels::SampleLabels;
/// The window protocol's types (`GET /debug/stackwatch/windows`), which
/// [`Profiler::windows_after`] returns: re-exported so a caller needs no second crate.
pub use stackwatch_profile::protocol;
pub use stackwatch_profile::protocol::{Window, WindowSeq, WindowsResponse};
pub use stackwatch_profile::LabelBudget;
pub use stackwatch_profile::{Profile, SvgOptions};
#[cfg(feature = "tracing")]
pub use tracing_labels::LabelLayer;
pub use windows::{LabelFilter, LabeledProfile};

/// The signal handler's own cost histogram, for `benches/handler_cost.rs`: not part of
/// the API, no stability promised.
#[doc(hidden)]
#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
pub mod __handler_cost {
    pub use crate::handler_cost::{
        calibrate_ticks, cost_filter_tid, cost_on_cpu, cost_ticks, thread_cpu_ns, ticks_to_ns,
        CostHistogram, CostSnapshot, COST_BUCKETS,
    };
    pub use crate::signal_handler::handler_cost;
}
