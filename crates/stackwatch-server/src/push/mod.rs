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
//! ([`read_body`]), decoded stacks by the same [`StackBudget`](stackwatch_profile::StackBudget) as scrapes, label sets by
//! the same [`LabelBudget`](stackwatch_profile::LabelBudget).

pub mod accept;
pub mod budget;
pub mod decode_slots;
pub mod error;
pub mod gate;
pub mod otlp;
pub mod pyroscope;
pub mod series;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use accept::{accept, PushState};
pub use budget::{gunzip, read_body};
pub use error::PushError;
use gate::PushGate;
pub use series::{Accepted, Protocol, PushedSeries, MAX_TARGET_LABELS, MAX_TARGET_LABEL_BYTES};

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
