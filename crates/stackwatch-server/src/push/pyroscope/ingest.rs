//! `POST /ingest`: the original HTTP API (a pprof, multipart or folded body, the app name
//! and times in the query).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use stackwatch_profile::budget::{BoundedStacks, BudgetError, StackAccumulator};
use stackwatch_profile::pprof::max_message_bytes;
use stackwatch_profile::StackBudget;

use crate::profile_type::ProfileType;
use crate::push::accept::{accept, PushState};
use crate::push::budget::{over_budget, read_body};
use crate::push::error::PushError;
use crate::push::gate::{PushCounters, SourceKey};
use crate::push::series::{Accepted, Protocol, PushedSeries};

use super::multipart::{multipart_boundary, multipart_parts};
use super::names::{parse_app_name, parse_time, target_labels, type_of_units, AppName};
use super::profiles::{check_start, ProfileBatch, SampleTypeConfig, MAX_SAMPLE_TYPE_CONFIG_BYTES};

/// The sampling rate of folded CPU profiles when `sampleRate` is absent (Hz), as in
/// Pyroscope.
pub const DEFAULT_SAMPLE_RATE: u32 = 100;

/// The body's rejection by axum (over the route's body limit: 413).
pub(super) fn body_error(r: BytesRejection) -> PushError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        PushError::TooLarge(format!("body over push.max_body_bytes: {}", r.body_text()))
    } else {
        PushError::Invalid(format!("cannot read the body: {}", r.body_text()))
    }
}

/// Counts the outcome of a request and logs a refusal.
pub(super) fn count(state: &PushState, endpoint: &str, result: &Result<Accepted, PushError>) {
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

pub(super) async fn ingest(
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
pub(super) struct IngestParams {
    name: AppName,
    from_ns: u64,
    until_ns: u64,
    sample_rate: u32,
    format: Option<String>,
    units: String,
    aggregation: String,
}

pub(super) fn ingest_params(
    q: &HashMap<String, String>,
    now_ns: u64,
) -> Result<IngestParams, PushError> {
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

pub(super) async fn ingest_request(
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
pub(super) enum IngestFormat {
    Folded,
    Lines,
    Pprof,
    Multipart,
}

pub(super) fn ingest_format(
    format: Option<&str>,
    content_type: &str,
) -> Result<IngestFormat, PushError> {
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

pub(super) fn ingest_series(
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
pub(super) enum FoldedError {
    Budget(BudgetError),
    Push(PushError),
}

impl From<PushError> for FoldedError {
    fn from(e: PushError) -> Self {
        FoldedError::Push(e)
    }
}

pub(super) fn folded_stacks(
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
