//! Retention: each resolution cut by age (never past what the next coarser one has
//! rolled up), then the checkpoints, stacks, label sets and targets that no remaining
//! row names.

use std::time::Duration;

use rusqlite::params;

use super::{SqliteStore, LAST_SEEN_GRANULARITY_S};
use crate::{RetentionStats, StoreError};

/// Rows deleted per statement by the retention sweep of stacks and targets.
const GC_CHUNK: i64 = 10_000;

impl SqliteStore {
    /// The body of [`ProfileWriter::apply_retention`](crate::ProfileWriter::apply_retention).
    /// A resolution is cut only as far as the next coarser one has rolled it up (a
    /// stalled rollup keeps raw data rather than lose it); then series, stacks, label
    /// sets and targets no remaining row can name go.
    pub(super) fn retention_inner(&mut self, now_s: i64) -> Result<RetentionStats, StoreError> {
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
        loop {
            let n = self.conn.execute(
                "DELETE FROM label_sets WHERE id IN (SELECT id FROM label_sets WHERE last_seen < ?1 LIMIT ?2)",
                params![gone, GC_CHUNK],
            )?;
            stats.label_sets += n as u64;
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
