//! `GET /api/sandwich` and `/api/sandwich.svg`: the callers and callees of one function.

#![allow(clippy::result_large_err)]

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use stackwatch_profile::views::sandwich;

use crate::query::read;
use crate::request::{Hide, ParamError, QueryParams, Selection, SvgLayout};
use crate::scope::ReadScope;
use crate::state::ApiState;

use super::profile::flamegraph_names;

/// `function`: the frame name the sandwich is of (required, at most 4 KiB).
fn function_param(q: &QueryParams) -> Result<String, ParamError> {
    match q.non_empty("function") {
        Some(f) if f.len() <= 4096 => Ok(f.to_owned()),
        Some(_) => Err(ParamError::new("function", "longer than 4096 bytes")),
        None => Err(ParamError::new("function", "required: the frame name")),
    }
}

/// `GET /api/sandwich`: the callers and callees of `function`, as folded text, merged
/// from the whole profile before anything is cut.
pub async fn sandwich_json(
    State(st): State<ApiState>,
    scope: ReadScope,
    sel: Selection,
    hide: Hide,
    q: QueryParams,
) -> Result<Response, Response> {
    let function = function_param(&q)?;
    read(&st, &scope, move |store| {
        let p = hide.apply(store.profile(&sel.selector, sel.from, sel.to)?);
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
pub async fn sandwich_svg(
    State(st): State<ApiState>,
    scope: ReadScope,
    sel: Selection,
    layout: SvgLayout,
    hide: Hide,
    q: QueryParams,
) -> Result<Response, Response> {
    let function = function_param(&q)?;
    let callers = q.choice("side", "callees", &["callers", "callees"])? == "callers";
    let title = if callers {
        "Callers (the function at the root, its callers above)"
    } else {
        "Callees (the function at the root, what it calls above)"
    };
    let opts = layout.options(
        title,
        function.chars().take(120).collect(),
        flamegraph_names(sel.profile_type).1,
    );
    read(&st, &scope, move |store| {
        let p = hide.apply(store.profile(&sel.selector, sel.from, sel.to)?);
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
