//! Push ingest: profiles sent to the collector by the agents a fleet already runs
//! (Grafana's Pyroscope SDKs, OpenTelemetry profilers), stored beside scraped ones.
//!
//! Each protocol module decodes its requests into [`PushedSeries`] and hands them to
//! [`accept`], which applies what every push passes ([`gate`]: token and tenant, rate,
//! cardinality, de-duplication of retries) and writes them through the same writer as
//! scrapes. docs/ingest.md specifies the endpoints.
//!
//! A push is an open door, so nothing here costs memory or CPU in proportion to
//! anything but the (capped) request: bodies are capped as sent and as decompressed
//! ([`read_body`]), decoded stacks by the same [`StackBudget`] as scrapes, label sets by
//! the same [`LabelBudget`].

pub mod decode_slots;
pub mod gate;
pub mod otlp;
pub mod pyroscope;

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use stackwatch_profile::budget::BoundedStacks;
use stackwatch_profile::{LabelBudget, StackBudget};
use stackwatch_store::{IngestWindow, Labels};
use thiserror::Error;

use crate::profile_type::{ProfileType, PROFILE_TYPE_LABEL};
use crate::writer::{WriteError, WriterHandle};
use gate::{Admission, PushGate, SeriesClaim, SourceKey};

/// How a push arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Pyroscope's HTTP API (`/ingest`, `/push.v1.PusherService/Push`).
    Pyroscope,
    /// OpenTelemetry profiles over OTLP/HTTP.
    Otlp,
}

impl Protocol {
    /// Its name in metrics and the Fleet page.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pyroscope => "pyroscope",
            Protocol::Otlp => "otlp",
        }
    }
}

/// Why a push was refused; each is a 4xx (or 503) with the reason as its body.
#[derive(Debug, Error)]
pub enum PushError {
    /// No token, or an unknown one.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// The body is larger than a cap, as sent or as decompressed.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// The request is malformed or breaks a limit that retrying will not fix.
    #[error("{0}")]
    Invalid(String),
    /// The source is over its rate (or too many sources are active).
    #[error("{why}")]
    RateLimited {
        /// Why.
        why: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The store cannot take it now (backlog full while the store is down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Too many requests are decoding and waiting to (`push.max_concurrent_decodes`).
    #[error("{why}")]
    Busy {
        /// Why.
        why: String,
        /// When to try again.
        retry_after: Duration,
    },
}

impl PushError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            PushError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            PushError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PushError::Invalid(_) => StatusCode::BAD_REQUEST,
            PushError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            PushError::Unavailable(_) | PushError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), format!("{self}\n")).into_response();
        match &self {
            PushError::Unauthorized(_) => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            PushError::RateLimited { retry_after, .. } | PushError::Busy { retry_after, .. } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            PushError::Unavailable(_) => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            }
            _ => {}
        }
        r
    }
}

/// One decoded series of a push: the profiles of one target label set and one profile
/// type over one time range.
#[derive(Debug, Clone)]
pub struct PushedSeries {
    /// Target labels as the protocol names them: `service` (required) and the tags or
    /// resource attributes. [`accept`] adds `tenant` and the profile type.
    pub labels: Labels,
    /// What the counts measure.
    pub profile_type: ProfileType,
    /// Start of the profiled range, Unix ns.
    pub start_unix_ns: u64,
    /// Its length, ns.
    pub duration_ns: u64,
    /// For CPU and wall profiles, the length of one period in ns (counts are periods);
    /// 0 for other types.
    pub period_ns: u64,
    /// The stacks, bounded by the budgets; labeled ones carry sample labels.
    pub stacks: BoundedStacks,
}

/// What the push routes share.
#[derive(Clone)]
pub struct PushState {
    /// Tokens, limits, de-duplication, source health.
    pub gate: Arc<PushGate>,
    /// Where windows go (the scrapers' writer).
    pub writer: WriterHandle,
    /// Budget of decoded stacks per request.
    pub stack_budget: StackBudget,
    /// Budget of sample label sets per request.
    pub label_budget: LabelBudget,
    /// What the profiles of one request other than CPU and wall may carry together
    /// (`push.max_amount_per_push`).
    pub max_amount_per_push: u64,
    /// How many requests inflate and decode at once (`push.max_concurrent_decodes`).
    pub decode_slots: Arc<decode_slots::DecodeSlots>,
}

impl PushState {
    /// A fresh budget for one request's profiles.
    pub(crate) fn request_budget(&self) -> SampleBudget {
        SampleBudget::new(self.stack_budget.max_samples, self.max_amount_per_push)
    }
}

/// What the profiles of one push request may still carry, together: CPU and wall
/// profiles are periods, bounded by the scrape budget (`scrape.max_samples_per_window`);
/// the other types are amounts (bytes, objects, nanoseconds, counts), which a busy
/// process reaches in the billions within one interval, bounded by
/// `push.max_amount_per_push`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SampleBudget {
    periods_left: u64,
    amount_left: u64,
}

impl SampleBudget {
    /// `periods` for the request's CPU and wall profiles, `amount` for the others.
    pub(crate) fn new(periods: u64, amount: u64) -> Self {
        SampleBudget {
            periods_left: periods,
            amount_left: amount,
        }
    }

    /// What the next profile of type `ty` may carry.
    pub(crate) fn for_type(&self, ty: ProfileType) -> u64 {
        if ty.is_periods() {
            self.periods_left
        } else {
            self.amount_left
        }
    }

    /// Counts what a profile of type `ty` carried.
    pub(crate) fn spend(&mut self, ty: ProfileType, samples: u64) {
        let left = if ty.is_periods() {
            &mut self.periods_left
        } else {
            &mut self.amount_left
        };
        *left = left.saturating_sub(samples);
    }
}

/// Why a profile of type `ty` was refused past its budget of `limit`, naming the key
/// that sets it.
pub(crate) fn over_budget(ty: ProfileType, limit: u64) -> String {
    if ty.is_periods() {
        format!(
            "the {} profile's counts add up to more than {limit} periods \
             (scrape.max_samples_per_window)",
            ty.name()
        )
    } else {
        format!(
            "the {} profiles of this push add up to more than {limit} \
             (push.max_amount_per_push)",
            ty.name()
        )
    }
}

/// What [`accept`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Series stored.
    pub stored: usize,
    /// Series acknowledged as repeats of a push already stored.
    pub duplicates: usize,
}

/// The longest label value a protocol may set on a target (tags, resource attributes).
pub const MAX_TARGET_LABEL_BYTES: usize = 256;
/// Target labels (tags) per series, at most.
pub const MAX_TARGET_LABELS: usize = 32;

/// Checks a decoded series' target labels: a `service`, names that are identifiers and
/// not reserved, bounded count and length.
fn check_target_labels(labels: &Labels) -> Result<(), PushError> {
    if labels.get("service").is_none_or_empty() {
        return Err(PushError::Invalid(
            "no service name (Pyroscope: the app name; OTLP: resource attribute service.name)"
                .into(),
        ));
    }
    if labels.len() > MAX_TARGET_LABELS {
        return Err(PushError::Invalid(format!(
            "{} tags, at most {MAX_TARGET_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        let ident = !k.is_empty()
            && k.len() <= 64
            && k.chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !ident || k.starts_with("__") || k == "tenant" {
            return Err(PushError::Invalid(format!(
                "tag name {:?} is not allowed (identifiers only, not tenant or __*)",
                k.chars().take(80).collect::<String>()
            )));
        }
        if v.len() > MAX_TARGET_LABEL_BYTES || v.chars().any(char::is_control) {
            return Err(PushError::Invalid(format!(
                "tag {k}: value longer than {MAX_TARGET_LABEL_BYTES} bytes or with control characters"
            )));
        }
    }
    Ok(())
}

/// `Option<&String>` is missing or empty.
trait MissingOrEmpty {
    fn is_none_or_empty(&self) -> bool;
}

impl MissingOrEmpty for Option<&String> {
    fn is_none_or_empty(&self) -> bool {
        match self {
            Some(s) => s.is_empty(),
            None => true,
        }
    }
}

/// The identity of a pushed series' content: a retry of the same push has the same
/// digest, a different push (another process of the same service, the next interval)
/// a different one.
fn digest(target_key: &str, s: &PushedSeries) -> u128 {
    use xxhash_rust::xxh3::Xxh3;
    let mut h = Xxh3::new();
    h.update(target_key.as_bytes());
    h.update(&s.start_unix_ns.to_le_bytes());
    h.update(&s.duration_ns.to_le_bytes());
    h.update(&s.period_ns.to_le_bytes());
    fn add(h: &mut Xxh3, stacks: &std::collections::HashMap<String, u64>) {
        let mut rows: Vec<(&String, &u64)> = stacks.iter().collect();
        rows.sort_unstable();
        for (stack, count) in rows {
            h.update(stack.as_bytes());
            h.update(&count.to_le_bytes());
        }
        h.update(b"\x00");
    }
    add(&mut h, &s.stacks.stacks);
    for (labels, stacks) in &s.stacks.labeled {
        h.update(stackwatch_profile::labels::format_labels(labels).as_bytes());
        add(&mut h, stacks);
    }
    h.digest128()
}

/// Bytes of profile data a series stores, what `push.max_bytes_per_second_per_tenant`
/// counts: its target labels, and per (label set, stack) row the stack text, the sample
/// labels and 8 bytes of count.
fn payload_bytes(target: &Labels, stacks: &BoundedStacks) -> u64 {
    fn label_bytes(l: &Labels) -> u64 {
        l.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }
    fn rows(stacks: &std::collections::HashMap<String, u64>, labels: u64) -> u64 {
        stacks.keys().map(|s| s.len() as u64 + 8 + labels).sum()
    }
    let labeled: u64 = stacks
        .labeled
        .iter()
        .map(|(l, s)| rows(s, label_bytes(l)))
        .sum();
    label_bytes(target) + rows(&stacks.stacks, 0) + labeled
}

/// Stores the series of one request from `tenant` (empty: anonymous): target labels
/// checked, `tenant` and the profile type added, the request admitted whole or refused
/// whole by the gate ([`PushGate::admit_request`]: rates, sources, series), repeats of
/// a push stored within `push.dedup_window` acknowledged without storing. All series of
/// the request are written together.
///
/// A series whose repeat another request is writing waits for that write: acknowledged
/// once it committed, written by this request if it failed, never written twice. A
/// refused request records nothing (no source, no series slot, no digest); a write that
/// fails takes back what the request held, so its retry is stored.
pub async fn accept(
    state: &PushState,
    protocol: Protocol,
    tenant: &str,
    series: Vec<PushedSeries>,
) -> Result<Accepted, PushError> {
    let gate = &state.gate;
    let mut claims = Vec::with_capacity(series.len());
    let mut windows = Vec::with_capacity(series.len());
    for s in series {
        check_target_labels(&s.labels)?;
        let source = SourceKey {
            tenant: tenant.to_owned(),
            service: s.labels.get("service").cloned().unwrap_or_default(),
        };
        let mut target = s.labels.clone();
        if !tenant.is_empty() {
            target.insert("tenant".into(), tenant.to_owned());
        }
        if let Some(t) = s.profile_type.label_value() {
            target.insert(PROFILE_TYPE_LABEL.into(), t.to_owned());
        }
        let key = stackwatch_profile::labels::format_labels(&target);
        let d = digest(&key, &s);
        let payload_bytes = payload_bytes(&target, &s.stacks);
        let mut stacks = s.stacks;
        windows.push(IngestWindow {
            target: target.clone(),
            // The content digest: ClickHouse keeps one row per (window identity, stack),
            // so a repeat replaces instead of adding even after a restart.
            instance: format!("push-{d:032x}"),
            seq: 0,
            start_unix_s: (s.start_unix_ns / 1_000_000_000).min(i64::MAX as u64) as i64,
            stacks: std::mem::take(&mut stacks.stacks).into_iter().collect(),
            labeled: std::mem::take(&mut stacks.labeled)
                .into_iter()
                .map(|(l, s)| (l, s.into_iter().collect()))
                .collect(),
            period_ns: s.period_ns,
        });
        claims.push(SeriesClaim {
            source,
            key,
            labels: target,
            protocol,
            profile_type: s.profile_type.name(),
            digest: d,
            payload_bytes,
        });
    }
    if claims.is_empty() {
        return Ok(Accepted::default());
    }
    let mut waited = false;
    let ticket = loop {
        match gate.admit_request(&claims)? {
            Admission::Admitted(t) => break t,
            Admission::Wait(writes) => {
                if !waited {
                    waited = true;
                    gate.counters
                        .waited_for_original
                        .fetch_add(1, Ordering::Relaxed);
                }
                for mut w in writes {
                    // Ends (Err: its sender is gone) when that write has ended.
                    let _ = w.changed().await;
                }
            }
        }
    };
    let windows: Vec<IngestWindow> = windows
        .into_iter()
        .zip(&ticket.write)
        .filter_map(|(w, write)| write.then_some(w))
        .collect();
    if windows.is_empty() {
        return Ok(ticket.finish(Ok(())));
    }
    let rows: usize = windows
        .iter()
        .map(|w| w.stacks.len() + w.labeled.iter().map(|(_, s)| s.len()).sum::<usize>())
        .sum();
    // The write and the record of its outcome run to the end even when the client goes
    // away: a write that commits after its request was dropped must still count as
    // stored, or a retry would write it a second time.
    let writer = state.writer.clone();
    let written = tokio::spawn(async move {
        let result = writer.write(windows).await;
        let failed = result.as_ref().err().map(ToString::to_string);
        let outcome = ticket.finish(match &failed {
            None => Ok(()),
            Some(why) => Err(why.as_str()),
        });
        result.map(|()| outcome)
    })
    .await
    .map_err(|e| PushError::Unavailable(format!("the write stopped: {e}")))?;
    match written {
        Ok(accepted) => {
            gate.counters.rows.fetch_add(rows as u64, Ordering::Relaxed);
            Ok(accepted)
        }
        Err(e) => {
            let refusal = write_refusal(e);
            if matches!(refusal, PushError::Unavailable(_)) {
                gate.counters
                    .store_unavailable
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(refusal)
        }
    }
}

/// The refusal a failed write answers.
fn write_refusal(e: WriteError) -> PushError {
    // Transient (the backlog full, the writer stopping, the store unavailable or busy):
    // 503 with Retry-After, the client retries; otherwise the request itself is refused.
    if e.is_transient() {
        PushError::Unavailable(e.to_string())
    } else {
        PushError::Invalid(e.to_string())
    }
}

/// The body of a request, decompressed when its `Content-Encoding` is `gzip`, within
/// `push.max_body_bytes` as sent (the route's body limit enforces it) and
/// `push.max_decompressed_bytes` once inflated.
pub fn read_body(gate: &PushGate, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, PushError> {
    let cfg = gate.config();
    gate.counters
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    if body.len() > cfg.max_body_bytes {
        return Err(PushError::TooLarge(format!(
            "body over push.max_body_bytes ({})",
            cfg.max_body_bytes
        )));
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => gunzip(body, cfg.max_decompressed_bytes),
        other => Err(PushError::Invalid(format!(
            "Content-Encoding {other:?} is not supported (gzip or none)"
        ))),
    }
}

/// Inflates gzip `bytes`, refusing past `max` bytes of output.
pub fn gunzip(bytes: &[u8], max: usize) -> Result<Vec<u8>, PushError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| PushError::Invalid(format!("bad gzip stream: {e}")))?;
    if out.len() > max {
        return Err(PushError::TooLarge(format!(
            "body decompresses past push.max_decompressed_bytes ({max})"
        )));
    }
    Ok(out)
}

/// The push routes (none unless `[push] enabled`), each protocol's own; they carry
/// their own authentication (push tokens, not the API's token).
pub fn router(state: Option<PushState>) -> Router {
    let Some(state) = state else {
        return Router::new();
    };
    let limit = state.gate.config().max_body_bytes;
    let deadline = state.gate.config().body_timeout;
    let gate = state.gate.clone();
    Router::new()
        .merge(otlp::routes())
        .merge(pyroscope::routes())
        .layer(axum::middleware::from_fn(move |req, next| {
            body_within_deadline(req, next, limit, deadline, gate.clone())
        }))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Reads a push request's body (at most `limit` bytes) within `deadline`
/// (`push.body_timeout`), then hands the request on with the body in memory (every push
/// handler reads it whole). A client that stalls half-way (2 of 100 bytes, then
/// nothing) is answered `408` and its connection closed, instead of holding a
/// connection slot, and a graceful shutdown, for as long as it likes.
async fn body_within_deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    limit: usize,
    deadline: Duration,
    gate: Arc<PushGate>,
) -> Response {
    let (parts, body) = req.into_parts();
    // One byte past the limit is enough for the handler's own refusal (each protocol
    // words its 413: Connect as `resource_exhausted`).
    let read = limit.saturating_add(1);
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, read)).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        // Longer still (or cut short): the handler refuses a body past the limit as it
        // would have, without the rest being read.
        Ok(Err(_)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(vec![0u8; read]),
            ))
            .await
        }
        Err(_) => {
            gate.counters.body_timeouts.fetch_add(1, Ordering::Relaxed);
            let mut r = (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within push.body_timeout ({} s)\n",
                    deadline.as_secs_f64()
                ),
            )
                .into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// The push metrics, Prometheus text (appended to `/metrics`).
pub fn write_metrics(gate: &PushGate, m: &mut stackwatch_http::metrics_text::MetricsText) {
    use stackwatch_http::metrics_text::MetricKind;
    let c = &gate.counters;
    m.family(
        "stackwatch_push_requests_total",
        MetricKind::Counter,
        "Push requests by protocol and outcome.",
    );
    for p in [Protocol::Pyroscope, Protocol::Otlp] {
        let i = gate::PushCounters::slot(p);
        m.sample(
            "stackwatch_push_requests_total",
            &[("protocol", p.name()), ("outcome", "accepted")],
            c.accepted[i].load(Ordering::Relaxed),
        );
        m.sample(
            "stackwatch_push_requests_total",
            &[("protocol", p.name()), ("outcome", "rejected")],
            c.rejected[i].load(Ordering::Relaxed),
        );
    }
    m.family(
        "stackwatch_push_limit_refused_total",
        MetricKind::Counter,
        "Push requests refused by a per-tenant limit, by its [push] key (nothing of them stored).",
    );
    for (limit, n) in gate::Limit::ALL.iter().zip(&c.limit_refused) {
        m.sample(
            "stackwatch_push_limit_refused_total",
            &[("limit", limit.key())],
            n.load(Ordering::Relaxed),
        );
    }
    m.single(
        "stackwatch_push_rate_limited_total",
        MetricKind::Counter,
        "Push requests refused by push.max_requests_per_second or push.max_sources.",
        c.rate_limited.load(Ordering::Relaxed),
    )
    .single(
        "stackwatch_push_series_refused_total",
        MetricKind::Counter,
        "Push requests refused by push.max_series_per_source (a refused request stores none of its series).",
        c.series_refused.load(Ordering::Relaxed),
    )
    .single(
        "stackwatch_push_store_unavailable_total",
        MetricKind::Counter,
        "Push requests answered 503 because the store could not take them now (backlog full, SQLite busy, shutting down).",
        c.store_unavailable.load(Ordering::Relaxed),
    )
    .single(
        "stackwatch_push_retries_waited_total",
        MetricKind::Counter,
        "Push requests that waited for the write of an identical push still in progress (then acknowledged, or written if it failed).",
        c.waited_for_original.load(Ordering::Relaxed),
    )
    .single(
        "stackwatch_push_profiles_refused_total",
        MetricKind::Counter,
        "Profiles refused inside push requests that stored others (OTLP partial success: a budget, a bad index, an unknown type).",
        c.profiles_refused.load(Ordering::Relaxed),
    )
    .single(
        "stackwatch_push_body_timeouts_total",
        MetricKind::Counter,
        "Push requests answered 408: the body did not arrive within push.body_timeout.",
        c.body_timeouts.load(Ordering::Relaxed),
    )
    .single(
        "stackwatch_push_duplicates_total",
        MetricKind::Counter,
        "Pushed series acknowledged as repeats within push.dedup_window, not stored again.",
        c.duplicates.load(Ordering::Relaxed),
    )
    .single(
        "stackwatch_push_received_bytes_total",
        MetricKind::Counter,
        "Bytes of push request bodies as sent.",
        c.bytes.load(Ordering::Relaxed),
    )
    .single(
        "stackwatch_push_rows_total",
        MetricKind::Counter,
        "(label set, stack) rows of pushed profiles stored.",
        c.rows.load(Ordering::Relaxed),
    );
}
