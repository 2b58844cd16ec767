//! [`ProfilerBuilder`]: the settings a profiler starts with and their defaults, and
//! [`TimerMode`]. Below everything else of the sampler: the profiler, the sampler, the
//! aggregator, the symbolizer and the thread timers read them; this module reads none of
//! them.

use std::time::Duration;

use stackwatch_profile::LabelBudget;

/// Settings of a profiler; build one with [`Profiler::builder`](crate::Profiler::builder).
#[derive(Debug, Clone)]
pub struct ProfilerBuilder {
    pub(crate) frequency_hz: u32,
    pub(crate) window: Duration,
    pub(crate) retain_windows: usize,
    pub(crate) max_stacks: usize,
    pub(crate) timer_mode: TimerMode,
    pub(crate) sample_buffer: usize,
    pub(crate) labels: LabelBudget,
    pub(crate) unnamed_thread_root: String,
    pub(crate) debug_dirs: Vec<std::path::PathBuf>,
    pub(crate) arm_on_first_cpu: bool,
}

/// The root frame of threads that have no name of their own, unless configured.
pub(crate) const DEFAULT_UNNAMED_THREAD_ROOT: &str = "thread";

/// Where separate debug files are searched by default, as gdb does.
pub(crate) const DEFAULT_DEBUG_DIR: &str = "/usr/lib/debug";

/// How SIGPROF is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimerMode {
    /// One timer per thread on the thread's CPU clock (default).
    #[default]
    PerThread,
    /// One process-wide `setitimer(ITIMER_PROF)`; the kernel picks the thread.
    ProcessWide,
}

impl Default for ProfilerBuilder {
    fn default() -> Self {
        ProfilerBuilder {
            frequency_hz: 99,
            window: Duration::from_secs(10),
            retain_windows: 60,
            max_stacks: 10_000,
            timer_mode: TimerMode::PerThread,
            sample_buffer: 2048,
            labels: LabelBudget::default(),
            unnamed_thread_root: DEFAULT_UNNAMED_THREAD_ROOT.into(),
            debug_dirs: vec![std::path::PathBuf::from(DEFAULT_DEBUG_DIR)],
            arm_on_first_cpu: true,
        }
    }
}

impl ProfilerBuilder {
    /// Samples per second of CPU time, per thread (default 99; 1..=4000).
    pub fn frequency_hz(mut self, hz: u32) -> Self {
        self.frequency_hz = hz;
        self
    }

    /// Length of a window (default 10 s; at least 100 ms).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Closed windows kept for collectors and `profile()` (default 60).
    pub fn retain_windows(mut self, n: usize) -> Self {
        self.retain_windows = n;
        self
    }

    /// Distinct stacks kept per window; the rarest fold into `[pruned]` (default 10 000).
    pub fn max_stacks(mut self, n: usize) -> Self {
        self.max_stacks = n;
        self
    }

    /// Per-thread CPU timers (default) or the process-wide `setitimer` fallback.
    pub fn timer_mode(mut self, mode: TimerMode) -> Self {
        self.timer_mode = mode;
        self
    }

    /// Raw samples buffered between the signal handler and the aggregator, which drains
    /// every 20 ms (default 2048; a full buffer drops and counts samples).
    pub fn sample_buffer(mut self, n: usize) -> Self {
        self.sample_buffer = n;
        self
    }

    /// What sample labels may cost per window: label sets kept (the lightest past it
    /// fold into one `[labels pruned]` set, counts exact), pairs per set, key and value
    /// bytes (default 256 sets, 16 pairs, 64-byte keys, 256-byte values).
    pub fn labels(mut self, budget: LabelBudget) -> Self {
        self.labels = budget;
        self
    }

    /// The root frame of stacks of threads without a name of their own (default
    /// `thread`). A thread nobody named carries the process name, and such threads fold
    /// together under this root; the main thread is always `main`, and a thread's tid
    /// never goes into stack text.
    pub fn unnamed_thread_root(mut self, root: impl Into<String>) -> Self {
        self.unnamed_thread_root = root.into();
        self
    }

    /// Directories searched for separate debug files, as debuggers do (default
    /// `/usr/lib/debug`): `<dir>/.build-id/xx/yyyy.debug` by build id, and
    /// `<dir>/<module's dir>/<.gnu_debuglink name>`; the module's own directory and its
    /// `.debug/` are always searched for the debuglink name. Installing a distribution's
    /// debug package (Debian's `libc6-dbg`) names what its library's exported symbols
    /// do not.
    pub fn debug_dirs<I, P>(mut self, dirs: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<std::path::PathBuf>,
    {
        self.debug_dirs = dirs.into_iter().map(Into::into).collect();
        self
    }

    /// Whether a thread's own timer is armed on its first period of CPU, by the
    /// process-wide CPU timer's signal (default, with per-thread timers on Linux 6.3 and
    /// later), or only when the aggregator's scan finds the thread (every 20 ms: a
    /// thread loses what it burns before). Off is the earlier design, kept for the
    /// benchmark that compares the two (`examples/young_threads.rs`).
    #[doc(hidden)]
    pub fn arm_on_first_cpu(mut self, on: bool) -> Self {
        self.arm_on_first_cpu = on;
        self
    }
}
