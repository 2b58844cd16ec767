//! Retention: whole day partitions are dropped, nothing is deleted row by row. Raw
//! days go once minute rollups cover them and they are past `raw_retention`, minute
//! days likewise against hours, hour days past `retention`; stack texts, label set
//! texts and targets by the day they were last written, checkpoints by the day of their last update.

use std::time::Duration;

use super::client::{num, rows};
use super::ClickHouseStore;
use crate::{RetentionStats, StoreError};

impl ClickHouseStore {
    /// Drops every day partition past its retention, on every node.
    pub(super) fn drop_expired(&mut self, now_s: i64) -> Result<RetentionStats, StoreError> {
        let l = self.levels()?;
        let cut = |d: Duration| now_s.saturating_sub(d.as_secs() as i64);
        let r = &self.opts.retention;
        // A resolution goes only as far as the next coarser one covers it.
        let raw_cut = cut(r.raw_retention).min(if l.minute_done == i64::MIN {
            0
        } else {
            l.minute_done
        });
        let minute_cut = cut(r.minute_retention).min(if l.hour_done == i64::MIN {
            0
        } else {
            l.hour_done
        });
        let hour_cut = cut(r.retention);
        // Stack texts, label sets and targets are written at least once a day while used, and a
        // window may start up to a day ahead: keep two days of slack.
        let kept_from = raw_cut.min(minute_cut).min(hour_cut) - 2 * 86_400;
        let series_cut = hour_cut;
        let mut stats = RetentionStats::default();
        for node in &self.nodes {
            let text = node.query(
                &format!(
                    "SELECT table, partition, sum(rows) FROM system.parts WHERE database = {} AND active GROUP BY table, partition",
                    super::client::quote(&self.db)
                ),
                None,
            )?;
            for r in rows(&text).0 {
                let (Some(table), Some(partition)) = (r.first(), r.get(1)) else {
                    continue;
                };
                let Ok(day) = partition.trim_matches('\'').parse::<i64>() else {
                    continue;
                };
                let n: u64 = num(r.get(2), "rows")?;
                let base = table.strip_suffix("_local").unwrap_or(table);
                let keep_from = match base {
                    "samples_raw" => raw_cut,
                    "samples_1m" => minute_cut,
                    "samples_1h" => hour_cut,
                    "stacks" | "label_sets" | "targets" => kept_from,
                    "series" => series_cut,
                    _ => continue,
                };
                // The partition holds one day: drop it once the whole day is past.
                let Some(day_end) = day_end_of(day) else {
                    continue;
                };
                if day_end > keep_from {
                    continue;
                }
                node.query(
                    &format!("ALTER TABLE {}.{table} DROP PARTITION {day}", self.db),
                    None,
                )?;
                match base {
                    "stacks" => stats.stacks += n,
                    "label_sets" => stats.label_sets += n,
                    "targets" => stats.targets += n,
                    "series" => stats.series += n,
                    _ => stats.sample_rows += n,
                }
            }
        }
        Ok(stats)
    }
}

/// The Unix second at which day `yyyymmdd` ends.
fn day_end_of(yyyymmdd: i64) -> Option<i64> {
    let (y, m, d) = (yyyymmdd / 10_000, (yyyymmdd / 100) % 100, yyyymmdd % 100);
    stackwatch_profile::clock::day_of_date(y, m, d).map(|days| (days + 1) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::day_end_of;

    #[test]
    fn partition_days_end_at_midnight_utc() {
        assert_eq!(day_end_of(19700101), Some(86_400));
        assert_eq!(day_end_of(20251125), Some(1_764_115_200));
        assert_eq!(day_end_of(20251399), None);
    }
}
