//! OTLP profiles into [`PushedSeries`]: the request parsed (protobuf or OTLP/JSON,
//! counted on the wire first), every index checked, each profile decoded within the
//! request's budgets, and the reasons of the profiles refused. The handler (`mod.rs`)
//! only authenticates, runs this in a decode slot and answers.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Location, Mapping, Profile, ProfilesDictionary, Stack,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use stackwatch_profile::budget::{BudgetError, LabelSetIndex, StackAccumulator};
use stackwatch_profile::folded::MAX_FRAME_LEN;
use stackwatch_profile::labels::{clean_labels, labels_within};
use stackwatch_profile::wire_scan::{self, ScanError};
use stackwatch_profile::{LabelBudget, SampleLabels, StackBudget};
use stackwatch_store::Labels;
use thiserror::Error;

use crate::profile_type::{ProfileType, Unit};
use crate::push::budget::{over_budget, SampleBudget};
use crate::push::error::PushError;
use crate::push::series::{check_target_labels, PushedSeries};

use super::{json, shape};

/// Distinct reasons quoted in one `error_message`, at most.
const MAX_REASONS: usize = 4;

/// How a request is encoded, and so its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf` (or `application/protobuf`).
    Protobuf,
    /// `application/json`: OTLP/JSON (lowerCamelCase names, 64-bit integers as strings
    /// or numbers).
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names; `None` for anything else.
    pub fn of(headers: &HeaderMap) -> Option<Encoding> {
        let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Why one profile (or every profile of one resource) was refused. Its text is what
/// the partial success's `error_message` quotes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OtlpError {
    /// The resource has no `service.name`.
    #[error("resource without the attribute service.name")]
    NoService,
    /// A target label the collector refuses (name, count, length).
    #[error("resource attributes: {0}")]
    TargetLabels(String),
    /// An index points outside its table (or is negative).
    #[error("{what} index {index} out of range ({len} entries)")]
    Index {
        /// Which table.
        what: &'static str,
        /// The index as sent.
        index: i64,
        /// The table's length.
        len: usize,
    },
    /// The sample type is not one stackwatch stores.
    #[error("sample type {ty:?}/{unit:?} (period type {period:?}) is not a stored profile type")]
    UnknownType {
        /// `sample_type.type`.
        ty: String,
        /// `sample_type.unit`.
        unit: String,
        /// `period_type.type`.
        period: String,
    },
    /// A CPU or wall profile without a period in nanoseconds, so its counts are no time.
    #[error(
        "{0} profile without a period in nanoseconds (period_type unit nanoseconds, period > 0)"
    )]
    NoPeriod(&'static str),
    /// A sample value below zero.
    #[error("negative sample value {0}")]
    Negative(i64),
    /// A sample's values add up past i64.
    #[error("sample values overflow a 64-bit sum")]
    Overflow,
    /// The profile expands past the request's stack budget.
    #[error("{0}")]
    Budget(#[from] BudgetError),
    /// The profile's counts pass what the request may still carry of its kind
    /// (periods: `scrape.max_samples_per_window`; amounts: `push.max_amount_per_push`).
    #[error("{0}")]
    OverBudget(String),
}

/// Frames of one location, or one sample, at most: enough to fill any budget's depth
/// and see it exceeded, without walking a hostile stack further.
fn frames_wanted(budget: &StackBudget) -> usize {
    budget.max_depth.saturating_add(1)
}

/// `key` as a label name: ASCII letters, digits and `_`, every other character `_`, a
/// leading digit prefixed with `_` (`host.name` → `host_name`).
pub fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len().min(80) + 1);
    for c in key.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

static ZERO_STACK: Stack = Stack {
    location_indices: Vec::new(),
};
static ZERO_LOCATION: Location = Location {
    mapping_index: 0,
    address: 0,
    lines: Vec::new(),
    attribute_indices: Vec::new(),
};
static ZERO_FUNCTION: Function = Function {
    name_strindex: 0,
    system_name_strindex: 0,
    filename_strindex: 0,
    start_line: 0,
};
static ZERO_MAPPING: Mapping = Mapping {
    memory_start: 0,
    memory_limit: 0,
    file_offset: 0,
    filename_strindex: 0,
    attribute_indices: Vec::new(),
};
static ZERO_ATTRIBUTE: KeyValueAndUnit = KeyValueAndUnit {
    key_strindex: 0,
    value: None,
    unit_strindex: 0,
};
static EMPTY_DICTIONARY: ProfilesDictionary = ProfilesDictionary {
    mapping_table: Vec::new(),
    location_table: Vec::new(),
    function_table: Vec::new(),
    link_table: Vec::new(),
    string_table: Vec::new(),
    attribute_table: Vec::new(),
    stack_table: Vec::new(),
};

/// `table[index]`, checked. Index 0 is the table's zero value even when a sender left
/// the table empty (the spec wants it present; nothing is lost by not insisting).
fn entry<'a, T>(
    table: &'a [T],
    index: i32,
    zero: &'a T,
    what: &'static str,
) -> Result<&'a T, OtlpError> {
    let bad = || OtlpError::Index {
        what,
        index: i64::from(index),
        len: table.len(),
    };
    let i = usize::try_from(index).map_err(|_| bad())?;
    match table.get(i) {
        Some(t) => Ok(t),
        None if i == 0 => Ok(zero),
        None => Err(bad()),
    }
}

/// Validation state of a dictionary entry, remembered for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    Unknown,
    Good,
    Bad,
}

/// The request's dictionary with every lookup checked, and what was already validated
/// (so a stack named by a million samples, or by a thousand profiles, is walked once).
struct Dict<'a> {
    d: &'a ProfilesDictionary,
    stacks: Vec<Checked>,
    locations: Vec<Checked>,
    bad: HashMap<(u8, usize), OtlpError>,
}

impl<'a> Dict<'a> {
    fn new(d: &'a ProfilesDictionary) -> Self {
        Dict {
            d,
            stacks: vec![Checked::Unknown; d.stack_table.len()],
            locations: vec![Checked::Unknown; d.location_table.len()],
            bad: HashMap::new(),
        }
    }

    fn string(&self, index: i32) -> Result<&'a str, OtlpError> {
        entry(&self.d.string_table, index, &EMPTY, "string").map(String::as_str)
    }

    fn function_name(&self, index: i32) -> Result<&'a str, OtlpError> {
        let f = entry(&self.d.function_table, index, &ZERO_FUNCTION, "function")?;
        let name = self.string(f.name_strindex)?;
        if name.is_empty() {
            return self.string(f.system_name_strindex);
        }
        Ok(name)
    }

    /// The error remembered for a bad entry (`kind` 0: location, 1: stack).
    fn bad_entry(&self, kind: u8, i: usize) -> OtlpError {
        self.bad
            .get(&(kind, i))
            .cloned()
            .unwrap_or(OtlpError::Index {
                what: if kind == 0 { "location" } else { "stack" },
                index: i as i64,
                len: 0,
            })
    }

    /// Checks a location: its mapping, its lines' functions and their names.
    fn check_location(&mut self, index: i32) -> Result<&'a Location, OtlpError> {
        let loc = entry(&self.d.location_table, index, &ZERO_LOCATION, "location")?;
        let i = index as usize; // non-negative: `entry` checked it
        match self.locations.get(i).copied().unwrap_or(Checked::Good) {
            Checked::Good => return Ok(loc),
            Checked::Bad => return Err(self.bad_entry(0, i)),
            Checked::Unknown => {}
        }
        let result = (|| -> Result<(), OtlpError> {
            let m = entry(
                &self.d.mapping_table,
                loc.mapping_index,
                &ZERO_MAPPING,
                "mapping",
            )?;
            self.string(m.filename_strindex)?;
            for line in &loc.lines {
                self.function_name(line.function_index)?;
            }
            Ok(())
        })();
        self.locations[i] = if result.is_ok() {
            Checked::Good
        } else {
            Checked::Bad
        };
        match result {
            Ok(()) => Ok(loc),
            Err(e) => {
                self.bad.insert((0, i), e.clone());
                Err(e)
            }
        }
    }

    /// Checks a stack and every location it names (once per request).
    fn check_stack(&mut self, index: i32) -> Result<&'a Stack, OtlpError> {
        let stack = entry(&self.d.stack_table, index, &ZERO_STACK, "stack")?;
        let i = index as usize;
        match self.stacks.get(i).copied().unwrap_or(Checked::Good) {
            Checked::Good => return Ok(stack),
            Checked::Bad => return Err(self.bad_entry(1, i)),
            Checked::Unknown => {}
        }
        let mut result: Result<(), OtlpError> = Ok(());
        for &l in &stack.location_indices {
            if let Err(e) = self.check_location(l) {
                result = Err(e);
                break;
            }
        }
        self.stacks[i] = if result.is_ok() {
            Checked::Good
        } else {
            Checked::Bad
        };
        match result {
            Ok(()) => Ok(stack),
            Err(e) => {
                self.bad.insert((1, i), e.clone());
                Err(e)
            }
        }
    }

    /// The name of a location without lines: its mapping's file (base name) and the
    /// address, or the address alone.
    fn address_name(&self, loc: &Location) -> String {
        let file = entry(
            &self.d.mapping_table,
            loc.mapping_index,
            &ZERO_MAPPING,
            "mapping",
        )
        .and_then(|m| self.string(m.filename_strindex))
        .unwrap_or("");
        let base = file.rsplit('/').next().unwrap_or(file);
        if base.is_empty() {
            format!("{:#x}", loc.address)
        } else {
            format!("{base}+{:#x}", loc.address)
        }
    }

    /// Root-first frames of a checked stack, at most `max` of them (the root side).
    fn frames(&self, stack: &'a Stack, max: usize, out: &mut Vec<Cow<'a, str>>) {
        out.clear();
        // Locations are leaf first; a location's lines innermost first (the last is
        // the caller the others were inlined into).
        for &l in stack.location_indices.iter().rev() {
            let Ok(loc) = entry(&self.d.location_table, l, &ZERO_LOCATION, "location") else {
                continue; // checked before: not reached
            };
            if loc.lines.is_empty() {
                out.push(Cow::Owned(self.address_name(loc)));
            }
            for line in loc.lines.iter().rev() {
                out.push(Cow::Borrowed(
                    self.function_name(line.function_index).unwrap_or(""),
                ));
                if out.len() >= max {
                    return;
                }
            }
            if out.len() >= max {
                return;
            }
        }
    }

    /// The text of an attribute value that can be a label (strings, numbers, booleans);
    /// `None` for arrays, maps, bytes and empty values.
    fn scalar(&self, v: Option<&'a AnyValue>) -> Result<Option<Cow<'a, str>>, OtlpError> {
        Ok(match v.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(Cow::Borrowed(s.as_str())),
            Some(any_value::Value::StringValueStrindex(i)) => Some(Cow::Borrowed(self.string(*i)?)),
            Some(any_value::Value::IntValue(i)) => Some(Cow::Owned(i.to_string())),
            Some(any_value::Value::BoolValue(b)) => {
                Some(Cow::Borrowed(if *b { "true" } else { "false" }))
            }
            Some(any_value::Value::DoubleValue(d)) => Some(Cow::Owned(d.to_string())),
            _ => None,
        })
    }
}

static EMPTY: String = String::new();

/// The target labels of a resource: `service` from `service.name`, every other scalar
/// attribute under its identifier-safe name (the first of two that end up with the same
/// name wins), checked as every push's target labels are.
fn resource_labels(resource: Option<&Resource>, dict: &Dict<'_>) -> Result<Labels, OtlpError> {
    let mut labels = Labels::new();
    let attrs: &[KeyValue] = resource.map_or(&[], |r| &r.attributes);
    let key_of = |kv: &'_ KeyValue| -> Result<String, OtlpError> {
        if kv.key.is_empty() {
            dict.string(kv.key_strindex).map(str::to_owned)
        } else {
            Ok(kv.key.clone())
        }
    };
    let mut rest = Vec::new();
    for kv in attrs {
        let key = key_of(kv)?;
        let Some(value) = dict.scalar(kv.value.as_ref())? else {
            continue;
        };
        if key == "service.name" {
            labels.insert("service".into(), value.into_owned());
        } else {
            rest.push((label_name(&key), value));
        }
    }
    if !matches!(labels.get("service"), Some(s) if !s.is_empty()) {
        return Err(OtlpError::NoService);
    }
    for (name, value) in rest {
        labels.entry(name).or_insert_with(|| value.into_owned());
    }
    check_target_labels(&labels).map_err(|e| OtlpError::TargetLabels(e.to_string()))?;
    Ok(labels)
}

/// What the profiles of a request may still cost together.
#[derive(Debug, Clone, Copy)]
struct RequestBudget {
    bytes_left: usize,
    /// Periods (CPU, wall) and amounts (the other types).
    samples: SampleBudget,
}

/// How a profile's values become stored counts.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// As they are.
    Count,
    /// Nanoseconds into periods of this many ns (rounded to the nearest period).
    Periods(u64),
}

/// One profile as a series (`None`: nothing in it), or why it is refused.
fn decode_profile<'a>(
    dict: &mut Dict<'a>,
    profile: &'a Profile,
    labels: &Labels,
    stack_budget: &StackBudget,
    label_budget: &LabelBudget,
    left: &mut RequestBudget,
) -> Result<Option<PushedSeries>, OtlpError> {
    let st = profile.sample_type.unwrap_or_default();
    let ty = dict.string(st.type_strindex)?;
    let unit = dict.string(st.unit_strindex)?;
    let pt = profile.period_type.unwrap_or_default();
    let period_ty = dict.string(pt.type_strindex)?;
    let period_unit = dict.string(pt.unit_strindex)?;
    let profile_type = ProfileType::from_sample_type(ty, unit, period_ty).ok_or_else(|| {
        OtlpError::UnknownType {
            ty: ty.chars().take(64).collect(),
            unit: unit.chars().take(64).collect(),
            period: period_ty.chars().take(64).collect(),
        }
    })?;
    let (scale, period_ns) = match profile_type.unit() {
        Unit::CpuPeriods | Unit::WallPeriods => {
            if period_unit != "nanoseconds" || profile.period <= 0 {
                return Err(OtlpError::NoPeriod(profile_type.name()));
            }
            let period = profile.period as u64;
            if unit == "nanoseconds" {
                (Scale::Periods(period), period)
            } else {
                (Scale::Count, period)
            }
        }
        _ => (Scale::Count, 0),
    };
    let mut acc = StackAccumulator::with_labels(
        StackBudget {
            max_decoded_bytes: left.bytes_left,
            max_samples: left.samples.for_type(profile_type),
            ..*stack_budget
        },
        *label_budget,
    );
    let wanted = frames_wanted(stack_budget);
    let mut used: usize = 0;
    let mut frames: Vec<Cow<'a, str>> = Vec::new();
    let mut sets: HashMap<&'a [i32], Option<LabelSetIndex>> = HashMap::new();
    let result = (|| -> Result<(), OtlpError> {
        for sample in &profile.samples {
            let stack = dict.check_stack(sample.stack_index)?;
            let mut value: u64 = 0;
            if sample.values.is_empty() {
                value = sample.timestamps_unix_nano.len() as u64;
            }
            for &v in &sample.values {
                if v < 0 {
                    return Err(OtlpError::Negative(v));
                }
                value = value
                    .checked_add(v as u64)
                    .filter(|s| *s <= i64::MAX as u64)
                    .ok_or(OtlpError::Overflow)?;
            }
            let count = match scale {
                Scale::Count => value,
                Scale::Periods(p) => (value + p / 2) / p,
            };
            if count == 0 {
                continue;
            }
            let set = match sets.get(sample.attribute_indices.as_slice()) {
                Some(set) => *set,
                None => {
                    let labels = sample_labels(dict, &sample.attribute_indices, label_budget)?;
                    used = used
                        .saturating_add(labels.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
                    let set = acc.intern_labels(&labels)?;
                    sets.insert(&sample.attribute_indices, set);
                    set
                }
            };
            dict.frames(stack, wanted, &mut frames);
            used = used.saturating_add(
                frames
                    .iter()
                    .map(|f| f.len().clamp("[unknown]".len(), MAX_FRAME_LEN + 3) + 1)
                    .sum(),
            );
            acc.add_frames_in(set, frames.iter().map(|f| f.as_ref()), count)?;
        }
        Ok(())
    })();
    // What this profile cost counts against the request even when it is refused.
    left.bytes_left = left.bytes_left.saturating_sub(used);
    result.map_err(|e| match e {
        OtlpError::Budget(BudgetError::Samples { limit }) => {
            OtlpError::OverBudget(over_budget(profile_type, limit))
        }
        e => e,
    })?;
    let bounded = acc.finish();
    left.samples.spend(profile_type, bounded.samples);
    if bounded.samples == 0 {
        return Ok(None);
    }
    let start_unix_ns = if profile.time_unix_nano == 0 {
        stackwatch_profile::clock::unix_ms().saturating_mul(1_000_000)
    } else {
        profile.time_unix_nano
    };
    Ok(Some(PushedSeries {
        labels: labels.clone(),
        profile_type,
        start_unix_ns,
        duration_ns: profile.duration_nano,
        period_ns,
        stacks: bounded,
    }))
}

/// A sample's labels: its attributes with string values (numbers, booleans and the
/// rest are no dimension to select by: a thread id would be a set per thread), names
/// identifier-safe, cut to the label budget before anything is kept.
fn sample_labels(
    dict: &Dict<'_>,
    indices: &[i32],
    budget: &LabelBudget,
) -> Result<SampleLabels, OtlpError> {
    let mut labels = SampleLabels::new();
    for &i in indices {
        let a = entry(&dict.d.attribute_table, i, &ZERO_ATTRIBUTE, "attribute")?;
        let key = dict.string(a.key_strindex)?;
        let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.as_str(),
            Some(any_value::Value::StringValueStrindex(i)) => dict.string(*i)?,
            _ => continue,
        };
        if key.is_empty() {
            continue;
        }
        // Cut before copying: a 10 KB value costs no more than a short one.
        let key = label_name(cut(key, budget.max_key_bytes));
        let value = cut(value, budget.max_value_bytes).to_owned();
        labels.insert(key, value);
    }
    if !labels_within(&labels, budget) {
        labels = clean_labels(&labels, budget);
    }
    Ok(labels)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The decoded request: series to store, and the profiles refused with why.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Series of the accepted profiles (profiles without samples add none).
    pub series: Vec<PushedSeries>,
    /// Profiles in the request.
    pub profiles: usize,
    /// Profiles refused.
    pub rejected: usize,
    /// Why, per source when the resource named one (for the Fleet page).
    pub reasons: Vec<(Option<String>, OtlpError)>,
}

/// Maps a decoded request to series under the budgets (the request's together): CPU
/// and wall profiles share `stack_budget.max_samples` periods, the other types
/// `max_amount` (bytes, objects, nanoseconds, counts).
pub fn decode_request(
    req: &ExportProfilesServiceRequest,
    stack_budget: &StackBudget,
    label_budget: &LabelBudget,
    max_amount: u64,
) -> Decoded {
    let mut dict = Dict::new(req.dictionary.as_ref().unwrap_or(&EMPTY_DICTIONARY));
    let mut out = Decoded::default();
    let mut left = RequestBudget {
        bytes_left: stack_budget.max_decoded_bytes,
        samples: SampleBudget::new(stack_budget.max_samples, max_amount),
    };
    for rp in &req.resource_profiles {
        let n: usize = rp.scope_profiles.iter().map(|s| s.profiles.len()).sum();
        out.profiles += n;
        let labels = match resource_labels(rp.resource.as_ref(), &dict) {
            Ok(l) => l,
            Err(e) => {
                if n > 0 {
                    out.rejected += n;
                    out.reasons.push((None, e));
                }
                continue;
            }
        };
        let service = labels.get("service").cloned();
        for profile in rp.scope_profiles.iter().flat_map(|s| &s.profiles) {
            match decode_profile(
                &mut dict,
                profile,
                &labels,
                stack_budget,
                label_budget,
                &mut left,
            ) {
                Ok(Some(s)) => out.series.push(s),
                Ok(None) => {}
                Err(e) => {
                    out.rejected += 1;
                    out.reasons.push((service.clone(), e));
                }
            }
        }
    }
    out
}

/// The reasons of a decode, quoted: the first [`MAX_REASONS`] distinct ones, then how
/// many refusals are not quoted.
pub(super) fn summary(reasons: &[(Option<String>, OtlpError)]) -> String {
    let mut texts: Vec<String> = Vec::new();
    let mut more = 0usize;
    for (_, e) in reasons {
        let t = e.to_string();
        if texts.contains(&t) {
            continue;
        }
        if texts.len() < MAX_REASONS {
            texts.push(t);
        } else {
            more += 1;
        }
    }
    let mut s = texts.join("; ");
    if more > 0 {
        s.push_str(&format!("; and {more} more"));
    }
    s
}

/// Parses a body in `enc`, refusing one whose decoded messages would take more than
/// `max_message_bytes` of memory (counted on the wire before anything is decoded,
/// [`wire_scan`]; OTLP/JSON is held twice while it is mapped to the protobuf types):
/// `413` naming `scrape.max_decoded_bytes`, the budget it is.
pub fn parse(
    enc: Encoding,
    body: &[u8],
    max_message_bytes: usize,
) -> Result<ExportProfilesServiceRequest, PushError> {
    let scanned = match enc {
        Encoding::Protobuf => {
            wire_scan::scan_protobuf(&shape::EXPORT_REQUEST, body, max_message_bytes)
        }
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            wire_scan::scan_json(&shape::EXPORT_REQUEST, &mut de, max_message_bytes, 2)
        }
    };
    let malformed = match enc {
        Encoding::Protobuf => "bad protobuf",
        Encoding::Json => "bad OTLP/JSON",
    };
    scanned.map_err(|e| scan_error("the OTLP request", malformed, e))?;
    match enc {
        Encoding::Protobuf => ExportProfilesServiceRequest::decode(body)
            .map_err(|e| PushError::Invalid(format!("bad protobuf: {e}"))),
        Encoding::Json => json::parse(body),
    }
}

/// A refusal of a scan of `what`: past the bound `413` naming its keys; malformed `400`
/// with `malformed` (how the decoder names a body it cannot read) before the reason.
pub(crate) fn scan_error(what: &str, malformed: &str, e: ScanError) -> PushError {
    match e {
        ScanError::OverLimit(o) => PushError::TooLarge(format!(
            "{what}: {o} (twice the larger of scrape.max_decoded_bytes and push.max_decompressed_bytes)"
        )),
        ScanError::Protobuf(e) => PushError::Invalid(format!("{malformed}: {e}")),
        ScanError::Malformed(e) => PushError::Invalid(format!("{malformed}: {e}")),
        ScanError::Json(e) => PushError::Invalid(format!("{malformed}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::profiles::v1development::{
        Line, ResourceProfiles, Sample, ScopeProfiles, ValueType,
    };

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            key_strindex: 0,
        }
    }

    /// A dictionary of functions main, work, inl (inlined into work), a location
    /// without lines in libc, and stacks [work+inl ← main], [libc ← main].
    fn request() -> ExportProfilesServiceRequest {
        let strings: Vec<String> = [
            "",
            "samples",
            "count",
            "cpu",
            "nanoseconds",
            "main",
            "work",
            "inl",
            "/lib/libc.so.6",
            "thread.kind",
            "worker",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = |n| Function {
            name_strindex: n,
            ..Default::default()
        };
        let line = |f| Line {
            function_index: f,
            ..Default::default()
        };
        let dict = ProfilesDictionary {
            string_table: strings,
            function_table: vec![Function::default(), f(5), f(6), f(7)],
            mapping_table: vec![
                Mapping::default(),
                Mapping {
                    filename_strindex: 8,
                    ..Default::default()
                },
            ],
            location_table: vec![
                Location::default(),
                Location {
                    lines: vec![line(1)],
                    ..Default::default()
                },
                Location {
                    lines: vec![line(3), line(2)],
                    ..Default::default()
                },
                Location {
                    mapping_index: 1,
                    address: 0x1234,
                    ..Default::default()
                },
            ],
            stack_table: vec![
                Stack::default(),
                Stack {
                    location_indices: vec![2, 1],
                },
                Stack {
                    location_indices: vec![3, 1],
                },
            ],
            attribute_table: vec![
                KeyValueAndUnit::default(),
                KeyValueAndUnit {
                    key_strindex: 9,
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValueStrindex(10)),
                    }),
                    unit_strindex: 0,
                },
            ],
            ..Default::default()
        };
        let profile = Profile {
            sample_type: Some(ValueType {
                type_strindex: 1,
                unit_strindex: 2,
            }),
            period_type: Some(ValueType {
                type_strindex: 3,
                unit_strindex: 4,
            }),
            period: 10_000_000,
            time_unix_nano: 1_700_000_000_000_000_000,
            duration_nano: 10_000_000_000,
            samples: vec![
                Sample {
                    stack_index: 1,
                    values: vec![3],
                    ..Default::default()
                },
                Sample {
                    stack_index: 2,
                    timestamps_unix_nano: vec![1, 2],
                    attribute_indices: vec![1],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "api"), kv("host.name", "h1")],
                    ..Default::default()
                }),
                scope_profiles: vec![ScopeProfiles {
                    profiles: vec![profile],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            dictionary: Some(dict),
        }
    }

    fn decode(req: &ExportProfilesServiceRequest) -> Decoded {
        decode_request(
            req,
            &StackBudget::default(),
            &LabelBudget::default(),
            1 << 40,
        )
    }

    #[test]
    fn stacks_root_first_inlined_lines_and_addresses() {
        let d = decode(&request());
        assert_eq!((d.profiles, d.rejected), (1, 0), "{:?}", d.reasons);
        let s = &d.series[0];
        assert_eq!(s.labels["service"], "api");
        assert_eq!(s.labels["host_name"], "h1");
        assert_eq!(s.profile_type, ProfileType::Cpu);
        assert_eq!(s.period_ns, 10_000_000);
        assert_eq!(s.stacks.stacks["main;work;inl"], 3);
        let (set, stacks) = &s.stacks.labeled[0];
        assert_eq!(set["thread_kind"], "worker");
        assert_eq!(stacks["main;libc.so.6+0x1234"], 2);
    }

    #[test]
    fn cpu_nanoseconds_become_periods() {
        let mut req = request();
        let p = &mut req.resource_profiles[0].scope_profiles[0].profiles[0];
        p.sample_type = Some(ValueType {
            type_strindex: 3,
            unit_strindex: 4,
        });
        p.samples[0].values = vec![30_000_000, 4_000_000];
        let d = decode(&req);
        assert_eq!(d.series[0].stacks.stacks["main;work;inl"], 3);
    }

    #[test]
    fn amounts_have_their_own_budget_per_request() {
        // Two alloc_space profiles of 6 GiB each in one request: each past the 2^32
        // periods a CPU profile may carry, stored whole under the amount budget.
        let mut req = request();
        let dict = req.dictionary.as_mut().unwrap();
        let n = dict.string_table.len() as i32;
        dict.string_table
            .extend(["alloc_space", "bytes", "space"].map(String::from));
        let p = &mut req.resource_profiles[0].scope_profiles[0].profiles[0];
        p.sample_type = Some(ValueType {
            type_strindex: n,
            unit_strindex: n + 1,
        });
        p.period_type = Some(ValueType {
            type_strindex: n + 2,
            unit_strindex: n + 1,
        });
        p.samples[0].values = vec![4 << 30];
        p.samples[1].values = vec![2 << 30];
        let again = p.clone();
        req.resource_profiles[0].scope_profiles[0]
            .profiles
            .push(again);
        let d = decode(&req);
        assert_eq!((d.profiles, d.rejected), (2, 0), "{:?}", d.reasons);
        for s in &d.series {
            assert_eq!(s.profile_type, ProfileType::AllocSpace);
            assert_eq!(s.stacks.samples, 6 << 30);
        }
        // The request's amount profiles share the budget: with 8 GiB the first fits and
        // the second does not.
        let d = decode_request(
            &req,
            &StackBudget::default(),
            &LabelBudget::default(),
            8 << 30,
        );
        assert_eq!((d.series.len(), d.rejected), (1, 1), "{:?}", d.reasons);
        // Past a lower amount budget: refused, naming its key; CPU periods unaffected.
        let d = decode_request(
            &req,
            &StackBudget::default(),
            &LabelBudget::default(),
            1 << 30,
        );
        assert_eq!(d.rejected, 2);
        assert!(
            d.reasons[0]
                .1
                .to_string()
                .contains("push.max_amount_per_push"),
            "{:?}",
            d.reasons
        );
        let d = decode_request(
            &request(),
            &StackBudget::default(),
            &LabelBudget::default(),
            1,
        );
        assert_eq!(d.rejected, 0, "{:?}", d.reasons);
    }

    #[test]
    fn broken_indices_refuse_the_profile_not_the_request() {
        for (stack, what) in [(i32::MAX, "stack"), (-1, "stack"), (7, "stack")] {
            let mut req = request();
            req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = stack;
            let d = decode(&req);
            assert_eq!(d.rejected, 1);
            assert!(
                d.reasons[0].1.to_string().starts_with(what),
                "{:?}",
                d.reasons
            );
        }
        let mut req = request();
        req.dictionary.as_mut().unwrap().stack_table[1].location_indices = vec![1, 99];
        assert!(matches!(
            decode(&req).reasons[0].1,
            OtlpError::Index {
                what: "location",
                index: 99,
                ..
            }
        ));
        let mut req = request();
        req.dictionary.as_mut().unwrap().function_table[1].name_strindex = 1 << 30;
        assert!(matches!(
            decode(&req).reasons[0].1,
            OtlpError::Index { what: "string", .. }
        ));
        let mut req = request();
        req.resource_profiles[0].resource = None;
        assert_eq!(decode(&req).reasons[0].1, OtlpError::NoService);
    }

    #[test]
    fn json_mapping_reads_strings_and_numbers() {
        let body = br#"{"resourceProfiles":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"api"}},
            {"key":"k8s.pod.uid","value":{"intValue":"42"}},
            {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"x"}]}}}]},
          "scopeProfiles":[{"profiles":[{"sampleType":{"typeStrindex":1,"unitStrindex":2},
            "periodType":{"typeStrindex":3,"unitStrindex":4},"period":"10000000",
            "timeUnixNano":"1700000000000000000","unknownField":{"a":[1,2]},
            "samples":[{"stackIndex":1,"values":["5"]}]}]}]}],
          "dictionary":{"stringTable":["","samples","count","cpu","nanoseconds","main"],
            "functionTable":[{},{"nameStrindex":5}],
            "locationTable":[{},{"lines":[{"functionIndex":1}]}],
            "stackTable":[{},{"locationIndices":[1]}]}}"#;
        let req = parse(Encoding::Json, body, 1 << 20).unwrap();
        let d = decode(&req);
        assert_eq!(d.rejected, 0, "{:?}", d.reasons);
        assert_eq!(d.series[0].labels["k8s_pod_uid"], "42");
        assert!(!d.series[0].labels.contains_key("tags"));
        assert_eq!(d.series[0].stacks.stacks["main"], 5);
        assert_eq!(d.series[0].start_unix_ns, 1_700_000_000_000_000_000);
        assert!(parse(Encoding::Json, b"{\"resourceProfiles\":7}", 1 << 20).is_err());
    }

    #[test]
    fn label_names_are_identifiers() {
        assert_eq!(label_name("host.name"), "host_name");
        assert_eq!(label_name("9lives"), "_9lives");
        assert_eq!(label_name("k8s.pod-name/ü"), "k8s_pod_name__");
    }
}
