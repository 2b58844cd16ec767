//! The SQLite schema: every table, why its key is what it is, and the migrations.
//!
//! - `targets`: one row per distinct label set (`key` is the canonical `k=v,...` text).
//! - `stacks`: every distinct folded stack once, found by its xxh3 hash (a hash collision
//!   is handled: lookups compare the text).
//! - `samples_raw`: one row per (window start, target, stack). Keyed by time first: the
//!   rollup job and retention read it by time range, and queries touch it only for the
//!   few minutes not yet rolled up.
//! - `samples_1m`, `samples_1h`: the rollups, keyed by target first: long-range queries
//!   read a handful of targets over many buckets.
//! - `series`: per target and worker instance, the last window sequence stored. It is
//!   written in the same transaction as the rows, so a crash never loses or doubles a
//!   window.
//! - `rollup_state`: per rollup level, the time before which every raw row is rolled up.
//! - `last_seen` on `stacks` and `targets` (version 2): the newest window start that
//!   used the row, kept to within an hour. Retention deletes a stack or target once
//!   every sample row that could name it is gone, so a fleet whose stacks change
//!   (deploys, new threads) does not grow the file forever.
//!
//! All sample tables are `WITHOUT ROWID`: the key is the row, which keeps a stored
//! (target, window, stack) row near 20 bytes.

use rusqlite::{Connection, OptionalExtension};

use crate::StoreError;

/// Current schema version (stored in `PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// Connection settings applied to every connection.
pub const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;
PRAGMA cache_size = -65536;
PRAGMA temp_store = MEMORY;
";

/// Every table a stackwatch store has (a file with other tables is not ours).
pub const TABLES: &[&str] = &[
    "targets",
    "stacks",
    "series",
    "samples_raw",
    "samples_1m",
    "samples_1h",
    "rollup_state",
];

/// Schema version 1.
pub const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS targets (
    id     INTEGER PRIMARY KEY,
    key    TEXT NOT NULL UNIQUE,
    labels TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stacks (
    id    INTEGER PRIMARY KEY,
    hash  INTEGER NOT NULL,
    stack TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stacks_by_hash ON stacks (hash);
CREATE TABLE IF NOT EXISTS series (
    target_id  INTEGER NOT NULL,
    instance   TEXT NOT NULL,
    last_seq   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (target_id, instance)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples_raw (
    ts        INTEGER NOT NULL,
    target_id INTEGER NOT NULL,
    stack_id  INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (ts, target_id, stack_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples_1m (
    target_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    stack_id  INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (target_id, ts, stack_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples_1h (
    target_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    stack_id  INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (target_id, ts, stack_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_state (
    level        TEXT PRIMARY KEY,
    done_through INTEGER NOT NULL
);
";

/// Version 1 to 2: `last_seen` on stacks and targets, so retention can reclaim them, and
/// each target's sampling period (`period_ns`), so counts convert to CPU time.
/// Rows that exist already count as seen a day from now (no stored window starts later:
/// ingest refuses windows more than a day ahead), so none is reclaimed before the data
/// that names it.
pub const MIGRATE_V1_TO_V2: &str = "
ALTER TABLE stacks ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE targets ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE targets ADD COLUMN period_ns INTEGER NOT NULL DEFAULT 0;
UPDATE stacks SET last_seen = CAST(strftime('%s', 'now') AS INTEGER) + 86400;
UPDATE targets SET last_seen = CAST(strftime('%s', 'now') AS INTEGER) + 86400;
CREATE INDEX IF NOT EXISTS stacks_by_last_seen ON stacks (last_seen);
";

/// Brings the schema of a store opened for writing to [`SCHEMA_VERSION`]: refuses a newer
/// one, creates it in a new database (refusing one with tables that are not
/// stackwatch's), migrates an older one. The two functions make the errors that name
/// the file.
pub(super) fn create_or_migrate(
    conn: &Connection,
    not_a_store: impl Fn(String) -> StoreError,
    not_writable: impl Fn(rusqlite::Error) -> StoreError,
) -> Result<(), StoreError> {
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
        conn.execute_batch(SCHEMA_V1).map_err(&not_writable)?;
    }
    if version < 2 {
        conn.execute_batch(&format!(
            "BEGIN; {MIGRATE_V1_TO_V2} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(&not_writable)?;
    }
    Ok(())
}
