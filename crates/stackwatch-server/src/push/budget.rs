//! The budgets every push decoder shares: what one request's profiles may carry together
//! ([`SampleBudget`], and the words of its refusal), and the body as sent and as inflated
//! ([`read_body`], [`gunzip`]).

use std::io::Read;
use std::sync::atomic::Ordering;

use axum::http::{header, HeaderMap};

use super::error::PushError;
use super::gate::PushGate;
use crate::profile_type::ProfileType;

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
