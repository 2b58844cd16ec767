//! `GET /api/profile.{svg,folded,pb.gz}`: the merged profile of a selection, drawn by
//! inferno, as folded text, or as gzipped pprof.

#![allow(clippy::result_large_err)]

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use stackwatch_profile::{Profile, SvgOptions};

use crate::profile_type::ProfileType;
use crate::query::read;
use crate::request::{Hide, Selection, SvgLayout};
use crate::scope::ReadScope;
use crate::state::ApiState;

/// Which format a profile route answers in.
#[derive(Clone, Copy)]
pub enum Format {
    /// `image/svg+xml`
    Svg,
    /// folded text
    Folded,
    /// gzipped pprof
    Pprof,
}

pub(crate) fn profile_response(
    p: &Profile,
    profile_type: ProfileType,
    format: Format,
    opts: SvgOptions,
) -> Response {
    match format {
        Format::Svg => ([(header::CONTENT_TYPE, "image/svg+xml")], p.to_svg(&opts)).into_response(),
        Format::Folded => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            p.to_folded(),
        )
            .into_response(),
        Format::Pprof => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"profile.pb.gz\"",
                ),
            ],
            match profile_type {
                ProfileType::Cpu => p.to_pprof(),
                t => stackwatch_profile::pprof::encode_typed(p, t.name(), t.pprof_unit()),
            },
        )
            .into_response(),
    }
}

/// `GET /api/profile.{svg,folded,pb.gz}`
pub async fn profile(
    State(st): State<ApiState>,
    scope: ReadScope,
    format: Format,
    sel: Selection,
    layout: SvgLayout,
    hide: Hide,
) -> Result<Response, Response> {
    let (title, count_name) = flamegraph_names(sel.profile_type);
    let opts = layout.options(title, sel.describe(), count_name);
    read(&st, &scope, move |store| {
        let p = hide.apply(store.profile(&sel.selector, sel.from, sel.to)?);
        Ok(profile_response(&p, sel.profile_type, format, opts))
    })
    .await
}

/// What a flamegraph of a profile type is called, and what its widths count (inferno's
/// tooltips: `name (1,234 bytes, 5.6%)`).
pub(crate) fn flamegraph_names(t: ProfileType) -> (&'static str, &'static str) {
    match t {
        ProfileType::Cpu => ("CPU flamegraph", "samples"),
        ProfileType::Wall => ("Wall-clock flamegraph", "samples"),
        ProfileType::AllocObjects => ("Allocations flamegraph (objects allocated)", "objects"),
        ProfileType::AllocSpace => ("Allocations flamegraph (bytes allocated)", "bytes"),
        ProfileType::InuseObjects => ("In-use memory flamegraph (objects live)", "objects"),
        ProfileType::InuseSpace => ("In-use memory flamegraph (bytes live)", "bytes"),
        ProfileType::Goroutines => ("Goroutines flamegraph", "goroutines"),
        ProfileType::Contentions => ("Contention flamegraph (events)", "contentions"),
        ProfileType::Delay => ("Contention delay flamegraph", "nanoseconds"),
    }
}
