//! [`SqliteStore`]: the embedded store, one SQLite file (WAL). This module opens it and
//! holds what the others share; the work is split by job:
//!
//! - [`schema`]: the tables, the migrations, and the check of a file opened for writing;
//! - `ingest`: storing windows (targets, stacks and label sets interned);
//! - `query`: profiles, time series, bucketed stacks, label names and values and series
//!   grouped by a label, read from raw rows and rollups;
//! - `rollup`: raw windows into minute and hour rollups;
//! - `retention`: deleting old data and whatever only it used;
//! - `pool`: [`ReaderPool`], read-only connections kept for reuse.

pub(crate) use crate::buckets::{floor_to, labels_key};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};
use stackwatch_profile::Profile;

use crate::{
    BucketedStacks, Checkpoint, GroupedSeries, IngestStats, IngestWindow, Interruption, LabelKeys,
    Labels, ProfileReader, ProfileWriter, RetentionStats, Selector, StoreError, TargetSeries,
};
use schema::PRAGMAS;

mod ingest;
mod pool;
mod query;
mod retention;
mod rollup;
pub mod schema;

pub use pool::{PooledReader, ReaderPool};

/// Bytes SQLite holds in this process now, over every connection: the page caches of
/// the writer and of the pooled readers (each up to its `cache_size`), prepared
/// statements and scratch. The collector shows it in `/metrics`, so that RSS that grows
/// with the store can be told apart from a leak.
pub fn sqlite_memory_bytes() -> u64 {
    // SAFETY: sqlite3_memory_used takes no arguments and only reads SQLite's global
    // memory statistics, which it guards with its own mutex (the bundled build is
    // threadsafe); it is callable at any time, before or after any connection exists.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    used.max(0) as u64
}

/// `last_seen` is written when a window starts this much later than the stored value
/// (so once an hour per stack, not once per row); retention allows for the lag.
const LAST_SEEN_GRANULARITY_S: i64 = 3600;
/// Windows may start at most this far ahead of the clock (a skewed worker clock);
/// later ones are refused, so `last_seen` bounds every row that names a stack.
pub const MAX_FUTURE_S: i64 = 86_400;

/// Retention of each resolution, and the writer's page cache.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Raw windows (default 2 days).
    pub raw_retention: Duration,
    /// 1-minute rollups (default 14 days).
    pub minute_retention: Duration,
    /// 1-hour rollups: the overall retention (default 14 days).
    pub retention: Duration,
    /// SQLite page cache of the writing connection, KiB (default 64 MiB). It fills as
    /// the store grows, up to this bound.
    pub cache_kib: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            raw_retention: Duration::from_secs(2 * 86_400),
            minute_retention: Duration::from_secs(14 * 86_400),
            retention: Duration::from_secs(14 * 86_400),
            cache_kib: 64 << 10,
        }
    }
}

/// Options of a read-only connection (see [`SqliteStore::open_reader_with`]).
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// SQLite page cache of the connection, KiB (default 16 MiB).
    pub cache_kib: u32,
    /// Distinct stacks one answer may hold; the rest (smallest counts) fold into
    /// `[other]`, totals exact (default 100 000).
    pub max_answer_stacks: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            cache_kib: 16 << 10,
            max_answer_stacks: 100_000,
        }
    }
}

/// The frame standing for every stack an answer folded away by
/// [`ReaderOptions::max_answer_stacks`].
pub const OTHER_FRAME: &str = "[other]";

/// When a query must stop: a deadline, and a flag its requester sets when it leaves.
/// Checked by SQLite every few thousand instructions, so an abandoned or runaway query
/// stops within milliseconds instead of running on for minutes.
#[derive(Debug, Clone)]
pub struct QueryGuard {
    /// Stop after this instant.
    pub deadline: Instant,
    /// Stop once this is true (the client went away).
    pub cancelled: Arc<AtomicBool>,
}

impl QueryGuard {
    fn stop(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

/// Profiles in one SQLite file (WAL). One writer connection; open more with
/// [`SqliteStore::open_reader`] for concurrent queries.
pub struct SqliteStore {
    conn: Connection,
    opts: StoreOptions,
    reader: ReaderOptions,
    guard: Option<QueryGuard>,
    target_ids: HashMap<String, (i64, i64, u64)>,
    stack_ids: HashMap<u64, (i64, i64)>,
    /// Label set text -> (id, last_seen written).
    label_ids: HashMap<String, (i64, i64)>,
    /// Bytes of the keys of `label_ids` and `target_ids` (their maps' own size is read
    /// from their capacity).
    id_key_bytes: usize,
    stack_text: RefCell<(HashMap<i64, Arc<str>>, usize)>,
    /// What this store last added to [`store_cache_bytes`].
    accounted: Cell<u64>,
}

/// Bytes the caches of every [`SqliteStore`] of this process hold, as each last
/// accounted them (after each ingest and each query).
static CACHE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes the stores' own caches hold in this process now: the writer's id caches
/// (stacks, label sets and targets by their hash or text) and each query connection's
/// stack texts. Each is bounded (500 000 stack ids, 100 000 label sets and targets,
/// 8 MiB of text per connection) and fills as the store grows; the collector shows the
/// sum in `/metrics`, beside SQLite's own page caches ([`sqlite_memory_bytes`]).
pub fn store_cache_bytes() -> u64 {
    CACHE_BYTES.load(Ordering::Relaxed)
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        CACHE_BYTES.fetch_sub(self.accounted.get(), Ordering::Relaxed);
    }
}

fn parse_labels(json: &str) -> Result<Labels, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("target labels: {e}")))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` for writing.
    ///
    /// Refuses, naming the path: a file that exists but is empty (0 bytes: not a store
    /// that lost its data, but not one to silently start over in either), a database
    /// with tables that are not stackwatch's, and a file or directory it cannot write.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        let not_a_store = |why: String| StoreError::NotAStore {
            path: path.display().to_string(),
            why,
        };
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            return Err(not_a_store(
                "the file exists but is empty (0 bytes); remove it to start a new store".into(),
            ));
        }
        let conn = Connection::open(path)?;
        let not_writable = |e: rusqlite::Error| StoreError::NotWritable {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(StoreError::NotWritable {
                path: path.display().to_string(),
                why: "opened read-only (file permissions)".into(),
            });
        }
        conn.execute_batch(PRAGMAS).map_err(not_writable)?;
        conn.execute_batch(&format!("PRAGMA cache_size = -{};", opts.cache_kib.max(64)))
            .map_err(not_writable)?;
        // A write that must succeed now, not at the first scrape.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(not_writable)?;
        schema::create_or_migrate(&conn, not_a_store, not_writable)?;
        Ok(Self::with_conn(conn, opts))
    }

    /// Opens a read-only connection to an existing store (queries run beside the writer).
    pub fn open_reader(path: &Path) -> Result<Self, StoreError> {
        Self::open_reader_with(path, ReaderOptions::default())
    }

    /// [`SqliteStore::open_reader`] with options.
    pub fn open_reader_with(path: &Path, reader: ReaderOptions) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(&format!(
            "PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{};",
            reader.cache_kib.max(64)
        ))?;
        let mut store = Self::with_conn(conn, StoreOptions::default());
        store.reader = reader;
        Ok(store)
    }

    fn with_conn(conn: Connection, opts: StoreOptions) -> Self {
        SqliteStore {
            conn,
            opts,
            reader: ReaderOptions::default(),
            guard: None,
            target_ids: HashMap::new(),
            stack_ids: HashMap::new(),
            label_ids: HashMap::new(),
            id_key_bytes: 0,
            stack_text: RefCell::new((HashMap::new(), 0)),
            accounted: Cell::new(0),
        }
    }

    /// This store's caches now, estimated: each map's table (capacity x entry, plus a
    /// control byte), the keys of the text-keyed ones and the stack texts.
    fn cache_estimate(&self) -> u64 {
        let table = |capacity: usize, entry: usize| capacity * (entry + 1);
        let text = self.stack_text.borrow();
        (table(self.stack_ids.capacity(), 8 + 16)
            + table(self.label_ids.capacity(), 24 + 16)
            + table(self.target_ids.capacity(), 24 + 24)
            + self.id_key_bytes
            + table(text.0.capacity(), 8 + 16)
            + text.1) as u64
    }

    /// Adds what this store's caches grew or shrank by since it last did to
    /// [`store_cache_bytes`]. After each ingest transaction and each query: a few loads
    /// and an atomic add.
    pub(super) fn account_caches(&self) {
        let now = self.cache_estimate();
        let before = self.accounted.replace(now);
        if now >= before {
            CACHE_BYTES.fetch_add(now - before, Ordering::Relaxed);
        } else {
            CACHE_BYTES.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// Bounds the queries that follow by `guard` (none: unbounded). An interrupted
    /// query fails with [`StoreError::Interrupted`].
    pub fn set_guard(&mut self, guard: Option<QueryGuard>) {
        self.guard = guard.clone();
        let handler = guard.map(|g| move || g.stop());
        // Every 10 000 SQLite VM instructions: microseconds apart.
        let _ = self.conn.progress_handler(10_000, handler);
    }

    /// Maps SQLite's "interrupted" to [`StoreError::Interrupted`] with the reason.
    fn interrupted(&self, e: StoreError) -> StoreError {
        match (&e, &self.guard) {
            (StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)), Some(g))
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                StoreError::Interrupted(if g.cancelled.load(Ordering::Relaxed) {
                    Interruption::ClientGone
                } else {
                    Interruption::Timeout
                })
            }
            _ => e,
        }
    }

    /// `PRAGMA integrity_check` result ("ok" when healthy).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// Rows in the raw sample table (for tests and benchmarks).
    pub fn raw_rows(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM samples_raw", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Sum of all raw counts per target (for the lossless-ingest tests).
    pub fn raw_totals(&self) -> Result<Vec<(Labels, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT t.labels, TOTAL(s.count) FROM samples_raw s JOIN targets t ON t.id = s.target_id GROUP BY s.target_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (labels, total) = row?;
            out.push((parse_labels(&labels)?, total as u64));
        }
        Ok(out)
    }
}

impl ProfileReader for SqliteStore {
    fn checkpoints(&self, target: &Labels) -> Result<Vec<Checkpoint>, StoreError> {
        self.checkpoints_inner(target)
    }

    fn targets(&self) -> Result<Vec<Labels>, StoreError> {
        self.targets_inner()
    }

    fn profile(&self, selector: &Selector, from_s: i64, to_s: i64) -> Result<Profile, StoreError> {
        self.profile_inner(selector, from_s, to_s)
            .map_err(|e| self.interrupted(e))
    }

    fn timeseries(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        self.timeseries_inner(selector, from_s, to_s, step_s)
            .map_err(|e| self.interrupted(e))
    }

    fn target_series(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<TargetSeries>, StoreError> {
        self.target_series_inner(selector, from_s, to_s, step_s)
            .map_err(|e| self.interrupted(e))
    }

    fn bucketed_stacks(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<BucketedStacks, StoreError> {
        self.bucketed_stacks_inner(selector, from_s, to_s, step_s)
            .map_err(|e| self.interrupted(e))
    }

    fn label_keys(&self) -> Result<LabelKeys, StoreError> {
        self.label_keys_inner().map_err(|e| self.interrupted(e))
    }

    fn label_values(&self, name: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.label_values_inner(name, limit)
            .map_err(|e| self.interrupted(e))
    }

    fn sample_label_sets(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<stackwatch_profile::SampleLabels>, StoreError> {
        self.sample_label_sets_inner(selector, from_s, to_s)
            .map_err(|e| self.interrupted(e))
    }

    fn grouped_series(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
        group_by: &str,
        limit: usize,
    ) -> Result<Vec<GroupedSeries>, StoreError> {
        self.grouped_series_inner(selector, from_s, to_s, step_s, group_by, limit)
            .map_err(|e| self.interrupted(e))
    }
}

impl ProfileWriter for SqliteStore {
    fn ingest(&mut self, windows: &[IngestWindow]) -> Result<IngestStats, StoreError> {
        let result = self.ingest_inner(windows);
        self.account_caches();
        result
    }

    fn rollup(&mut self, now_s: i64) -> Result<bool, StoreError> {
        let more_m = self.rollup_minute(now_s)?;
        let more_h = self.rollup_hour(now_s)?;
        Ok(more_m || more_h)
    }

    fn apply_retention(&mut self, now_s: i64) -> Result<RetentionStats, StoreError> {
        let result = self.retention_inner(now_s);
        // Ids cached before the sweep may name deleted rows.
        self.stack_ids.clear();
        self.target_ids.clear();
        self.label_ids.clear();
        result
    }
}
