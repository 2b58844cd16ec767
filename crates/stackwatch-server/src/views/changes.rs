//! `GET /api/changes`: the functions whose share changed between a base and a target by
//! more than the windows' own variation explains (the statistics are `verdict.rs`'s).
//!
//! The verdict comes from the data, not from the range asked: each side is tested over
//! the part of its range where it has samples (found at a 10 s grain whatever the range,
//! so a young service reads the same over the last hour as over the last 15 minutes),
//! cut into about 30 buckets; a side with fewer than two buckets of samples is not
//! tested, and the answer says so (`verdict: "insufficient_data"` and why).

#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stackwatch_store::{ProfileReader, StoreError, TargetSeries};

use crate::profile_type::ProfileType;
use crate::query::read;
use crate::request::{Comparison, Hide, QueryParams, Selection};
use crate::scope::ReadScope;
use crate::state::ApiState;

use super::measure::{default_step, hide_in_buckets, range_value, raw_since, read_series, Measure};

/// Where a side's samples are: `[from, to)` within its range, on the edges of the
/// buckets that hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataSpan {
    from: i64,
    to: i64,
}

/// The part of `sel`'s range that holds samples, or `None`. Found in two reads: the
/// whole range at about 120 buckets, then the span those buckets give at a finer step
/// (10 s for any span under 20 minutes): edges on a grid of the data's size, not the
/// range's, so one fleet gives one span whatever range it is asked over.
fn data_span(store: &dyn ProfileReader, sel: &Selection) -> Result<Option<DataSpan>, StoreError> {
    let mut span = DataSpan {
        from: sel.from,
        to: sel.to,
    };
    for _ in 0..2 {
        let step = default_step(span.to - span.from);
        let series = store.target_series(&sel.selector, span.from, span.to, step)?;
        let nonzero = series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(_, c)| *c > 0)
            .map(|(ts, _)| *ts);
        let (first, last) = nonzero.fold((i64::MAX, i64::MIN), |(a, b), ts| (a.min(ts), b.max(ts)));
        if first > last {
            return Ok(None);
        }
        span = DataSpan {
            from: first.max(sel.from),
            to: (last + step).min(sel.to),
        };
    }
    Ok(Some(span))
}

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

/// Buckets for the verdict: about 30 per side's span of data. A bucket shorter than a
/// window is empty or holds one window (empty buckets are not samples), so short spans
/// test windows.
fn verdict_step(span: i64) -> i64 {
    (span / 30).max(1)
}

/// Why a comparison could not be tested, or `None` when both sides have at least
/// [`MIN_BUCKETS`](crate::verdict::MIN_BUCKETS) buckets of samples.
fn untestable(spans: [Option<DataSpan>; 2], buckets: (usize, usize)) -> Option<String> {
    for (name, span, n) in [
        ("base", spans[0], buckets.0),
        ("target", spans[1], buckets.1),
    ] {
        if span.is_none() {
            return Some(format!("the {name} has no data in its range"));
        }
        if n < crate::verdict::MIN_BUCKETS {
            return Some(format!(
                "the {name} has samples in {n} time bucket{}: at least {} on each side are needed to test a change",
                if n == 1 { "" } else { "s" },
                crate::verdict::MIN_BUCKETS
            ));
        }
    }
    None
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
        let mut spans = [None, None];
        for (i, sel) in [&base, &target].into_iter().enumerate() {
            spans[i] = data_span(store, sel)?;
            // A side without samples is an empty set of buckets (not a read of nothing).
            let b = match spans[i] {
                Some(span) => {
                    let step = verdict_step(span.to - span.from);
                    let mut b = store.bucketed_stacks(&sel.selector, span.from, span.to, step)?;
                    hide_in_buckets(&mut b, &hide);
                    b
                }
                None => stackwatch_store::BucketedStacks::default(),
            };
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
        let reason = untestable(spans, (nb, nt));
        let t = target.profile_type;
        let side = |i: usize, n: usize| {
            let (b, series, range) = &sides[i];
            let mut out = side_summary(series, *range, n, t);
            out["data_from"] = json!(spans[i].map(|s| s.from));
            out["data_to"] = json!(spans[i].map(|s| s.to));
            out["step"] = json!(spans[i].map(|_| b.step_s));
            out
        };
        Ok(Json(json!({
            "method": "Welch's t-test on per-bucket shares (each side's span of data cut into ~30 time buckets; buckets without samples are not samples), Benjamini-Hochberg at alpha; delta is target minus base share with its 99% interval",
            "alpha": crate::verdict::ALPHA,
            "type": t.name(),
            "verdict": if reason.is_some() { "insufficient_data" } else { "tested" },
            "reason": reason,
            "base": side(0, nb),
            "target": side(1, nt),
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
