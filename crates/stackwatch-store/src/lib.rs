//! Profile storage for the stackwatch collector.
//!
//! Storage has two sides: [`ProfileWriter`], what the collector's writer does (ingest,
//! rollup, retention), and [`ProfileReader`], all the dashboard and the API may do (every
//! query). Two backends implement both, one folder each: [`SqliteStore`] (`sqlite/`, the embedded
//! default; its schema in [`schema`]) and [`ClickHouseStore`] (`clickhouse/`, for fleets
//! that outgrow one machine; its schema in [`clickhouse::schema`]). [`StoreConfig`]
//! says which, and [`open_writer`] and [`Readers`] open it, so nothing outside this
//! crate names a backend. Label selectors are in [`selector`]; samples carry a sample
//! label set as a stored dimension (see [`ProfileReader`] for how a selector's
//! matchers split between targets and samples).

mod backend;
mod buckets;
pub mod clickhouse;
mod migrate;
pub mod selector;
mod sqlite;

pub use backend::{open_writer, Reader, Readers, StoreConfig};
pub use clickhouse::{ClickHouseOptions, ClickHouseStore};
pub use migrate::{migrate_sqlite, MigrateStats, MIGRATED_INSTANCE};

pub use selector::{Labels, Selector, SelectorError, SelectorLimits};
pub use sqlite::{
    schema, sqlite_memory_bytes, store_cache_bytes, PooledReader, QueryGuard, ReaderOptions,
    ReaderPool, SqliteStore, StoreOptions, MAX_FUTURE_S, OTHER_FRAME,
};
use stackwatch_profile::{Profile, SampleLabels};
use thiserror::Error;

/// Why a query was stopped before its end: what the server counts it as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The client went away (its request was dropped): the query was cancelled.
    ClientGone,
    /// The query ran past its deadline (`query.timeout`).
    Timeout,
}

impl std::fmt::Display for Interruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interruption::ClientGone => "the client went away",
            Interruption::Timeout => "the query took longer than query.timeout",
        })
    }
}

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
    Interrupted(Interruption),
    /// The store's server cannot be reached or did not answer in time (ClickHouse down
    /// or slow): the operation may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// ClickHouse refused a statement.
    #[error("clickhouse: {message}")]
    ClickHouse {
        /// ClickHouse's error code (`Code: N`), when it sent one.
        code: Option<u32>,
        /// Its message, cut to one line.
        message: String,
    },
    /// The store's configuration is unusable; `key` names the `stackwatch.toml` key.
    #[error("store.{key}: {why}")]
    Config {
        /// The `[store]` key at fault.
        key: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl StoreError {
    /// True when the operation may succeed if retried later, rather than being refused
    /// for what it asked: the store's server is down, slow or overloaded
    /// ([`StoreError::Unavailable`]), or SQLite's file is locked by another connection
    /// for longer than the busy timeout (`SQLITE_BUSY`, "database is locked"; or
    /// `SQLITE_LOCKED`, a conflict with another statement of the same connection or
    /// shared cache).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// Refuses (as [`StoreError::Invalid`]) a window starting outside `earliest..=latest`,
/// `too_old` saying why a start before `earliest` is refused, or with a sequence beyond
/// 2^63-1 (stores keep sequences as signed 64-bit integers).
pub(crate) fn check_window_bounds(
    w: &IngestWindow,
    earliest: i64,
    latest: i64,
    too_old: &str,
) -> Result<(), StoreError> {
    if !(earliest..=latest).contains(&w.start_unix_s) {
        return Err(StoreError::Invalid(format!(
            "window {} starts at {}: {too_old} or more than a day ahead of this clock",
            w.seq, w.start_unix_s
        )));
    }
    if w.seq > i64::MAX as u64 {
        return Err(StoreError::Invalid(format!(
            "window sequence {} is beyond 2^63-1",
            w.seq
        )));
    }
    Ok(())
}

/// What one call of [`ProfileWriter::apply_retention`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStats {
    /// Sample rows (raw and rollups).
    pub sample_rows: u64,
    /// Stacks no remaining row names.
    pub stacks: u64,
    /// Sample label sets no remaining row names.
    pub label_sets: u64,
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
    /// Folded stacks and their counts (periods) of the samples taken without labels.
    pub stacks: Vec<(String, u64)>,
    /// The samples taken under a sample label set (`table=orders`), per set; every set
    /// non-empty and distinct.
    pub labeled: Vec<(SampleLabels, Vec<(String, u64)>)>,
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

/// The label names a store knows, by what they label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelKeys {
    /// Names of target labels (`service`, `instance`, ...): a matcher on one selects
    /// targets.
    pub target: Vec<String>,
    /// Names of sample labels (`table`, `op`, ...) that are not also target labels: a
    /// matcher on one selects samples.
    pub sample: Vec<String>,
}

/// The value of a `group_by` series that stands for every value past the top N.
pub const OTHER_VALUE: &str = "[other]";

/// One series of [`ProfileReader::grouped_series`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupedSeries {
    /// The label's value; empty for the samples (or targets) without the label,
    /// [`OTHER_VALUE`] for the values past the top N.
    pub value: String,
    /// `(bucket start, periods)`, every bucket present.
    pub points: Vec<(i64, u64)>,
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

/// One collector's heartbeat in a store shared by several collectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorBeat {
    /// The collector's id (`[collector] id`).
    pub id: String,
    /// Where its API listens, for operators.
    pub addr: String,
    /// When it sent this beat, Unix ms.
    pub beat_unix_ms: u64,
    /// True when it is shutting down: the others take its targets at once.
    pub left: bool,
}

/// What one call of [`ProfileWriter::ingest`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Windows written.
    pub windows: usize,
    /// (window, stack, sample label set) rows written.
    pub rows: usize,
    /// Stacks seen for the first time.
    pub new_stacks: usize,
}

/// What the dashboard reads from storage (the query routes see a store only as this).
///
/// Selectors select targets and samples at once: a matcher whose name is a target label
/// name of some stored target ([`LabelKeys::target`]) selects targets, any other matcher
/// selects samples by their sample labels (a sample without the label has the empty
/// value, as in Prometheus, so `{table!="orders"}` keeps unlabeled samples and
/// `{table="orders"}` does not).
pub trait ProfileReader {
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
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        if to_s <= from_s || step_s <= 0 {
            return Err(StoreError::Invalid(
                "empty range or non-positive step".into(),
            ));
        }
        let from = from_s.div_euclid(step_s) * step_s;
        let buckets = ((to_s - from + step_s - 1) / step_s) as usize;
        let mut out: Vec<(i64, u64)> = (0..buckets)
            .map(|i| (from + i as i64 * step_s, 0))
            .collect();
        for series in self.target_series(selector, from_s, to_s, step_s)? {
            for (ts, c) in series.points {
                if let Some(b) = out.get_mut(((ts - from) / step_s) as usize) {
                    b.1 = b.1.saturating_add(c);
                }
            }
        }
        Ok(out)
    }

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

    /// The target and sample label names stored.
    fn label_keys(&self) -> Result<LabelKeys, StoreError>;

    /// Values of label `name`, sorted, at most `limit`, none empty: the values of the
    /// targets when `name` is a target label name, else of the stored sample label sets.
    fn label_values(&self, name: &str, limit: usize) -> Result<Vec<String>, StoreError>;

    /// The sample label sets that rows of the selection use over `[from_s, to_s)`, each
    /// once (the samples taken without labels are not a set). Unlike
    /// [`label_keys`](Self::label_keys) and [`label_values`](Self::label_values), which
    /// read every stored set, this reads the rows: the sets of some targets only.
    fn sample_label_sets(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<stackwatch_profile::SampleLabels>, StoreError>;

    /// Periods per `step_s` bucket over `[from_s, to_s)` of the selection, one series
    /// per value of label `group_by` (a sample or a target label): the `limit` values
    /// with the most periods over the range, sorted by that total (highest first), then
    /// one [`OTHER_VALUE`] series for the rest when there is any. Buckets as in
    /// [`timeseries`](Self::timeseries). The series add up to `timeseries`; an empty
    /// selection has no series. A target label name groups targets (one series per
    /// value, targets without the label under the empty value), any other name groups
    /// samples by their label sets (samples without the label under the empty value).
    fn grouped_series(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
        group_by: &str,
        limit: usize,
    ) -> Result<Vec<GroupedSeries>, StoreError>;

    /// Collectors that sent a heartbeat at or after `since_ms` and have not left,
    /// sorted by id (empty for the embedded store: it has only the local collector).
    fn live_collectors(&self, since_ms: u64) -> Result<Vec<CollectorBeat>, StoreError> {
        let _ = since_ms;
        Ok(Vec::new())
    }
}

/// What the collector's writer does to storage: ingest, roll up, apply retention, beat
/// its heartbeat. One writer per store and collector; it reads what it needs too.
pub trait ProfileWriter: ProfileReader {
    /// Stores windows and advances each `(target, instance)` checkpoint to the highest
    /// `seq` given, atomically: either all of it is stored or none.
    fn ingest(&mut self, windows: &[IngestWindow]) -> Result<IngestStats, StoreError>;

    /// Refuses (as [`StoreError::Invalid`]) a window that [`ingest`](Self::ingest) would
    /// refuse at Unix time `now_s` for what it is, whatever the store's state: a start
    /// before 1970 or more than [`MAX_FUTURE_S`] ahead of the clock (ClickHouse also
    /// refuses one older than its raw retention, which it could only roll up from a
    /// partial minute), a sequence beyond 2^63-1. Ingest applies it to every window; the collector's writer applies
    /// it before it acknowledges windows it keeps while the store is unavailable, so it
    /// never acknowledges what the store will refuse once it is back.
    fn check_window(&self, window: &IngestWindow, now_s: i64) -> Result<(), StoreError> {
        check_window_bounds(window, 0, now_s.saturating_add(MAX_FUTURE_S), "before 1970")
    }

    /// Rolls up a bounded amount of raw data (so it never holds the writer long).
    /// Returns true when more is due right now.
    fn rollup(&mut self, now_s: i64) -> Result<bool, StoreError>;

    /// Deletes what is older than the retention, and every stack, target and
    /// checkpoint that only the deleted data used.
    fn apply_retention(&mut self, now_s: i64) -> Result<RetentionStats, StoreError>;

    /// Records that collector `me` is alive (several collectors may share a store that
    /// is not embedded). The embedded store has one collector: nothing to record.
    fn heartbeat(&mut self, me: &CollectorBeat) -> Result<(), StoreError> {
        let _ = me;
        Ok(())
    }
}
