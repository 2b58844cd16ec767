//! Profile storage for the stackwatch collector.
//!
//! [`ProfileStore`] is what the collector and the dashboard need from storage; it is a
//! trait so that a distributed column store can be added beside [`SqliteStore`], the
//! embedded default. The schema is in [`schema`], label selectors in [`selector`].

pub mod selector;
mod sqlite;

pub use selector::{Labels, Selector, SelectorError, SelectorLimits};
pub use sqlite::{
    schema, PooledReader, QueryGuard, ReaderOptions, ReaderPool, SqliteStore, StoreOptions,
    MAX_FUTURE_S, OTHER_FRAME,
};
use stackwatch_profile::Profile;
use thiserror::Error;

/// A storage error.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer stackwatch.
    #[error("database schema version {found} is newer than this stackwatch ({supported})")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Version this build writes.
        supported: i64,
    },
    /// A stored value does not decode (a corrupt or foreign database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// An argument is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The file at the store's path is not a stackwatch store.
    #[error("{path} is not a stackwatch store: {why}")]
    NotAStore {
        /// The file.
        path: String,
        /// Why not.
        why: String,
    },
    /// The store cannot be written (permissions, read-only file system).
    #[error("{path} cannot be written: {why}")]
    NotWritable {
        /// The file.
        path: String,
        /// What SQLite said.
        why: String,
    },
    /// A query was stopped by its [`QueryGuard`].
    #[error("query stopped: {0}")]
    Interrupted(&'static str),
}

/// What one call of [`ProfileStore::apply_retention`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStats {
    /// Sample rows (raw and rollups).
    pub sample_rows: u64,
    /// Stacks no remaining row names.
    pub stacks: u64,
    /// Targets with no remaining rows and no checkpoint.
    pub targets: u64,
    /// Checkpoints not updated within the retention.
    pub series: u64,
}

/// One scraped window, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestWindow {
    /// The target's labels (service, instance, version, ...).
    pub target: Labels,
    /// Worker instance id from the window protocol; empty for pprof/folded targets.
    pub instance: String,
    /// Window sequence number; 0 for sources without one.
    pub seq: u64,
    /// Window start, Unix seconds.
    pub start_unix_s: i64,
    /// Folded stacks and their counts (periods).
    pub stacks: Vec<(String, u64)>,
    /// Length of one sampling period in nanoseconds (0: unknown), so counts convert to
    /// CPU time. Kept per target (the latest known).
    pub period_ns: u64,
}

/// Periods of one target per time bucket (only buckets with data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSeries {
    /// The target's labels.
    pub labels: Labels,
    /// Its sampling period, ns (0: unknown).
    pub period_ns: u64,
    /// `(bucket start, periods)`, ascending.
    pub points: Vec<(i64, u64)>,
}

/// The stacks of a selection per time bucket, for per-window statistics.
#[derive(Debug, Clone, Default)]
pub struct BucketedStacks {
    /// Bucket length, seconds.
    pub step_s: i64,
    /// Distinct stacks (at most the reader's `max_answer_stacks`; the rest are
    /// [`OTHER_FRAME`]).
    pub stacks: Vec<std::sync::Arc<str>>,
    /// `(bucket start, index into stacks, periods)`.
    pub counts: Vec<(i64, u32, u64)>,
}

/// The last window stored for one instance of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Worker instance id.
    pub instance: String,
    /// Last sequence stored.
    pub last_seq: u64,
    /// When it was stored, Unix seconds.
    pub updated_unix_s: i64,
}

/// What one call of [`ProfileStore::ingest`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Windows written.
    pub windows: usize,
    /// (window, stack) rows written.
    pub rows: usize,
    /// Stacks seen for the first time.
    pub new_stacks: usize,
}

/// The storage the collector writes to and the dashboard reads from.
pub trait ProfileStore {
    /// Stores windows and advances each `(target, instance)` checkpoint to the highest
    /// `seq` given, atomically: either all of it is stored or none.
    fn ingest(&mut self, windows: &[IngestWindow]) -> Result<IngestStats, StoreError>;

    /// The checkpoints of a target, most recently updated first.
    fn checkpoints(&self, target: &Labels) -> Result<Vec<Checkpoint>, StoreError>;

    /// Every target's labels.
    fn targets(&self) -> Result<Vec<Labels>, StoreError>;

    /// The merged profile of the selected targets over `[from_s, to_s)`.
    fn profile(&self, selector: &Selector, from_s: i64, to_s: i64) -> Result<Profile, StoreError>;

    /// Periods per `step_s` bucket over `[from_s, to_s)` (a CPU-time series). Buckets sit
    /// on multiples of `step_s` (the first may start before `from_s`), every bucket is
    /// present, zero or not.
    fn timeseries(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError>;

    /// Periods per `step_s` bucket and target over `[from_s, to_s)`, with each target's
    /// labels and sampling period (buckets on multiples of `step_s`).
    fn target_series(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<TargetSeries>, StoreError>;

    /// Stacks per `step_s` bucket over `[from_s, to_s)`, merged over the selected
    /// targets.
    fn bucketed_stacks(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<BucketedStacks, StoreError>;

    /// Rolls up a bounded amount of raw data (so it never holds the writer long).
    /// Returns true when more is due right now.
    fn rollup(&mut self, now_s: i64) -> Result<bool, StoreError>;

    /// Deletes what is older than the retention, and every stack, target and
    /// checkpoint that only the deleted data used.
    fn apply_retention(&mut self, now_s: i64) -> Result<RetentionStats, StoreError>;

    /// Functions of the merged profile by self and total periods, highest total first.
    fn top_functions(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        limit: usize,
    ) -> Result<Vec<stackwatch_profile::FunctionStat>, StoreError> {
        Ok(self.profile(selector, from_s, to_s)?.top_functions(limit))
    }

    /// The two profiles of a comparison (base, then target): render them with
    /// `stackwatch_profile::svg::render_diff`, which normalises base to target's total.
    fn diff(
        &self,
        base: (&Selector, i64, i64),
        target: (&Selector, i64, i64),
    ) -> Result<(Profile, Profile), StoreError> {
        Ok((
            self.profile(base.0, base.1, base.2)?,
            self.profile(target.0, target.1, target.2)?,
        ))
    }
}
