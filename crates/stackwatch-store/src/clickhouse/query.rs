//! Queries: each answer is aggregated inside ClickHouse (`GROUP BY` the stack hash, the
//! target, the label set, the bucket) over the coarsest resolution that covers each
//! part of the range, reading with `FINAL` so a window stored twice counts once. Only
//! the stacks an answer keeps (at most `max_answer_stacks`, the rest summed into
//! `[other]`) are joined to their text, by a second lookup keyed by hash. A selector's
//! sample matchers are evaluated over the stored label sets, and rows filtered by
//! `labels IN (...)`.

use crate::buckets::{check_buckets, sets_filter, Selection};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use stackwatch_profile::{Profile, SampleLabels};

use super::client::{id_list, num, quote, rows, tsv_unescape};
use super::ClickHouseStore;
use crate::{
    BucketedStacks, GroupedSeries, Labels, Selector, StoreError, TargetSeries, OTHER_FRAME,
    OTHER_VALUE,
};

/// How far each rollup level has got (see `rollup_state`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Levels {
    /// Minutes before this are rolled up (queries may read `samples_1m`).
    pub minute_done: i64,
    /// A rollup of minutes before this has started (late windows re-roll).
    pub minute_started: i64,
    /// Hours before this are rolled up.
    pub hour_done: i64,
    /// A rollup of hours before this has started.
    pub hour_started: i64,
}

/// Text standing for a stack whose text is not stored (it cannot happen while
/// retention drops texts after the samples that name them; shown rather than dropped).
const MISSING_STACK: &str = "[stack text missing]";

/// A target's id, labels and sampling period.
type TargetRow = (u64, Labels, u64);

/// The selected targets: every one (`all`), or only these, each with its service.
pub(super) struct Chosen {
    all: bool,
    /// `(service, target id)`, sorted.
    keys: Vec<(String, u64)>,
}

/// `FINAL` reads of one range are split into up to this many `UNION ALL` branches, each
/// over a contiguous range of the sorting key's `(service, target)`: ClickHouse reads
/// branches in parallel, where one `FINAL` stream runs on one thread (18.16).
const FINAL_BRANCHES: usize = 4;
/// Fewer targets than this are read in one branch.
const MIN_TARGETS_TO_SPLIT: usize = 64;

impl Chosen {
    /// `targets` (id, service), every target of the store when `all`.
    pub(super) fn new(all: bool, targets: impl IntoIterator<Item = (u64, String)>) -> Chosen {
        let mut keys: Vec<(String, u64)> = targets.into_iter().map(|(id, s)| (s, id)).collect();
        keys.sort_unstable();
        Chosen { all, keys }
    }

    /// One filter per branch (each starting with ` AND`, or empty): together they select
    /// exactly the chosen targets, each over a range of the primary key.
    pub(super) fn branches(&self) -> Vec<String> {
        let n = self.keys.len();
        let k = if n >= MIN_TARGETS_TO_SPLIT {
            FINAL_BRANCHES
        } else {
            1
        };
        if k == 1 {
            return vec![if self.all {
                String::new()
            } else {
                format!(
                    " AND target IN ({})",
                    id_list(self.keys.iter().map(|k| k.1))
                )
            }];
        }
        (0..k)
            .map(|i| {
                let chunk = &self.keys[i * n / k..(i + 1) * n / k];
                let (lo, hi) = (&chunk[0], &chunk[chunk.len() - 1]);
                let mut f = format!(
                    " AND (service > {ls} OR (service = {ls} AND target >= {lt})) AND (service < {hs} OR (service = {hs} AND target <= {ht}))",
                    ls = quote(&lo.0),
                    lt = lo.1,
                    hs = quote(&hi.0),
                    ht = hi.1
                );
                if !self.all {
                    f.push_str(&format!(" AND target IN ({})", id_list(chunk.iter().map(|k| k.1))));
                }
                f
            })
            .collect()
    }
}

/// `SELECT {cols} FROM {table} FINAL` over `[a, b)`, one `UNION ALL` branch per filter.
pub(super) fn final_branches(
    table: &str,
    cols: &str,
    a: i64,
    b: i64,
    filters: &[String],
) -> String {
    // DateTime is unsigned 32-bit seconds.
    let (a, b) = (a.clamp(0, u32::MAX as i64), b.clamp(0, u32::MAX as i64));
    filters
        .iter()
        .map(|f| format!("SELECT {cols} FROM {table} FINAL WHERE ts >= {a} AND ts < {b}{f}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

impl ClickHouseStore {
    /// Every target: id, labels, period (the latest written).
    pub(super) fn target_rows(&self) -> Result<Vec<TargetRow>, StoreError> {
        let text = self.read(&format!(
            "SELECT id, argMax(labels, updated), argMax(period_ns, updated) FROM {} GROUP BY id",
            self.t("targets")
        ))?;
        let (body, _) = rows(&text);
        body.iter()
            .map(|r| {
                let labels: Labels =
                    serde_json::from_str(&tsv_unescape(r.get(1).copied().unwrap_or("")))
                        .map_err(|e| StoreError::Corrupt(format!("target labels: {e}")))?;
                Ok((
                    num(r.first(), "target id")?,
                    labels,
                    num(r.get(2), "period")?,
                ))
            })
            .collect()
    }

    /// Every stored label set: hash and labels. A text that does not parse is corrupt.
    pub(super) fn label_set_rows(&self) -> Result<Vec<(u64, SampleLabels)>, StoreError> {
        let text = self.read(&format!(
            "SELECT hash, any(labels) FROM {} GROUP BY hash",
            self.t("label_sets")
        ))?;
        rows(&text)
            .0
            .iter()
            .map(|r| {
                let hash: u64 = num(r.first(), "label set hash")?;
                let text = tsv_unescape(r.get(1).copied().unwrap_or(""));
                let labels = stackwatch_profile::labels::parse_labels(&text).ok_or_else(|| {
                    StoreError::Corrupt(format!("label set {hash}: {text:?} does not parse"))
                })?;
                Ok((hash, labels))
            })
            .collect()
    }

    /// What `selector` picks: targets by their labels (and the branches that read
    /// them), label sets by the sample matchers (over `sets` when given, else over the
    /// stored ones, read only when needed).
    fn choose(
        &self,
        selector: &Selector,
        sets: Option<&[(u64, SampleLabels)]>,
    ) -> Result<(Chosen, Selection<TargetRow, u64>), StoreError> {
        let sel = crate::buckets::select(
            selector,
            self.target_rows()?,
            |t| &t.1,
            || match sets {
                Some(s) => Ok(s.to_vec()),
                None => self.label_set_rows(),
            },
            0,
        )?;
        let keys = sel
            .targets
            .iter()
            .map(|(id, l, _)| (*id, l.get("service").cloned().unwrap_or_default()));
        Ok((Chosen::new(sel.all_targets, keys), sel))
    }

    /// Progress of the rollups.
    pub(super) fn levels(&self) -> Result<Levels, StoreError> {
        let text = self.read(&format!(
            "SELECT level, max(value) FROM {} GROUP BY level",
            self.t("rollup_state")
        ))?;
        let mut l = Levels {
            minute_done: i64::MIN,
            minute_started: i64::MIN,
            hour_done: i64::MIN,
            hour_started: i64::MIN,
        };
        for r in rows(&text).0 {
            let v: i64 = num(r.get(1), "rollup progress")?;
            match r.first().copied() {
                Some("1m") => l.minute_done = v,
                Some("1m-started") => l.minute_started = v,
                Some("1h") => l.hour_done = v,
                Some("1h-started") => l.hour_started = v,
                _ => {}
            }
        }
        Ok(l)
    }

    /// Splits `[from, to)` into pieces, each read from the coarsest table that holds
    /// it completely (as the SQLite store does); `finest` is the bucket a caller needs.
    fn plan(
        &self,
        from: i64,
        to: i64,
        finest: i64,
    ) -> Result<Vec<(&'static str, i64, i64)>, StoreError> {
        let l = self.levels()?;
        Ok(
            crate::buckets::plan(from, to, finest, l.minute_done, l.hour_done)
                .into_iter()
                .map(|(t, a, b)| (t.name(), a, b))
                .collect(),
        )
    }

    /// `SELECT {cols} ... UNION ALL ...` over the plan's pieces, each read `FINAL`, of
    /// the chosen targets and the label sets `sets` (`None`: all).
    fn pieces_sql(
        &self,
        plan: &[(&str, i64, i64)],
        cols: &str,
        chosen: &Chosen,
        sets: &Option<Vec<u64>>,
    ) -> String {
        let by_set = sets_filter("labels", sets);
        let filters: Vec<String> = chosen.branches().into_iter().map(|f| f + &by_set).collect();
        plan.iter()
            .map(|(table, a, b)| final_branches(&self.t(table), cols, *a, *b, &filters))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    }

    /// The texts of `hashes`.
    fn stack_texts(&self, hashes: &[u64]) -> Result<HashMap<u64, Arc<str>>, StoreError> {
        let mut out = HashMap::with_capacity(hashes.len());
        for chunk in hashes.chunks(50_000) {
            let text = self.read(&format!(
                "SELECT hash, any(stack) FROM {} WHERE hash IN ({}) GROUP BY hash",
                self.t("stacks"),
                id_list(chunk.iter().copied())
            ))?;
            for r in rows(&text).0 {
                let hash: u64 = num(r.first(), "stack hash")?;
                out.insert(
                    hash,
                    Arc::from(tsv_unescape(r.get(1).copied().unwrap_or(""))),
                );
            }
        }
        Ok(out)
    }

    /// The largest stacks of the pieces (at most `max_answer_stacks - 1`), and the
    /// total of all (exact, `WITH TOTALS`).
    fn top_stacks(
        &self,
        plan: &[(&str, i64, i64)],
        chosen: &Chosen,
        sets: &Option<Vec<u64>>,
    ) -> Result<(Vec<(u64, u64)>, u64), StoreError> {
        if plan.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let keep = self.opts.max_answer_stacks.max(2) - 1;
        let text = self.read(&format!(
            "SELECT stack, sum(c) AS n FROM ({}) GROUP BY stack WITH TOTALS ORDER BY n DESC, stack LIMIT {keep}",
            self.pieces_sql(plan, "stack, count AS c", chosen, sets)
        ))?;
        let (body, totals) = rows(&text);
        let top = body
            .iter()
            .map(|r| Ok((num(r.first(), "stack")?, num(r.get(1), "count")?)))
            .collect::<Result<Vec<(u64, u64)>, StoreError>>()?;
        let total = match totals {
            Some(t) => num(t.get(1).or(t.first()), "total")?,
            None => top.iter().fold(0u64, |a, (_, c)| a.saturating_add(*c)),
        };
        Ok((top, total))
    }

    pub(super) fn merged_profile(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Profile, StoreError> {
        let mut profile = crate::buckets::empty_profile(from_s, to_s)?;
        let (chosen, sel) = self.choose(selector, None)?;
        if sel.targets.is_empty() {
            return Ok(profile);
        }
        let plan = self.plan(from_s, to_s, 3600)?;
        let (top, total) = self.top_stacks(&plan, &chosen, &sel.sets)?;
        let hashes: Vec<u64> = top.iter().map(|(h, _)| *h).collect();
        let texts = self.stack_texts(&hashes)?;
        let mut kept = 0u64;
        profile.stacks.reserve(top.len() + 1);
        for (hash, count) in top {
            kept = kept.saturating_add(count);
            match texts.get(&hash) {
                Some(t) => profile.add(t, count),
                None => profile.add(MISSING_STACK, count),
            }
        }
        profile.add(OTHER_FRAME, total.saturating_sub(kept));
        Ok(profile)
    }

    pub(super) fn series_by_target(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<TargetSeries>, StoreError> {
        let from_s = check_buckets(from_s, to_s, step_s, 100_000)?;
        let (chosen, sel) = self.choose(selector, None)?;
        if sel.targets.is_empty() {
            return Ok(Vec::new());
        }
        let plan = self.plan(from_s, to_s, step_s)?;
        let text = self.read(&format!(
            "SELECT target, intDiv(toUInt32(ts), {step_s}) * {step_s} AS b, sum(count) FROM ({}) GROUP BY target, b",
            self.pieces_sql(&plan, "target, ts, count", &chosen, &sel.sets)
        ))?;
        let mut per_target: HashMap<u64, BTreeMap<i64, u64>> = HashMap::new();
        for r in rows(&text).0 {
            let t: u64 = num(r.first(), "target")?;
            let b: i64 = num(r.get(1), "bucket")?;
            let c: u64 = num(r.get(2), "count")?;
            let e = per_target.entry(t).or_default().entry(b).or_insert(0);
            *e = e.saturating_add(c);
        }
        Ok(crate::buckets::target_series_of(sel.targets, per_target))
    }

    pub(super) fn stacks_by_bucket(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<BucketedStacks, StoreError> {
        let from_s = check_buckets(from_s, to_s, step_s, 10_000)?;
        let (chosen, sel) = self.choose(selector, None)?;
        let mut out = BucketedStacks {
            step_s,
            ..Default::default()
        };
        if sel.targets.is_empty() {
            return Ok(out);
        }
        let plan = self.plan(from_s, to_s, step_s)?;
        let (top, _) = self.top_stacks(&plan, &chosen, &sel.sets)?;
        let hashes: Vec<u64> = top.iter().map(|(h, _)| *h).collect();
        let texts = self.stack_texts(&hashes)?;
        let mut index: HashMap<u64, u32> = HashMap::with_capacity(hashes.len());
        for h in &hashes {
            index.insert(*h, out.stacks.len() as u32);
            out.stacks.push(
                texts
                    .get(h)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(MISSING_STACK)),
            );
        }
        // Stacks outside the kept set are summed into hash 0 by ClickHouse.
        let kept = if hashes.is_empty() {
            "0".to_string()
        } else {
            format!("stack IN ({})", id_list(hashes.iter().copied()))
        };
        let text = self.read(&format!(
            "SELECT intDiv(toUInt32(ts), {step_s}) * {step_s} AS b, if({kept}, stack, toUInt64(0)) AS s, sum(count) FROM ({}) GROUP BY b, s",
            self.pieces_sql(&plan, "ts, stack, count", &chosen, &sel.sets)
        ))?;
        let other = out.stacks.len() as u32;
        let mut folded: HashMap<(i64, u32), u64> = HashMap::new();
        for r in rows(&text).0 {
            let b: i64 = num(r.first(), "bucket")?;
            let s: u64 = num(r.get(1), "stack")?;
            let c: u64 = num(r.get(2), "count")?;
            let i = index.get(&s).copied().unwrap_or(other);
            let e = folded.entry((b, i)).or_insert(0);
            *e = e.saturating_add(c);
        }
        if folded.keys().any(|(_, i)| *i == other) {
            out.stacks.push(Arc::from(OTHER_FRAME));
        }
        out.counts = folded.into_iter().map(|((b, i), c)| (b, i, c)).collect();
        out.counts.sort_unstable();
        Ok(out)
    }

    /// The body of
    /// [`ProfileReader::sample_label_sets`](crate::ProfileReader::sample_label_sets).
    pub(super) fn label_sets_used(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<SampleLabels>, StoreError> {
        if to_s <= from_s {
            return Err(StoreError::Invalid("empty range".into()));
        }
        let stored = self.label_set_rows()?;
        let (chosen, sel) = self.choose(selector, Some(&stored))?;
        if sel.targets.is_empty() {
            return Ok(Vec::new());
        }
        // Any rollup serves: the sets are the same at every resolution.
        let plan = self.plan(from_s, to_s, 3600)?;
        let text = self.read(&format!(
            "SELECT DISTINCT labels FROM ({})",
            self.pieces_sql(&plan, "labels", &chosen, &sel.sets)
        ))?;
        let mut used = std::collections::HashSet::new();
        for r in rows(&text).0 {
            let k: u64 = num(r.first(), "labels")?;
            used.insert(k);
        }
        Ok(stored
            .into_iter()
            .filter(|(k, _)| used.contains(k))
            .map(|(_, l)| l)
            .collect())
    }

    /// The body of [`ProfileReader::grouped_series`](crate::ProfileReader::grouped_series),
    /// in two bounded reads: the total per target (grouping by a target label) or per
    /// label set (any other name), one row each, which Rust maps to values to pick the
    /// top `limit`; then the periods per bucket of each of those values and of the rest
    /// together, grouped by ClickHouse (`transform` maps a target or label set to its
    /// group), at most `limit + 1` rows per bucket.
    pub(super) fn series_grouped(
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
        let (chosen, sel) = self.choose(selector, Some(&stored))?;
        if sel.targets.is_empty() {
            return Ok(Vec::new());
        }
        let (col, values): (&str, HashMap<u64, &str>) = if sel.target_names.contains(group_by) {
            let values = sel
                .targets
                .iter()
                .map(|(id, l, _)| (*id, l.get(group_by).map(String::as_str).unwrap_or("")))
                .collect();
            ("target", values)
        } else {
            let values = stored
                .iter()
                .map(|(h, l)| (*h, l.get(group_by).map(String::as_str).unwrap_or("")))
                .collect();
            ("labels", values)
        };
        let value = |k: u64| values.get(&k).copied().unwrap_or("");
        let plan = self.plan(from_s, to_s, step_s)?;
        let text = self.read(&format!(
            "SELECT {col}, sum(count) FROM ({}) GROUP BY {col}",
            self.pieces_sql(&plan, &format!("{col}, count"), &chosen, &sel.sets)
        ))?;
        let mut keys: Vec<u64> = Vec::new();
        let mut totals: HashMap<String, u64> = HashMap::new();
        for r in rows(&text).0 {
            let k: u64 = num(r.first(), col)?;
            let c: u64 = num(r.get(1), "count")?;
            let e = totals.entry(value(k).to_string()).or_insert(0);
            *e = e.saturating_add(c);
            keys.push(k);
        }
        let top = crate::buckets::top_values(&totals, limit);
        let group: HashMap<&str, usize> = top
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_str(), i + 1))
            .collect();
        let (from, to): (Vec<u64>, Vec<u64>) = keys
            .iter()
            .filter_map(|k| group.get(value(*k)).map(|g| (*k, *g as u64)))
            .unzip();
        // Group 0: every target or label set outside the top values.
        let group_expr = if from.is_empty() {
            "toUInt64(0)".to_string()
        } else {
            format!(
                "transform({col}, [{}], [{}], 0)",
                id_list(from.iter().copied()),
                id_list(to.iter().copied())
            )
        };
        let text = self.read(&format!(
            "SELECT {group_expr} AS g, intDiv(toUInt32(ts), {step_s}) * {step_s} AS b, sum(count) FROM ({}) GROUP BY g, b",
            self.pieces_sql(&plan, &format!("{col}, ts, count"), &chosen, &sel.sets)
        ))?;
        let mut per_value: HashMap<String, HashMap<i64, u64>> = HashMap::new();
        for r in rows(&text).0 {
            let g: usize = num(r.first(), "group")?;
            let b: i64 = num(r.get(1), "bucket")?;
            let c: u64 = num(r.get(2), "count")?;
            let v = match g.checked_sub(1).and_then(|i| top.get(i)) {
                Some(v) => v.clone(),
                None => OTHER_VALUE.to_string(),
            };
            let e = per_value.entry(v).or_default().entry(b).or_insert(0);
            *e = e.saturating_add(c);
        }
        // Every top value keeps its series, even if its rows went since the first read.
        for v in &top {
            per_value.entry(v.clone()).or_default();
        }
        Ok(crate::buckets::grouped_of(
            per_value,
            from_s,
            to_s,
            step_s,
            top.len(),
        ))
    }
}
