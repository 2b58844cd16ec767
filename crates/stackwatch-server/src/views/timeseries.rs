//! `GET /api/timeseries`: a selection per bucket in its type's unit, optionally one
//! series per value of a label, and one function's self and total.

#![allow(clippy::result_large_err)]

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stackwatch_store::TargetSeries;

use crate::query::read;
use crate::request::{Hide, QueryParams, Selection};
use crate::scope::ReadScope;
use crate::state::ApiState;

use super::measure::{
    bucket_index, count_values, edge_scales, hide_in_buckets, points, raw_counts, raw_since,
    read_series, sample_groups, step_param, target_groups, values, Measure, DEFAULT_PERIOD_NS,
};

/// `GET /api/timeseries`: the selection per bucket in its type's unit (`unit`: cores for
/// CPU), `null` where nothing was stored; `group_by=LABEL` adds one series per value
/// (top `limit`, the rest `[other]`); `function=NAME` adds that function's self and total.
pub async fn timeseries(
    State(st): State<ApiState>,
    scope: ReadScope,
    sel: Selection,
    hide: Hide,
    q: QueryParams,
) -> Result<Response, Response> {
    let step = step_param(&q, sel.from, sel.to)?;
    let limit = q.limit(8, 100)?;
    let group_by = q.non_empty("group_by").map(str::to_owned);
    let function = q.non_empty("function").map(str::to_owned);
    let (from, to) = (sel.from, sel.to);
    let lag = 2 * st.cfg.scrape.interval.as_secs() as i64;
    let now = stackwatch_profile::clock::unix_s();
    let measure = Measure::of(sel.profile_type);
    let raw_since = raw_since(&st);
    read(&st, &scope, move |store| {
        let series = read_series(
            store,
            &sel.selector,
            (from, to, Some(step)),
            measure,
            raw_since,
        )?;
        let first = from.div_euclid(step) * step;
        let buckets: Vec<i64> = (first..to).step_by(step as usize).collect();
        let all: Vec<&TargetSeries> = series.iter().collect();
        let total = values(&all, &buckets, step, measure);
        let counts = raw_counts(&all, &buckets, step);
        // Buckets that stick out of the range (the first when `from` is not on a
        // multiple of the step, the last when `to` is not): every series is averaged
        // over the part inside. A gauge's mean per profile is not a rate: it stays.
        // The last is marked while data for it may still arrive.
        let scales = if measure == Measure::Gauge {
            vec![1.0; buckets.len()]
        } else {
            edge_scales(&buckets, step, from, to)
        };
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
            "type": sel.profile_type.name(),
            "unit": sel.profile_type.series_unit(),
            "points": points(&buckets, &total, &scales),
            "partial": partial,
        });
        // What one count is worth per bucket, and over the range where a bucket has
        // none (the selection's mean).
        let (sum_v, sum_c) = total
            .iter()
            .zip(&counts)
            .filter_map(|(v, c)| v.zip(*c))
            .fold((0.0, 0.0), |(a, b), (v, c)| (a + v, b + c));
        let mean_worth = if sum_c > 0.0 {
            sum_v / sum_c
        } else {
            match measure {
                Measure::Periods => DEFAULT_PERIOD_NS as f64 / 1e9 / step as f64,
                Measure::Rate => 1.0 / step as f64,
                Measure::Gauge => 1.0,
            }
        };
        let worth = count_values(&total, &counts, mean_worth);
        if let Some(label) = &group_by {
            // A name some selected target carries is a target label; otherwise the
            // store says (a name that is both is a target label, as in selectors).
            let by_target = series.iter().any(|t| t.labels.contains_key(label))
                || !store.label_keys()?.sample.iter().any(|k| k == label);
            let list = if by_target {
                target_groups(&series, label, limit, (&buckets, step, measure), &scales)
            } else {
                let grouped = sample_groups(store, &sel.selector, (from, to, step), label, limit)?;
                grouped
                    .into_iter()
                    .map(|(name, p)| {
                        // A bucket without data in the selection stays a gap.
                        let values: Vec<Option<f64>> = p
                            .iter()
                            .zip(&worth)
                            .zip(&total)
                            .map(|((c, w), t)| t.map(|_| *c as f64 * w))
                            .collect();
                        json!({"name": name, "points": points(&buckets, &values, &scales)})
                    })
                    .collect()
            };
            out["group_by"] = json!(label);
            out["series"] = Value::Array(list);
        }
        if let Some(name) = &function {
            let mut b = store.bucketed_stacks(&sel.selector, from, to, step)?;
            hide_in_buckets(&mut b, &hide);
            let n = buckets.len();
            let mut self_c: Vec<f64> = vec![0.0; n];
            let mut total_c: Vec<f64> = vec![0.0; n];
            let mut seen: Vec<bool> = vec![false; n];
            for (ts, stack, count) in &b.counts {
                let Some(i) = bucket_index(*ts, first, step, n) else {
                    continue;
                };
                seen[i] = true;
                let Some(frames) = b.stacks.get(*stack as usize) else {
                    continue;
                };
                if frames.split(';').any(|f| f == name) {
                    total_c[i] += *count as f64;
                    if frames.rsplit(';').next() == Some(name.as_str()) {
                        self_c[i] += *count as f64;
                    }
                }
            }
            let to_points = |c: &[f64]| -> Vec<Option<f64>> {
                (0..n).map(|i| seen[i].then(|| c[i] * worth[i])).collect()
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
