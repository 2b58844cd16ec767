//! Rollups, computed by ClickHouse.
//!
//! A rollup step computes whole minutes (or hours) of every target with one
//! `INSERT INTO samples_1m SELECT ... sum(count) ... FROM samples_raw FINAL GROUP BY`
//! (the sample label set is one of the keys grouped by: rollups keep it). Its
//! progress has two marks per level: `started` is raised before the computation reads,
//! `done` after it is stored. Queries read a rollup only below `done`; ingest re-rolls
//! the buckets of windows below `started` after storing them (see `ingest`). Either the
//! step read a late window or the window's ingest sees the step as started, so no
//! rollup misses a window, and a step interrupted between the marks is simply done
//! again. Rows carry the computation's time as their version: the latest replaces.

use super::client::{num, rows};
use super::query::{final_branches, Chosen};
use super::{floor_to, ClickHouseStore};
use crate::StoreError;

/// Raw windows are rolled up only once they are this old: half the window protocol's
/// default retention (60 windows of 10 s), so a collector catching up after a short
/// absence stores most windows before their minute is rolled up, instead of re-rolling
/// it (SQLite: 120 s, where a late window costs an upsert).
const ROLLUP_GRACE_S: i64 = 300;
/// Minutes computed per rollup step: one bounded statement however large the fleet
/// (10 000 targets at 10 s windows: about 2 s on two cores).
const MINUTES_PER_STEP: i64 = 1;

impl ClickHouseStore {
    /// Writes the rollup of `[from, to)` at resolution `step` (60: from raw, 3600: from
    /// minutes), for `targets` (id, service) or all, reading in parallel branches.
    pub(super) fn roll(
        &self,
        step: i64,
        from: i64,
        to: i64,
        targets: Option<&[(u64, String)]>,
    ) -> Result<(), StoreError> {
        let (dest, src, bucket) = if step == 60 {
            ("samples_1m", "samples_raw", "toStartOfMinute(ts)")
        } else {
            ("samples_1h", "samples_1m", "toStartOfHour(ts)")
        };
        let chosen = match targets {
            Some(t) => Chosen::new(false, t.iter().cloned()),
            None => Chosen::new(
                true,
                self.target_rows()?
                    .into_iter()
                    .map(|(id, l, _)| (id, l.get("service").cloned().unwrap_or_default())),
            ),
        };
        let version = stackwatch_profile::clock::unix_ms();
        let reads = final_branches(
            &self.t(src),
            "ts, service, target, stack, labels, count",
            from,
            to,
            &chosen.branches(),
        );
        self.client.query(
            &format!(
                "INSERT INTO {dest_t} (ts, service, target, stack, labels, count, version) \
                 SELECT {bucket} AS b, service, target, stack, labels, sum(count), toUInt64({version}) \
                 FROM ({reads}) GROUP BY b, service, target, stack, labels",
                dest_t = self.t(dest),
            ),
            None,
        )?;
        Ok(())
    }

    pub(super) fn set_level(&self, level: &str, value: i64) -> Result<(), StoreError> {
        self.client.insert(
            &format!("{} (level, value)", self.t("rollup_state")),
            "TabSeparated",
            format!("{level}\t{value}\n").into_bytes(),
        )
    }

    fn earliest_from(&self, table: &str, at_or_after: i64) -> Result<Option<i64>, StoreError> {
        let text = self.client.query(
            &format!(
                "SELECT toUInt32(min(ts)), count() FROM {} WHERE ts >= {}",
                self.t(table),
                at_or_after.clamp(0, u32::MAX as i64)
            ),
            None,
        )?;
        let r = rows(&text).0;
        let Some(r) = r.first() else { return Ok(None) };
        let n: u64 = num(r.get(1), "count")?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(num(r.first(), "min ts")?))
    }

    /// One bounded step of the minute rollup; true when more is due now.
    pub(super) fn rollup_minutes(&mut self, now_s: i64) -> Result<bool, StoreError> {
        let l = self.levels()?;
        let ready = floor_to(now_s - ROLLUP_GRACE_S, 60);
        let done = if l.minute_done == i64::MIN {
            0
        } else {
            l.minute_done
        };
        if done >= ready {
            return Ok(false);
        }
        // Skip empty stretches in one step.
        let start = match self.earliest_from("samples_raw", done)? {
            Some(t) if t < ready => floor_to(t, 60).max(done),
            _ => {
                self.set_level("1m-started", ready)?;
                self.set_level("1m", ready)?;
                return Ok(false);
            }
        };
        let end = (start + 60 * MINUTES_PER_STEP).min(ready);
        self.set_level("1m-started", end)?;
        self.roll(60, start, end, None)?;
        self.set_level("1m", end)?;
        Ok(end < ready)
    }

    /// One bounded step of the hour rollup (one hour of every target).
    pub(super) fn rollup_hours(&mut self, now_s: i64) -> Result<bool, StoreError> {
        let l = self.levels()?;
        if l.minute_done == i64::MIN {
            return Ok(false);
        }
        let ready = floor_to((now_s - ROLLUP_GRACE_S).min(l.minute_done), 3600);
        let done = if l.hour_done == i64::MIN {
            0
        } else {
            l.hour_done
        };
        if done >= ready {
            return Ok(false);
        }
        let start = match self.earliest_from("samples_1m", done)? {
            Some(t) if t < ready => floor_to(t, 3600).max(done),
            _ => {
                self.set_level("1h-started", ready)?;
                self.set_level("1h", ready)?;
                return Ok(false);
            }
        };
        let end = start + 3600;
        self.set_level("1h-started", end)?;
        self.roll(3600, start, end, None)?;
        self.set_level("1h", end)?;
        Ok(end < ready)
    }
}
