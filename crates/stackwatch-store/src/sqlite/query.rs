//! Queries: the targets and label sets a selector picks, the plan that reads each part
//! of a range from the coarsest table holding it, the scans, stack texts (cached), and
//! the bodies of the profile, time series, per-target series, bucketed stacks, grouped
//! series, label name and value, checkpoint and target queries.

use crate::buckets::{check_buckets, sets_filter, Selection, Table};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rusqlite::params;
use stackwatch_profile::{Profile, SampleLabels};

use super::{floor_to, labels_key, parse_labels, SqliteStore, OTHER_FRAME};
use crate::{
    BucketedStacks, Checkpoint, GroupedSeries, LabelKeys, Labels, Selector, StoreError,
    TargetSeries,
};

/// Bytes of stack text a reader keeps cached before the cache is cleared.
const STACK_TEXT_CACHE_BYTES: usize = 8 << 20;
/// Periods per stack id, for [`SqliteStore::sum_into`]: raw table, rollup table.
const SUM_BY_STACK: (&str, &str) = (
    "SELECT stack_id, TOTAL(count) FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}){sets} GROUP BY stack_id",
    // One row per (bucket, stack, label set): summed by the caller, as a GROUP BY here
    // would sort what the key does not.
    "SELECT stack_id, count FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3{sets}",
);
/// Periods per window start, for [`SqliteStore::sum_into`]: raw table, rollup table.
const SUM_BY_TIME: (&str, &str) = (
    "SELECT ts, TOTAL(count) FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}){sets} GROUP BY ts",
    "SELECT ts, TOTAL(count) FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3{sets} GROUP BY ts",
);

/// A target's id, labels and sampling period.
type TargetRow = (i64, Labels, u64);

impl SqliteStore {
    /// The body of [`ProfileReader::checkpoints`](crate::ProfileReader::checkpoints).
    pub(super) fn checkpoints_inner(&self, target: &Labels) -> Result<Vec<Checkpoint>, StoreError> {
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

    /// The body of [`ProfileReader::targets`](crate::ProfileReader::targets).
    pub(super) fn targets_inner(&self) -> Result<Vec<Labels>, StoreError> {
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

    pub(super) fn target_series_inner(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<TargetSeries>, StoreError> {
        let from_s = check_buckets(from_s, to_s, step_s, 100_000)?;
        let sel = self.selection(selector, None)?;
        if sel.targets.is_empty() {
            return Ok(Vec::new());
        }
        let per_target = self.per_target(&sel, from_s, to_s, step_s)?;
        Ok(crate::buckets::target_series_of(sel.targets, per_target))
    }

    /// Periods per selected target and `step_s` bucket over `[from_s, to_s)`.
    fn per_target(
        &self,
        sel: &Selection<TargetRow, i64>,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<HashMap<i64, BTreeMap<i64, u64>>, StoreError> {
        let ids: Vec<i64> = sel.targets.iter().map(|(id, _, _)| *id).collect();
        let mut per_target: HashMap<i64, BTreeMap<i64, u64>> = HashMap::new();
        for (table, a, b) in self.plan(from_s, to_s, step_s)? {
            self.scan(
                (table, a, b),
                &ids,
                &sel.sets,
                "SELECT ts, TOTAL(count), target_id FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}){sets} GROUP BY target_id, ts",
                "SELECT ts, TOTAL(count) FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3{sets} GROUP BY ts",
                |target, r| {
                    let target = match target {
                        Some(t) => t,
                        None => r.get(2)?,
                    };
                    let e = per_target
                        .entry(target)
                        .or_default()
                        .entry(floor_to(r.get(0)?, step_s))
                        .or_insert(0);
                    *e = e.saturating_add(read_count(r.get_ref(1)?));
                    Ok(())
                },
            )?;
        }
        Ok(per_target)
    }

    /// The body of [`ProfileReader::grouped_series`](crate::ProfileReader::grouped_series):
    /// by a target label, each selected target's series under its value; by any other
    /// name, the rows of each label set under the set's value.
    pub(super) fn grouped_series_inner(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
        group_by: &str,
        limit: usize,
    ) -> Result<Vec<GroupedSeries>, StoreError> {
        let from_s = check_buckets(from_s, to_s, step_s, 100_000)?;
        let stored = self.label_set_rows()?;
        let sel = self.selection(selector, Some(&stored))?;
        if sel.targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut per_value: HashMap<String, HashMap<i64, u64>> = HashMap::new();
        let mut add = |value: &str, bucket: i64, c: u64| {
            let e = match per_value.get_mut(value) {
                Some(m) => m.entry(bucket).or_insert(0),
                None => per_value
                    .entry(value.to_string())
                    .or_default()
                    .entry(bucket)
                    .or_insert(0),
            };
            *e = e.saturating_add(c);
        };
        if sel.target_names.contains(group_by) {
            let values: HashMap<i64, &str> = sel
                .targets
                .iter()
                .map(|(id, l, _)| (*id, l.get(group_by).map(String::as_str).unwrap_or("")))
                .collect();
            for (target, points) in self.per_target(&sel, from_s, to_s, step_s)? {
                let value = values.get(&target).copied().unwrap_or("");
                for (bucket, c) in points {
                    add(value, bucket, c);
                }
            }
        } else {
            let sets: HashMap<i64, SampleLabels> = stored.into_iter().collect();
            let value_of = |id: i64| -> &str {
                sets.get(&id)
                    .and_then(|l| l.get(group_by))
                    .map(String::as_str)
                    .unwrap_or("")
            };
            let ids: Vec<i64> = sel.targets.iter().map(|(id, _, _)| *id).collect();
            for (table, a, b) in self.plan(from_s, to_s, step_s)? {
                self.scan(
                    (table, a, b),
                    &ids,
                    &sel.sets,
                    "SELECT ts, label_set, TOTAL(count) FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}){sets} GROUP BY ts, label_set",
                    "SELECT ts, label_set, TOTAL(count) FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3{sets} GROUP BY ts, label_set",
                    |_, r| {
                        add(
                            value_of(r.get(1)?),
                            floor_to(r.get(0)?, step_s),
                            read_count(r.get_ref(2)?),
                        );
                        Ok(())
                    },
                )?;
            }
        }
        Ok(crate::buckets::grouped_of(
            per_value, from_s, to_s, step_s, limit,
        ))
    }

    /// The body of
    /// [`ProfileReader::sample_label_sets`](crate::ProfileReader::sample_label_sets).
    pub(super) fn sample_label_sets_inner(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<SampleLabels>, StoreError> {
        if to_s <= from_s {
            return Err(StoreError::Invalid("empty range".into()));
        }
        let stored = self.label_set_rows()?;
        let sel = self.selection(selector, Some(&stored))?;
        if sel.targets.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = sel.targets.iter().map(|(id, _, _)| *id).collect();
        let mut used: std::collections::HashSet<i64> = std::collections::HashSet::new();
        // Any rollup serves: the sets are the same at every resolution.
        for (table, a, b) in self.plan(from_s, to_s, 3600)? {
            self.scan(
                (table, a, b),
                &ids,
                &sel.sets,
                "SELECT DISTINCT label_set FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}){sets}",
                "SELECT DISTINCT label_set FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3{sets}",
                |_, r| {
                    used.insert(r.get(0)?);
                    Ok(())
                },
            )?;
        }
        Ok(stored
            .into_iter()
            .filter(|(id, _)| used.contains(id))
            .map(|(_, l)| l)
            .collect())
    }

    /// The body of [`ProfileReader::label_keys`](crate::ProfileReader::label_keys).
    pub(super) fn label_keys_inner(&self) -> Result<LabelKeys, StoreError> {
        let targets = self.targets_inner()?;
        let sets = self.label_set_rows()?;
        Ok(crate::buckets::label_keys_of(
            &targets,
            sets.iter().map(|(_, l)| l),
        ))
    }

    /// The body of [`ProfileReader::label_values`](crate::ProfileReader::label_values).
    pub(super) fn label_values_inner(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let targets = self.targets_inner()?;
        crate::buckets::label_values_of(name, limit, &targets, || {
            Ok(self.label_set_rows()?.into_iter().map(|(_, l)| l).collect())
        })
    }

    /// Every stored label set: id and labels. A text that does not parse is corrupt.
    fn label_set_rows(&self) -> Result<Vec<(i64, SampleLabels)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, labels FROM label_sets")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text) = row?;
            let labels = stackwatch_profile::labels::parse_labels(&text).ok_or_else(|| {
                StoreError::Corrupt(format!("label set {id}: {text:?} does not parse"))
            })?;
            out.push((id, labels));
        }
        Ok(out)
    }

    pub(super) fn bucketed_stacks_inner(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<BucketedStacks, StoreError> {
        let from_s = check_buckets(from_s, to_s, step_s, 10_000)?;
        let sel = self.selection(selector, None)?;
        let targets: Vec<i64> = sel.targets.iter().map(|t| t.0).collect();
        let mut acc: HashMap<(i64, i64), u64> = HashMap::new();
        for (table, a, b) in self.plan(from_s, to_s, step_s)? {
            self.scan(
                (table, a, b),
                &targets,
                &sel.sets,
                "SELECT ts, stack_id, TOTAL(count) FROM samples_raw WHERE ts >= ?1 AND ts < ?2 AND target_id IN ({ids}){sets} GROUP BY ts, stack_id",
                "SELECT ts, stack_id, count FROM {table} WHERE target_id = ?1 AND ts >= ?2 AND ts < ?3{sets}",
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

    pub(super) fn profile_inner(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Profile, StoreError> {
        let mut profile = crate::buckets::empty_profile(from_s, to_s)?;
        let sel = self.selection(selector, None)?;
        let targets: Vec<i64> = sel.targets.iter().map(|t| t.0).collect();
        let mut acc: HashMap<i64, u64> = HashMap::new();
        if !targets.is_empty() {
            for (table, a, b) in self.plan(from_s, to_s, 3600)? {
                self.sum_into((table, a, b), &targets, &sel.sets, SUM_BY_STACK, &mut acc)?;
            }
        }
        let other = bound_answer(&mut acc, self.reader.max_answer_stacks);
        profile.stacks.reserve(acc.len() + 1);
        for (text, count) in self.stack_texts(acc)? {
            profile.add(&text, count);
        }
        profile.add(OTHER_FRAME, other);
        Ok(profile)
    }

    pub(super) fn timeseries_inner(
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
        let sel = self.selection(selector, None)?;
        let targets: Vec<i64> = sel.targets.iter().map(|t| t.0).collect();
        let mut acc: HashMap<i64, u64> = HashMap::new();
        if !targets.is_empty() {
            for (table, a, b) in self.plan(from_s, to_s, step_s)? {
                self.sum_into((table, a, b), &targets, &sel.sets, SUM_BY_TIME, &mut acc)?;
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

    /// What `selector` picks: targets by their labels, label sets by the sample matchers
    /// (over `sets` when given, else over the stored ones, read only when needed).
    fn selection(
        &self,
        selector: &Selector,
        sets: Option<&[(i64, SampleLabels)]>,
    ) -> Result<Selection<TargetRow, i64>, StoreError> {
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
        let mut all = Vec::new();
        for row in rows {
            let (id, labels, period) = row?;
            all.push((id, parse_labels(&labels)?, period.max(0) as u64));
        }
        crate::buckets::select(
            selector,
            all,
            |t| &t.1,
            || match sets {
                Some(s) => Ok(s.to_vec()),
                None => self.label_set_rows(),
            },
            0,
        )
    }

    /// Splits `[from, to)` into pieces each read from the coarsest table that holds it
    /// completely: whole rolled-up hours from `samples_1h`, whole rolled-up minutes from
    /// `samples_1m`, the rest from `samples_raw`.
    ///
    /// `finest` is the resolution a caller needs (a time series bucket): a rollup is
    /// used only if its bucket divides it.
    fn plan(&self, from: i64, to: i64, finest: i64) -> Result<Vec<(Table, i64, i64)>, StoreError> {
        let minute_done = self.done_through("1m")?.unwrap_or(i64::MIN);
        let hour_done = self.done_through("1h")?.unwrap_or(i64::MIN);
        Ok(crate::buckets::plan(
            from,
            to,
            finest,
            minute_done,
            hour_done,
        ))
    }

    /// Reads one piece of a [`SqliteStore::plan`]: the raw table in one pass for all
    /// `targets` (it is keyed by time; `raw` selects from `samples_raw` with `?1`/`?2`
    /// the range and `{ids}` the target list), a rollup table with one range read per
    /// target (it is keyed by target; `rollup` selects from `{table}` with `?1` the
    /// target and `?2`/`?3` the range). In both, `{sets}` becomes the label set filter
    /// of `sets`. `row` gets the target id for rollup rows.
    fn scan(
        &self,
        (table, from, to): (Table, i64, i64),
        targets: &[i64],
        sets: &Option<Vec<i64>>,
        raw: &str,
        rollup: &str,
        mut row: impl FnMut(Option<i64>, &rusqlite::Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if targets.is_empty() {
            return Ok(());
        }
        let filter = sets_filter("label_set", sets);
        match table {
            Table::Raw => {
                let sql = raw
                    .replace("{ids}", &id_list(targets))
                    .replace("{sets}", &filter);
                let mut stmt = self.conn.prepare(&sql)?;
                let mut rows = stmt.query(params![from, to])?;
                while let Some(r) = rows.next()? {
                    row(None, r)?;
                }
            }
            Table::Minute | Table::Hour => {
                let sql = rollup
                    .replace("{table}", table.name())
                    .replace("{sets}", &filter);
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
        sets: &Option<Vec<i64>>,
        (raw, rollup): (&str, &str),
        acc: &mut HashMap<i64, u64>,
    ) -> Result<(), StoreError> {
        self.scan(piece, targets, sets, raw, rollup, |_, r| {
            let e = acc.entry(r.get(0)?).or_insert(0);
            *e = e.saturating_add(read_count(r.get_ref(1)?));
            Ok(())
        })
    }

    /// Resolves stack ids to their text (cached), keeping each id's count.
    fn stack_texts(&self, counts: HashMap<i64, u64>) -> Result<Vec<(Arc<str>, u64)>, StoreError> {
        let texts = self.stack_texts_cached(counts);
        self.account_caches();
        texts
    }

    fn stack_texts_cached(
        &self,
        counts: HashMap<i64, u64>,
    ) -> Result<Vec<(Arc<str>, u64)>, StoreError> {
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
