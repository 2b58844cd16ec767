//! [`PushError`]: why a push request was refused, and the HTTP answer each reason gets
//! (status, `Retry-After`, `WWW-Authenticate`).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use thiserror::Error;

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
