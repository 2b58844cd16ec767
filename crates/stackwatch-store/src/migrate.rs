//! `stackwatch migrate`: copies a SQLite store's history into ClickHouse.
//!
//! Every row written is a deterministic function of the SQLite row it comes from (ids
//! of targets, stacks and sample label sets become hashes, raw rows get a fixed instance and sequence, rollups a fixed version),
//! so running the copy twice, or after an interrupted run, writes the same keys again
//! and `FINAL` counts them once: the migration is idempotent. A rollup ClickHouse
//! computes later (a late window) has a newer version and replaces the copied one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::clickhouse::{instance_hash, label_set_hash, target_id, tsv_field, ClickHouseStore};
use crate::{Labels, StoreError};

/// Rows per `INSERT`.
const CHUNK_ROWS: usize = 200_000;
/// Version of copied rollup rows: older than any ClickHouse computes.
const MIGRATED_VERSION: u64 = 1;
/// Worker instance of copied raw rows (SQLite keeps none per row).
pub const MIGRATED_INSTANCE: &str = "migrated-from-sqlite";

/// What [`migrate_sqlite`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrateStats {
    /// Targets.
    pub targets: u64,
    /// Distinct stacks.
    pub stacks: u64,
    /// Distinct sample label sets.
    pub label_sets: u64,
    /// Sample rows (raw and rollups).
    pub sample_rows: u64,
    /// Checkpoints.
    pub checkpoints: u64,
}

/// Copies the SQLite store at `sqlite` into `dest`; `progress` hears each table's row
/// count as it is done. A store of schema version 2 (before sample labels) is read as
/// it is: its samples have no labels. A newer store than this build is refused.
pub fn migrate_sqlite(
    sqlite: &Path,
    dest: &ClickHouseStore,
    mut progress: impl FnMut(&str, u64),
) -> Result<MigrateStats, StoreError> {
    if !sqlite.is_file() {
        return Err(StoreError::NotAStore {
            path: sqlite.display().to_string(),
            why: "no such file".into(),
        });
    }
    let conn = Connection::open_with_flags(sqlite, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > crate::schema::SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: crate::schema::SCHEMA_VERSION,
        });
    }
    if version < 2 {
        return Err(StoreError::NotAStore {
            path: sqlite.display().to_string(),
            why: format!(
                "schema version {version}: open it once with this stackwatch's server to migrate it, then copy it"
            ),
        });
    }
    let labeled = version >= 3;
    let mut stats = MigrateStats::default();
    let today = stackwatch_profile::clock::unix_s().div_euclid(86_400);
    let today = stackwatch_profile::clock::date_of_day(today);

    // Targets: SQLite id -> (ClickHouse id, service).
    let mut targets: HashMap<i64, (u64, String)> = HashMap::new();
    {
        let mut body = String::new();
        let mut stmt = conn.prepare("SELECT id, labels, period_ns FROM targets")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let json: String = r.get(1)?;
            let period: i64 = r.get(2)?;
            let labels: Labels = serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("target labels: {e}")))?;
            let service = labels.get("service").cloned().unwrap_or_default();
            let ch = target_id(&labels);
            let _ = write!(body, "{ch}\t");
            tsv_field(&mut body, &service);
            body.push('\t');
            tsv_field(
                &mut body,
                &serde_json::to_string(&labels).unwrap_or_default(),
            );
            let _ = writeln!(body, "\t{}\t{today}\t{MIGRATED_VERSION}", period.max(0));
            targets.insert(id, (ch, service));
        }
        dest.insert_rows(
            "targets",
            "id, service, labels, period_ns, seen, updated",
            body,
        )?;
        stats.targets = targets.len() as u64;
        progress("targets", stats.targets);
    }

    // Stacks: SQLite id -> hash.
    let mut stacks: HashMap<i64, u64> = HashMap::new();
    {
        let mut body = String::new();
        let mut n = 0usize;
        let mut stmt = conn.prepare("SELECT id, stack FROM stacks")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let text: String = r.get(1)?;
            let hash = crate::clickhouse::stack_hash(&text);
            let _ = write!(body, "{hash}\t");
            tsv_field(&mut body, &text);
            let _ = writeln!(body, "\t{today}");
            stacks.insert(id, hash);
            n += 1;
            if n.is_multiple_of(CHUNK_ROWS) {
                dest.insert_rows("stacks", "hash, stack, seen", std::mem::take(&mut body))?;
            }
        }
        dest.insert_rows("stacks", "hash, stack, seen", body)?;
        stats.stacks = stacks.len() as u64;
        progress("stacks", stats.stacks);
    }

    // Sample label sets: SQLite id -> hash (0, no labels, stays 0).
    let mut label_sets: HashMap<i64, u64> = HashMap::from([(0, 0)]);
    if labeled {
        let mut body = String::new();
        let mut stmt = conn.prepare("SELECT id, labels FROM label_sets")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let text: String = r.get(1)?;
            let labels = stackwatch_profile::labels::parse_labels(&text).ok_or_else(|| {
                StoreError::Corrupt(format!("label set {id}: {text:?} does not parse"))
            })?;
            let hash = label_set_hash(&labels);
            if hash != 0 {
                let _ = write!(body, "{hash}\t");
                tsv_field(
                    &mut body,
                    &stackwatch_profile::labels::format_labels(&labels),
                );
                let _ = writeln!(body, "\t{today}");
            }
            label_sets.insert(id, hash);
        }
        dest.insert_rows("label_sets", "hash, labels, seen", body)?;
        stats.label_sets = label_sets.len() as u64 - 1;
        progress("label_sets", stats.label_sets);
    }

    let inst = instance_hash(MIGRATED_INSTANCE);
    for (table, raw) in [
        ("samples_raw", true),
        ("samples_1m", false),
        ("samples_1h", false),
    ] {
        let mut body = String::new();
        let mut n = 0u64;
        let label_col = if labeled { "label_set" } else { "0" };
        let mut stmt = conn.prepare(&format!(
            "SELECT ts, target_id, stack_id, count, {label_col} FROM {table}"
        ))?;
        let mut rows = stmt.query([])?;
        let cols = if raw {
            "ts, service, target, stack, labels, inst, seq, count"
        } else {
            "ts, service, target, stack, labels, count, version"
        };
        while let Some(r) = rows.next()? {
            let ts: i64 = r.get(0)?;
            let (Some((target, service)), Some(stack)) = (
                targets.get(&r.get::<_, i64>(1)?),
                stacks.get(&r.get::<_, i64>(2)?),
            ) else {
                return Err(StoreError::Corrupt(format!(
                    "{table} row names a target or stack that does not exist"
                )));
            };
            let count = r.get::<_, i64>(3)?.max(0);
            let Some(set) = label_sets.get(&r.get::<_, i64>(4)?) else {
                return Err(StoreError::Corrupt(format!(
                    "{table} row names a label set that does not exist"
                )));
            };
            let _ = write!(body, "{ts}\t");
            tsv_field(&mut body, service);
            if raw {
                let _ = writeln!(body, "\t{target}\t{stack}\t{set}\t{inst}\t0\t{count}");
            } else {
                let _ = writeln!(
                    body,
                    "\t{target}\t{stack}\t{set}\t{count}\t{MIGRATED_VERSION}"
                );
            }
            n += 1;
            if n.is_multiple_of(CHUNK_ROWS as u64) {
                dest.insert_rows(table, cols, std::mem::take(&mut body))?;
            }
        }
        dest.insert_rows(table, cols, body)?;
        stats.sample_rows += n;
        progress(table, n);
    }

    {
        let mut body = String::new();
        let mut stmt =
            conn.prepare("SELECT target_id, instance, last_seq, updated_at FROM series")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let Some((target, _)) = targets.get(&r.get::<_, i64>(0)?) else {
                continue;
            };
            let _ = write!(body, "{target}\t");
            tsv_field(&mut body, &r.get::<_, String>(1)?);
            let _ = writeln!(
                body,
                "\t{}\t{}",
                r.get::<_, i64>(2)?.max(0),
                r.get::<_, i64>(3)?.max(0)
            );
            stats.checkpoints += 1;
        }
        dest.insert_rows("series", "target, inst, last_seq, updated", body)?;
        progress("series", stats.checkpoints);
    }

    // Rollup progress: SQLite's, so copied rollups are read; then what ClickHouse had
    // rolled up beyond it is recomputed over the copied raw rows.
    let done = |level: &str| -> Result<Option<i64>, StoreError> {
        Ok(conn
            .query_row(
                "SELECT done_through FROM rollup_state WHERE level = ?1",
                [level],
                |r| r.get(0),
            )
            .optional()?)
    };
    // A store that never rolled up has rolled up everything before the hour of its
    // first raw row.
    let first_raw: Option<i64> = conn
        .query_row("SELECT MIN(ts) FROM samples_raw", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .map(|t| crate::buckets::floor_to(t, 3600));
    let sqlite_m = done("1m")?.or(first_raw);
    // Hours before `1h` are complete (a cursor only marks progress within that hour).
    let sqlite_h = done("1h")?.or(first_raw);
    let ids: Vec<(u64, String)> = targets.values().cloned().collect();
    dest.adopt_rollups(sqlite_m, sqlite_h, &ids)?;
    Ok(stats)
}
