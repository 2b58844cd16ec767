//! Pyroscope's ingest API, as Grafana's Pyroscope SDKs speak it (docs/ingest.md,
//! "Pyroscope SDKs"):
//!
//! - `POST /ingest?name=<app>[.<type>]{k=v,...}&from=&until=&format=&sampleRate=&...`:
//!   the original HTTP API. The Go and Node SDKs send a `multipart/form-data` body with a
//!   `profile` part (pprof) and a `sample_type_config` part; other agents send folded
//!   text (`format=folded`, `lines`) or a raw pprof body (`format=pprof`).
//! - `POST /push.v1.PusherService/Push`: the Connect endpoint (protobuf or JSON) the
//!   Rust-based SDKs (Python, Ruby, Rust) and Grafana Alloy send: series of labels, each
//!   with raw pprof profiles.
//!
//! Both decode into [`PushedSeries`] (one per profile type a pprof body carries) and
//! hand them to [`accept`]. The cost of a request is bounded by the request: its body
//! by `push.max_body_bytes` and `push.max_decompressed_bytes` (the profiles inside a
//! Connect request share that decompression cap), the stacks of all its profiles
//! together by the scrape [`StackBudget`](stackwatch_profile::StackBudget), at most
//! [`MAX_PROFILES_PER_REQUEST`] profile types per request. What decoding the
//! `PushRequest` and its pprof profiles builds is counted on the wire before it is
//! built ([`wire_scan`]) and bounded together by [`max_message_bytes`]; requests
//! inflate and decode in a bounded number of slots
//! ([`DecodeSlots`](super::decode_slots::DecodeSlots)), off the async threads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use stackwatch_profile::budget::{BoundedStacks, BudgetError, StackAccumulator};
use stackwatch_profile::pprof::{max_message_bytes, PprofError, PprofProfile, SampleType};
use stackwatch_profile::wire_scan;
use stackwatch_profile::StackBudget;
use stackwatch_store::Labels;

use super::accept::{accept, PushState};
use super::budget::{over_budget, read_body};
use super::error::PushError;
use super::gate::{PushCounters, SourceKey};
use super::series::{Accepted, Protocol, PushedSeries};
use crate::profile_type::ProfileType;

/// Profiles (a pprof body × each profile type it carries) one request may hold, at
/// most; the request's stack budget is shared among them.
pub const MAX_PROFILES_PER_REQUEST: usize = 64;
/// Parts of a multipart body, at most.
pub const MAX_MULTIPART_PARTS: usize = 16;
/// The sampling rate of folded CPU profiles when `sampleRate` is absent (Hz), as in
/// Pyroscope.
pub const DEFAULT_SAMPLE_RATE: u32 = 100;
/// How far in the future a profile may start (clock skew), ns.
const MAX_FUTURE_NS: u64 = 3600 * 1_000_000_000;
/// Profile times before this (1973) are not Unix nanoseconds (old agents sent
/// microseconds): the request's time is used instead, as Pyroscope does.
const PLAUSIBLE_TIME_NS: u64 = 100_000_000_000_000_000;

/// The Pyroscope routes (`/ingest`, `/push.v1.PusherService/Push`).
pub fn routes() -> Router<PushState> {
    Router::new()
        .route("/ingest", post(ingest))
        .route("/push.v1.PusherService/Push", post(connect_push))
}

// ---------------------------------------------------------------------------------
// Names, tags and times
// ---------------------------------------------------------------------------------

/// What the app name's suffix, `__name__` or the `units` parameter say of the type:
/// used for folded bodies, and to settle what a pprof's sample types leave open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TypeHint {
    ty: Option<ProfileType>,
    /// `mutex` or `block` for contention profiles.
    contention: Option<&'static str>,
}

/// The type named by an app name suffix (`.cpu`), a `__name__` (`process_cpu`) or a
/// `display-name` of a sample type config.
fn hint_of_name(name: &str) -> Option<TypeHint> {
    let (ty, contention) = match name {
        "cpu" | "itimer" | "process_cpu" | "samples" => (ProfileType::Cpu, None),
        "wall" => (ProfileType::Wall, None),
        "alloc_objects" => (ProfileType::AllocObjects, None),
        "alloc_space" => (ProfileType::AllocSpace, None),
        "inuse_objects" => (ProfileType::InuseObjects, None),
        "inuse_space" => (ProfileType::InuseSpace, None),
        "goroutine" | "goroutines" => (ProfileType::Goroutines, None),
        "contentions" => (ProfileType::Contentions, None),
        "delay" => (ProfileType::Delay, None),
        "mutex_count" => (ProfileType::Contentions, Some("mutex")),
        "mutex_duration" => (ProfileType::Delay, Some("mutex")),
        "block_count" => (ProfileType::Contentions, Some("block")),
        "block_duration" => (ProfileType::Delay, Some("block")),
        // `__name__` of the Connect endpoint: the family, the body says which type.
        "mutex" => {
            return Some(TypeHint {
                ty: None,
                contention: Some("mutex"),
            })
        }
        "block" => {
            return Some(TypeHint {
                ty: None,
                contention: Some("block"),
            })
        }
        _ => return None,
    };
    Some(TypeHint {
        ty: Some(ty),
        contention,
    })
}

/// The type of Pyroscope's `units` (with `aggregationType`), for a folded body whose
/// name has no type suffix.
fn type_of_units(units: &str, aggregation: &str) -> Option<ProfileType> {
    let average = aggregation == "average";
    Some(match units {
        "samples" | "" => ProfileType::Cpu,
        "objects" if average => ProfileType::InuseObjects,
        "objects" => ProfileType::AllocObjects,
        "bytes" if average => ProfileType::InuseSpace,
        "bytes" => ProfileType::AllocSpace,
        "goroutines" => ProfileType::Goroutines,
        "lock_samples" => ProfileType::Contentions,
        "lock_nanoseconds" => ProfileType::Delay,
        _ => return None,
    })
}

/// A parsed `name`: `app[.type]{k=v,...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppName {
    app: String,
    hint: TypeHint,
    /// Tags in order (raw names).
    tags: Vec<(String, String)>,
}

/// Parses Pyroscope's `name` parameter: the application name, an optional type suffix
/// (`.cpu`, `.alloc_space`, ...: stripped when known), then `{k=v,...}` tags (values
/// cannot hold `,` or `}`; surrounding spaces trimmed; empty values dropped).
fn parse_app_name(name: &str) -> Result<AppName, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("name is missing (name=<app>.<type>{tag=value,...})".into());
    }
    if name.len() > 4096 {
        return Err("name is longer than 4096 bytes".into());
    }
    let (head, tags_text) = match name.find('{') {
        Some(i) => {
            let rest = &name[i + 1..];
            let Some(inner) = rest.trim_end().strip_suffix('}') else {
                return Err(format!("name {name:?}: the tags do not end in }}"));
            };
            (&name[..i], Some(inner))
        }
        None => (name, None),
    };
    let head = head.trim();
    if head.contains('}') {
        return Err(format!("name {name:?}: '}}' without '{{'"));
    }
    let (app, hint) = match head.rsplit_once('.') {
        Some((app, suffix)) => match hint_of_name(suffix) {
            Some(hint) if hint.ty.is_some() => (app.trim(), hint),
            _ => (head, TypeHint::default()),
        },
        None => (head, TypeHint::default()),
    };
    if app.is_empty() {
        return Err(format!("name {name:?}: no application name"));
    }
    if app.chars().any(|c| c.is_control() || c == '{' || c == '"') {
        return Err(format!(
            "name {name:?}: the application name has characters not allowed"
        ));
    }
    let mut tags = Vec::new();
    if let Some(inner) = tags_text {
        for pair in inner.split(',') {
            if pair.trim().is_empty() {
                continue;
            }
            let Some((k, v)) = pair.split_once('=') else {
                return Err(format!("name {name:?}: tag {:?} has no '='", pair.trim()));
            };
            if v.contains('{') || v.contains('}') {
                return Err(format!(
                    "name {name:?}: tag {:?}: braces in a value",
                    k.trim()
                ));
            }
            tags.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(AppName {
        app: app.to_owned(),
        hint,
        tags,
    })
}

/// Target labels from Pyroscope tags: `service` from `service_name` (or `service`)
/// when present, else `app`; `__`-prefixed names skipped (`__session_id__`,
/// `__name__`); dots in names become underscores (`process.runtime.name` →
/// `process_runtime_name`, the OpenTelemetry-to-Prometheus convention); empty values
/// dropped. Names that are still not identifiers are refused by [`accept`].
fn target_labels<'a>(
    app: Option<&str>,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    contention: Option<&'static str>,
) -> Labels {
    let mut labels = Labels::new();
    let mut service_name = None;
    let mut service = None;
    for (k, v) in tags {
        if k.starts_with("__") || v.is_empty() {
            continue;
        }
        match k {
            "service_name" => service_name = Some(v),
            "service" => service = Some(v),
            _ => {
                labels.insert(k.replace('.', "_"), v.to_owned());
            }
        }
    }
    if let Some(s) = service_name.or(service).or(app) {
        labels.insert("service".into(), s.to_owned());
    }
    if let Some(c) = contention {
        labels.insert("contention".into(), c.to_owned());
    }
    labels
}

/// Parses `from` / `until` as Pyroscope does: Unix seconds (13 digits: ms, 16: µs, 19:
/// ns), `now`, or `now-<n><unit>` / `-<n><unit>` (s, m/min, h, d, w). Unix ns.
fn parse_time(s: &str, now_ns: u64) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let v: u64 = s.parse().map_err(|_| format!("{s:?}: out of range"))?;
        let scale: u64 = match s.len() {
            13 => 1_000_000,
            16 => 1_000,
            19 => 1,
            _ => 1_000_000_000,
        };
        return v
            .checked_mul(scale)
            .ok_or_else(|| format!("{s:?}: out of range"));
    }
    let rest = s.strip_prefix("now").unwrap_or(s);
    if rest.is_empty() {
        return if s == "now" {
            Ok(now_ns)
        } else {
            Err("empty time".into())
        };
    }
    let (sign, mut rest) = match rest.as_bytes()[0] {
        b'-' => (-1i128, &rest[1..]),
        b'+' => (1, &rest[1..]),
        _ => return Err(format!("{s:?}: not Unix time, now or now-<duration>")),
    };
    if rest.is_empty() {
        return Err(format!("{s:?}: no duration after the sign"));
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if digits == 0 || digits > 12 || unit_len == 0 {
            return Err(format!("{s:?}: not now-<number><unit>"));
        }
        let n: i128 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: bad number"))?;
        let unit = &rest[digits..digits + unit_len];
        let secs: i128 = match unit {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d, w)")),
        };
        total += n * secs * 1_000_000_000;
        rest = &rest[digits + unit_len..];
    }
    let t = i128::from(now_ns) + sign * total;
    u64::try_from(t).map_err(|_| format!("{s:?}: before 1970"))
}

// ---------------------------------------------------------------------------------
// pprof bodies
// ---------------------------------------------------------------------------------

/// The largest `sample_type_config` part of a multipart `/ingest` (64 KiB): parsed as
/// JSON into a map, so its size bounds the memory parsing takes (3.3 million entries
/// in a 38 MB part took 700 MB before).
const MAX_SAMPLE_TYPE_CONFIG_BYTES: usize = 64 << 10;

/// One entry of the `sample_type_config` part (pyroscope-go's `upstream.SampleType`).
#[derive(Debug, Clone, Default, Deserialize)]
struct SampleTypeConfig {
    #[serde(default)]
    units: String,
    #[serde(default, rename = "display-name")]
    display_name: String,
    #[serde(default)]
    aggregation: String,
}

/// One profile type to expand from a pprof: which sample type, how to scale it.
#[derive(Debug, Clone, Copy)]
struct Selected {
    ty: ProfileType,
    contention: Option<&'static str>,
    index: usize,
    /// Values are divided by this (CPU nanoseconds by the period); 1: as is.
    divisor: u64,
    /// The series' period (CPU and wall), 0 otherwise.
    period_ns: u64,
}

/// The profile type of one sample type: its `display-name` from the config, then its
/// name, then the config's units.
fn classify(
    st: &SampleType,
    config: Option<&SampleTypeConfig>,
    period_type: &str,
) -> Option<(ProfileType, Option<&'static str>)> {
    let display = config
        .map(|c| c.display_name.as_str())
        .filter(|d| !d.is_empty());
    for name in display.into_iter().chain([st.ty.as_str()]) {
        if let Some(TypeHint {
            ty: Some(ty),
            contention,
        }) = hint_of_name(name)
        {
            // `samples` is CPU unless the profile says wall.
            if ty == ProfileType::Cpu && name == "samples" {
                return ProfileType::from_sample_type(name, &st.unit, period_type)
                    .map(|t| (t, None));
            }
            return Some((ty, contention));
        }
        if let Some(t) = ProfileType::from_sample_type(name, &st.unit, period_type) {
            return Some((t, None));
        }
    }
    let c = config?;
    type_of_units(&c.units, &c.aggregation)
        .filter(|_| !c.units.is_empty())
        .map(|t| (t, None))
}

/// The profile types to expand from `p`: one per type (CPU prefers a count sample type
/// over nanoseconds), each with its scale.
fn select_types(
    p: &PprofProfile,
    hint: TypeHint,
    config: Option<&HashMap<String, SampleTypeConfig>>,
    sample_rate: u32,
) -> Result<Vec<Selected>, PushError> {
    let types = p.sample_types().map_err(pprof_error)?;
    let period_type = p.period_type().map_err(pprof_error)?;
    let period_type_name = match (&period_type, hint.ty) {
        (Some(pt), _) if !pt.ty.is_empty() => pt.ty.clone(),
        (_, Some(ProfileType::Wall)) => "wall".into(),
        _ => String::new(),
    };
    let period_ns = match &period_type {
        Some(pt) if pt.unit == "nanoseconds" && p.period() > 0 => p.period(),
        _ => 1_000_000_000 / u64::from(sample_rate.max(1)),
    };
    let mut chosen: BTreeMap<(ProfileType, Option<&'static str>), Selected> = BTreeMap::new();
    for (index, st) in types.iter().enumerate() {
        let conf = config.and_then(|c| c.get(&st.ty));
        let Some((ty, contention)) = classify(st, conf, &period_type_name) else {
            continue;
        };
        let contention = contention
            .or(hint.contention)
            .filter(|_| matches!(ty, ProfileType::Contentions | ProfileType::Delay));
        let timed = matches!(ty, ProfileType::Cpu | ProfileType::Wall);
        let divisor = if timed && st.unit == "nanoseconds" {
            period_ns
        } else {
            1
        };
        let sel = Selected {
            ty,
            contention,
            index,
            divisor,
            period_ns: if timed { period_ns } else { 0 },
        };
        match chosen.get(&(ty, contention)) {
            Some(prev) if prev.divisor == 1 || sel.divisor != 1 => {}
            _ => {
                chosen.insert((ty, contention), sel);
            }
        }
    }
    if chosen.is_empty() {
        let names: Vec<String> = types
            .iter()
            .take(8)
            .map(|t| format!("{}/{}", t.ty, t.unit))
            .collect();
        return Err(PushError::Invalid(format!(
            "pprof: no sample type stackwatch stores (it has [{}]; cpu, wall, alloc_*, inuse_*, goroutines, contentions, delay)",
            names.join(", ")
        )));
    }
    Ok(chosen.into_values().collect())
}

fn pprof_error(e: PprofError) -> PushError {
    match e {
        PprofError::TooLarge { .. } => PushError::TooLarge(e.to_string()),
        PprofError::Expands(o) => PushError::TooLarge(format!(
            "pprof: {o} (twice the larger of scrape.max_decoded_bytes and push.max_decompressed_bytes, shared by the request's profiles)"
        )),
        e => PushError::Invalid(e.to_string()),
    }
}

/// A parsed pprof of a request and what to make of it.
struct PendingProfile {
    /// Target labels without the type-specific ones.
    tags: Vec<(String, String)>,
    app: Option<String>,
    profile: PprofProfile,
    selected: Vec<Selected>,
    /// The request's range, used when the profile carries none.
    fallback_start_ns: u64,
    fallback_duration_ns: u64,
}

/// Parses the pprof profiles of one request, within what is left of the request's
/// decompression cap (`inflate_left`) and of the memory its decoded messages may take
/// together (`message_left`, from `scrape.max_decoded_bytes`), and counts what they
/// expand to.
struct ProfileBatch {
    pending: Vec<PendingProfile>,
    inflate_left: usize,
    message_left: usize,
}

impl ProfileBatch {
    fn new(max_decompressed: usize, max_message_bytes: usize) -> Self {
        ProfileBatch {
            pending: Vec::new(),
            inflate_left: max_decompressed,
            message_left: max_message_bytes,
        }
    }

    fn profiles(&self) -> usize {
        self.pending.iter().map(|p| p.selected.len()).sum()
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        bytes: &[u8],
        app: Option<String>,
        tags: Vec<(String, String)>,
        hint: TypeHint,
        config: Option<&HashMap<String, SampleTypeConfig>>,
        sample_rate: u32,
        fallback: (u64, u64),
    ) -> Result<(), PushError> {
        let profile = PprofProfile::parse(bytes, self.inflate_left, self.message_left).map_err(
            |e| match e {
                PprofError::TooLarge { .. } => PushError::TooLarge(format!(
                    "the profiles of this request decompress past push.max_decompressed_bytes: {e}"
                )),
                e => pprof_error(e),
            },
        )?;
        self.inflate_left = self.inflate_left.saturating_sub(profile.raw_len());
        self.message_left = self.message_left.saturating_sub(profile.message_bytes());
        let selected = select_types(&profile, hint, config, sample_rate)?;
        if self.profiles() + selected.len() > MAX_PROFILES_PER_REQUEST {
            return Err(PushError::Invalid(format!(
                "more than {MAX_PROFILES_PER_REQUEST} profiles (pprof bodies × sample types) in one request"
            )));
        }
        self.pending.push(PendingProfile {
            tags,
            app,
            profile,
            selected,
            fallback_start_ns: fallback.0,
            fallback_duration_ns: fallback.1,
        });
        Ok(())
    }

    /// Expands every selected type into a series, the request's stack budget shared
    /// among them (decoded bytes split evenly; periods and amounts spent in turn).
    fn into_series(self, state: &PushState, now_ns: u64) -> Result<Vec<PushedSeries>, PushError> {
        let n = self.profiles().max(1);
        let decoded_bytes = (state.stack_budget.max_decoded_bytes / n).max(1);
        let mut left = state.request_budget();
        let mut out = Vec::with_capacity(n);
        for p in self.pending {
            let (start, duration) = if p.profile.time_nanos() >= PLAUSIBLE_TIME_NS {
                (p.profile.time_nanos(), p.profile.duration_nanos())
            } else {
                (
                    p.fallback_start_ns,
                    match p.profile.duration_nanos() {
                        0 => p.fallback_duration_ns,
                        d => d,
                    },
                )
            };
            check_start(start, now_ns)?;
            for sel in &p.selected {
                let (_, stacks) = p
                    .profile
                    .stacks(
                        sel.index,
                        sel.divisor,
                        &StackBudget {
                            max_decoded_bytes: decoded_bytes,
                            max_samples: left.for_type(sel.ty),
                            ..state.stack_budget
                        },
                        &state.label_budget,
                    )
                    .map_err(|e| match e {
                        PprofError::Budget(BudgetError::Samples { limit }) => {
                            PushError::Invalid(over_budget(sel.ty, limit))
                        }
                        e => pprof_error(e),
                    })?;
                left.spend(sel.ty, stacks.samples);
                let labels = target_labels(
                    p.app.as_deref(),
                    p.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    sel.contention,
                );
                out.push(PushedSeries {
                    labels,
                    profile_type: sel.ty,
                    start_unix_ns: start,
                    duration_ns: duration,
                    period_ns: sel.period_ns,
                    stacks,
                });
            }
        }
        Ok(out)
    }
}

fn check_start(start_ns: u64, now_ns: u64) -> Result<(), PushError> {
    if start_ns > now_ns.saturating_add(MAX_FUTURE_NS) {
        return Err(PushError::Invalid(format!(
            "the profile starts {} s in the future",
            (start_ns - now_ns) / 1_000_000_000
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Multipart
// ---------------------------------------------------------------------------------

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Result<&str, PushError> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .unwrap_or("");
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(PushError::Invalid(
            "multipart/form-data without a usable boundary".into(),
        ));
    }
    Ok(boundary)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|b| *b == first)
        {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The named parts of a `multipart/form-data` body (RFC 7578), borrowed from it. At most
/// [`MAX_MULTIPART_PARTS`]; anything malformed is an error.
fn multipart_parts<'a>(
    body: &'a [u8],
    boundary: &str,
) -> Result<Vec<(String, &'a [u8])>, PushError> {
    let bad = |why: &str| PushError::Invalid(format!("bad multipart body: {why}"));
    let delimiter = format!("--{boundary}");
    let first = find(body, delimiter.as_bytes()).ok_or_else(|| bad("no boundary"))?;
    let next_delimiter = format!("\r\n--{boundary}");
    let mut rest = &body[first + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then CRLF.
        let pad = rest
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        rest = rest[pad..]
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("no CRLF after a boundary"))?;
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(|| bad("a part without headers' end"))?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| bad("headers not UTF-8"))?;
        let data_start = head_end + 4;
        let end = find(&rest[data_start..], next_delimiter.as_bytes())
            .ok_or_else(|| bad("a part without a closing boundary"))?;
        let data = &rest[data_start..data_start + end];
        let mut name = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in v.split(';').skip(1) {
                if let Some((pk, pv)) = param.split_once('=') {
                    if pk.trim().eq_ignore_ascii_case("name") {
                        name = Some(pv.trim().trim_matches('"').to_owned());
                    }
                }
            }
        }
        let name = name.ok_or_else(|| bad("a part without a Content-Disposition name"))?;
        if parts.len() == MAX_MULTIPART_PARTS {
            return Err(bad(&format!("more than {MAX_MULTIPART_PARTS} parts")));
        }
        parts.push((name, data));
        rest = &rest[data_start + end + next_delimiter.len()..];
    }
}

// ---------------------------------------------------------------------------------
// POST /ingest
// ---------------------------------------------------------------------------------

/// The body's rejection by axum (over the route's body limit: 413).
fn body_error(r: BytesRejection) -> PushError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        PushError::TooLarge(format!("body over push.max_body_bytes: {}", r.body_text()))
    } else {
        PushError::Invalid(format!("cannot read the body: {}", r.body_text()))
    }
}

/// Counts the outcome of a request and logs a refusal.
fn count(state: &PushState, endpoint: &str, result: &Result<Accepted, PushError>) {
    let slot = PushCounters::slot(Protocol::Pyroscope);
    let c = &state.gate.counters;
    match result {
        Ok(done) => {
            c.accepted[slot].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                endpoint,
                stored = done.stored,
                duplicates = done.duplicates,
                "pyroscope push accepted"
            );
        }
        Err(e) => {
            c.rejected[slot].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(endpoint, status = e.status().as_u16(), reason = %e, "pyroscope push refused");
        }
    }
}

async fn ingest(
    State(state): State<PushState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = ingest_request(&state, query, &headers, body).await;
    count(&state, "/ingest", &result);
    match result {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The request's query parameters, checked.
struct IngestParams {
    name: AppName,
    from_ns: u64,
    until_ns: u64,
    sample_rate: u32,
    format: Option<String>,
    units: String,
    aggregation: String,
}

fn ingest_params(q: &HashMap<String, String>, now_ns: u64) -> Result<IngestParams, PushError> {
    let invalid = |p: &str, why: String| PushError::Invalid(format!("{p}: {why}"));
    let name =
        parse_app_name(q.get("name").map_or("", String::as_str)).map_err(|e| invalid("name", e))?;
    let time = |p: &str| -> Result<u64, PushError> {
        match q.get(p).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Ok(now_ns),
            Some(s) => parse_time(s, now_ns).map_err(|e| invalid(p, e)),
        }
    };
    let from_ns = time("from")?;
    let until_ns = time("until")?;
    if until_ns < from_ns {
        return Err(PushError::Invalid("until is before from".into()));
    }
    let sample_rate = match q
        .get("sampleRate")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => DEFAULT_SAMPLE_RATE,
        Some(s) => match s.parse::<u32>() {
            Ok(r) if (1..=1_000_000_000).contains(&r) => r,
            _ => {
                return Err(invalid(
                    "sampleRate",
                    format!("{s:?} is not a rate in Hz from 1 to 1e9"),
                ))
            }
        },
    };
    Ok(IngestParams {
        name,
        from_ns,
        until_ns,
        sample_rate,
        format: q
            .get("format")
            .map(|f| f.trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty()),
        units: q.get("units").cloned().unwrap_or_default(),
        aggregation: q.get("aggregationType").cloned().unwrap_or_default(),
    })
}

async fn ingest_request(
    state: &PushState,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, PushError> {
    let body = body.map_err(body_error)?;
    let gate = &state.gate;
    let tenant = gate.authenticate(headers)?;
    let Query(q) =
        query.map_err(|e| PushError::Invalid(format!("bad query: {}", e.body_text())))?;
    let now_ns = stackwatch_profile::clock::unix_ms().saturating_mul(1_000_000);
    let params = ingest_params(&q, now_ns)?;
    let source = SourceKey {
        tenant: tenant.clone(),
        service: target_labels(
            Some(&params.name.app),
            params
                .name
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            None,
        )
        .remove("service")
        .unwrap_or_default(),
    };
    // Inflating and decoding: a bounded number at once, off the async threads; the slot
    // moves into the blocking task so it is held until the decode ends.
    let slot = state.decode_slots.acquire().await?;
    let (st, headers) = (state.clone(), headers.clone());
    let series = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        ingest_series(&st, &params, &headers, &body, now_ns)
    })
    .await
    .map_err(|e| PushError::Unavailable(format!("decoding stopped: {e}")))?
    .inspect_err(|e| {
        gate.refused(&source, &e.to_string());
    })?;
    accept(state, Protocol::Pyroscope, &tenant, series).await
}

/// What the body holds, by `format` and `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngestFormat {
    Folded,
    Lines,
    Pprof,
    Multipart,
}

fn ingest_format(format: Option<&str>, content_type: &str) -> Result<IngestFormat, PushError> {
    let multipart = content_type.starts_with("multipart/form-data");
    Ok(match format {
        _ if multipart => IngestFormat::Multipart,
        Some("pprof") => IngestFormat::Pprof,
        Some("folded") | Some("groups") => IngestFormat::Folded,
        Some("lines") => IngestFormat::Lines,
        None if content_type.starts_with("binary/octet-stream+") => {
            return Err(PushError::Invalid(format!(
                "Content-Type {content_type:?} is not supported (folded, lines or pprof)"
            )))
        }
        None => IngestFormat::Folded,
        Some(other) => {
            return Err(PushError::Invalid(format!(
                "format {:?} is not supported (folded, lines or pprof)",
                other.chars().take(40).collect::<String>()
            )))
        }
    })
}

fn ingest_series(
    state: &PushState,
    params: &IngestParams,
    headers: &HeaderMap,
    body: &[u8],
    now_ns: u64,
) -> Result<Vec<PushedSeries>, PushError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = ingest_format(params.format.as_deref(), &content_type)?;
    let raw_content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = read_body(&state.gate, headers, body)?;
    let name = &params.name;
    let duration = params.until_ns - params.from_ns;
    match format {
        IngestFormat::Folded | IngestFormat::Lines => {
            check_start(params.from_ns, now_ns)?;
            let ty = name
                .hint
                .ty
                .or_else(|| type_of_units(&params.units, &params.aggregation))
                .ok_or_else(|| {
                    PushError::Invalid(format!(
                        "units {:?}: not a type stackwatch stores",
                        params.units.chars().take(40).collect::<String>()
                    ))
                })?;
            let budget = StackBudget {
                max_samples: state.request_budget().for_type(ty),
                ..state.stack_budget
            };
            let stacks = folded_stacks(&body, format == IngestFormat::Lines, &budget).map_err(
                |e| match e {
                    FoldedError::Budget(BudgetError::Samples { limit }) => {
                        PushError::Invalid(over_budget(ty, limit))
                    }
                    FoldedError::Budget(e) => PushError::Invalid(e.to_string()),
                    FoldedError::Push(e) => e,
                },
            )?;
            let timed = matches!(ty, ProfileType::Cpu | ProfileType::Wall);
            let contention = name
                .hint
                .contention
                .filter(|_| matches!(ty, ProfileType::Contentions | ProfileType::Delay));
            Ok(vec![PushedSeries {
                labels: target_labels(
                    Some(&name.app),
                    name.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    contention,
                ),
                profile_type: ty,
                start_unix_ns: params.from_ns,
                duration_ns: duration,
                period_ns: if timed {
                    1_000_000_000 / u64::from(params.sample_rate)
                } else {
                    0
                },
                stacks,
            }])
        }
        IngestFormat::Pprof | IngestFormat::Multipart => {
            let mut config = None;
            let profile: &[u8] = if format == IngestFormat::Multipart {
                let boundary = multipart_boundary(raw_content_type)?;
                let parts = multipart_parts(&body, boundary)?;
                let mut profile = None;
                for (part, data) in parts {
                    match part.as_str() {
                        "profile" => profile = Some(data),
                        "prev_profile" => {
                            return Err(PushError::Invalid(
                                "a prev_profile part (cumulative profiles of old pyroscope-go) is not supported: update the SDK".into(),
                            ))
                        }
                        "sample_type_config" => {
                            // Outside the wire count (it is JSON beside the pprof): its
                            // size bounds what parsing it builds. An SDK's names a few
                            // sample types in a few hundred bytes.
                            if data.len() > MAX_SAMPLE_TYPE_CONFIG_BYTES {
                                return Err(PushError::TooLarge(format!(
                                    "sample_type_config part of {} bytes, at most {MAX_SAMPLE_TYPE_CONFIG_BYTES}",
                                    data.len()
                                )));
                            }
                            let c: HashMap<String, SampleTypeConfig> = serde_json::from_slice(data)
                                .map_err(|e| {
                                    PushError::Invalid(format!("sample_type_config: {e}"))
                                })?;
                            config = Some(c);
                        }
                        _ => {}
                    }
                }
                profile.ok_or_else(|| {
                    PushError::Invalid("multipart body without a profile part".into())
                })?
            } else {
                &body
            };
            let max_decompressed = state.gate.config().max_decompressed_bytes;
            let mut batch = ProfileBatch::new(
                max_decompressed,
                max_message_bytes(&state.stack_budget, max_decompressed),
            );
            batch.add(
                profile,
                Some(name.app.clone()),
                name.tags.clone(),
                name.hint,
                config.as_ref(),
                params.sample_rate,
                (params.from_ns, duration),
            )?;
            batch.into_series(state, now_ns)
        }
    }
}

/// Folded text (`a;b;c 12` per line; with `lines`, one stack per line counting 1) into
/// stacks bounded by `budget`.
/// Why a folded body was refused: past a budget, or malformed.
enum FoldedError {
    Budget(BudgetError),
    Push(PushError),
}

impl From<PushError> for FoldedError {
    fn from(e: PushError) -> Self {
        FoldedError::Push(e)
    }
}

fn folded_stacks(
    body: &[u8],
    lines: bool,
    budget: &StackBudget,
) -> Result<BoundedStacks, FoldedError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| PushError::Invalid(format!("folded body is not UTF-8: {e}")))?;
    let mut acc = StackAccumulator::new(*budget);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (stack, count) = if lines {
            (line, 1)
        } else {
            let Some((stack, count)) = line.rsplit_once(' ') else {
                return Err(
                    PushError::Invalid(format!("line {}: no count (a;b;c 12)", n + 1)).into(),
                );
            };
            let count: u64 = count.trim().parse().map_err(|_| {
                PushError::Invalid(format!(
                    "line {}: count {:?} is not a non-negative integer",
                    n + 1,
                    count.chars().take(40).collect::<String>()
                ))
            })?;
            (stack, count)
        };
        if count == 0 || stack.is_empty() {
            continue;
        }
        acc.add_folded(stack, count).map_err(FoldedError::Budget)?;
    }
    Ok(acc.finish())
}

// ---------------------------------------------------------------------------------
// POST /push.v1.PusherService/Push (Connect)
// ---------------------------------------------------------------------------------

/// `push.v1` and `types.v1` messages of grafana/pyroscope's api/ (prost derive; field
/// numbers from api/push/v1/push.proto and api/types/v1/types.proto).
#[allow(missing_docs)]
pub mod proto {
    /// `push.v1.PushRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<RawProfileSeries>,
    }
    /// `push.v1.RawProfileSeries` (annotations, field 3, are dropped as Pyroscope does).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawProfileSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<LabelPair>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<RawSample>,
    }
    /// `push.v1.RawSample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawSample {
        #[prost(bytes = "vec", tag = "1")]
        pub raw_profile: Vec<u8>,
        #[prost(string, tag = "2")]
        pub id: String,
    }
    /// `types.v1.LabelPair`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    /// `push.v1.PushResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushResponse {}
}

/// Connect's JSON mapping of the same messages (camelCase names, bytes as base64; the
/// proto names are accepted too, as protojson does).
mod json {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct PushRequest {
        #[serde(default)]
        pub series: Vec<RawProfileSeries>,
    }
    #[derive(Deserialize)]
    pub struct RawProfileSeries {
        #[serde(default)]
        pub labels: Vec<LabelPair>,
        #[serde(default)]
        pub samples: Vec<RawSample>,
    }
    #[derive(Deserialize)]
    pub struct RawSample {
        #[serde(default, rename = "rawProfile", alias = "raw_profile")]
        pub raw_profile: String,
    }
    #[derive(Deserialize)]
    pub struct LabelPair {
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub value: String,
    }
}

/// Base64 as protojson accepts it: standard or URL-safe alphabet, padded or not.
fn base64_bytes(s: &str) -> Result<Vec<u8>, PushError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if s.contains(['-', '_']) {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    GeneralPurpose::new(alphabet, config)
        .decode(s.trim())
        .map_err(|e| PushError::Invalid(format!("rawProfile is not base64: {e}")))
}

/// A Connect error: `{"code": ..., "message": ...}` with the matching HTTP status (a
/// body too large stays `413`, as the other push endpoints answer it).
fn connect_error(e: PushError) -> Response {
    let code = match &e {
        PushError::Unauthorized(_) => "unauthenticated",
        PushError::TooLarge(_) | PushError::RateLimited { .. } => "resource_exhausted",
        PushError::Invalid(_) => "invalid_argument",
        PushError::Unavailable(_) | PushError::Busy { .. } => "unavailable",
    };
    let body = serde_json::json!({ "code": code, "message": e.to_string() }).to_string();
    // The plain response's status and headers (Retry-After, WWW-Authenticate), with the
    // Connect body.
    let plain = e.into_response();
    let mut r = (plain.status(), body).into_response();
    for (k, v) in plain.headers() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn connect_push(
    State(state): State<PushState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = match content_type.as_str() {
        "application/proto" | "application/protobuf" | "application/x-protobuf" => false,
        "application/json" => true,
        other => {
            let slot = PushCounters::slot(Protocol::Pyroscope);
            state.gate.counters.rejected[slot].fetch_add(1, Ordering::Relaxed);
            let body = serde_json::json!({
                "code": "invalid_argument",
                "message": format!("Content-Type {:?} is not supported (application/proto or application/json)", other.chars().take(60).collect::<String>()),
            })
            .to_string();
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    };
    let result = connect_request(&state, json, &headers, body).await;
    count(&state, "/push.v1.PusherService/Push", &result);
    match result {
        Ok(_) if json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response(),
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/proto")],
            Vec::new(),
        )
            .into_response(),
        Err(e) => connect_error(e),
    }
}

/// One decoded series of a Connect request: labels and raw profiles.
type RawSeries = (Vec<(String, String)>, Vec<Vec<u8>>);

/// What decoding a `PushRequest` builds ([`wire_scan`]), under the JSON names
/// [`json`] reads.
mod shape {
    use std::mem::size_of;

    use super::proto;
    use stackwatch_profile::wire_scan::{FieldShape, MessageShape};

    static LABEL_PAIR: MessageShape = MessageShape {
        name: "LabelPair",
        bytes: size_of::<proto::LabelPair>(),
        fields: &[
            FieldShape::bytes(1, "name", &["name"]),
            FieldShape::bytes(2, "value", &["value"]),
        ],
    };
    static RAW_SAMPLE: MessageShape = MessageShape {
        name: "RawSample",
        bytes: size_of::<proto::RawSample>(),
        fields: &[
            FieldShape::bytes(1, "raw_profile", &["rawProfile", "raw_profile"]),
            FieldShape::bytes(2, "id", &[]),
        ],
    };
    static RAW_PROFILE_SERIES: MessageShape = MessageShape {
        name: "RawProfileSeries",
        bytes: size_of::<proto::RawProfileSeries>(),
        fields: &[
            FieldShape::messages(1, "labels", &["labels"], &LABEL_PAIR),
            FieldShape::messages(2, "samples", &["samples"], &RAW_SAMPLE),
        ],
    };
    /// `push.v1.PushRequest`.
    pub static PUSH_REQUEST: MessageShape = MessageShape {
        name: "PushRequest",
        bytes: size_of::<proto::PushRequest>(),
        fields: &[FieldShape::messages(
            1,
            "series",
            &["series"],
            &RAW_PROFILE_SERIES,
        )],
    };
}

/// Decodes a `PushRequest`, refusing one whose decoded messages would take more than
/// `max_message_bytes` (counted on the wire first; JSON is held twice, as parsed and as
/// decoded base64). Returns the series and what they cost.
fn connect_decode(
    body: &[u8],
    json: bool,
    max_message_bytes: usize,
) -> Result<(Vec<RawSeries>, usize), PushError> {
    let cost = if json {
        let mut de = serde_json::Deserializer::from_slice(body);
        wire_scan::scan_json(&shape::PUSH_REQUEST, &mut de, max_message_bytes, 2)
    } else {
        wire_scan::scan_protobuf(&shape::PUSH_REQUEST, body, max_message_bytes)
    }
    .map_err(|e| {
        let malformed = if json {
            "bad PushRequest JSON"
        } else {
            "bad PushRequest protobuf"
        };
        super::otlp::scan_error("the PushRequest", malformed, e)
    })?;
    connect_series_of(body, json).map(|series| (series, cost.bytes))
}

fn connect_series_of(body: &[u8], json: bool) -> Result<Vec<RawSeries>, PushError> {
    if json {
        let req: json::PushRequest = serde_json::from_slice(body)
            .map_err(|e| PushError::Invalid(format!("bad PushRequest JSON: {e}")))?;
        req.series
            .into_iter()
            .map(|s| {
                let labels = s.labels.into_iter().map(|l| (l.name, l.value)).collect();
                let samples = s
                    .samples
                    .iter()
                    .map(|r| base64_bytes(&r.raw_profile))
                    .collect::<Result<_, _>>()?;
                Ok((labels, samples))
            })
            .collect()
    } else {
        use prost::Message as _;
        let req = proto::PushRequest::decode(body)
            .map_err(|e| PushError::Invalid(format!("bad PushRequest protobuf: {e}")))?;
        Ok(req
            .series
            .into_iter()
            .map(|s| {
                (
                    s.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                    s.samples.into_iter().map(|r| r.raw_profile).collect(),
                )
            })
            .collect())
    }
}

async fn connect_request(
    state: &PushState,
    json: bool,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, PushError> {
    let body = body.map_err(body_error)?;
    let gate = &state.gate;
    let tenant = gate.authenticate(headers)?;
    // Inflating and decoding: a bounded number at once, off the async threads; the slot
    // moves into the blocking task so it is held until the decode ends.
    let slot = state.decode_slots.acquire().await?;
    let (st, headers, who) = (state.clone(), headers.clone(), tenant.clone());
    let (series, source) = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        connect_series(&st, json, &headers, &body, &who)
    })
    .await
    .map_err(|e| PushError::Unavailable(format!("decoding stopped: {e}")))?;
    let series = series.inspect_err(|e| {
        if let Some(source) = &source {
            gate.refused(source, &e.to_string());
        }
    })?;
    accept(state, Protocol::Pyroscope, &tenant, series).await
}

/// The series of a Connect request from `tenant` (blocking: inflates and decodes), and
/// its source once a series named one.
fn connect_series(
    state: &PushState,
    json: bool,
    headers: &HeaderMap,
    body: &[u8],
    tenant: &str,
) -> (Result<Vec<PushedSeries>, PushError>, Option<SourceKey>) {
    let gate = &state.gate;
    // The request and its pprof profiles share one bound on what decoding builds.
    let max_message = max_message_bytes(&state.stack_budget, gate.config().max_decompressed_bytes);
    let decoded =
        read_body(gate, headers, body).and_then(|body| connect_decode(&body, json, max_message));
    let (raw, cost) = match decoded {
        Ok(d) => d,
        Err(e) => return (Err(e), None),
    };
    let now_ns = stackwatch_profile::clock::unix_ms().saturating_mul(1_000_000);
    let mut batch = ProfileBatch::new(
        gate.config().max_decompressed_bytes,
        max_message.saturating_sub(cost),
    );
    let mut source = None;
    let result = (|| {
        for (labels, samples) in &raw {
            let hint = labels
                .iter()
                .find(|(k, _)| k == "__name__")
                .and_then(|(_, v)| hint_of_name(v))
                .unwrap_or_default();
            let service = target_labels(
                None,
                labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                None,
            )
            .remove("service");
            let Some(service) = service else {
                return Err(PushError::Invalid(
                    "a series without a service_name label".into(),
                ));
            };
            source.get_or_insert_with(|| SourceKey {
                tenant: tenant.to_owned(),
                service,
            });
            for sample in samples {
                batch.add(
                    sample,
                    None,
                    labels.clone(),
                    hint,
                    None,
                    DEFAULT_SAMPLE_RATE,
                    (now_ns, 0),
                )?;
            }
        }
        Ok(())
    })();
    drop(raw);
    (
        result.and_then(|()| batch.into_series(state, now_ns)),
        source,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_pyroscope_writes_them() {
        let n = parse_app_name("app.cpu{env=prod, region = eu}").unwrap();
        assert_eq!(n.app, "app");
        assert_eq!(n.hint.ty, Some(ProfileType::Cpu));
        assert_eq!(
            n.tags,
            [
                ("env".into(), "prod".into()),
                ("region".into(), "eu".into())
            ]
        );
        // A dotted name that is no type keeps its dots.
        let n = parse_app_name("backend.purchases{}").unwrap();
        assert_eq!((n.app.as_str(), n.hint.ty), ("backend.purchases", None));
        let n = parse_app_name("svc.inuse_space").unwrap();
        assert_eq!(n.hint.ty, Some(ProfileType::InuseSpace));
        let n = parse_app_name("svc.mutex_count{}").unwrap();
        assert_eq!(n.hint.contention, Some("mutex"));
        // pyroscope-go: no suffix, dotted and reserved tags.
        let n = parse_app_name(
            "go-app{__session_id__=0102,otel.scope.name=com.grafana.pyroscope/go,process.runtime.name=go}",
        )
        .unwrap();
        let labels = target_labels(
            Some(&n.app),
            n.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            None,
        );
        assert_eq!(labels["service"], "go-app");
        assert_eq!(labels["otel_scope_name"], "com.grafana.pyroscope/go");
        assert_eq!(labels["process_runtime_name"], "go");
        assert!(!labels.keys().any(|k| k.contains("session")));
        // service_name wins over the app name.
        let n = parse_app_name("x.cpu{service_name=real}").unwrap();
        let labels = target_labels(
            Some(&n.app),
            n.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            None,
        );
        assert_eq!(labels["service"], "real");
        assert!(!labels.contains_key("service_name"));
        for bad in [
            "",
            ".cpu",
            "app{env=prod",
            "app{env}",
            "app}",
            "{env=x}",
            "app\u{1}",
        ] {
            assert!(parse_app_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_parse_as_pyroscope_reads_them() {
        let now = 1_700_000_000_000_000_000;
        assert_eq!(parse_time("1700000000", now), Ok(now));
        assert_eq!(parse_time("1700000000000", now), Ok(now));
        assert_eq!(parse_time("1700000000000000", now), Ok(now));
        assert_eq!(parse_time("1700000000000000000", now), Ok(now));
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("now-1h", now), Ok(now - 3_600_000_000_000));
        assert_eq!(parse_time("-10s", now), Ok(now - 10_000_000_000));
        assert_eq!(parse_time("now-1m30s", now), Ok(now - 90_000_000_000));
        for bad in [
            "yesterday",
            "now-",
            "now-5",
            "now-5parsecs",
            "99999999999999999999999",
            "12abc",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
        assert!(parse_time("now-100000w", 1).is_err());
    }

    #[test]
    fn multipart_bodies_split_into_named_parts() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n\x1f\x8b\r\n--X\r\n--XyZ\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{}\r\n--XyZ--\r\n";
        let parts = multipart_parts(body, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "profile");
        assert_eq!(parts[0].1, b"\x1f\x8b\r\n--X");
        assert_eq!(parts[1], ("sample_type_config".to_string(), &b"{}"[..]));
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"XyZ\"").unwrap(),
            "XyZ"
        );
        assert!(multipart_boundary("multipart/form-data").is_err());
        for bad in [
            &b"no boundary at all"[..],
            b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nnever closed",
            b"--XyZ garbage",
        ] {
            assert!(multipart_parts(bad, "XyZ").is_err(), "{bad:?}");
        }
        let many: Vec<u8> = (0..40)
            .flat_map(|i| {
                format!("--b\r\nContent-Disposition: form-data; name=p{i}\r\n\r\nx\r\n")
                    .into_bytes()
            })
            .chain(b"--b--".iter().copied())
            .collect();
        assert!(multipart_parts(&many, "b").is_err());
    }

    #[test]
    fn sample_types_map_to_profile_types() {
        let st = |t: &str, u: &str| SampleType {
            ty: t.into(),
            unit: u.into(),
        };
        assert_eq!(
            classify(&st("cpu", "nanoseconds"), None, "cpu"),
            Some((ProfileType::Cpu, None))
        );
        assert_eq!(
            classify(&st("samples", "count"), None, "wall"),
            Some((ProfileType::Wall, None))
        );
        let mutex = SampleTypeConfig {
            display_name: "mutex_duration".into(),
            ..Default::default()
        };
        assert_eq!(
            classify(&st("delay", "nanoseconds"), Some(&mutex), "contentions"),
            Some((ProfileType::Delay, Some("mutex")))
        );
        let odd = SampleTypeConfig {
            units: "bytes".into(),
            aggregation: "average".into(),
            ..Default::default()
        };
        assert_eq!(
            classify(&st("space", "bytes"), Some(&odd), ""),
            Some((ProfileType::InuseSpace, None))
        );
        assert_eq!(classify(&st("weird", "furlongs"), None, ""), None);
    }
}
