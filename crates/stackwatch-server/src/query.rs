//! The query API over the store: merged profiles (SVG, folded, pprof), differential
//! flamegraphs, CPU time series, top functions, labels.
//!
//! Handlers return `Result<Response, Response>`: the error is axum's own currency, on a
//! cold path, so boxing it would buy nothing (hence the lint allowance below).
//!
//! Every parameter error is a 400 with `{"error": ..., "parameter": ...}`; nothing a
//! client sends can produce a 500. Frame names are untrusted: JSON and SVG escape them.
//!
//! Every read goes through the query slots ([`crate::state::QuerySlots`]): a bounded
//! number run, a bounded number wait, the rest get `503` with `Retry-After`. A running
//! query stops at `query.timeout` or as soon as its client goes away.

#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use stackwatch_profile::clock::unix_s as now_s;
use stackwatch_profile::{Profile, SvgOptions};
use stackwatch_store::selector::{MatchOp, Matcher};
use stackwatch_store::{Interruption, ProfileStore, QueryGuard, Selector, StoreError};

use crate::profile_type::{ProfileType, ALL_TYPES, PROFILE_TYPE_LABEL};
use crate::scope::{ReadScope, ScopedStore};
use crate::state::{ApiState, Shed};

/// A parameter error: which parameter and why.
#[derive(Debug, Serialize)]
pub struct ParamError {
    /// What is wrong.
    pub error: String,
    /// The offending parameter.
    pub parameter: String,
}

impl IntoResponse for ParamError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(self)).into_response()
    }
}

pub(crate) fn param_err(parameter: &str, error: impl Into<String>) -> ParamError {
    ParamError {
        error: error.into(),
        parameter: parameter.to_owned(),
    }
}

/// The latest time accepted: 9999-12-31T23:59:59Z.
const MAX_TIME_S: i64 = 253_402_300_799;

/// Parses a time: Unix seconds, RFC 3339 (`2026-11-23T10:00:00Z`, or with a `+01:00`
/// offset), `now`, or `now-<duration>` (`now-15m`, `now-1h30m`, `now-7d`).
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    let in_range = |secs: i64| {
        if (0..=MAX_TIME_S).contains(&secs) {
            Ok(secs)
        } else {
            Err(format!("{t:?}: out of range (1970 to 9999)"))
        }
    };
    if let Some(rel) = t.strip_prefix("now-") {
        let d = humantime::parse_duration(rel).map_err(|e| format!("{t:?}: {e}"))?;
        let back = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        return in_range(now.saturating_sub(back));
    }
    if let Ok(secs) = t.parse::<i64>() {
        return in_range(secs);
    }
    // RFC 3339; humantime wants UTC, so apply an explicit offset ourselves. The split
    // is by bytes of untrusted text: `get` refuses a cut inside a character.
    let split = t
        .len()
        .checked_sub(6)
        .and_then(|i| Some((t.get(..i)?, t.get(i..)?)));
    let (base, offset_s) = match split {
        Some((base, off))
            if (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' =>
        {
            let h: i64 = off[1..3]
                .parse()
                .map_err(|_| format!("{t:?}: bad offset"))?;
            let m: i64 = off[4..6]
                .parse()
                .map_err(|_| format!("{t:?}: bad offset"))?;
            let sign = if off.starts_with('-') { -1 } else { 1 };
            if h > 23 || m > 59 {
                return Err(format!("{t:?}: bad offset"));
            }
            (format!("{base}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (t.to_owned(), 0),
    };
    let st = humantime::parse_rfc3339_weak(&base)
        .map_err(|e| format!("{t:?}: not unix seconds, RFC 3339, now or now-<duration> ({e})"))?;
    let secs = st
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{t:?}: before 1970"))?
        .as_secs() as i64;
    in_range(secs.saturating_sub(offset_s))
}

/// One selection: selector (its profile type included) and time range.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Label selector, with the matcher of `profile_type` added.
    pub selector: Selector,
    /// The profile type selected (`type=`, CPU by default).
    pub profile_type: ProfileType,
    /// Start, Unix s.
    pub from: i64,
    /// End, Unix s.
    pub to: i64,
}

pub(crate) fn selection(
    st: &ApiState,
    q: &HashMap<String, String>,
    prefix: &str,
    fallback: Option<&Selection>,
) -> Result<Selection, ParamError> {
    let now = now_s();
    let name = |n: &str| {
        if prefix.is_empty() {
            n.to_owned()
        } else {
            format!("{prefix}_{n}")
        }
    };
    let query_key = if prefix.is_empty() {
        "query".to_owned()
    } else {
        prefix.to_owned()
    };
    let selector = match q.get(&query_key) {
        Some(s) => Selector::parse_with(s, &st.cfg.query.selector_limits()).map_err(|e| {
            if e.over_budget {
                st.slots
                    .stats
                    .selector_refused
                    .fetch_add(1, Ordering::Relaxed);
            }
            param_err(&query_key, e.to_string())
        })?,
        // The fallback's selector without its type matcher: its type is the fallback's
        // unless this selection says otherwise.
        None => fallback.map_or_else(Selector::all, |f| {
            let mut s = f.selector.clone();
            s.matchers.retain(|m| m.name != PROFILE_TYPE_LABEL);
            s
        }),
    };
    // The profile type: `type=` (`base_type=` for a base), else a `__profile_type__="name"`
    // matcher of the selector (taken out of it), else the fallback's, else CPU. Every
    // selection is of one type: its counts have one unit.
    let type_key = name("type");
    let unknown = |param: &str, t: &str| {
        let known: Vec<&str> = ALL_TYPES.iter().map(|t| t.name()).collect();
        param_err(
            param,
            format!(
                "unknown profile type {:?} (one of {})",
                t.chars().take(80).collect::<String>(),
                known.join(", ")
            ),
        )
    };
    let asked = match q.get(&type_key) {
        Some(t) => Some(ProfileType::from_name(t).ok_or_else(|| unknown(&type_key, t))?),
        None => None,
    };
    let mut selector = selector;
    let (named, rest): (Vec<Matcher>, Vec<Matcher>) = selector
        .matchers
        .drain(..)
        .partition(|m| m.name == PROFILE_TYPE_LABEL);
    selector.matchers = rest;
    let in_selector = match named.as_slice() {
        [] => None,
        [m] if m.op == MatchOp::Equal => Some(if m.value.is_empty() {
            ProfileType::Cpu
        } else {
            ProfileType::from_name(&m.value).ok_or_else(|| unknown(&query_key, &m.value))?
        }),
        _ => {
            return Err(param_err(
                &query_key,
                format!(
                    "{PROFILE_TYPE_LABEL} selects one profile type: use {type_key}=<type> (or {PROFILE_TYPE_LABEL}=\"<type>\" once)"
                ),
            ))
        }
    };
    let profile_type = match (asked, in_selector) {
        (Some(a), Some(b)) if a != b => {
            return Err(param_err(
                &type_key,
                format!("{a} but the selector says {PROFILE_TYPE_LABEL}=\"{b}\""),
            ))
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => fallback.map_or(ProfileType::Cpu, |f| f.profile_type),
    };
    let typed = Selector::parse(&format!("{{{}}}", profile_type.matcher()))
        .map_err(|e| param_err(&type_key, e.to_string()))?;
    selector.matchers.extend(typed.matchers);
    let time = |key: &str, default: i64| -> Result<i64, ParamError> {
        match q.get(key) {
            Some(v) => parse_time(v, now).map_err(|e| param_err(key, e)),
            None => Ok(default),
        }
    };
    let to = time(&name("to"), fallback.map_or(now, |f| f.to))?;
    let from = time(&name("from"), fallback.map_or(now - 3600, |f| f.from))?;
    if from >= to {
        return Err(param_err(
            &name("from"),
            format!("must be before {} ({from} >= {to})", name("to")),
        ));
    }
    if to - from > 400 * 86_400 {
        return Err(param_err(&name("from"), "range longer than 400 days"));
    }
    Ok(Selection {
        selector,
        profile_type,
        from,
        to,
    })
}

pub(crate) type Params =
    Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

pub(crate) fn params(q: Params) -> Result<HashMap<String, String>, ParamError> {
    q.map(|Query(m)| m)
        .map_err(|e| param_err("query string", e.body_text()))
}

/// The query string and the main selection, or the 400 to answer with.
pub(crate) fn parse_request(
    st: &ApiState,
    q: Params,
) -> Result<(HashMap<String, String>, Selection), Response> {
    let q = params(q).map_err(IntoResponse::into_response)?;
    let sel = selection(st, &q, "", None).map_err(IntoResponse::into_response)?;
    Ok((q, sel))
}

/// `503` with `Retry-After` and a JSON reason: the store failed or the collector is
/// shedding load. The message carries no request data.
fn unavailable(e: impl std::fmt::Display, retry_after_s: u64) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&retry_after_s.to_string()).unwrap_or(HeaderValue::from_static("1")),
    );
    r
}

pub(crate) fn server_error(e: impl std::fmt::Display) -> Response {
    unavailable(e, 1)
}

/// Sets the query's cancel flag when the handler's future is dropped (the client went
/// away), so the store stops working for nobody.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on a pooled read-only connection off the async threads, within a query
/// slot and the query budget; the slot is held until `f` (rendering included) is done.
///
/// `f` sees the store as `scope` does ([`ScopedStore`]): this is the one place a route
/// reaches the store, so none can read past its request's scope.
pub(crate) async fn read<T: Send + 'static>(
    st: &ApiState,
    scope: &ReadScope,
    f: impl FnOnce(&dyn ProfileStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let slot = st.slots.acquire().await.map_err(|shed| {
        let retry = st.cfg.query.queue_timeout.as_secs().max(1);
        unavailable(
            match shed {
                Shed::QueueFull => format!(
                    "overloaded: {} queries running and {} waiting (query.max_concurrent, query.max_queued); retry later",
                    st.cfg.query.max_concurrent, st.cfg.query.max_queued
                ),
                Shed::QueueTimeout => format!(
                    "overloaded: no query slot within {:?} (query.queue_timeout); retry later",
                    st.cfg.query.queue_timeout
                ),
            },
            retry,
        )
    })?;
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(cancelled.clone());
    let guard = QueryGuard {
        deadline: Instant::now() + st.cfg.query.timeout,
        cancelled,
    };
    let readers = st.readers.clone();
    let slots = st.slots.clone();
    let scope = scope.clone();
    // Label listings of a tenant scope read the rows of the retention (windows are at
    // most a day ahead).
    let retention = i64::try_from(st.cfg.storage.retention.as_secs()).unwrap_or(i64::MAX);
    let now = now_s();
    let label_range = (now.saturating_sub(retention), now.saturating_add(86_400));
    st.slots
        .run(move || {
            let result = readers.get(Some(guard)).and_then(|store| match &scope {
                ReadScope::All => f(&*store),
                tenants => f(&ScopedStore::new(&*store, tenants, label_range)),
            });
            if let Err(StoreError::Interrupted(why)) = &result {
                let s = &slots.stats;
                match why {
                    Interruption::ClientGone => s.abandoned.fetch_add(1, Ordering::Relaxed),
                    Interruption::Timeout => s.timed_out.fetch_add(1, Ordering::Relaxed),
                };
            }
            drop(slot);
            result
        })
        .await
        .map_err(server_error)?
        .map_err(|e| match e {
            // A range or step the store cannot answer: the request's fault, not a
            // reason to come back later.
            StoreError::Invalid(msg) => param_err("range", msg).into_response(),
            e => server_error(e),
        })
}

/// The selection as a flamegraph's subtitle: the selector as asked (without the type
/// matcher), the type when it is not CPU, the range.
pub(crate) fn describe(sel: &Selection) -> String {
    let mut shown = sel.selector.clone();
    shown.matchers.retain(|m| m.name != PROFILE_TYPE_LABEL);
    let ty = match sel.profile_type {
        ProfileType::Cpu => String::new(),
        t => format!(" type {t}"),
    };
    format!(
        "{shown}{ty} from {} to {}",
        fmt_time(sel.from),
        fmt_time(sel.to)
    )
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

/// `400` unless both sides of a comparison select the same profile type (their counts
/// would be in different units).
pub(crate) fn same_type(base: &Selection, target: &Selection) -> Result<(), ParamError> {
    if base.profile_type == target.profile_type {
        return Ok(());
    }
    Err(param_err(
        "base_type",
        format!(
            "the base is {} and the target {}: a comparison is of one profile type",
            base.profile_type, target.profile_type
        ),
    ))
}

fn fmt_time(s: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64))
        .to_string()
}

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

pub(crate) fn svg_options(
    q: &HashMap<String, String>,
    title: &str,
    subtitle: String,
) -> Result<SvgOptions, ParamError> {
    let icicle = bool_param(q, "icicle", false)?;
    // A fixed width (the dashboard passes its own) instead of inferno's fluid layout.
    let image_width = match q.get("width").map(|w| w.parse::<usize>()) {
        None => None,
        Some(Ok(w)) if (200..=20_000).contains(&w) => Some(w),
        Some(_) => return Err(param_err("width", "must be 200..=20000 pixels")),
    };
    Ok(SvgOptions {
        title: title.to_owned(),
        subtitle: Some(subtitle),
        icicle,
        image_width,
        ..SvgOptions::default()
    })
}

/// `GET /api/profile.{svg,folded,pb.gz}`
pub async fn profile(
    State(st): State<ApiState>,
    scope: ReadScope,
    format: Format,
    q: Params,
) -> Result<Response, Response> {
    let (q, sel) = parse_request(&st, q)?;
    let (title, count_name) = flamegraph_names(sel.profile_type);
    let mut opts = svg_options(&q, title, describe(&sel)).map_err(IntoResponse::into_response)?;
    opts.count_name = count_name.to_owned();
    let hide = hide_param(&st, &q).map_err(IntoResponse::into_response)?;
    read(&st, &scope, move |store| {
        let p = apply_hide(
            store.profile(&sel.selector, sel.from, sel.to)?,
            hide.as_ref(),
        );
        Ok(profile_response(&p, sel.profile_type, format, opts))
    })
    .await
}

/// `GET /api/diff.{svg,folded}`: `base`, `base_from`, `base_to` against `query`, `from`, `to`.
pub async fn diff(
    State(st): State<ApiState>,
    scope: ReadScope,
    format: Format,
    q: Params,
) -> Result<Response, Response> {
    let (q, target) = parse_request(&st, q)?;
    let base = selection(&st, &q, "base", Some(&target)).map_err(IntoResponse::into_response)?;
    same_type(&base, &target).map_err(IntoResponse::into_response)?;
    let mut opts = svg_options(
        &q,
        "Differential flamegraph (red: grew, blue: shrank)",
        format!("{} vs base {}", describe(&target), describe(&base)),
    )
    .map_err(IntoResponse::into_response)?;
    opts.count_name = flamegraph_names(target.profile_type).1.to_owned();
    let hide = hide_param(&st, &q).map_err(IntoResponse::into_response)?;
    let normalize = bool_param(&q, "normalize", true).map_err(IntoResponse::into_response)?;
    read(&st, &scope, move |store| {
        // The two profiles of the comparison; the diff renderers normalise base to
        // target's total.
        let bp = store.profile(&base.selector, base.from, base.to)?;
        let tp = store.profile(&target.selector, target.from, target.to)?;
        let (bp, tp) = (apply_hide(bp, hide.as_ref()), apply_hide(tp, hide.as_ref()));
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

/// `true`/`false` (or `1`/`0`) parameter `name`, `default` when absent.
pub(crate) fn bool_param(
    q: &HashMap<String, String>,
    name: &str,
    default: bool,
) -> Result<bool, ParamError> {
    match q.get(name).map(String::as_str) {
        None | Some("") => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(param_err(name, "must be true or false")),
    }
}

/// `hide=REGEX` (like `go tool pprof -hide`): frames it matches are removed from every
/// stack. Compiled within the selector budgets, so a hostile pattern is a 400.
pub(crate) fn hide_param(
    st: &ApiState,
    q: &HashMap<String, String>,
) -> Result<Option<regex::Regex>, ParamError> {
    let Some(pattern) = q.get("hide").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let limits = st.cfg.query.selector_limits();
    if pattern.len() > limits.max_regex_bytes {
        return Err(param_err(
            "hide",
            format!(
                "longer than {} bytes (query.max_regex_bytes)",
                limits.max_regex_bytes
            ),
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(limits.max_regex_program_bytes)
        .dfa_size_limit(limits.max_regex_program_bytes)
        .build()
        .map(Some)
        .map_err(|e| param_err("hide", format!("bad regex: {e}")))
}

/// The profile without the frames `hide` matches.
pub(crate) fn apply_hide(p: Profile, hide: Option<&regex::Regex>) -> Profile {
    match hide {
        Some(re) => stackwatch_profile::views::hide_frames(&p, |f| re.is_match(f)),
        None => p,
    }
}

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
    q: Params,
) -> Response {
    let q = match params(q) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LABEL_VALUES,
        Some(Ok(l)) if (1..=MAX_LABEL_VALUES).contains(&l) => l,
        Some(_) => {
            return param_err("limit", format!("must be 1..={MAX_LABEL_VALUES}")).into_response()
        }
    };
    match read(&st, &scope, move |store| store.label_values(&name, limit)).await {
        Ok(values) => Json(values).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_documented_form() {
        let now = 1_795_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("now-15m", now).unwrap(), now - 900);
        assert_eq!(parse_time("now-1h30m", now).unwrap(), now - 5400);
        assert_eq!(parse_time("1700000000", now).unwrap(), 1_700_000_000);
        assert_eq!(
            parse_time("2026-11-23T10:00:00Z", now).unwrap(),
            1_795_428_000
        );
        assert_eq!(
            parse_time("2026-11-23T11:00:00+01:00", now).unwrap(),
            1_795_428_000
        );
        assert_eq!(
            parse_time("2026-11-23T09:30:00-00:30", now).unwrap(),
            1_795_428_000
        );
        // Issue #10, item 4: both panicked a handler (a cut inside a character; a time
        // past year 9999 once the offset is applied).
        assert!(parse_time("é12345", now).is_err());
        assert!(parse_time("2026-11-23T10:00:00é", now).is_err());
        assert!(parse_time("9999-12-31T23:30:00-01:00", now).is_err());
        assert!(parse_time("9999-12-31T22:00:00Z", now).is_ok());
        assert!(parse_time("now-99999999999999d", now).is_err());
        assert!(parse_time("2026-11-23T10:00:00+99:99", now).is_err());
        for bad in [
            "yesterday",
            "now-",
            "now-5 parsecs",
            "-5",
            "2026-13-40T00:00:00Z",
            "99999999999999",
            "",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
