//! The analysis routes: CPU over time in cores (`/api/timeseries`), top functions
//! (`/api/top`), the sandwich of one function (`/api/sandwich`, `/api/sandwich.svg`) and
//! the verdict of what changed (`/api/changes`). docs/api.md documents each.
//!
//! Counts are periods; a target's periods times its sampling period is CPU time, so a
//! bucket's CPU in cores is that over the bucket's length. Targets whose period is
//! unknown (folded text) count at [`DEFAULT_PERIOD_NS`].

#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stackwatch_profile::views::{is_plumbing, sandwich, thread_roots};
use stackwatch_store::{ProfileStore, Selector, StoreError, TargetSeries, OTHER_VALUE};

use crate::query::{
    apply_hide, hide_param, param_err, parse_request, read, selection, svg_options, Params,
};
use crate::state::ApiState;

/// The sampling period assumed for targets that do not send one (99 Hz).
pub const DEFAULT_PERIOD_NS: u64 = 10_101_010;

/// A step that gives about 120 points, rounded to a readable length.
fn default_step(range: i64) -> i64 {
    const STEPS: [i64; 12] = [
        10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21_600, 86_400,
    ];
    let want = range / 120;
    STEPS.iter().copied().find(|s| *s >= want).unwrap_or(86_400)
}

/// Buckets of `step` seconds on multiples of the step that cover `[from, to)`.
fn bucket_count(from: i64, to: i64, step: i64) -> i64 {
    let first = from.div_euclid(step) * step;
    (to - first + step - 1) / step
}

fn step_param(q: &HashMap<String, String>, from: i64, to: i64) -> Result<i64, Response> {
    match q.get("step") {
        None => Ok(default_step(to - from)),
        Some(s) => match humantime::parse_duration(s)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .or_else(|_| s.parse::<i64>().map_err(|_| ()))
        {
            // Counted as the store counts them: an unaligned `from` adds a bucket.
            Ok(v) if v >= 1 && bucket_count(from, to, v) <= 10_000 => Ok(v),
            Ok(_) => Err(param_err(
                "step",
                "must be at least 1 s and give at most 10 000 points",
            )
            .into_response()),
            Err(_) => Err(param_err("step", format!("{s:?}: not a duration")).into_response()),
        },
    }
}

fn limit_param(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, Response> {
    match q.get("limit").map(|l| l.parse::<usize>()) {
        None => Ok(default),
        Some(Ok(l)) if (1..=max).contains(&l) => Ok(l),
        Some(_) => Err(param_err("limit", format!("must be 1..={max}")).into_response()),
    }
}

fn period_of(t: &TargetSeries) -> f64 {
    (if t.period_ns == 0 {
        DEFAULT_PERIOD_NS
    } else {
        t.period_ns
    }) as f64
}

/// Cores per bucket of a group of targets: `None` where none of them has data.
fn cores(targets: &[&TargetSeries], buckets: &[i64], step: i64) -> Vec<Option<f64>> {
    let index: HashMap<i64, usize> = buckets.iter().enumerate().map(|(i, b)| (*b, i)).collect();
    let mut out = vec![None; buckets.len()];
    for t in targets {
        let scale = period_of(t) / 1e9 / step as f64;
        for (ts, periods) in &t.points {
            if let Some(i) = index.get(ts) {
                *out[*i].get_or_insert(0.0) += *periods as f64 * scale;
            }
        }
    }
    out
}

/// Total CPU seconds of some targets.
fn cpu_seconds<'a>(targets: impl IntoIterator<Item = &'a TargetSeries>) -> f64 {
    targets
        .into_iter()
        .map(|t| t.points.iter().map(|(_, p)| *p as f64).sum::<f64>() * period_of(t) / 1e9)
        .sum::<f64>()
        // An empty float sum is -0.0; JSON should say 0.
        + 0.0
}

/// `[[bucket, value], ...]`, each value multiplied by its bucket's scale (a bucket that
/// sticks out of the range is averaged over the part of it inside).
fn points(buckets: &[i64], values: &[Option<f64>], scales: &[f64]) -> Value {
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
fn edge_scales(buckets: &[i64], step: i64, from: i64, to: i64) -> Vec<f64> {
    buckets
        .iter()
        .map(|b| {
            let inside = (to.min(b + step) - from.max(*b)).max(1);
            step as f64 / inside.min(step) as f64
        })
        .collect()
}

/// The name of the series of targets (or samples) without the `group_by` label.
const NONE_SERIES: &str = "(none)";

/// `group_by` over a target label: one series per value, the `limit` largest (by CPU
/// over the range) first, the rest summed as `[other]`, then the targets without the
/// label as `(none)`.
fn target_groups(
    series: &[TargetSeries],
    label: &str,
    limit: usize,
    buckets: &[i64],
    step: i64,
    scales: &[f64],
) -> Vec<Value> {
    let mut groups: BTreeMap<String, Vec<&TargetSeries>> = BTreeMap::new();
    for t in series {
        let v = t.labels.get(label).cloned().unwrap_or_default();
        groups.entry(v).or_default().push(t);
    }
    let none = groups.remove("");
    let mut ranked: Vec<(String, Vec<&TargetSeries>, f64)> = groups
        .into_iter()
        .map(|(k, ts)| {
            let s = cpu_seconds(ts.iter().copied());
            (k, ts, s)
        })
        .collect();
    ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let rest: Vec<&TargetSeries> = ranked
        .iter()
        .skip(limit)
        .flat_map(|(_, ts, _)| ts.iter().copied())
        .collect();
    let mut list: Vec<Value> = ranked
        .iter()
        .take(limit)
        .map(|(name, ts, _)| {
            json!({"name": name, "points": points(buckets, &cores(ts, buckets, step), scales)})
        })
        .collect();
    if !rest.is_empty() {
        list.push(json!({"name": OTHER_VALUE, "points": points(buckets, &cores(&rest, buckets, step), scales)}));
    }
    if let Some(ts) = none {
        list.push(json!({"name": NONE_SERIES, "points": points(buckets, &cores(&ts, buckets, step), scales)}));
    }
    list
}

/// `group_by` over a sample label, in periods per bucket: the `limit` values with the
/// most periods (the store's order), `[other]` for the rest, then `(none)` for the
/// samples without the label. The store may rank the empty value among the others:
/// it is asked for one value more, and when the empty value is not among those it is
/// read on its own and taken out of the store's `[other]`, so the series still add up
/// to the selection.
fn sample_groups(
    store: &dyn ProfileStore,
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
fn empty_matcher(label: &str) -> Result<stackwatch_store::selector::Matcher, StoreError> {
    let mut m = Selector::parse(r#"{x=""}"#)
        .map_err(|e| StoreError::Invalid(e.to_string()))?
        .matchers
        .pop()
        .ok_or_else(|| StoreError::Invalid("empty matcher".into()))?;
    m.name = label.to_string();
    Ok(m)
}

/// Per bucket, the selection's sampling period in ns: the period-weighted mean over
/// its targets (each target's period weighted by its periods in the bucket; a fleet
/// that shares one period gets exactly it); `None` where nothing was stored.
fn bucket_periods_ns(series: &[TargetSeries], buckets: &[i64]) -> Vec<Option<f64>> {
    let index: HashMap<i64, usize> = buckets.iter().enumerate().map(|(i, b)| (*b, i)).collect();
    let mut sums: Vec<Option<(f64, f64)>> = vec![None; buckets.len()];
    for t in series {
        let period = period_of(t);
        for (ts, periods) in &t.points {
            if let Some(i) = index.get(ts) {
                let slot = sums[*i].get_or_insert((0.0, 0.0));
                slot.0 += *periods as f64 * period;
                slot.1 += *periods as f64;
            }
        }
    }
    sums.into_iter()
        .map(|s| {
            s.map(|(ns, periods)| {
                if periods > 0.0 {
                    ns / periods
                } else {
                    DEFAULT_PERIOD_NS as f64
                }
            })
        })
        .collect()
}

/// `GET /api/timeseries`: CPU in cores per bucket, `null` where nothing was stored;
/// `group_by=LABEL` adds one series per value (top `limit`, the rest `[other]`);
/// `function=NAME` adds that function's self and total CPU.
pub async fn timeseries(State(st): State<ApiState>, q: Params) -> Result<Response, Response> {
    let (q, sel) = parse_request(&st, q)?;
    let step = step_param(&q, sel.from, sel.to)?;
    let limit = limit_param(&q, 8, 100)?;
    let group_by = q.get("group_by").filter(|g| !g.is_empty()).cloned();
    let function = q.get("function").filter(|f| !f.is_empty()).cloned();
    let hide = hide_param(&st, &q).map_err(IntoResponse::into_response)?;
    let (from, to) = (sel.from, sel.to);
    let lag = 2 * st.cfg.scrape.interval.as_secs() as i64;
    let now = stackwatch_profile::clock::unix_s();
    read(&st, move |store| {
        let series = store.target_series(&sel.selector, from, to, step)?;
        let first = from.div_euclid(step) * step;
        let buckets: Vec<i64> = (first..to).step_by(step as usize).collect();
        let all: Vec<&TargetSeries> = series.iter().collect();
        let total = cores(&all, &buckets, step);
        // Buckets that stick out of the range (the first when `from` is not on a
        // multiple of the step, the last when `to` is not): every series is averaged
        // over the part inside. The last is marked while data for it may still arrive.
        let scales = edge_scales(&buckets, step, from, to);
        let mut partial = Value::Null;
        if let Some(&last) = buckets.last() {
            let covered = to.min(last + step) - from.max(last);
            if covered < step || last + step > now - lag {
                partial = json!({ "ts": last, "covered_s": covered.max(1) });
            }
        }
        let mut out = json!({
            "from": from,
            "to": to,
            "step": step,
            "unit": "cores",
            "points": points(&buckets, &total, &scales),
            "partial": partial,
        });
        if let Some(label) = &group_by {
            // A name some selected target carries is a target label; otherwise the
            // store says (a name that is both is a target label, as in selectors).
            let by_target = series.iter().any(|t| t.labels.contains_key(label))
                || !store.label_keys()?.sample.iter().any(|k| k == label);
            let list = if by_target {
                target_groups(&series, label, limit, &buckets, step, &scales)
            } else {
                let periods = sample_groups(store, &sel.selector, (from, to, step), label, limit)?;
                let ns = bucket_periods_ns(&series, &buckets);
                periods
                    .into_iter()
                    .map(|(name, p)| {
                        let values: Vec<Option<f64>> = p
                            .iter()
                            .zip(&ns)
                            .map(|(c, ns)| ns.map(|ns| *c as f64 * ns / 1e9 / step as f64))
                            .collect();
                        json!({"name": name, "points": points(&buckets, &values, &scales)})
                    })
                    .collect()
            };
            out["group_by"] = json!(label);
            out["series"] = Value::Array(list);
        }
        if let Some(name) = &function {
            // Periods to cores with the selection's own mean period.
            let periods: f64 = series
                .iter()
                .flat_map(|t| t.points.iter().map(|(_, p)| *p as f64))
                .sum();
            let ns_per_period = if periods > 0.0 {
                cpu_seconds(&series) * 1e9 / periods
            } else {
                DEFAULT_PERIOD_NS as f64
            };
            let mut b = store.bucketed_stacks(&sel.selector, from, to, step)?;
            hide_in_buckets(&mut b, hide.as_ref());
            let mut self_c: HashMap<i64, f64> = HashMap::new();
            let mut total_c: HashMap<i64, f64> = HashMap::new();
            let mut seen: HashMap<i64, ()> = HashMap::new();
            for (ts, stack, count) in &b.counts {
                seen.insert(*ts, ());
                let frames = &b.stacks[*stack as usize];
                if frames.split(';').any(|f| f == name) {
                    *total_c.entry(*ts).or_default() += *count as f64;
                    if frames.rsplit(';').next() == Some(name.as_str()) {
                        *self_c.entry(*ts).or_default() += *count as f64;
                    }
                }
            }
            let scale = ns_per_period / 1e9 / step as f64;
            let to_points = |m: &HashMap<i64, f64>| -> Vec<Option<f64>> {
                buckets
                    .iter()
                    .map(|bk| {
                        seen.contains_key(bk)
                            .then(|| m.get(bk).copied().unwrap_or(0.0) * scale)
                    })
                    .collect()
            };
            out["function"] = json!({
                "name": name,
                "self": points(&buckets, &to_points(&self_c), &scales),
                "total": points(&buckets, &to_points(&total_c), &scales),
            });
        }
        Ok(Json(out).into_response())
    })
    .await
}

/// `GET /api/top`: functions by self (default) or total periods, thread roots and
/// runtime plumbing marked `plumbing`; `hide=REGEX` removes frames first.
pub async fn top(State(st): State<ApiState>, q: Params) -> Result<Response, Response> {
    let (q, sel) = parse_request(&st, q)?;
    let limit = limit_param(&q, 50, 10_000)?;
    let by_total = match q.get("order").map(String::as_str) {
        None | Some("self") => false,
        Some("total") => true,
        Some(_) => return Err(param_err("order", "must be self or total").into_response()),
    };
    let hide = hide_param(&st, &q).map_err(IntoResponse::into_response)?;
    read(&st, move |store| {
        let p = apply_hide(
            store.profile(&sel.selector, sel.from, sel.to)?,
            hide.as_ref(),
        );
        let series = store.target_series(&sel.selector, sel.from, sel.to, sel.to - sel.from)?;
        let total_cores = cpu_seconds(&series) / (sel.to - sel.from) as f64;
        let roots = thread_roots(&p);
        let mut all = p.top_functions(usize::MAX);
        if !by_total {
            all.sort_unstable_by(|a, b| {
                b.self_count
                    .cmp(&a.self_count)
                    .then(b.total_count.cmp(&a.total_count))
                    .then_with(|| a.name.cmp(&b.name))
            });
        }
        let functions: Vec<Value> = all
            .iter()
            .take(limit)
            .map(|f| {
                json!({
                    "name": f.name,
                    "self": f.self_count,
                    "total": f.total_count,
                    "plumbing": roots.contains(f.name.as_str()) || is_plumbing(&f.name),
                })
            })
            .collect();
        Ok(Json(json!({
            "total": p.total(),
            "total_cores": total_cores,
            "order": if by_total { "total" } else { "self" },
            "functions": functions,
        }))
        .into_response())
    })
    .await
}

fn function_param(q: &HashMap<String, String>) -> Result<String, Response> {
    match q.get("function").filter(|f| !f.is_empty()) {
        Some(f) if f.len() <= 4096 => Ok(f.clone()),
        Some(_) => Err(param_err("function", "longer than 4096 bytes").into_response()),
        None => Err(param_err("function", "required: the frame name").into_response()),
    }
}

/// `GET /api/sandwich`: the callers and callees of `function`, as folded text, merged
/// from the whole profile before anything is cut.
pub async fn sandwich_json(State(st): State<ApiState>, q: Params) -> Result<Response, Response> {
    let (q, sel) = parse_request(&st, q)?;
    let function = function_param(&q)?;
    let hide = hide_param(&st, &q).map_err(IntoResponse::into_response)?;
    read(&st, move |store| {
        let p = apply_hide(
            store.profile(&sel.selector, sel.from, sel.to)?,
            hide.as_ref(),
        );
        let s = sandwich(&p, &function);
        Ok(Json(json!({
            "function": function,
            "self": s.self_count,
            "total": s.total_count,
            "profile_total": p.total(),
            "callers": s.callers.to_folded(),
            "callees": s.callees.to_folded(),
        }))
        .into_response())
    })
    .await
}

/// `GET /api/sandwich.svg?function=&side=callers|callees`: one side as a flamegraph with
/// the function at its root.
pub async fn sandwich_svg(State(st): State<ApiState>, q: Params) -> Result<Response, Response> {
    let (q, sel) = parse_request(&st, q)?;
    let function = function_param(&q)?;
    let callers = match q.get("side").map(String::as_str) {
        None | Some("callees") => false,
        Some("callers") => true,
        Some(_) => return Err(param_err("side", "must be callers or callees").into_response()),
    };
    let hide = hide_param(&st, &q).map_err(IntoResponse::into_response)?;
    let title = if callers {
        "Callers (the function at the root, its callers above)"
    } else {
        "Callees (the function at the root, what it calls above)"
    };
    let opts = svg_options(&q, title, function.chars().take(120).collect())
        .map_err(IntoResponse::into_response)?;
    read(&st, move |store| {
        let p = apply_hide(
            store.profile(&sel.selector, sel.from, sel.to)?,
            hide.as_ref(),
        );
        let s = sandwich(&p, &function);
        let side = if callers { s.callers } else { s.callees };
        Ok((
            [(header::CONTENT_TYPE, "image/svg+xml")],
            side.to_svg(&opts),
        )
            .into_response())
    })
    .await
}

/// Removes the frames `hide` matches from every stack of `b` (stacks that become equal
/// stay separate entries: the function sets and totals read from them are the same).
fn hide_in_buckets(b: &mut stackwatch_store::BucketedStacks, hide: Option<&regex::Regex>) {
    if let Some(re) = hide {
        for s in &mut b.stacks {
            let kept: Vec<&str> = s.split(';').filter(|f| !re.is_match(f)).collect();
            *s = std::sync::Arc::from(kept.join(";"));
        }
    }
}

/// Totals of one side of a comparison: cores over its range, windows tested, cores per
/// instance.
fn side_summary(series: &[TargetSeries], range_s: i64, buckets: usize) -> Value {
    let mut instances: BTreeMap<String, f64> = BTreeMap::new();
    for t in series {
        let name = t
            .labels
            .get("instance")
            .cloned()
            .unwrap_or_else(|| "(none)".into());
        *instances.entry(name).or_default() += cpu_seconds([t]) / range_s as f64;
    }
    json!({
        "cores": cpu_seconds(series) / range_s as f64,
        "windows": buckets,
        "instances": instances,
    })
}

/// Buckets for the verdict: about 30 per side. A bucket shorter than a window is empty
/// or holds one window (empty buckets are not samples), so short ranges test windows.
fn verdict_step(range: i64) -> i64 {
    (range / 30).max(1)
}

/// `GET /api/changes`: `base`, `base_from`, `base_to` against `query`, `from`, `to`; the
/// functions whose share changed more than the windows' own variation explains.
pub async fn changes(State(st): State<ApiState>, q: Params) -> Result<Response, Response> {
    let (q, target) = parse_request(&st, q)?;
    let base = selection(&st, &q, "base", Some(&target)).map_err(IntoResponse::into_response)?;
    let limit = limit_param(&q, 50, 1000)?;
    let hide = hide_param(&st, &q).map_err(IntoResponse::into_response)?;
    read(&st, move |store| {
        let mut sides = Vec::new();
        for sel in [&base, &target] {
            let step = verdict_step(sel.to - sel.from);
            let mut b = store.bucketed_stacks(&sel.selector, sel.from, sel.to, step)?;
            hide_in_buckets(&mut b, hide.as_ref());
            let series = store.target_series(&sel.selector, sel.from, sel.to, sel.to - sel.from)?;
            sides.push((b, series, sel.to - sel.from));
        }
        let (changes, nb, nt) = crate::verdict::changes(&sides[0].0, &sides[1].0, limit);
        Ok(Json(json!({
            "method": "Welch's t-test on per-window shares (each side cut into ~30 time buckets), Benjamini-Hochberg at alpha; delta is target minus base share with its 99% interval",
            "alpha": crate::verdict::ALPHA,
            "base": side_summary(&sides[0].1, sides[0].2, nb),
            "target": side_summary(&sides[1].1, sides[1].2, nt),
            "changes": changes,
        }))
        .into_response())
    })
    .await
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
    fn verdict_buckets_are_about_30_per_side() {
        assert_eq!(verdict_step(900), 30);
        assert_eq!(verdict_step(20), 1);
        assert_eq!(verdict_step(3600), 120);
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
    fn an_empty_selection_is_zero_cores_not_minus_zero() {
        assert_eq!(json!(cpu_seconds(std::iter::empty())).to_string(), "0.0");
    }

    #[test]
    fn cores_are_periods_times_period_over_the_bucket_and_null_without_data() {
        let t = TargetSeries {
            labels: Default::default(),
            period_ns: 10_000_000,
            points: vec![(0, 300), (20, 150)],
        };
        let c = cores(&[&t], &[0, 10, 20], 10);
        assert_eq!(c, vec![Some(0.3), None, Some(0.15)]);
    }
}
