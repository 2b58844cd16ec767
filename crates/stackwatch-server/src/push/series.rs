//! What every protocol decodes a push into ([`PushedSeries`], with the [`Protocol`] it
//! came by), what storing it reports ([`Accepted`]), and the checks of the target labels
//! a protocol sets (tags, resource attributes).

use stackwatch_profile::budget::BoundedStacks;
use stackwatch_store::Labels;

use super::error::PushError;
use crate::profile_type::ProfileType;

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

/// One decoded series of a push: the profiles of one target label set and one profile
/// type over one time range.
#[derive(Debug, Clone)]
pub struct PushedSeries {
    /// Target labels as the protocol names them: `service` (required) and the tags or
    /// resource attributes. [`accept`](super::accept::accept) adds `tenant` and the profile type.
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

/// What [`accept`](super::accept::accept) did.
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
pub(crate) fn check_target_labels(labels: &Labels) -> Result<(), PushError> {
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
