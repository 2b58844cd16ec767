//! Ingest: stack texts, label set texts and targets first, then the samples (one row
//! per stack and label set), then the rollups of late windows, then the checkpoints,
//! each one `INSERT`. A failure at any point leaves the
//! checkpoint behind, so the windows are fetched and inserted again; the rows they
//! write are the same rows (same key, same values), which `FINAL` counts once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use super::client::tsv_field;
use super::{
    floor_to, instance_hash, label_set_hash, stack_hash, target_id, ClickHouseStore,
    STACK_CACHE_LIMIT,
};
use crate::{IngestStats, IngestWindow, ProfileWriter, StoreError};

/// Largest count stored per row (as in SQLite): sums of a few billion rows stay far
/// from u64 overflow.
const MAX_STORED_COUNT: u64 = 1 << 40;

impl ClickHouseStore {
    pub(super) fn ingest_windows(
        &mut self,
        windows: &[IngestWindow],
    ) -> Result<IngestStats, StoreError> {
        let now = stackwatch_profile::clock::unix_s();
        let today = now.div_euclid(86_400);
        let today_date = stackwatch_profile::clock::date_of_day(today);
        let mut stats = IngestStats::default();
        let mut stack_rows = String::new();
        let mut target_rows = String::new();
        let mut sample_rows = String::new();
        let mut label_rows = String::new();
        let mut new_stacks: Vec<u64> = Vec::new();
        let mut new_labels: Vec<u64> = Vec::new();
        let mut new_targets: Vec<(u64, u64)> = Vec::new();
        let mut checkpoints: BTreeMap<(u64, &str), u64> = BTreeMap::new();
        // (minute or hour start, target) buckets that late windows touch.
        let mut touched: Vec<(i64, (u64, String))> = Vec::new();
        let mut seen_stacks: HashMap<u64, ()> = HashMap::new();
        for w in windows {
            self.check_window(w, now)?;
            let target = target_id(&w.target);
            let service = w.target.get("service").map(String::as_str).unwrap_or("");
            let known = self.target_days.get(&target).copied();
            let stale = match known {
                Some((day, period)) => day < today || (w.period_ns != 0 && w.period_ns != period),
                None => true,
            };
            if stale && !new_targets.iter().any(|(t, _)| *t == target) {
                let labels = serde_json::to_string(&w.target)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                let period = if w.period_ns != 0 {
                    w.period_ns
                } else {
                    known.map_or(0, |k| k.1)
                };
                let _ = write!(target_rows, "{target}\t");
                tsv_field(&mut target_rows, service);
                target_rows.push('\t');
                tsv_field(&mut target_rows, &labels);
                let _ = writeln!(
                    target_rows,
                    "\t{period}\t{today_date}\t{}",
                    stackwatch_profile::clock::unix_ms()
                );
                new_targets.push((target, period));
            }
            let inst = instance_hash(&w.instance);
            let mut wrote = false;
            // The unlabeled samples (label set 0), then each label set's.
            let mut groups: Vec<(u64, &[(String, u64)])> = vec![(0, w.stacks.as_slice())];
            for (labels, stacks) in &w.labeled {
                let set = label_set_hash(labels);
                if set != 0
                    && !matches!(self.label_days.get(&set), Some(d) if *d >= today)
                    && !new_labels.contains(&set)
                {
                    let _ = write!(label_rows, "{set}\t");
                    tsv_field(
                        &mut label_rows,
                        &stackwatch_profile::labels::format_labels(labels),
                    );
                    let _ = writeln!(label_rows, "\t{today_date}");
                    new_labels.push(set);
                }
                groups.push((set, stacks.as_slice()));
            }
            // One row per (label set, stack): two rows with one key would replace each
            // other, so a stack given twice (or an empty set beside the unlabeled
            // samples) is summed first, deterministically.
            let mut window_rows: BTreeMap<(u64, u64), u64> = BTreeMap::new();
            for (set, stacks) in groups {
                for (stack, count) in stacks {
                    if *count == 0 {
                        continue;
                    }
                    let hash = stack_hash(stack);
                    if !matches!(self.stack_days.get(&hash), Some(d) if *d >= today)
                        && seen_stacks.insert(hash, ()).is_none()
                    {
                        let _ = write!(stack_rows, "{hash}\t");
                        tsv_field(&mut stack_rows, stack);
                        let _ = writeln!(stack_rows, "\t{today_date}");
                        new_stacks.push(hash);
                    }
                    let e = window_rows.entry((set, hash)).or_insert(0);
                    *e = e.saturating_add(*count);
                }
            }
            for ((set, hash), count) in window_rows {
                let _ = write!(sample_rows, "{}\t", w.start_unix_s);
                tsv_field(&mut sample_rows, service);
                let _ = writeln!(
                    sample_rows,
                    "\t{target}\t{hash}\t{set}\t{inst}\t{}\t{}",
                    w.seq,
                    count.min(MAX_STORED_COUNT)
                );
                stats.rows += 1;
                wrote = true;
            }
            if wrote {
                touched.push((w.start_unix_s, (target, service.to_string())));
            }
            if w.seq > 0 {
                let e = checkpoints
                    .entry((target, w.instance.as_str()))
                    .or_insert(0);
                *e = (*e).max(w.seq);
            }
            stats.windows += 1;
        }
        if !stack_rows.is_empty() {
            self.client.insert(
                &format!("{} (hash, stack, seen)", self.t("stacks")),
                "TabSeparated",
                stack_rows.into_bytes(),
            )?;
        }
        if !label_rows.is_empty() {
            self.client.insert(
                &format!("{} (hash, labels, seen)", self.t("label_sets")),
                "TabSeparated",
                label_rows.into_bytes(),
            )?;
        }
        if !target_rows.is_empty() {
            self.client.insert(
                &format!(
                    "{} (id, service, labels, period_ns, seen, updated)",
                    self.t("targets")
                ),
                "TabSeparated",
                target_rows.into_bytes(),
            )?;
        }
        if !sample_rows.is_empty() {
            self.client.insert(
                &format!(
                    "{} (ts, service, target, stack, labels, inst, seq, count)",
                    self.t("samples_raw")
                ),
                "TabSeparated",
                sample_rows.into_bytes(),
            )?;
        }
        self.reroll_late(&touched)?;
        if !checkpoints.is_empty() {
            let mut body = String::new();
            for ((target, instance), seq) in &checkpoints {
                let _ = write!(body, "{target}\t");
                tsv_field(&mut body, instance);
                let _ = writeln!(body, "\t{seq}\t{now}");
            }
            self.client.insert(
                &format!("{} (target, inst, last_seq, updated)", self.t("series")),
                "TabSeparated",
                body.into_bytes(),
            )?;
        }
        // Only now, with everything stored, remember what needs no rewrite today.
        if self.stack_days.len() + new_stacks.len() > STACK_CACHE_LIMIT {
            self.stack_days.clear();
        }
        stats.new_stacks = new_stacks.len();
        for h in new_stacks {
            self.stack_days.insert(h, today);
        }
        if self.label_days.len() + new_labels.len() > STACK_CACHE_LIMIT {
            self.label_days.clear();
        }
        for h in new_labels {
            self.label_days.insert(h, today);
        }
        for (t, period) in new_targets {
            self.target_days.insert(t, (today, period));
        }
        Ok(stats)
    }

    /// Recomputes the rollup buckets that windows older than a rollup's progress fall
    /// in (a collector catching up after ClickHouse was down, a slow target), so no
    /// rollup misses a window. Reads the progress after the samples are stored: a
    /// rollup that started before then read them, or is seen here as started.
    fn reroll_late(&self, touched: &[(i64, (u64, String))]) -> Result<(), StoreError> {
        let Some(oldest) = touched.iter().map(|(ts, _)| *ts).min() else {
            return Ok(());
        };
        let levels = self.levels()?;
        if oldest >= levels.minute_started && oldest >= levels.hour_started {
            return Ok(());
        }
        // One statement per level, over the buckets from the oldest late window to the
        // newest, for every target with a late window: recomputing a bucket that had no
        // late window is harmless (same sums, newer version), and a collector catching
        // up sends one re-roll per batch instead of one per minute.
        for (step, started) in [(60, levels.minute_started), (3600, levels.hour_started)] {
            let late: Vec<&(i64, (u64, String))> =
                touched.iter().filter(|(ts, _)| *ts < started).collect();
            let (Some(first), Some(last)) = (
                late.iter().map(|(ts, _)| *ts).min(),
                late.iter().map(|(ts, _)| *ts).max(),
            ) else {
                continue;
            };
            let targets: BTreeSet<&(u64, String)> = late.iter().map(|(_, t)| t).collect();
            let targets: Vec<(u64, String)> = targets.into_iter().cloned().collect();
            let to = (floor_to(last, step) + step).min(started);
            self.roll(step, floor_to(first, step), to, Some(&targets))?;
        }
        Ok(())
    }
}
