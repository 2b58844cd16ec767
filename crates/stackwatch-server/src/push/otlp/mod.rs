//! OpenTelemetry profiles over OTLP/HTTP: `POST /v1development/profiles` with an
//! `ExportProfilesServiceRequest` of the v1development data model (opentelemetry-proto
//! 1.10), as protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`).
//!
//! What a request becomes (docs/ingest.md, "OpenTelemetry (OTLP/HTTP)"):
//!
//! - each `resource_profiles[]` is one target: the resource attribute `service.name`
//!   is `service` (required: a resource without it has its profiles refused), every
//!   other scalar attribute a target label named identifier-safe (`host.name` →
//!   `host_name`);
//! - each profile of it is one series of the profile type its `sample_type` and
//!   `period_type` name ([`ProfileType::from_sample_type`]): CPU and wall time in
//!   periods (nanoseconds divided by the period), other types as counted;
//! - a sample's stack is `dictionary.stack_table[stack_index].location_indices` (leaf
//!   first, as in pprof), each location's lines innermost first (inlined functions),
//!   stored root first as folded stacks; a location without lines is named by its
//!   mapping's file and address;
//! - a sample's string attributes (`attribute_indices` into `attribute_table`) are its
//!   sample labels.
//!
//! Every index is checked; a profile that names something that is not there, a type
//! stackwatch does not store, a negative or overflowing count, or that expands past the
//! [`StackBudget`](stackwatch_profile::StackBudget) is refused alone, and the answer is
//! a partial success (`rejected_profiles`, `error_message`). The budget is the
//! request's: profiles share it, so decoding costs memory and CPU in proportion to the
//! (capped) request only, and a stack or a location is validated once per request
//! however many samples name it. Before any of it, what decoding the request builds is
//! counted on the wire ([`wire_scan`]) and a request past
//! [`max_message_bytes`](stackwatch_profile::pprof::max_message_bytes) is `413`; requests
//! inflate and decode in a bounded number of slots
//! ([`DecodeSlots`](super::decode_slots::DecodeSlots)), off the async threads.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceResponse,
};
use prost::Message;
use stackwatch_profile::pprof;

use super::accept::{accept, PushState};
use super::budget::read_body;
use super::error::PushError;
use super::gate::{PushCounters, SourceKey};
use super::series::Protocol;

mod convert;
mod json;
mod shape;

pub(crate) use convert::scan_error;
use convert::summary;
pub use convert::{decode_request, label_name, parse, Decoded, Encoding, OtlpError};

/// The path OTLP/HTTP exporters post profiles to (the OpenTelemetry Collector's
/// `otlphttp` exporter: its `endpoint` followed by this).
pub const PATH: &str = "/v1development/profiles";

/// The OTLP route (merged into the push router, which adds the body limit and state).
pub fn routes() -> Router<PushState> {
    Router::new().route(PATH, post(export))
}

/// What a successful export answers: nothing refused, or a partial success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Profiles refused.
    pub rejected: usize,
    /// Why (empty when none was).
    pub message: String,
}

impl Answer {
    fn into_response(self, enc: Encoding) -> Response {
        let partial =
            (self.rejected > 0 || !self.message.is_empty()).then(|| ExportProfilesPartialSuccess {
                rejected_profiles: i64::try_from(self.rejected).unwrap_or(i64::MAX),
                error_message: self.message.clone(),
            });
        let body = match enc {
            Encoding::Protobuf => ExportProfilesServiceResponse {
                partial_success: partial,
            }
            .encode_to_vec(),
            Encoding::Json => match partial {
                // OTLP/JSON: int64 as a decimal string.
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedProfiles": p.rejected_profiles.to_string(),
                    "errorMessage": p.error_message,
                }})
                .to_string()
                .into_bytes(),
                None => b"{}".to_vec(),
            },
        };
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, enc.content_type())],
            body,
        )
            .into_response()
    }
}

/// Authenticates, reads, decodes and stores one request.
async fn handle(
    state: &PushState,
    headers: &HeaderMap,
    body: Bytes,
    enc: Encoding,
) -> Result<Answer, PushError> {
    let tenant = state.gate.authenticate(headers)?;
    let (stack_budget, label_budget) = (state.stack_budget, state.label_budget);
    let max_amount = state.max_amount_per_push;
    // Inflating and decoding hold up to the inflated body and the decoded messages: a
    // bounded number at once, off the async threads (CPU work in proportion to the
    // capped body). The slot moves into the blocking task, so it stays held until the
    // decode ends even if the client goes away.
    let slot = state.decode_slots.acquire().await?;
    let gate = state.gate.clone();
    let max_message_bytes =
        pprof::max_message_bytes(&stack_budget, gate.config().max_decompressed_bytes);
    let headers = headers.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let raw = read_body(&gate, &headers, &body)?;
        drop(body);
        let req = parse(enc, &raw, max_message_bytes)?;
        drop(raw);
        Ok::<_, PushError>(decode_request(
            &req,
            &stack_budget,
            &label_budget,
            max_amount,
        ))
    })
    .await
    .map_err(|e| PushError::Unavailable(format!("decoding stopped: {e}")))??;
    for (service, e) in &decoded.reasons {
        if let Some(service) = service {
            let source = SourceKey {
                tenant: tenant.clone(),
                service: service.clone(),
            };
            state.gate.refused(&source, &e.to_string());
        }
    }
    let message = summary(&decoded.reasons);
    if decoded.profiles > 0 && decoded.rejected == decoded.profiles {
        return Err(PushError::Invalid(format!(
            "no profile accepted ({} refused): {message}",
            decoded.rejected
        )));
    }
    accept(state, Protocol::Otlp, &tenant, decoded.series).await?;
    state.gate.counters.profiles_refused.fetch_add(
        decoded.rejected as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    Ok(Answer {
        rejected: decoded.rejected,
        message,
    })
}

/// `POST /v1development/profiles`.
async fn export(State(state): State<PushState>, headers: HeaderMap, body: Bytes) -> Response {
    let slot = PushCounters::slot(Protocol::Otlp);
    let counters = &state.gate.counters;
    let Some(enc) = Encoding::of(&headers) else {
        counters.rejected[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415 unsupported media type, supported: [application/json, application/x-protobuf]\n",
        )
            .into_response();
    };
    match handle(&state, &headers, body, enc).await {
        Ok(answer) => {
            counters.accepted[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            answer.into_response(enc)
        }
        Err(e) => {
            counters.rejected[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            error_response(e, enc)
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A refusal as OTLP/HTTP wants it: the push error's status and headers
/// (`WWW-Authenticate`, `Retry-After`), its reason in a `google.rpc.Status` encoded
/// like the request.
fn error_response(e: PushError, enc: Encoding) -> Response {
    // gRPC codes: INVALID_ARGUMENT 3, RESOURCE_EXHAUSTED 8, UNAVAILABLE 14,
    // UNAUTHENTICATED 16.
    let code = match &e {
        PushError::Unauthorized(_) => 16,
        PushError::TooLarge(_) | PushError::RateLimited { .. } => 8,
        PushError::Invalid(_) => 3,
        PushError::Unavailable(_) | PushError::Busy { .. } => 14,
    };
    let message = e.to_string();
    let mut r = e.into_response();
    let body = match enc {
        Encoding::Protobuf => RpcStatus { code, message }.encode_to_vec(),
        Encoding::Json => serde_json::json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(enc.content_type()),
    );
    r.headers_mut().remove(header::CONTENT_LENGTH);
    *r.body_mut() = axum::body::Body::from(body);
    r
}
