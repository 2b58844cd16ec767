//! `GET /api/changes`: the functions whose share changed between a base and a target by
//! more than the windows' own variation explains (the statistics are `verdict.rs`'s).

#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stackwatch_store::TargetSeries;

use crate::profile_type::ProfileType;
use crate::query::read;
use crate::request::{Comparison, Hide, QueryParams};
use crate::scope::ReadScope;
use crate::state::ApiState;

use super::measure::{hide_in_buckets, range_value, raw_since, read_series, Measure};

/// Totals of one side of a comparison: its value over its range in the type's unit
/// (`cores` too for CPU), windows tested, the value per instance.
fn side_summary(
    series: &[TargetSeries],
    range_s: i64,
    buckets: usize,
    profile_type: ProfileType,
) -> Value {
    let measure = Measure::of(profile_type);
    let mut per_instance: BTreeMap<String, Vec<&TargetSeries>> = BTreeMap::new();
    for t in series {
        let name = t
            .labels
            .get("instance")
            .cloned()
            .unwrap_or_else(|| "(none)".into());
        per_instance.entry(name).or_default().push(t);
    }
    let instances: BTreeMap<String, f64> = per_instance
        .into_iter()
        .map(|(k, ts)| (k, range_value(ts, range_s, measure)))
        .collect();
    let value = range_value(series, range_s, measure);
    let mut out = json!({
        "value": value,
        "unit": profile_type.series_unit(),
        "windows": buckets,
        "instances": instances,
    });
    if profile_type == ProfileType::Cpu {
        out["cores"] = json!(value);
    }
    out
}

/// Buckets for the verdict: about 30 per side. A bucket shorter than a window is empty
/// or holds one window (empty buckets are not samples), so short ranges test windows.
fn verdict_step(range: i64) -> i64 {
    (range / 30).max(1)
}

/// `GET /api/changes`: `base`, `base_from`, `base_to` against `query`, `from`, `to`; the
/// functions whose share changed more than the windows' own variation explains.
pub async fn changes(
    State(st): State<ApiState>,
    scope: ReadScope,
    Comparison { base, target }: Comparison,
    hide: Hide,
    q: QueryParams,
) -> Result<Response, Response> {
    let limit = q.limit(50, 1000)?;
    let raw_since = raw_since(&st);
    read(&st, &scope, move |store| {
        let mut sides = Vec::new();
        for sel in [&base, &target] {
            let step = verdict_step(sel.to - sel.from);
            let mut b = store.bucketed_stacks(&sel.selector, sel.from, sel.to, step)?;
            hide_in_buckets(&mut b, &hide);
            let series = read_series(
                store,
                &sel.selector,
                (sel.from, sel.to, None),
                Measure::of(sel.profile_type),
                raw_since,
            )?;
            sides.push((b, series, sel.to - sel.from));
        }
        let (changes, nb, nt) = crate::verdict::changes(&sides[0].0, &sides[1].0, limit);
        let t = target.profile_type;
        Ok(Json(json!({
            "method": "Welch's t-test on per-window shares (each side cut into ~30 time buckets), Benjamini-Hochberg at alpha; delta is target minus base share with its 99% interval",
            "alpha": crate::verdict::ALPHA,
            "type": t.name(),
            "base": side_summary(&sides[0].1, sides[0].2, nb, t),
            "target": side_summary(&sides[1].1, sides[1].2, nt, t),
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
    fn verdict_buckets_are_about_30_per_side() {
        assert_eq!(verdict_step(900), 30);
        assert_eq!(verdict_step(20), 1);
        assert_eq!(verdict_step(3600), 120);
    }
}
