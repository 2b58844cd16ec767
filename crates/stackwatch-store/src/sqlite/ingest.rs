//! Ingest: one `BEGIN IMMEDIATE` transaction per batch of windows, which interns each
//! target, stack and sample label set (cached ids, `last_seen` kept to within the
//! hour), writes the raw rows (one per stack and label set), adds late windows to the
//! rollups directly and advances the checkpoints.

use std::collections::HashMap;

use rusqlite::params;
use stackwatch_profile::labels::format_labels;
use stackwatch_profile::SampleLabels;

use super::{floor_to, labels_key, SqliteStore, LAST_SEEN_GRANULARITY_S};
use crate::{IngestStats, IngestWindow, Labels, ProfileWriter, StoreError};

/// Stack ids remembered by hash before the cache is cleared.
const STACK_CACHE_LIMIT: usize = 500_000;
/// Label set ids remembered by text before the cache is cleared.
const LABEL_CACHE_LIMIT: usize = 100_000;
/// Target ids remembered by key before the cache is cleared (push sources come and go:
/// without a bound the cache would grow with every service ever pushed).
const TARGET_CACHE_LIMIT: usize = 100_000;
/// Largest count stored per row (the scrape budget `max_samples_per_window` is at most
/// this): sums of rows saturate at 2^62 in SQL and are read as floats (`TOTAL`), so no
/// count from outside can make a query or a rollup fail with an integer overflow.
const MAX_STORED_COUNT: u64 = 1 << 40;

fn stack_hash(stack: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(stack.as_bytes()) as i64
}

impl SqliteStore {
    /// The body of [`ProfileWriter::ingest`](crate::ProfileWriter::ingest): the batch in one
    /// transaction, rolled back (and the id caches dropped) if any of it fails.
    pub(super) fn ingest_inner(
        &mut self,
        windows: &[IngestWindow],
    ) -> Result<IngestStats, StoreError> {
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
            self.label_ids.clear();
            self.id_key_bytes = 0;
        }
        result
    }

    /// Empties the label-set and target caches (their key bytes are counted together).
    fn clear_text_keyed_caches(&mut self) {
        self.label_ids.clear();
        self.target_ids.clear();
        self.id_key_bytes = 0;
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
        if self.target_ids.len() >= TARGET_CACHE_LIMIT {
            self.clear_text_keyed_caches();
        }
        let key_bytes = key.len();
        if self
            .target_ids
            .insert(key, (id, seen, period.max(0) as u64))
            .is_none()
        {
            self.id_key_bytes += key_bytes;
        }
        Ok(id)
    }

    /// The id of label set `labels` (0 for the empty set; inserted if new), its
    /// `last_seen` raised to `ts` (to within [`LAST_SEEN_GRANULARITY_S`]).
    fn label_set_id(&mut self, labels: &SampleLabels, ts: i64) -> Result<i64, StoreError> {
        if labels.is_empty() {
            return Ok(0);
        }
        let text = format_labels(labels);
        if let Some((id, seen)) = self.label_ids.get(&text).copied() {
            if ts <= seen + LAST_SEEN_GRANULARITY_S {
                return Ok(id);
            }
        }
        self.conn
            .prepare_cached(
                "INSERT INTO label_sets (labels, last_seen) VALUES (?1, ?2)
                 ON CONFLICT (labels) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)",
            )?
            .execute(params![text, ts])?;
        let (id, seen): (i64, i64) = self
            .conn
            .prepare_cached("SELECT id, last_seen FROM label_sets WHERE labels = ?1")?
            .query_row([&text], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if self.label_ids.len() >= LABEL_CACHE_LIMIT {
            self.clear_text_keyed_caches();
        }
        let key_bytes = text.len();
        if self.label_ids.insert(text, (id, seen)).is_none() {
            self.id_key_bytes += key_bytes;
        }
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

    /// The body of [`SqliteStore::ingest_inner`], inside `BEGIN IMMEDIATE`.
    fn ingest_in_transaction(
        &mut self,
        windows: &[IngestWindow],
    ) -> Result<IngestStats, StoreError> {
        let m_done = self.done_through("1m")?.unwrap_or(i64::MIN);
        let h_done = self.done_through("1h")?.unwrap_or(i64::MIN);
        let h_cursor = self.hour_cursor()?;
        let mut stats = IngestStats::default();
        let mut checkpoints: HashMap<(i64, &str), u64> = HashMap::new();
        let now = stackwatch_profile::clock::unix_s();
        for w in windows {
            self.check_window(w, now)?;
            let target = self.target_id(&w.target, w.start_unix_s, w.period_ns)?;
            let late_m = w.start_unix_s < m_done;
            // Also late: the hour being rolled up, for targets it already covered.
            let late_h = w.start_unix_s < h_done
                || (h_cursor > 0 && floor_to(w.start_unix_s, 3600) == h_done && target <= h_cursor);
            // The unlabeled samples (label set 0), then each label set's.
            let mut groups: Vec<(i64, &[(String, u64)])> = vec![(0, w.stacks.as_slice())];
            for (labels, stacks) in &w.labeled {
                groups.push((
                    self.label_set_id(labels, w.start_unix_s)?,
                    stacks.as_slice(),
                ));
            }
            for (label_set, stacks) in groups {
                for (stack, count) in stacks {
                    if *count == 0 {
                        continue;
                    }
                    let (stack_id, new) = self.stack_id(stack, w.start_unix_s)?;
                    stats.new_stacks += usize::from(new);
                    let count = (*count).min(MAX_STORED_COUNT) as i64;
                    self.conn
                        .prepare_cached(
                            "INSERT INTO samples_raw (ts, target_id, stack_id, label_set, count) VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (ts, target_id, stack_id, label_set) DO UPDATE SET count = MIN(count + excluded.count, 4611686018427387904)",
                        )?
                        .execute(params![w.start_unix_s, target, stack_id, label_set, count])?;
                    // A window older than what is rolled up is added to the rollups directly.
                    for (late, table, step) in
                        [(late_m, "samples_1m", 60), (late_h, "samples_1h", 3600)]
                    {
                        if late {
                            self.conn
                                .prepare_cached(&format!(
                                    "INSERT INTO {table} (target_id, ts, stack_id, label_set, count) VALUES (?1, ?2, ?3, ?4, ?5)
                                     ON CONFLICT (target_id, ts, stack_id, label_set) DO UPDATE SET count = MIN(count + excluded.count, 4611686018427387904)"
                                ))?
                                .execute(params![
                                    target,
                                    floor_to(w.start_unix_s, step),
                                    stack_id,
                                    label_set,
                                    count
                                ])?;
                        }
                    }
                    stats.rows += 1;
                }
            }
            if w.seq > 0 {
                let e = checkpoints
                    .entry((target, w.instance.as_str()))
                    .or_insert(0);
                *e = (*e).max(w.seq);
            }
            stats.windows += 1;
        }
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
}
