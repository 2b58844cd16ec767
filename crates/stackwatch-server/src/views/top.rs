//! `GET /api/top`: functions by self or total counts, runtime plumbing marked.

#![allow(clippy::result_large_err)]

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stackwatch_profile::views::{is_plumbing, thread_roots};

use crate::profile_type::ProfileType;
use crate::query::read;
use crate::request::{Hide, QueryParams, Selection};
use crate::scope::ReadScope;
use crate::state::ApiState;

use super::measure::{range_value, raw_since, read_series, Measure};

/// `GET /api/top`: functions by self (default) or total counts, thread roots and
/// runtime plumbing marked `plumbing`; `hide=REGEX` removes frames first. `total` is
/// the selection's counts in `unit`; `average` its value over the range in
/// `average_unit` (the unit of `/api/timeseries`); `total_cores` the same for CPU.
pub async fn top(
    State(st): State<ApiState>,
    scope: ReadScope,
    sel: Selection,
    hide: Hide,
    q: QueryParams,
) -> Result<Response, Response> {
    let limit = q.limit(50, 10_000)?;
    let by_total = q.choice("order", "self", &["self", "total"])? == "total";
    let measure = Measure::of(sel.profile_type);
    let raw_since = raw_since(&st);
    read(&st, &scope, move |store| {
        let p = hide.apply(store.profile(&sel.selector, sel.from, sel.to)?);
        let range = sel.to - sel.from;
        let series = read_series(
            store,
            &sel.selector,
            (sel.from, sel.to, None),
            measure,
            raw_since,
        )?;
        let average = range_value(&series, range, measure);
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
        let mut out = json!({
            "type": sel.profile_type.name(),
            "total": p.total(),
            "unit": sel.profile_type.unit().name(),
            "average": average,
            "average_unit": sel.profile_type.series_unit(),
            "order": if by_total { "total" } else { "self" },
            "functions": functions,
        });
        if sel.profile_type == ProfileType::Cpu {
            out["total_cores"] = json!(average);
        }
        Ok(Json(out).into_response())
    })
    .await
}
