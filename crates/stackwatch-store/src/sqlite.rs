//! [`SqliteStore`]: the embedded store (see [`crate::schema`] for the tables).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use stackwatch_profile::Profile;

use crate::schema::{MIGRATE_V1_TO_V2, PRAGMAS, SCHEMA_V1, SCHEMA_VERSION, TABLES};
use crate::{
    BucketedStacks, Checkpoint, IngestStats, IngestWindow, Labels, ProfileStore, RetentionStats,
    Selector, StoreError, TargetSeries,
};

/// Raw windows are rolled up only once they are this old, so windows of the same minute
/// from slower targets have arrived. Later arrivals are added to the rollups at ingest.
const ROLLUP_GRACE_S: i64 = 120;
/// Targets whose hour is rolled up per [`ProfileStore::rollup`] call (an hour of one
/// target is 60 minute-buckets; 50 targets keep a step well under a second).
const HOUR_ROLLUP_TARGETS: i64 = 50;
/// Sets a rollup level's progress (`done_through`, or the hour cursor).
const UPSERT_ROLLUP_STATE: &str = "INSERT INTO rollup_state (level, done_through) VALUES (?1, ?2)
     ON CONFLICT (level) DO UPDATE SET done_through = excluded.done_through";

/// Stack ids remembered by hash before the cache is cleared.
const STACK_CACHE_LIMIT: usize = 500_000;
/// Bytes of stack text a reader keeps cached before the cache is cleared.
const STACK_TEXT_CACHE_BYTES: usize = 8 << 20;
/// `last_seen` is written when a window starts this much later than the stored value
/// (so once an hour per stack, not once per row); retention allows for the lag.
const LAST_SEEN_GRANULARITY_S: i64 = 3600;
/// Windows may start at most this far ahead of the clock (a skewed worker clock);
/// later ones are refused, so `last_seen` bounds every row that names a stack.
pub const MAX_FUTURE_S: i64 = 86_400;
/// Largest count stored per row (the scrape budget `max_samples_per_window` is at most
/// this): sums of rows saturate at 2^62 in SQL and are read as floats (`TOTAL`), so no
/// count from outside can make a query or a rollup fail with an integer overflow.
const MAX_STORED_COUNT: u64 = 1 << 40;
/// Periods per stack id, for [`SqliteStore::sum_into`]: raw table, rollup table.
const SUM_BY_STACK: (&str, &str) = (
    "SELECT stack_id, TOTAL(count) FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}) GROUP BY stack_id",
    "SELECT stack_id, count FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3",
);
/// Periods per window start, for [`SqliteStore::sum_into`]: raw table, rollup table.
const SUM_BY_TIME: (&str, &str) = (
    "SELECT ts, TOTAL(count) FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}) GROUP BY ts",
    "SELECT ts, TOTAL(count) FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY ts",
);
/// Rows deleted per statement by the retention sweep of stacks and targets.
const GC_CHUNK: i64 = 10_000;

/// Retention of each resolution.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Raw windows (default 2 days).
    pub raw_retention: Duration,
    /// 1-minute rollups (default 14 days).
    pub minute_retention: Duration,
    /// 1-hour rollups: the overall retention (default 14 days).
    pub retention: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            raw_retention: Duration::from_secs(2 * 86_400),
            minute_retention: Duration::from_secs(14 * 86_400),
            retention: Duration::from_secs(14 * 86_400),
        }
    }
}

#[derive(Clone, Copy)]
enum Table {
    Raw,
    Minute,
    Hour,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Raw => "samples_raw",
            Table::Minute => "samples_1m",
            Table::Hour => "samples_1h",
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
    stack_text: RefCell<(HashMap<i64, Arc<str>>, usize)>,
}

fn labels_key(labels: &Labels) -> String {
    let mut k = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            k.push(',');
        }
        k.push_str(name);
        k.push('=');
        k.push_str(&format!("{value:?}"));
    }
    k
}

fn stack_hash(stack: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(stack.as_bytes()) as i64
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step).saturating_mul(step)
}

fn ceil_to(t: i64, step: i64) -> i64 {
    floor_to(t.saturating_add(step - 1), step)
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
        // A write that must succeed now, not at the first scrape.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(not_writable)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            let foreign: Option<String> = conn
                .query_row(
                    &format!(
                        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ({}) LIMIT 1",
                        TABLES.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(",")
                    ),
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(table) = foreign {
                return Err(not_a_store(format!(
                    "it is an SQLite database with other tables ({table:?}), not a stackwatch store"
                )));
            }
            conn.execute_batch(SCHEMA_V1).map_err(not_writable)?;
        }
        if version < 2 {
            conn.execute_batch(&format!(
                "BEGIN; {MIGRATE_V1_TO_V2} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(not_writable)?;
        }
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
            stack_text: RefCell::new((HashMap::new(), 0)),
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
                    "the client went away"
                } else {
                    "the query took longer than query.timeout"
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

    /// The id of the target with `labels` (inserted if new), its `last_seen` raised to
    /// `ts` (to within [`LAST_SEEN_GRANULARITY_S`]) and its period set when known.
    fn target_id(&mut self, labels: &Labels, ts: i64, period_ns: u64) -> Result<i64, StoreError> {
        let key = labels_key(labels);
        if let Some((id, seen, period)) = self.target_ids.get(&key).copied() {
            if ts <= seen + LAST_SEEN_GRANULARITY_S && (period_ns == 0 || period_ns == period) {
                return Ok(id);
            }
        }
        let json = serde_json::to_string(labels).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let period = period_ns.min(i64::MAX as u64) as i64;
        self.conn
            .prepare_cached(
                "INSERT INTO targets (key, labels, last_seen, period_ns) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen),
                 period_ns = CASE WHEN excluded.period_ns > 0 THEN excluded.period_ns ELSE period_ns END",
            )?
            .execute(params![key, json, ts, period])?;
        let (id, seen, period): (i64, i64, i64) = self
            .conn
            .prepare_cached("SELECT id, last_seen, period_ns FROM targets WHERE key = ?1")?
            .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        self.target_ids
            .insert(key, (id, seen, period.max(0) as u64));
        Ok(id)
    }

    /// Returns the id of `stack`, inserting it if new (second value true), its
    /// `last_seen` raised to `ts` (to within [`LAST_SEEN_GRANULARITY_S`]).
    fn stack_id(&mut self, stack: &str, ts: i64) -> Result<(i64, bool), StoreError> {
        let hash = stack_hash(stack);
        if let Some((id, seen)) = self.stack_ids.get(&(hash as u64)).copied() {
            if ts > seen + LAST_SEEN_GRANULARITY_S {
                self.conn
                    .prepare_cached(
                        "UPDATE stacks SET last_seen = MAX(last_seen, ?2) WHERE id = ?1",
                    )?
                    .execute(params![id, ts])?;
                self.stack_ids.insert(hash as u64, (id, ts));
            }
            return Ok((id, false));
        }
        let mut found = None;
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, stack FROM stacks WHERE hash = ?1")?;
            let mut rows = stmt.query([hash])?;
            while let Some(row) = rows.next()? {
                let text: String = row.get(1)?;
                if text == stack {
                    found = Some(row.get::<_, i64>(0)?);
                    break;
                }
            }
        }
        let (id, new) = match found {
            Some(id) => {
                self.conn
                    .prepare_cached(
                        "UPDATE stacks SET last_seen = MAX(last_seen, ?2) WHERE id = ?1",
                    )?
                    .execute(params![id, ts])?;
                (id, false)
            }
            None => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO stacks (hash, stack, last_seen) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![hash, stack, ts])?;
                (self.conn.last_insert_rowid(), true)
            }
        };
        if self.stack_ids.len() >= STACK_CACHE_LIMIT {
            self.stack_ids.clear();
        }
        // Only the first stack with a given hash is cached; a colliding one is looked up.
        self.stack_ids.entry(hash as u64).or_insert((id, ts));
        Ok((id, new))
    }

    fn done_through(&self, level: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT done_through FROM rollup_state WHERE level = ?1",
                [level],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The selected targets' ids, labels and periods.
    fn selected_target_rows(
        &self,
        selector: &Selector,
    ) -> Result<Vec<(i64, Labels, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, labels, period_ns FROM targets")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, labels, period) = row?;
            let labels = parse_labels(&labels)?;
            if selector.matches(&labels) {
                out.push((id, labels, period.max(0) as u64));
            }
        }
        Ok(out)
    }

    fn selected_targets(&self, selector: &Selector) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT id, labels FROM targets")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut ids = Vec::new();
        for row in rows {
            let (id, labels) = row?;
            if selector.matches(&parse_labels(&labels)?) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Splits `[from, to)` into pieces each read from the coarsest table that holds it
    /// completely: whole rolled-up hours from `samples_1h`, whole rolled-up minutes from
    /// `samples_1m`, the rest from `samples_raw`.
    ///
    /// `finest` is the resolution a caller needs (a time series bucket): a rollup is
    /// used only if its bucket divides it.
    fn plan(&self, from: i64, to: i64, finest: i64) -> Result<Vec<(Table, i64, i64)>, StoreError> {
        let use_m = finest % 60 == 0;
        let use_h = finest % 3600 == 0;
        let m_done = if use_m {
            self.done_through("1m")?.unwrap_or(i64::MIN)
        } else {
            i64::MIN
        };
        let h_done = if use_h {
            self.done_through("1h")?.unwrap_or(i64::MIN)
        } else {
            i64::MIN
        };
        let mut out = Vec::new();
        let split = |a: i64, b: i64, out: &mut Vec<(Table, i64, i64)>| {
            if a >= b {
                return;
            }
            let ma = ceil_to(a, 60);
            let mb = floor_to(b.min(m_done), 60);
            if ma < mb {
                if a < ma {
                    out.push((Table::Raw, a, ma));
                }
                out.push((Table::Minute, ma, mb));
                if mb < b {
                    out.push((Table::Raw, mb, b));
                }
            } else {
                out.push((Table::Raw, a, b));
            }
        };
        let ha = ceil_to(from, 3600);
        let hb = floor_to(to.min(h_done), 3600);
        if ha < hb {
            split(from, ha, &mut out);
            out.push((Table::Hour, ha, hb));
            split(hb, to, &mut out);
        } else {
            split(from, to, &mut out);
        }
        Ok(out)
    }

    /// Reads one piece of a [`SqliteStore::plan`]: the raw table in one pass for all
    /// `targets` (it is keyed by time; `raw` selects from `samples_raw` with `?1`/`?2`
    /// the range and `{ids}` the target list), a rollup table with one range read per
    /// target (it is keyed by target; `rollup` selects from `{table}` with `?1` the
    /// target and `?2`/`?3` the range). `row` gets the target id for rollup rows.
    fn scan(
        &self,
        (table, from, to): (Table, i64, i64),
        targets: &[i64],
        raw: &str,
        rollup: &str,
        mut row: impl FnMut(Option<i64>, &rusqlite::Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if targets.is_empty() {
            return Ok(());
        }
        match table {
            Table::Raw => {
                let sql = raw.replace("{ids}", &id_list(targets));
                let mut stmt = self.conn.prepare(&sql)?;
                let mut rows = stmt.query(params![from, to])?;
                while let Some(r) = rows.next()? {
                    row(None, r)?;
                }
            }
            Table::Minute | Table::Hour => {
                let sql = rollup.replace("{table}", table.name());
                let mut stmt = self.conn.prepare_cached(&sql)?;
                for t in targets {
                    let mut rows = stmt.query(params![t, from, to])?;
                    while let Some(r) = rows.next()? {
                        row(Some(*t), r)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds every (key, count) row of `sql` (a [`SqliteStore::scan`] pair selecting a key
    /// and a count) over one plan piece into `acc`.
    fn sum_into(
        &self,
        piece: (Table, i64, i64),
        targets: &[i64],
        (raw, rollup): (&str, &str),
        acc: &mut HashMap<i64, u64>,
    ) -> Result<(), StoreError> {
        self.scan(piece, targets, raw, rollup, |_, r| {
            let e = acc.entry(r.get(0)?).or_insert(0);
            *e = e.saturating_add(read_count(r.get_ref(1)?));
            Ok(())
        })
    }

    /// Resolves stack ids to their text (cached), keeping each id's count.
    fn stack_texts(&self, counts: HashMap<i64, u64>) -> Result<Vec<(Arc<str>, u64)>, StoreError> {
        let mut cache = self.stack_text.borrow_mut();
        let (cache, cached_bytes) = &mut *cache;
        if *cached_bytes > STACK_TEXT_CACHE_BYTES {
            cache.clear();
            *cached_bytes = 0;
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT stack FROM stacks WHERE id = ?1")?;
        let mut out = Vec::with_capacity(counts.len());
        for (id, count) in counts {
            let text = match cache.get(&id) {
                Some(t) => t.clone(),
                None => {
                    let t: String = stmt.query_row([id], |r| r.get(0))?;
                    let t: Arc<str> = Arc::from(t);
                    *cached_bytes += t.len() + 32;
                    cache.insert(id, t.clone());
                    t
                }
            };
            out.push((text, count));
        }
        Ok(out)
    }

    /// The body of [`ProfileStore::ingest`], inside `BEGIN IMMEDIATE`.
    fn ingest_in_transaction(
        &mut self,
        windows: &[IngestWindow],
    ) -> Result<IngestStats, StoreError> {
        let m_done = self.done_through("1m")?.unwrap_or(i64::MIN);
        let h_done = self.done_through("1h")?.unwrap_or(i64::MIN);
        let h_cursor = self.hour_cursor()?;
        let mut stats = IngestStats::default();
        let mut checkpoints: HashMap<(i64, &str), u64> = HashMap::new();
        let latest = stackwatch_profile::clock::unix_s().saturating_add(MAX_FUTURE_S);
        for w in windows {
            if !(0..=latest).contains(&w.start_unix_s) {
                return Err(StoreError::Invalid(format!(
                    "window {} starts at {}: before 1970 or more than a day ahead of this clock",
                    w.seq, w.start_unix_s
                )));
            }
            if w.seq > i64::MAX as u64 {
                return Err(StoreError::Invalid(format!(
                    "window sequence {} is beyond 2^63-1",
                    w.seq
                )));
            }
            let target = self.target_id(&w.target, w.start_unix_s, w.period_ns)?;
            let late_m = w.start_unix_s < m_done;
            // Also late: the hour being rolled up, for targets it already covered.
            let late_h = w.start_unix_s < h_done
                || (h_cursor > 0 && floor_to(w.start_unix_s, 3600) == h_done && target <= h_cursor);
            for (stack, count) in &w.stacks {
                if *count == 0 {
                    continue;
                }
                let (stack_id, new) = self.stack_id(stack, w.start_unix_s)?;
                stats.new_stacks += usize::from(new);
                let count = (*count).min(MAX_STORED_COUNT) as i64;
                self.conn
                    .prepare_cached(
                        "INSERT INTO samples_raw (ts, target_id, stack_id, count) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (ts, target_id, stack_id) DO UPDATE SET count = MIN(count + excluded.count, 4611686018427387904)",
                    )?
                    .execute(params![w.start_unix_s, target, stack_id, count])?;
                // A window older than what is rolled up is added to the rollups directly.
                for (late, table, step) in
                    [(late_m, "samples_1m", 60), (late_h, "samples_1h", 3600)]
                {
                    if late {
                        self.conn
                            .prepare_cached(&format!(
                                "INSERT INTO {table} (target_id, ts, stack_id, count) VALUES (?1, ?2, ?3, ?4)
                                 ON CONFLICT (target_id, ts, stack_id) DO UPDATE SET count = MIN(count + excluded.count, 4611686018427387904)"
                            ))?
                            .execute(params![target, floor_to(w.start_unix_s, step), stack_id, count])?;
                    }
                }
                stats.rows += 1;
            }
            if w.seq > 0 {
                let e = checkpoints
                    .entry((target, w.instance.as_str()))
                    .or_insert(0);
                *e = (*e).max(w.seq);
            }
            stats.windows += 1;
        }
        let now = stackwatch_profile::clock::unix_s();
        for ((target, instance), seq) in checkpoints {
            self.conn
                .prepare_cached(
                    "INSERT INTO series (target_id, instance, last_seq, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (target_id, instance) DO UPDATE
                     SET last_seq = MAX(last_seq, excluded.last_seq), updated_at = excluded.updated_at",
                )?
                .execute(params![target, instance, seq as i64, now])?;
        }
        Ok(stats)
    }

    /// Rolls one minute of raw windows (all targets) into `samples_1m`.
    fn rollup_minute(&mut self, now_s: i64) -> Result<bool, StoreError> {
        let (level, step) = ("1m", 60);
        let ready = floor_to(now_s - ROLLUP_GRACE_S, step);
        let done = match self.done_through(level)? {
            Some(d) => d,
            None => {
                let min: Option<i64> =
                    self.conn
                        .query_row("SELECT MIN(ts) FROM samples_raw", [], |r| r.get(0))?;
                match min {
                    Some(m) => floor_to(m, step),
                    None => return Ok(false),
                }
            }
        };
        if done >= ready {
            return Ok(false);
        }
        // Skip empty stretches in one step (the raw table is keyed by time).
        let next: Option<i64> = self.conn.query_row(
            "SELECT MIN(ts) FROM samples_raw WHERE ts >= ?1",
            [done],
            |r| r.get(0),
        )?;
        let start = match next {
            Some(n) if n < ready => floor_to(n, step).max(done),
            _ => ready,
        };
        // One minute per step: a bounded transaction however large the fleet.
        let end = (start + step).min(ready);
        let table = "samples_1m";
        let tx = self.conn.transaction()?;
        if start < end {
            tx.execute(
                &format!(
                    "INSERT INTO {table} (target_id, ts, stack_id, count)
                     SELECT target_id, (ts / {step}) * {step}, stack_id, CAST(MIN(TOTAL(count), 4.611686018427388e18) AS INTEGER)
                     FROM samples_raw WHERE ts >= ?1 AND ts < ?2
                     GROUP BY 1, 2, 3
                     ON CONFLICT (target_id, ts, stack_id) DO UPDATE SET count = MIN(count + excluded.count, 4611686018427387904)"
                ),
                params![start, end],
            )?;
        }
        tx.execute(UPSERT_ROLLUP_STATE, params![level, end])?;
        tx.commit()?;
        Ok(end < ready)
    }

    /// The target id up to which the hour at `done_through("1h")` is already rolled up
    /// (0: none of it).
    fn hour_cursor(&self) -> Result<i64, StoreError> {
        Ok(self.done_through("1h-cursor")?.unwrap_or(0))
    }

    /// Rolls one hour of up to [`HOUR_ROLLUP_TARGETS`] targets from `samples_1m` into
    /// `samples_1h`; the hour counts as done once every target is.
    fn rollup_hour(&mut self, now_s: i64) -> Result<bool, StoreError> {
        let m_done = self.done_through("1m")?.unwrap_or(i64::MIN);
        let ready = floor_to((now_s - ROLLUP_GRACE_S).min(m_done), 3600);
        let done = match self.done_through("1h")? {
            Some(d) => d,
            None => {
                let min: Option<i64> =
                    self.conn
                        .query_row("SELECT MIN(ts) FROM samples_raw", [], |r| r.get(0))?;
                match min {
                    Some(m) => floor_to(m, 3600),
                    None => return Ok(false),
                }
            }
        };
        if done >= ready {
            return Ok(false);
        }
        let cursor = self.hour_cursor()?;
        let hour = if cursor > 0 {
            done
        } else {
            // Skip empty hours in one step.
            let next: Option<i64> = self.conn.query_row(
                "SELECT MIN(ts) FROM samples_raw WHERE ts >= ?1",
                [done],
                |r| r.get(0),
            )?;
            match next {
                Some(n) if n < ready => floor_to(n, 3600).max(done),
                _ => {
                    self.set_state("1h", ready)?;
                    return Ok(false);
                }
            }
        };
        let tx = self.conn.transaction()?;
        let ids: Vec<i64> = {
            let mut stmt =
                tx.prepare_cached("SELECT id FROM targets WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = stmt.query_map(params![cursor, HOUR_ROLLUP_TARGETS], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO samples_1h (target_id, ts, stack_id, count)
                 SELECT target_id, ?2, stack_id, CAST(MIN(TOTAL(count), 4.611686018427388e18) AS INTEGER) FROM samples_1m
                 WHERE target_id = ?1 AND ts >= ?2 AND ts < ?2 + 3600
                 GROUP BY stack_id
                 ON CONFLICT (target_id, ts, stack_id) DO UPDATE SET count = MIN(count + excluded.count, 4611686018427387904)",
            )?;
            for id in &ids {
                stmt.execute(params![id, hour])?;
            }
        }
        let upsert = UPSERT_ROLLUP_STATE;
        if (ids.len() as i64) < HOUR_ROLLUP_TARGETS {
            tx.execute(upsert, params!["1h", hour + 3600])?;
            tx.execute(upsert, params!["1h-cursor", 0])?;
        } else {
            tx.execute(upsert, params!["1h", hour])?;
            tx.execute(upsert, params!["1h-cursor", ids[ids.len() - 1]])?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn set_state(&self, level: &str, value: i64) -> Result<(), StoreError> {
        self.conn
            .execute(UPSERT_ROLLUP_STATE, params![level, value])?;
        Ok(())
    }
}

/// A count column or sum: an integer, or a float from `TOTAL` (saturating to u64).
fn read_count(v: rusqlite::types::ValueRef<'_>) -> u64 {
    match v {
        rusqlite::types::ValueRef::Integer(i) => i.max(0) as u64,
        // `as` saturates a float: NaN and negatives are 0, huge values u64::MAX.
        rusqlite::types::ValueRef::Real(f) => f as u64,
        _ => 0,
    }
}

/// Target ids as an SQL list (integers from our own table, so inlining is safe).
fn id_list(targets: &[i64]) -> String {
    targets
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_labels(json: &str) -> Result<Labels, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("target labels: {e}")))
}

impl ProfileStore for SqliteStore {
    fn ingest(&mut self, windows: &[IngestWindow]) -> Result<IngestStats, StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = self.ingest_in_transaction(windows).and_then(|stats| {
            self.conn.execute_batch("COMMIT")?;
            Ok(stats)
        });
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
            // Ids cached during the rolled-back transaction may not exist.
            self.stack_ids.clear();
            self.target_ids.clear();
        }
        result
    }

    fn checkpoints(&self, target: &Labels) -> Result<Vec<Checkpoint>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.instance, s.last_seq, s.updated_at FROM series s JOIN targets t ON t.id = s.target_id
             WHERE t.key = ?1 ORDER BY s.updated_at DESC, s.last_seq DESC",
        )?;
        let rows = stmt.query_map([labels_key(target)], |r| {
            Ok(Checkpoint {
                instance: r.get(0)?,
                last_seq: r.get::<_, i64>(1)? as u64,
                updated_unix_s: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn targets(&self) -> Result<Vec<Labels>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT labels FROM targets ORDER BY key")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(parse_labels(&row?)?);
        }
        Ok(out)
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
        result
    }
}

/// Checks a bucketed range: non-empty, positive step, at most `max` buckets; returns
/// `from_s` floored to the step.
fn check_buckets(from_s: i64, to_s: i64, step_s: i64, max: i64) -> Result<i64, StoreError> {
    if to_s <= from_s || step_s <= 0 {
        return Err(StoreError::Invalid(
            "empty range or non-positive step".into(),
        ));
    }
    let from = floor_to(from_s, step_s);
    let buckets = (to_s - from + step_s - 1) / step_s;
    if buckets > max {
        return Err(StoreError::Invalid(format!(
            "{buckets} buckets: use a larger step"
        )));
    }
    Ok(from)
}

impl SqliteStore {
    fn target_series_inner(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<TargetSeries>, StoreError> {
        let from_s = check_buckets(from_s, to_s, step_s, 100_000)?;
        let targets = self.selected_target_rows(selector)?;
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = targets.iter().map(|(id, _, _)| *id).collect();
        let mut acc: HashMap<(i64, i64), u64> = HashMap::new();
        let mut add = |target: i64, ts: i64, c: u64| {
            let e = acc.entry((target, floor_to(ts, step_s))).or_insert(0);
            *e = e.saturating_add(c);
        };
        for (table, a, b) in self.plan(from_s, to_s, step_s)? {
            self.scan(
                (table, a, b),
                &ids,
                "SELECT ts, TOTAL(count), target_id FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}) GROUP BY target_id, ts",
                "SELECT ts, TOTAL(count) FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY ts",
                |target, r| {
                    let target = match target {
                        Some(t) => t,
                        None => r.get(2)?,
                    };
                    add(target, r.get(0)?, read_count(r.get_ref(1)?));
                    Ok(())
                },
            )?;
        }
        let mut per_target: HashMap<i64, std::collections::BTreeMap<i64, u64>> = HashMap::new();
        for ((target, bucket), c) in acc {
            per_target.entry(target).or_default().insert(bucket, c);
        }
        Ok(targets
            .into_iter()
            .map(|(id, labels, period_ns)| TargetSeries {
                labels,
                period_ns,
                points: per_target
                    .remove(&id)
                    .map(|m| m.into_iter().collect())
                    .unwrap_or_default(),
            })
            .collect())
    }

    fn bucketed_stacks_inner(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<BucketedStacks, StoreError> {
        let from_s = check_buckets(from_s, to_s, step_s, 10_000)?;
        let targets = self.selected_targets(selector)?;
        let mut acc: HashMap<(i64, i64), u64> = HashMap::new();
        for (table, a, b) in self.plan(from_s, to_s, step_s)? {
            self.scan(
                (table, a, b),
                &targets,
                "SELECT ts, stack_id, TOTAL(count) FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}) GROUP BY ts, stack_id",
                "SELECT ts, stack_id, count FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3",
                |_, r| {
                    let bucket = floor_to(r.get(0)?, step_s);
                    let e = acc.entry((bucket, r.get(1)?)).or_insert(0);
                    *e = e.saturating_add(read_count(r.get_ref(2)?));
                    Ok(())
                },
            )?;
        }
        // Bound the distinct stacks: the smallest in total fold into [other].
        let mut totals: HashMap<i64, u64> = HashMap::new();
        for ((_, stack), c) in &acc {
            let e = totals.entry(*stack).or_insert(0);
            *e = e.saturating_add(*c);
        }
        bound_answer(&mut totals, self.reader.max_answer_stacks);
        let ids: HashMap<i64, u64> = totals.keys().map(|id| (*id, *id as u64)).collect();
        let mut index: HashMap<i64, u32> = HashMap::with_capacity(ids.len() + 1);
        let mut stacks = Vec::with_capacity(ids.len() + 1);
        for (text, id) in self.stack_texts(ids)? {
            index.insert(id as i64, stacks.len() as u32);
            stacks.push(text);
        }
        let other = stacks.len() as u32;
        let mut folded: HashMap<(i64, u32), u64> = HashMap::new();
        for ((bucket, stack), c) in acc {
            let i = index.get(&stack).copied().unwrap_or(other);
            let e = folded.entry((bucket, i)).or_insert(0);
            *e = e.saturating_add(c);
        }
        if folded.keys().any(|(_, i)| *i == other) {
            stacks.push(Arc::from(OTHER_FRAME));
        }
        let mut counts: Vec<(i64, u32, u64)> =
            folded.into_iter().map(|((b, i), c)| (b, i, c)).collect();
        counts.sort_unstable();
        Ok(BucketedStacks {
            step_s,
            stacks,
            counts,
        })
    }

    fn profile_inner(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Profile, StoreError> {
        if to_s <= from_s {
            return Err(StoreError::Invalid(format!(
                "empty time range [{from_s}, {to_s})"
            )));
        }
        let targets = self.selected_targets(selector)?;
        let mut acc: HashMap<i64, u64> = HashMap::new();
        if !targets.is_empty() {
            for (table, a, b) in self.plan(from_s, to_s, 3600)? {
                self.sum_into((table, a, b), &targets, SUM_BY_STACK, &mut acc)?;
            }
        }
        let mut profile = Profile {
            start_unix_ns: (from_s.max(0) as u64) * 1_000_000_000,
            duration_ns: ((to_s - from_s) as u64) * 1_000_000_000,
            ..Default::default()
        };
        let other = bound_answer(&mut acc, self.reader.max_answer_stacks);
        profile.stacks.reserve(acc.len() + 1);
        for (text, count) in self.stack_texts(acc)? {
            profile.add(&text, count);
        }
        profile.add(OTHER_FRAME, other);
        Ok(profile)
    }

    fn timeseries_inner(
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
        // Buckets sit on multiples of the step, so rollup buckets never straddle two.
        let from_s = floor_to(from_s, step_s);
        let buckets = ((to_s - from_s + step_s - 1) / step_s) as usize;
        if buckets > 100_000 {
            return Err(StoreError::Invalid(format!(
                "{buckets} buckets: use a larger step"
            )));
        }
        let targets = self.selected_targets(selector)?;
        let mut acc: HashMap<i64, u64> = HashMap::new();
        if !targets.is_empty() {
            for (table, a, b) in self.plan(from_s, to_s, step_s)? {
                self.sum_into((table, a, b), &targets, SUM_BY_TIME, &mut acc)?;
            }
        }
        let mut out: Vec<(i64, u64)> = (0..buckets)
            .map(|i| (from_s + i as i64 * step_s, 0))
            .collect();
        for (ts, c) in acc {
            let i = ((ts - from_s) / step_s) as usize;
            if let Some(b) = out.get_mut(i) {
                b.1 += c;
            }
        }
        Ok(out)
    }

    /// The body of [`ProfileStore::apply_retention`]. A resolution is cut only as far
    /// as the next coarser one has rolled it up (a stalled rollup keeps raw data rather
    /// than lose it); then series, stacks and targets no remaining row can name go.
    fn retention_inner(&mut self, now_s: i64) -> Result<RetentionStats, StoreError> {
        let cut = |d: Duration| now_s.saturating_sub(d.as_secs() as i64);
        let m_done = self.done_through("1m")?.unwrap_or(i64::MIN);
        let h_done = self.done_through("1h")?.unwrap_or(i64::MIN);
        let raw_cut = cut(self.opts.raw_retention).min(m_done);
        let minute_cut = cut(self.opts.minute_retention).min(h_done);
        let hour_cut = cut(self.opts.retention);
        let mut stats = RetentionStats::default();
        stats.sample_rows +=
            self.conn
                .execute("DELETE FROM samples_raw WHERE ts < ?1", [raw_cut])? as u64;
        let ids: Vec<i64> = {
            let mut stmt = self.conn.prepare("SELECT id FROM targets")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for (table, keep) in [("samples_1m", minute_cut), ("samples_1h", hour_cut)] {
            let sql = format!("DELETE FROM {table} WHERE target_id = ?1 AND ts < ?2");
            for id in &ids {
                stats.sample_rows += self.conn.execute(&sql, params![id, keep])? as u64;
            }
        }
        // Every remaining row starts at or after `kept_from`; a stack or target last
        // seen (to within the granularity) before it is named by none of them.
        let kept_from = raw_cut.min(minute_cut).min(hour_cut);
        let gone = kept_from.saturating_sub(LAST_SEEN_GRANULARITY_S);
        stats.series += self.conn.execute(
            "DELETE FROM series WHERE updated_at < ?1",
            [cut(self.opts.retention)],
        )? as u64;
        loop {
            let n = self.conn.execute(
                "DELETE FROM stacks WHERE id IN (SELECT id FROM stacks WHERE last_seen < ?1 LIMIT ?2)",
                params![gone, GC_CHUNK],
            )?;
            stats.stacks += n as u64;
            if (n as i64) < GC_CHUNK {
                break;
            }
        }
        stats.targets += self.conn.execute(
            "DELETE FROM targets WHERE last_seen < ?1
             AND NOT EXISTS (SELECT 1 FROM series s WHERE s.target_id = targets.id)",
            [gone],
        )? as u64;
        Ok(stats)
    }
}

/// Keeps the `max - 1` largest counts of an answer and returns the sum of the rest
/// (for [`OTHER_FRAME`]), so an answer's memory is bounded and its total exact.
fn bound_answer(acc: &mut HashMap<i64, u64>, max: usize) -> u64 {
    let keep = max.max(2) - 1;
    if acc.len() <= keep + 1 {
        return 0;
    }
    let mut counts: Vec<u64> = acc.values().copied().collect();
    let idx = counts.len() - keep;
    let threshold = *counts.select_nth_unstable(idx).1;
    let mut kept_at_threshold = acc.values().filter(|c| **c > threshold).count();
    let mut other = 0u64;
    acc.retain(|_, c| {
        if *c > threshold || (*c == threshold && kept_at_threshold < keep) {
            if *c == threshold {
                kept_at_threshold += 1;
            }
            return true;
        }
        other = other.saturating_add(*c);
        false
    });
    other
}
