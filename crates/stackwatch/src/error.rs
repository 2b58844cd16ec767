//! Errors of the sampler library.

use thiserror::Error;

/// Why a profiler could not start or serve. More reasons may be added.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Only one profiler can sample a process at a time (SIGPROF is process-wide).
    #[error("a stackwatch profiler is already running in this process")]
    AlreadyRunning,
    /// Another SIGPROF handler is installed (another profiler?); we do not replace it.
    #[error("SIGPROF already has a handler that is not stackwatch's")]
    SignalInUse,
    /// A builder setting is out of range.
    #[error("invalid profiler setting: {0}")]
    InvalidConfig(String),
    /// Sampling needs Linux (per-thread CPU timers, the signal handler's unwinding); the
    /// crate builds elsewhere, and starting a profiler there is this error.
    #[error("stackwatch samples on Linux only; this is {os}")]
    Unsupported {
        /// `std::env::consts::OS`.
        os: &'static str,
    },
    /// An OS call failed.
    #[error("{what}: {source}")]
    Os {
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}
