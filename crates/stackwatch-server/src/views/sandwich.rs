//! `GET /api/sandwich` and `/api/sandwich.svg`: the callers and callees of one function.

#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use stackwatch_profile::views::sandwich;

use crate::query::{
    apply_hide, flamegraph_names, hide_param, param_err, parse_request, read, svg_options, Params,
};
use crate::scope::ReadScope;
use crate::state::ApiState;

fn function_param(q: &HashMap<String, String>) -> Result<String, Response> {
    match q.get("function").filter(|f| !f.is_empty()) {
        Some(f) if f.len() <= 4096 => Ok(f.clone()),
        Some(_) => Err(param_err("function", "longer than 4096 bytes").into_response()),
        None => Err(param_err("function", "required: the frame name").into_response()),
    }
}

/// `GET /api/sandwich`: the callers and callees of `function`, as folded text, merged
/// from the whole profile before anything is cut.
pub async fn sandwich_json(
    State(st): State<ApiState>,
    scope: ReadScope,
    q: Params,
) -> Result<Response, Response> {
    let (q, sel) = parse_request(&st, q)?;
    let function = function_param(&q)?;
    let hide = hide_param(&st, &q).map_err(IntoResponse::into_response)?;
    read(&st, &scope, move |store| {
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
pub async fn sandwich_svg(
    State(st): State<ApiState>,
    scope: ReadScope,
    q: Params,
) -> Result<Response, Response> {
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
    let mut opts = svg_options(&q, title, function.chars().take(120).collect())
        .map_err(IntoResponse::into_response)?;
    opts.count_name = flamegraph_names(sel.profile_type).1.to_owned();
    read(&st, &scope, move |store| {
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
