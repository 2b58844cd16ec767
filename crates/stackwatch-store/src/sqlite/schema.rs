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
//! - `label_sets` (version 3): every distinct sample label set once (`labels` is its
//!   canonical text, `{op="insert",table="orders"}`, from
//!   [`format_labels`](stackwatch_profile::labels::format_labels)), with `last_seen` for
//!   retention as for stacks. The sample tables name it by `label_set` (0: the samples
//!   taken without labels), the last column of their keys: the same stack of one window
//!   under two label sets is two rows, and a query that does not select by sample label
//!   sums over them. Queries evaluate sample matchers over this table (it is small: the
//!   collector bounds the sets per window) and filter rows by `label_set IN (...)`.
//!
//! All sample tables are `WITHOUT ROWID`: the key is the row, which keeps a stored
//! (target, window, stack) row near 20 bytes.

use rusqlite::{Connection, OptionalExtension};

use crate::StoreError;

/// Current schema version (stored in `PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// Settings of the writing connection (its page cache is
/// [`StoreOptions::cache_kib`](crate::StoreOptions::cache_kib)).
pub const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;
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
    "label_sets",
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

/// Version 2 to 3: sample label sets. A `label_sets` table, and a `label_set` column
/// (0: no labels, what every existing row becomes) at the end of each sample table's key.
/// SQLite cannot change a `WITHOUT ROWID` table's key, so each sample table is copied
/// into a new one and renamed, in the migration's transaction (all or nothing; a
/// leftover copy from anything else is dropped first).
pub const MIGRATE_V2_TO_V3: &str = "
CREATE TABLE IF NOT EXISTS label_sets (
    id        INTEGER PRIMARY KEY,
    labels    TEXT NOT NULL UNIQUE,
    last_seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS label_sets_by_last_seen ON label_sets (last_seen);
DROP TABLE IF EXISTS samples_raw_v3;
CREATE TABLE samples_raw_v3 (
    ts        INTEGER NOT NULL,
    target_id INTEGER NOT NULL,
    stack_id  INTEGER NOT NULL,
    label_set INTEGER NOT NULL DEFAULT 0,
    count     INTEGER NOT NULL,
    PRIMARY KEY (ts, target_id, stack_id, label_set)
) WITHOUT ROWID;
INSERT INTO samples_raw_v3 (ts, target_id, stack_id, label_set, count)
    SELECT ts, target_id, stack_id, 0, count FROM samples_raw;
DROP TABLE samples_raw;
ALTER TABLE samples_raw_v3 RENAME TO samples_raw;
DROP TABLE IF EXISTS samples_1m_v3;
CREATE TABLE samples_1m_v3 (
    target_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    stack_id  INTEGER NOT NULL,
    label_set INTEGER NOT NULL DEFAULT 0,
    count     INTEGER NOT NULL,
    PRIMARY KEY (target_id, ts, stack_id, label_set)
) WITHOUT ROWID;
INSERT INTO samples_1m_v3 (target_id, ts, stack_id, label_set, count)
    SELECT target_id, ts, stack_id, 0, count FROM samples_1m;
DROP TABLE samples_1m;
ALTER TABLE samples_1m_v3 RENAME TO samples_1m;
DROP TABLE IF EXISTS samples_1h_v3;
CREATE TABLE samples_1h_v3 (
    target_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    stack_id  INTEGER NOT NULL,
    label_set INTEGER NOT NULL DEFAULT 0,
    count     INTEGER NOT NULL,
    PRIMARY KEY (target_id, ts, stack_id, label_set)
) WITHOUT ROWID;
INSERT INTO samples_1h_v3 (target_id, ts, stack_id, label_set, count)
    SELECT target_id, ts, stack_id, 0, count FROM samples_1h;
DROP TABLE samples_1h;
ALTER TABLE samples_1h_v3 RENAME TO samples_1h;
";

/// The migrations, in order: `(version reached, statements)`. Each runs in one
/// transaction with the version bump, so a crash leaves the previous version whole.
const MIGRATIONS: &[(i64, &str)] = &[(2, MIGRATE_V1_TO_V2), (3, MIGRATE_V2_TO_V3)];

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
    for (to, statements) in MIGRATIONS {
        if version < *to {
            let result = conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {statements} PRAGMA user_version = {to}; COMMIT;"
            ));
            if let Err(e) = result {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(not_writable(e));
            }
        }
    }
    Ok(())
}
