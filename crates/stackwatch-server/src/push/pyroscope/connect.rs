//! `POST /push.v1.PusherService/Push`: the Connect endpoint (protobuf or JSON) that the
//! Rust-based SDKs and Grafana Alloy send: series of labels, each with raw pprof profiles.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use stackwatch_profile::pprof::max_message_bytes;
use stackwatch_profile::wire_scan;

use crate::push::accept::{accept, PushState};
use crate::push::budget::read_body;
use crate::push::error::PushError;
use crate::push::gate::{PushCounters, SourceKey};
use crate::push::series::{Accepted, Protocol, PushedSeries};

use super::ingest::{body_error, count, DEFAULT_SAMPLE_RATE};
use super::names::{hint_of_name, target_labels};
use super::profiles::ProfileBatch;

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
pub(super) mod json {
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
pub(super) fn base64_bytes(s: &str) -> Result<Vec<u8>, PushError> {
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
pub(super) fn connect_error(e: PushError) -> Response {
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

pub(super) async fn connect_push(
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
pub(super) type RawSeries = (Vec<(String, String)>, Vec<Vec<u8>>);

/// What decoding a `PushRequest` builds ([`wire_scan`]), under the JSON names
/// [`json`] reads.
pub(super) mod shape {
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
pub(super) fn connect_decode(
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
        crate::push::otlp::scan_error("the PushRequest", malformed, e)
    })?;
    connect_series_of(body, json).map(|series| (series, cost.bytes))
}

pub(super) fn connect_series_of(body: &[u8], json: bool) -> Result<Vec<RawSeries>, PushError> {
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

pub(super) async fn connect_request(
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
pub(super) fn connect_series(
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
