//! A query route's request parameters as axum extractors, with one typed rejection.
//!
//! Every route that reads the store takes what it needs from here, as axum's own
//! custom-extractor example does: [`Selection`] (selector, profile type and range),
//! [`Comparison`] (a base against a target), [`Hide`] (frames to leave out), [`SvgLayout`]
//! (how an SVG is drawn) and [`QueryParams`] for a route's own parameters. A parameter that
//! does not parse is a [`ParamError`]: `400` with `{"error": ..., "parameter": ...}`, never
//! a 500, whatever the client sends. The query string is parsed once per request (the
//! extractors share it through the request's extensions).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use stackwatch_profile::clock::unix_s as now_s;
use stackwatch_profile::{Profile, SvgOptions};
use stackwatch_store::selector::{MatchOp, Matcher};
use stackwatch_store::Selector;

use crate::profile_type::{ProfileType, ALL_TYPES, PROFILE_TYPE_LABEL};
use crate::state::ApiState;

/// A parameter error: which parameter and why (a `400`).
#[derive(Debug, Serialize)]
pub struct ParamError {
    /// What is wrong.
    pub error: String,
    /// The offending parameter.
    pub parameter: String,
}

impl ParamError {
    /// The error `error` of parameter `parameter`.
    pub fn new(parameter: &str, error: impl Into<String>) -> Self {
        ParamError {
            error: error.into(),
            parameter: parameter.to_owned(),
        }
    }
}

impl IntoResponse for ParamError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(self)).into_response()
    }
}

/// Lets a handler answering `Result<Response, Response>` use `?` on a [`ParamError`].
impl From<ParamError> for Response {
    fn from(e: ParamError) -> Response {
        e.into_response()
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

/// The request's query string as name to value (the last of a repeated name).
#[derive(Debug, Clone, Default)]
pub struct QueryParams(Arc<HashMap<String, String>>);

impl QueryParams {
    /// The value of `name`, if the request has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name` unless absent or empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// `true`/`false` (or `1`/`0`) parameter `name`, `default` when absent or empty.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ParamError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(_) => Err(ParamError::new(name, "must be true or false")),
        }
    }

    /// `limit`: a count in `1..=max`, `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ParamError> {
        match self.get("limit").map(str::parse::<usize>) {
            None => Ok(default),
            Some(Ok(l)) if (1..=max).contains(&l) => Ok(l),
            Some(_) => Err(ParamError::new("limit", format!("must be 1..={max}"))),
        }
    }

    /// Parameter `name` as one of `choices` (named in that order when it is none of
    /// them), `default` when absent.
    pub fn choice<'a>(
        &self,
        name: &str,
        default: &'a str,
        choices: &[&'a str],
    ) -> Result<&'a str, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                choices.iter().copied().find(|c| *c == v).ok_or_else(|| {
                    ParamError::new(name, format!("must be {}", choices.join(" or ")))
                })
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ParamError;

    /// Parses the query string the first time an extractor asks, then hands out the
    /// same map.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ParamError> {
        if let Some(q) = parts.extensions.get::<QueryParams>() {
            return Ok(q.clone());
        }
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ParamError::new("query string", e.body_text()))?;
        let q = QueryParams(Arc::new(map));
        parts.extensions.insert(q.clone());
        Ok(q)
    }
}

/// One selection: selector (its profile type included) and time range, from `query`,
/// `type`, `from` and `to` (a base's from `base`, `base_type`, `base_from`, `base_to`).
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

impl Selection {
    /// The selection whose parameters start with `prefix` (`""` for the main one:
    /// `query`, `from`...; `"base"`: `base`, `base_from`...); what it leaves out comes
    /// from `fallback` (a base's range and type are the target's unless it says).
    pub(crate) fn parse(
        st: &ApiState,
        q: &QueryParams,
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
                ParamError::new(&query_key, e.to_string())
            })?,
            // The fallback's selector without its type matcher: its type is the
            // fallback's unless this selection says otherwise.
            None => fallback.map_or_else(Selector::all, |f| {
                let mut s = f.selector.clone();
                s.matchers.retain(|m| m.name != PROFILE_TYPE_LABEL);
                s
            }),
        };
        // The profile type: `type=` (`base_type=` for a base), else a
        // `__profile_type__="name"` matcher of the selector (taken out of it), else the
        // fallback's, else CPU. Every selection is of one type: its counts have one unit.
        let type_key = name("type");
        let unknown = |param: &str, t: &str| {
            let known: Vec<&str> = ALL_TYPES.iter().map(|t| t.name()).collect();
            ParamError::new(
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
                return Err(ParamError::new(
                    &query_key,
                    format!(
                        "{PROFILE_TYPE_LABEL} selects one profile type: use {type_key}=<type> (or {PROFILE_TYPE_LABEL}=\"<type>\" once)"
                    ),
                ))
            }
        };
        let profile_type = match (asked, in_selector) {
            (Some(a), Some(b)) if a != b => {
                return Err(ParamError::new(
                    &type_key,
                    format!("{a} but the selector says {PROFILE_TYPE_LABEL}=\"{b}\""),
                ))
            }
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => fallback.map_or(ProfileType::Cpu, |f| f.profile_type),
        };
        let typed = Selector::parse(&format!("{{{}}}", profile_type.matcher()))
            .map_err(|e| ParamError::new(&type_key, e.to_string()))?;
        selector.matchers.extend(typed.matchers);
        let time = |key: &str, default: i64| -> Result<i64, ParamError> {
            match q.get(key) {
                Some(v) => parse_time(v, now).map_err(|e| ParamError::new(key, e)),
                None => Ok(default),
            }
        };
        let to = time(&name("to"), fallback.map_or(now, |f| f.to))?;
        let from = time(&name("from"), fallback.map_or(now - 3600, |f| f.from))?;
        if from >= to {
            return Err(ParamError::new(
                &name("from"),
                format!("must be before {} ({from} >= {to})", name("to")),
            ));
        }
        if to - from > 400 * 86_400 {
            return Err(ParamError::new(&name("from"), "range longer than 400 days"));
        }
        Ok(Selection {
            selector,
            profile_type,
            from,
            to,
        })
    }
}

impl Selection {
    /// The selection as a flamegraph's subtitle: the selector as asked (without the type
    /// matcher), the type when it is not CPU, the range.
    pub fn describe(&self) -> String {
        let mut shown = self.selector.clone();
        shown.matchers.retain(|m| m.name != PROFILE_TYPE_LABEL);
        let ty = match self.profile_type {
            ProfileType::Cpu => String::new(),
            t => format!(" type {t}"),
        };
        format!(
            "{shown}{ty} from {} to {}",
            fmt_time(self.from),
            fmt_time(self.to)
        )
    }
}

/// Unix seconds as RFC 3339 (UTC).
fn fmt_time(s: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64))
        .to_string()
}

impl FromRequestParts<ApiState> for Selection {
    type Rejection = ParamError;

    /// The main selection: `query`, `type`, `from`, `to`.
    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, ParamError> {
        let q = QueryParams::from_request_parts(parts, st).await?;
        Selection::parse(st, &q, "", None)
    }
}

/// A base against a target, both of one profile type: the target is the main selection,
/// the base `base`, `base_type`, `base_from`, `base_to`, each defaulting to the target's.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// What the target is compared with.
    pub base: Selection,
    /// The selection compared.
    pub target: Selection,
}

impl FromRequestParts<ApiState> for Comparison {
    type Rejection = ParamError;

    /// Both selections; `400` unless they select the same profile type (their counts
    /// would be in different units).
    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, ParamError> {
        let q = QueryParams::from_request_parts(parts, st).await?;
        let target = Selection::parse(st, &q, "", None)?;
        let base = Selection::parse(st, &q, "base", Some(&target))?;
        if base.profile_type != target.profile_type {
            return Err(ParamError::new(
                "base_type",
                format!(
                    "the base is {} and the target {}: a comparison is of one profile type",
                    base.profile_type, target.profile_type
                ),
            ));
        }
        Ok(Comparison { base, target })
    }
}

/// `hide=REGEX` (like `go tool pprof -hide`): frames it matches are removed from every
/// stack. Compiled within the selector budgets, so a hostile pattern is a 400.
#[derive(Debug, Clone, Default)]
pub struct Hide(Option<regex::Regex>);

impl Hide {
    /// `p` without the frames `hide` matches.
    pub fn apply(&self, p: Profile) -> Profile {
        match &self.0 {
            Some(re) => stackwatch_profile::views::hide_frames(&p, |f| re.is_match(f)),
            None => p,
        }
    }

    /// Whether frame `name` is hidden.
    pub fn hides(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|re| re.is_match(name))
    }

    /// Whether anything is hidden.
    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }
}

impl FromRequestParts<ApiState> for Hide {
    type Rejection = ParamError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, ParamError> {
        let q = QueryParams::from_request_parts(parts, st).await?;
        let Some(pattern) = q.non_empty("hide") else {
            return Ok(Hide(None));
        };
        let limits = st.cfg.query.selector_limits();
        if pattern.len() > limits.max_regex_bytes {
            return Err(ParamError::new(
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
            .map(|re| Hide(Some(re)))
            .map_err(|e| ParamError::new("hide", format!("bad regex: {e}")))
    }
}

/// How an SVG route draws its flamegraph: `icicle=true` (root at the top) and
/// `width=PIXELS` (a fixed width, which the dashboard passes, instead of inferno's fluid
/// layout). The route adds what the picture is of ([`SvgLayout::options`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SvgLayout {
    /// Root at the top.
    pub icicle: bool,
    /// Fixed width in pixels (200..=20 000), or fluid.
    pub image_width: Option<usize>,
}

impl SvgLayout {
    /// inferno's options: this layout, with `title`, `subtitle` and what a width counts
    /// (`count_name`, inferno's tooltips: `name (1,234 bytes, 5.6%)`).
    pub fn options(self, title: &str, subtitle: String, count_name: &str) -> SvgOptions {
        SvgOptions {
            title: title.to_owned(),
            subtitle: Some(subtitle),
            icicle: self.icicle,
            image_width: self.image_width,
            count_name: count_name.to_owned(),
            ..SvgOptions::default()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SvgLayout {
    type Rejection = ParamError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, ParamError> {
        let q = QueryParams::from_request_parts(parts, st).await?;
        let icicle = q.flag("icicle", false)?;
        let image_width = match q.get("width").map(str::parse::<usize>) {
            None => None,
            Some(Ok(w)) if (200..=20_000).contains(&w) => Some(w),
            Some(_) => return Err(ParamError::new("width", "must be 200..=20000 pixels")),
        };
        Ok(SvgLayout {
            icicle,
            image_width,
        })
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
