//! The label routes: which label names exist (`/api/labels`, `/api/label-keys`), a
//! label's values (`/api/label/{name}/values`) and the profile types stored
//! (`/api/profile-types`), each as the request's scope sees the store.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::profile_type::{ProfileType, ALL_TYPES, PROFILE_TYPE_LABEL};
use crate::query::read;
use crate::request::QueryParams;
use crate::scope::ReadScope;
use crate::state::ApiState;

/// `GET /api/labels`: every label name a selector or `group_by` can use, target and
/// sample labels together, sorted.
pub async fn labels(State(st): State<ApiState>, scope: ReadScope) -> Response {
    match read(&st, &scope, |store| store.label_keys()).await {
        Ok(keys) => {
            let names: BTreeSet<String> = keys
                .target
                .into_iter()
                .chain(keys.sample)
                .filter(|k| !k.starts_with("__"))
                .collect();
            Json(names).into_response()
        }
        Err(r) => r,
    }
}

/// `GET /api/label-keys`: the label names by what they label, `{"target": [...],
/// "sample": [...]}` (a name that is both counts as a target label, as selectors do).
pub async fn label_keys(State(st): State<ApiState>, scope: ReadScope) -> Response {
    match read(&st, &scope, |store| store.label_keys()).await {
        Ok(keys) => Json(serde_json::json!({
            "target": keys.target.iter().filter(|k| !k.starts_with("__")).collect::<Vec<_>>(),
            "sample": keys.sample,
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /api/profile-types`: every profile type with the unit of its counts (`unit`), the
/// unit of its `/api/timeseries` values (`ProfileType::series_unit`), and whether the store holds any
/// of it (`"stored"`; CPU is always listed first, the default).
pub async fn profile_types(State(st): State<ApiState>, scope: ReadScope) -> Response {
    match read(&st, &scope, |store| {
        store.label_values(PROFILE_TYPE_LABEL, 1000)
    })
    .await
    {
        Ok(stored) => {
            let list: Vec<serde_json::Value> = ALL_TYPES
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name(),
                        "unit": t.unit().name(),
                        "series_unit": t.series_unit(),
                        "stored": *t == ProfileType::Cpu || stored.iter().any(|s| s == t.name()),
                    })
                })
                .collect();
            Json(list).into_response()
        }
        Err(r) => r,
    }
}

/// Values `/api/label/{name}/values` answers with unless `limit` says otherwise.
pub const DEFAULT_LABEL_VALUES: usize = 10_000;

/// The most `limit` may ask of `/api/label/{name}/values`.
pub const MAX_LABEL_VALUES: usize = 100_000;

/// `GET /api/label/{name}/values`: the values of a target or sample label, sorted, at
/// most `limit` (default [`DEFAULT_LABEL_VALUES`]).
pub async fn label_values(
    State(st): State<ApiState>,
    scope: ReadScope,
    Path(name): Path<String>,
    q: QueryParams,
) -> Response {
    let limit = match q.limit(DEFAULT_LABEL_VALUES, MAX_LABEL_VALUES) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    match read(&st, &scope, move |store| store.label_values(&name, limit)).await {
        Ok(values) => Json(values).into_response(),
        Err(r) => r,
    }
}
