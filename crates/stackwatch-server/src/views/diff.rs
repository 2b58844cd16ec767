//! `GET /api/diff.{svg,folded}`: a target against a base, as a differential flamegraph
//! (red grew, blue shrank) or as folded text with both counts.

#![allow(clippy::result_large_err)]

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::query::read;
use crate::request::{Comparison, Hide, QueryParams, SvgLayout};
use crate::scope::ReadScope;
use crate::state::ApiState;

use super::profile::{flamegraph_names, Format};

/// `GET /api/diff.{svg,folded}`: `base`, `base_from`, `base_to` against `query`, `from`,
/// `to`; `normalize=false` compares raw counts instead of scaling base to target's total.
pub async fn diff(
    State(st): State<ApiState>,
    scope: ReadScope,
    format: Format,
    Comparison { base, target }: Comparison,
    layout: SvgLayout,
    hide: Hide,
    q: QueryParams,
) -> Result<Response, Response> {
    let opts = layout.options(
        "Differential flamegraph (red: grew, blue: shrank)",
        format!("{} vs base {}", target.describe(), base.describe()),
        flamegraph_names(target.profile_type).1,
    );
    let normalize = q.flag("normalize", true)?;
    read(&st, &scope, move |store| {
        // The two profiles of the comparison; the diff renderers normalise base to
        // target's total.
        let bp = hide.apply(store.profile(&base.selector, base.from, base.to)?);
        let tp = hide.apply(store.profile(&target.selector, target.from, target.to)?);
        Ok(match format {
            Format::Folded => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                stackwatch_profile::svg::diff_folded_with(&bp, &tp, normalize),
            )
                .into_response(),
            _ => (
                [(header::CONTENT_TYPE, "image/svg+xml")],
                stackwatch_profile::svg::render_diff_with(&bp, &tp, &opts, normalize),
            )
                .into_response(),
        })
    })
    .await
}
