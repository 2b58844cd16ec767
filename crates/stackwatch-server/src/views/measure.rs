//! How counts become values over time, by the profile type's [`Measure`]: the steps
//! and buckets of a range, periods into cores, amounts into rates, levels into means, and
//! the series read for them (what `/api/timeseries`, `/api/top` and `/api/changes` share).

#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stackwatch_store::{ProfileReader, Selector, StoreError, TargetSeries, OTHER_VALUE};

use crate::profile_type::ProfileType;
use crate::request::{Hide, ParamError, QueryParams};
use crate::state::ApiState;

/// The sampling period assumed for targets that do not send one (99 Hz).
pub const DEFAULT_PERIOD_NS: u64 = 10_101_010;

/// A step that gives about 120 points, rounded to a readable length.
pub(crate) fn default_step(range: i64) -> i64 {
    const STEPS: [i64; 12] = [
        10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21_600, 86_400,
    ];
    let want = range / 120;
    STEPS.iter().copied().find(|s| *s >= want).unwrap_or(86_400)
}

/// Buckets of `step` seconds on multiples of the step that cover `[from, to)`.
pub(crate) fn bucket_count(from: i64, to: i64, step: i64) -> i64 {
    let first = from.div_euclid(step) * step;
    (to - first + step - 1) / step
}

/// `step`: a duration (`1m`) or seconds, at least 1 s and at most 10 000 buckets over
/// `[from, to)`; by default about 120 buckets ([`default_step`]).
pub(crate) fn step_param(q: &QueryParams, from: i64, to: i64) -> Result<i64, ParamError> {
    match q.get("step") {
        None => Ok(default_step(to - from)),
        Some(s) => match humantime::parse_duration(s)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .or_else(|_| s.parse::<i64>().map_err(|_| ()))
        {
            // Counted as the store counts them: an unaligned `from` adds a bucket.
            Ok(v) if v >= 1 && bucket_count(from, to, v) <= 10_000 => Ok(v),
            Ok(_) => Err(ParamError::new(
                "step",
                "must be at least 1 s and give at most 10 000 points",
            )),
            Err(_) => Err(ParamError::new("step", format!("{s:?}: not a duration"))),
        },
    }
}

/// How a profile type's counts become a value per time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Sampling periods (CPU, wall): periods times the target's period over the
    /// bucket's length (cores; seconds of wall-clock time per second).
    Periods,
    /// Amounts accumulated over each profile's interval (allocations, contentions,
    /// delay): their sum over the bucket's length, per second.
    Rate,
    /// Amounts at the time of each profile (in-use memory, goroutines): each target's
    /// mean per profile in the bucket, summed over the targets. Consecutive profiles of
    /// one target see the same live objects again; summing them would count those once
    /// per profile.
    Gauge,
}

impl Measure {
    /// The measure of a profile type.
    pub fn of(t: ProfileType) -> Measure {
        match t {
            ProfileType::Cpu | ProfileType::Wall => Measure::Periods,
            ProfileType::AllocObjects
            | ProfileType::AllocSpace
            | ProfileType::Contentions
            | ProfileType::Delay => Measure::Rate,
            ProfileType::InuseObjects | ProfileType::InuseSpace | ProfileType::Goroutines => {
                Measure::Gauge
            }
        }
    }
}

pub(crate) fn period_of(t: &TargetSeries) -> f64 {
    (if t.period_ns == 0 {
        DEFAULT_PERIOD_NS
    } else {
        t.period_ns
    }) as f64
}

/// The index of the bucket holding `ts` among `n` buckets of `step` s from `first`.
pub(crate) fn bucket_index(ts: i64, first: i64, step: i64, n: usize) -> Option<usize> {
    let i = (ts.div_euclid(step) * step - first) / step;
    usize::try_from(i).ok().filter(|i| *i < n)
}

/// Values per bucket of a group of targets in the unit of `measure` (before the edge
/// scaling of [`points`]): `None` where none of them has data. The targets' points may
/// be finer than `step` (a gauge's are: each stored profile time its own point); they
/// are binned into the buckets.
pub(crate) fn values(
    targets: &[&TargetSeries],
    buckets: &[i64],
    step: i64,
    measure: Measure,
) -> Vec<Option<f64>> {
    let n = buckets.len();
    let first = buckets.first().copied().unwrap_or(0);
    let mut out = vec![None; n];
    for t in targets {
        let scale = match measure {
            Measure::Periods => period_of(t) / 1e9 / step as f64,
            Measure::Rate => 1.0 / step as f64,
            Measure::Gauge => 1.0,
        };
        if measure == Measure::Gauge {
            // This target's sum and number of profiles per bucket, then its mean.
            let mut per: Vec<(f64, u32)> = vec![(0.0, 0); n];
            for (ts, c) in &t.points {
                if let Some(i) = bucket_index(*ts, first, step, n) {
                    per[i].0 += *c as f64;
                    per[i].1 += 1;
                }
            }
            for (slot, (sum, profiles)) in out.iter_mut().zip(per) {
                if profiles > 0 {
                    *slot.get_or_insert(0.0) += sum / f64::from(profiles);
                }
            }
        } else {
            for (ts, c) in &t.points {
                if let Some(i) = bucket_index(*ts, first, step, n) {
                    *out[i].get_or_insert(0.0) += *c as f64 * scale;
                }
            }
        }
    }
    out
}

/// The counts per bucket of some targets, summed: `None` where none has data.
pub(crate) fn raw_counts(
    targets: &[&TargetSeries],
    buckets: &[i64],
    step: i64,
) -> Vec<Option<f64>> {
    let n = buckets.len();
    let first = buckets.first().copied().unwrap_or(0);
    let mut out = vec![None; n];
    for t in targets {
        for (ts, c) in &t.points {
            if let Some(i) = bucket_index(*ts, first, step, n) {
                *out[i].get_or_insert(0.0) += *c as f64;
            }
        }
    }
    out
}

/// Per bucket, what one count is worth in the unit of the selection's values: its
/// value over its counts. Counts read per bucket without their targets (a sample
/// label's, a function's) become values with it: exact when the targets share one
/// period (and, for a gauge, one number of profiles per bucket); otherwise they are
/// assumed to come from the targets in the bucket's proportions, and the parts still
/// add up to the total, which is exact. `fallback` where a bucket has no counts.
pub(crate) fn count_values(
    total: &[Option<f64>],
    counts: &[Option<f64>],
    fallback: f64,
) -> Vec<f64> {
    total
        .iter()
        .zip(counts)
        .map(|(v, c)| match (v, c) {
            (Some(v), Some(c)) if *c > 0.0 => v / c,
            _ => fallback,
        })
        .collect()
}

/// The selection's average over `range_s` seconds in the unit of `measure`: for a
/// gauge, each target's mean per profile (its series must be at the resolution that
/// [`read_series`] gives a gauge), summed.
pub(crate) fn range_value<'a>(
    targets: impl IntoIterator<Item = &'a TargetSeries>,
    range_s: i64,
    measure: Measure,
) -> f64 {
    let range = range_s.max(1) as f64;
    targets
        .into_iter()
        .map(|t| {
            let sum = t.points.iter().map(|(_, c)| *c as f64).sum::<f64>();
            match measure {
                Measure::Periods => sum * period_of(t) / 1e9 / range,
                Measure::Rate => sum / range,
                Measure::Gauge if t.points.is_empty() => 0.0,
                Measure::Gauge => sum / t.points.len() as f64,
            }
        })
        .sum::<f64>()
        // An empty float sum is -0.0; JSON should say 0.
        + 0.0
}

/// Resolutions at which a gauge's profiles are told apart, finest first.
pub(crate) const GAUGE_RESOLUTIONS: [i64; 18] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
];

/// The finest resolution to count a gauge's profiles over `[from, to)` at: one that
/// divides `step` (when the points must bin into its buckets), within the store's
/// 100 000 buckets, and (`minutes`) a multiple of a minute when the range is older
/// than the raw windows, so the minute rollups answer it.
pub(crate) fn gauge_resolution(from: i64, to: i64, step: Option<i64>, minutes: bool) -> i64 {
    let fits = |r: i64| {
        let divides = match step {
            Some(s) => s % r == 0,
            None => true,
        };
        divides && (to - from.div_euclid(r) * r + r - 1) / r <= 100_000
    };
    let pick = |want_minutes: bool| {
        GAUGE_RESOLUTIONS
            .iter()
            .copied()
            .find(|r| fits(*r) && (!want_minutes || r % 60 == 0))
    };
    (if minutes { pick(true) } else { None })
        .or_else(|| pick(false))
        .unwrap_or_else(|| step.unwrap_or(86_400))
}

/// Each selected target's counts over `[from, to)`: per bucket of `step` for periods
/// and rates; for a gauge, per stored profile time (each stored time its own point,
/// binned later), so that each target's mean per profile can be taken. Raw windows
/// tell every profile apart; past `storage.raw_retention` only rollups remain, where a
/// minute holds every profile of that minute, and counts as one. `step: None` reads
/// the range as one bucket.
pub(crate) fn read_series(
    store: &dyn ProfileReader,
    selector: &Selector,
    (from, to, step): (i64, i64, Option<i64>),
    measure: Measure,
    raw_since: i64,
) -> Result<Vec<TargetSeries>, StoreError> {
    if measure != Measure::Gauge {
        return store.target_series(selector, from, to, step.unwrap_or((to - from).max(1)));
    }
    // The part older than the raw windows at minute resolution, the rest finest.
    let align = step.unwrap_or(60);
    let split = (raw_since.div_euclid(align) * align + align).clamp(from, to);
    let mut merged: BTreeMap<stackwatch_store::Labels, TargetSeries> = BTreeMap::new();
    for (a, b, minutes) in [(from, split, true), (split, to, false)] {
        if a >= b {
            continue;
        }
        let r = gauge_resolution(a, b, step, minutes);
        for t in store.target_series(selector, a, b, r)? {
            match merged.get_mut(&t.labels) {
                Some(m) => {
                    m.points.extend(t.points);
                    m.period_ns = m.period_ns.max(t.period_ns);
                }
                None => {
                    merged.insert(t.labels.clone(), t);
                }
            }
        }
    }
    Ok(merged.into_values().collect())
}

/// The time before which only rollups may be left (`storage.raw_retention`).
pub(crate) fn raw_since(st: &ApiState) -> i64 {
    let keep = st
        .cfg
        .storage
        .raw_retention
        .min(st.cfg.storage.retention)
        .as_secs();
    stackwatch_profile::clock::unix_s().saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX))
}

/// `[[bucket, value], ...]`, each value multiplied by its bucket's scale (a bucket that
/// sticks out of the range is averaged over the part of it inside).
pub(crate) fn points(buckets: &[i64], values: &[Option<f64>], scales: &[f64]) -> Value {
    Value::Array(
        buckets
            .iter()
            .zip(values)
            .zip(scales)
            .map(|((b, v), k)| json!([b, v.map(|c| c * k)]))
            .collect(),
    )
}

/// For each bucket, its length over the part of it inside `[from, to)`.
pub(crate) fn edge_scales(buckets: &[i64], step: i64, from: i64, to: i64) -> Vec<f64> {
    buckets
        .iter()
        .map(|b| {
            let inside = (to.min(b + step) - from.max(*b)).max(1);
            step as f64 / inside.min(step) as f64
        })
        .collect()
}

/// The name of the series of targets (or samples) without the `group_by` label.
pub(crate) const NONE_SERIES: &str = "(none)";

/// `group_by` over a target label: one series per value, the `limit` largest (by their
/// values over the range) first, the rest summed as `[other]`, then the targets without
/// the label as `(none)`.
pub(crate) fn target_groups(
    series: &[TargetSeries],
    label: &str,
    limit: usize,
    (buckets, step, measure): (&[i64], i64, Measure),
    scales: &[f64],
) -> Vec<Value> {
    let mut groups: BTreeMap<String, Vec<&TargetSeries>> = BTreeMap::new();
    for t in series {
        let v = t.labels.get(label).cloned().unwrap_or_default();
        groups.entry(v).or_default().push(t);
    }
    let none = groups.remove("");
    let mut ranked: Vec<(String, Vec<Option<f64>>, f64)> = groups
        .into_iter()
        .map(|(k, ts)| {
            let v = values(&ts, buckets, step, measure);
            let weight = v.iter().flatten().sum::<f64>();
            (k, v, weight)
        })
        .collect();
    ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let mut rest: Option<Vec<Option<f64>>> = None;
    for (_, v, _) in ranked.iter().skip(limit) {
        let acc = rest.get_or_insert_with(|| vec![None; buckets.len()]);
        for (a, b) in acc.iter_mut().zip(v) {
            if let Some(b) = b {
                *a.get_or_insert(0.0) += b;
            }
        }
    }
    let mut list: Vec<Value> = ranked
        .iter()
        .take(limit)
        .map(|(name, v, _)| json!({"name": name, "points": points(buckets, v, scales)}))
        .collect();
    if let Some(v) = rest {
        list.push(json!({"name": OTHER_VALUE, "points": points(buckets, &v, scales)}));
    }
    if let Some(ts) = none {
        list.push(json!({"name": NONE_SERIES, "points": points(buckets, &values(&ts, buckets, step, measure), scales)}));
    }
    list
}

/// `group_by` over a sample label, in periods per bucket: the `limit` values with the
/// most periods (the store's order), `[other]` for the rest, then `(none)` for the
/// samples without the label. The store may rank the empty value among the others:
/// it is asked for one value more, and when the empty value is not among those it is
/// read on its own and taken out of the store's `[other]`, so the series still add up
/// to the selection.
pub(crate) fn sample_groups(
    store: &dyn ProfileReader,
    selector: &Selector,
    (from, to, step): (i64, i64, i64),
    label: &str,
    limit: usize,
) -> Result<Vec<(String, Vec<u64>)>, StoreError> {
    let groups = store.grouped_series(selector, from, to, step, label, limit.saturating_add(1))?;
    let first = from.div_euclid(step) * step;
    let n = ((to - first + step - 1) / step).max(0) as usize;
    let dense = |pts: &[(i64, u64)]| -> Vec<u64> {
        let mut out = vec![0u64; n];
        for (ts, c) in pts {
            if *ts >= first {
                if let Some(slot) = out.get_mut(((ts - first) / step) as usize) {
                    *slot = slot.saturating_add(*c);
                }
            }
        }
        out
    };
    let mut named: Vec<(String, Vec<u64>)> = Vec::new();
    let mut none: Option<Vec<u64>> = None;
    let mut other: Option<Vec<u64>> = None;
    for g in groups {
        let p = dense(&g.points);
        if g.value.is_empty() {
            none = Some(p);
        } else if g.value == OTHER_VALUE {
            other = Some(p);
        } else {
            named.push((g.value, p));
        }
    }
    let extra: Vec<(String, Vec<u64>)> = named.split_off(limit.min(named.len()));
    let add = |into: &mut Vec<u64>, from: &[u64]| {
        for (a, b) in into.iter_mut().zip(from) {
            *a = a.saturating_add(*b);
        }
    };
    if none.is_none() {
        if let Some(rest) = other.as_mut() {
            // The empty value, if any, is inside the store's `[other]`.
            let mut only_none = selector.clone();
            only_none.matchers.push(empty_matcher(label)?);
            let p = dense(&store.timeseries(&only_none, from, to, step)?);
            for (a, b) in rest.iter_mut().zip(&p) {
                *a = a.saturating_sub(*b);
            }
            none = Some(p);
        }
    }
    let has_extra = !extra.is_empty();
    for (_, p) in &extra {
        add(other.get_or_insert_with(|| vec![0; n]), p);
    }
    let mut out = named;
    if let Some(p) = other.filter(|p| has_extra || p.iter().any(|c| *c > 0)) {
        out.push((OTHER_VALUE.to_string(), p));
    }
    if let Some(p) = none.filter(|p| p.iter().any(|c| *c > 0)) {
        out.push((NONE_SERIES.to_string(), p));
    }
    Ok(out)
}

/// The matcher `label=""`: the samples (or targets) without the label.
pub(crate) fn empty_matcher(
    label: &str,
) -> Result<stackwatch_store::selector::Matcher, StoreError> {
    let mut m = Selector::parse(r#"{x=""}"#)
        .map_err(|e| StoreError::Invalid(e.to_string()))?
        .matchers
        .pop()
        .ok_or_else(|| StoreError::Invalid("empty matcher".into()))?;
    m.name = label.to_string();
    Ok(m)
}

/// Removes the frames `hide` matches from every stack of `b` (stacks that become equal
/// stay separate entries: the function sets and totals read from them are the same).
pub(crate) fn hide_in_buckets(b: &mut stackwatch_store::BucketedStacks, hide: &Hide) {
    if hide.is_active() {
        for s in &mut b.stacks {
            let kept: Vec<&str> = s.split(';').filter(|f| !hide.hides(f)).collect();
            *s = std::sync::Arc::from(kept.join(";"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_give_about_120_points() {
        assert_eq!(default_step(900), 10);
        assert_eq!(default_step(3600), 30);
        assert_eq!(default_step(86_400), 900);
    }

    #[test]
    fn buckets_sticking_out_of_the_range_are_averaged_over_the_part_inside() {
        // [5, 25) over buckets 0, 10, 20 of 10 s: 5 s, 10 s and 5 s inside.
        let scales = edge_scales(&[0, 10, 20], 10, 5, 25);
        assert_eq!(scales, vec![2.0, 1.0, 2.0]);
        assert_eq!(
            points(&[0, 10, 20], &[Some(1.0), Some(2.0), Some(3.0)], &scales),
            json!([[0, 2.0], [10, 2.0], [20, 6.0]])
        );
        assert_eq!(points(&[0], &[None], &[2.0]), json!([[0, null]]));
        // One bucket far longer than the range: scaled to the range itself.
        assert_eq!(
            edge_scales(&[0], 86_400, 1000, 1480),
            vec![86_400.0 / 480.0]
        );
        // An unaligned start needs one more bucket than the range divided by the step.
        assert_eq!(bucket_count(5, 25, 10), 3);
        assert_eq!(bucket_count(0, 20, 10), 2);
    }

    #[test]
    fn an_empty_selection_is_zero_not_minus_zero() {
        for m in [Measure::Periods, Measure::Rate, Measure::Gauge] {
            assert_eq!(
                json!(range_value(std::iter::empty(), 60, m)).to_string(),
                "0.0"
            );
        }
    }

    #[test]
    fn cores_are_periods_times_period_over_the_bucket_and_null_without_data() {
        let t = TargetSeries {
            labels: Default::default(),
            period_ns: 10_000_000,
            points: vec![(0, 300), (20, 150)],
        };
        let c = values(&[&t], &[0, 10, 20], 10, Measure::Periods);
        assert_eq!(c, vec![Some(0.3), None, Some(0.15)]);
    }

    #[test]
    fn rates_are_per_second_and_gauges_a_mean_per_profile_summed_over_targets() {
        // Allocations: 1000 bytes in a 10 s bucket is 100 bytes/s, whatever the period.
        let alloc = TargetSeries {
            labels: Default::default(),
            period_ns: 0,
            points: vec![(0, 1000), (10, 500)],
        };
        assert_eq!(
            values(&[&alloc], &[0, 10], 10, Measure::Rate),
            vec![Some(100.0), Some(50.0)]
        );
        // In use: two profiles a bucket (at 1 s resolution) of 100 and 300 bytes are
        // 200 bytes in use, not 400; a second target's one profile of 50 adds 50.
        let a = TargetSeries {
            labels: [("instance".to_string(), "a".to_string())].into(),
            period_ns: 0,
            points: vec![(0, 100), (5, 300), (12, 80)],
        };
        let b = TargetSeries {
            labels: [("instance".to_string(), "b".to_string())].into(),
            period_ns: 0,
            points: vec![(3, 50)],
        };
        assert_eq!(
            values(&[&a, &b], &[0, 10, 20], 10, Measure::Gauge),
            vec![Some(250.0), Some(80.0), None]
        );
        // Over the range: a's mean of its three profiles plus b's.
        assert_eq!(range_value([&a, &b], 30, Measure::Gauge), 160.0 + 50.0);
    }

    #[test]
    fn gauge_resolutions_divide_the_step_and_fit_the_store() {
        assert_eq!(gauge_resolution(0, 3600, Some(30), false), 1);
        assert_eq!(gauge_resolution(0, 3600, Some(30), true), 1);
        assert_eq!(gauge_resolution(0, 7 * 86_400, Some(7200), false), 10);
        assert_eq!(gauge_resolution(0, 7 * 86_400, Some(7200), true), 60);
        assert_eq!(gauge_resolution(0, 7 * 86_400, None, true), 60);
        assert_eq!(gauge_resolution(0, 1_000_000, Some(7), false), 7);
    }

    #[test]
    fn every_type_has_a_measure_and_a_series_unit() {
        for t in crate::profile_type::ALL_TYPES {
            let unit = t.series_unit();
            match Measure::of(t) {
                Measure::Periods => assert!(unit == "cores" || unit.ends_with("_per_second")),
                Measure::Rate => assert!(unit.ends_with("_per_second"), "{t}"),
                Measure::Gauge => assert!(unit == "bytes" || unit == "count", "{t}"),
            }
        }
    }
}
