//! Rollups: raw windows into `samples_1m` a minute per step, minutes into `samples_1h`
//! an hour of a bounded number of targets per step (each keeping the sample label set), and each level's progress in
//! `rollup_state` (read by ingest, queries and retention through `done_through`).

use rusqlite::{params, OptionalExtension};

use super::{floor_to, SqliteStore};
use crate::StoreError;

/// Raw windows are rolled up only once they are this old, so windows of the same minute
/// from slower targets have arrived. Later arrivals are added to the rollups at ingest.
const ROLLUP_GRACE_S: i64 = 120;
/// Targets whose hour is rolled up per [`ProfileWriter::rollup`](crate::ProfileWriter::rollup)
/// call (an hour of one target is 60 minute-buckets; 50 targets keep a step well under
/// a second).
const HOUR_ROLLUP_TARGETS: i64 = 50;
/// Sets a rollup level's progress (`done_through`, or the hour cursor).
const UPSERT_ROLLUP_STATE: &str = "INSERT INTO rollup_state (level, done_through) VALUES (?1, ?2)
     ON CONFLICT (level) DO UPDATE SET done_through = excluded.done_through";

impl SqliteStore {
    /// A rollup level's progress in `rollup_state` (`None`: not started).
    pub(super) fn done_through(&self, level: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT done_through FROM rollup_state WHERE level = ?1",
                [level],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Rolls one minute of raw windows (all targets) into `samples_1m`.
    pub(super) fn rollup_minute(&mut self, now_s: i64) -> Result<bool, StoreError> {
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
                    "INSERT INTO {table} (target_id, ts, stack_id, label_set, count)
                     SELECT target_id, (ts / {step}) * {step}, stack_id, label_set, CAST(MIN(TOTAL(count), 4.611686018427388e18) AS INTEGER)
                     FROM samples_raw WHERE ts >= ?1 AND ts < ?2
                     GROUP BY 1, 2, 3, 4
                     ON CONFLICT (target_id, ts, stack_id, label_set) DO UPDATE SET count = MIN(count + excluded.count, 4611686018427387904)"
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
    pub(super) fn hour_cursor(&self) -> Result<i64, StoreError> {
        Ok(self.done_through("1h-cursor")?.unwrap_or(0))
    }

    /// Rolls one hour of up to [`HOUR_ROLLUP_TARGETS`] targets from `samples_1m` into
    /// `samples_1h`; the hour counts as done once every target is.
    pub(super) fn rollup_hour(&mut self, now_s: i64) -> Result<bool, StoreError> {
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
                "INSERT INTO samples_1h (target_id, ts, stack_id, label_set, count)
                 SELECT target_id, ?2, stack_id, label_set, CAST(MIN(TOTAL(count), 4.611686018427388e18) AS INTEGER) FROM samples_1m
                 WHERE target_id = ?1 AND ts >= ?2 AND ts < ?2 + 3600
                 GROUP BY stack_id, label_set
                 ON CONFLICT (target_id, ts, stack_id, label_set) DO UPDATE SET count = MIN(count + excluded.count, 4611686018427387904)",
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
