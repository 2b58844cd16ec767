//! The pprof protobuf format (`profile.proto` of google/pprof), encoded and decoded with
//! prost.
//!
//! [`encode`] writes what `go tool pprof` reads: two sample types, `samples/count` and
//! `cpu/nanoseconds`, where one sample count is one sampling *period* (a timer expiry,
//! overruns included), so `cpu = samples × period`. [`decode`] reads profiles from any
//! producer (Go's `net/http/pprof`, pprof-rs, stackwatch) into folded stacks, defending
//! against hostile input: gzip bombs are capped, dangling ids are errors, never panics.
//! [`PprofProfile`] (and [`sample_types`], [`decode_sample_type`]) read a profile with
//! several sample types one type at a time, as pushed profiles need (a Go heap profile
//! is four: objects and bytes, allocated and in use).

use std::collections::HashMap;
use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use prost::Message;
use thiserror::Error;

use crate::budget::{BoundedStacks, BudgetError, LabelSetIndex, StackAccumulator, StackBudget};
use crate::labels::{LabelBudget, SampleLabels};
use crate::wire_scan::{self, OverLimit, ScanError};
use crate::Profile;

/// The pprof messages, declared with prost's derive (field numbers from profile.proto).
#[allow(missing_docs)]
pub mod proto {
    /// `perftools.profiles.Profile`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }
    /// `ValueType`: indices into the string table.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }
    /// `Sample`: location ids leaf first, one value per sample type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }
    /// `Label`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }
    /// `Mapping`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }
    /// `Location`: several lines when functions were inlined (innermost first).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }
    /// `Line`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }
    /// `Function`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// Why a pprof body could not be decoded.
#[derive(Debug, Error)]
pub enum PprofError {
    /// The gzip stream is corrupt.
    #[error("pprof: bad gzip stream: {0}")]
    Gzip(std::io::Error),
    /// The decompressed profile is larger than the configured cap.
    #[error("pprof: decompressed profile exceeds {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The protobuf does not parse.
    #[error("pprof: bad protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// An index or id points nowhere.
    #[error("pprof: {0}")]
    Dangling(String),
    /// The samples expand past the stack budget.
    #[error("pprof: {0}")]
    Budget(#[from] BudgetError),
    /// Decoding the protobuf would build more than [`max_message_bytes`] allows
    /// (counted on the wire before decoding: [`wire_scan`]).
    #[error(
        "pprof: {0} (twice the larger of the budget max_decoded_bytes and the decompression cap)"
    )]
    Expands(#[from] OverLimit),
    /// The wire bytes are not a protobuf message (found while counting them).
    #[error("pprof: {0}")]
    Malformed(ScanError),
}

impl From<ScanError> for PprofError {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::OverLimit(o) => PprofError::Expands(o),
            ScanError::Protobuf(e) => PprofError::Protobuf(e),
            e => PprofError::Malformed(e),
        }
    }
}

/// What decoding the pprof messages builds ([`wire_scan`]): the fields that hold memory.
pub mod shape {
    use super::proto;
    use crate::wire_scan::{FieldShape, MessageShape, NumberWire};
    use std::mem::size_of;

    static VALUE_TYPE: MessageShape = MessageShape {
        name: "ValueType",
        bytes: size_of::<proto::ValueType>(),
        fields: &[],
    };
    static LABEL: MessageShape = MessageShape {
        name: "Label",
        bytes: size_of::<proto::Label>(),
        fields: &[],
    };
    static SAMPLE: MessageShape = MessageShape {
        name: "Sample",
        bytes: size_of::<proto::Sample>(),
        fields: &[
            FieldShape::numbers(1, "location_id", &[], 8, NumberWire::Varint),
            FieldShape::numbers(2, "value", &[], 8, NumberWire::Varint),
            FieldShape::messages(3, "label", &[], &LABEL),
        ],
    };
    static MAPPING: MessageShape = MessageShape {
        name: "Mapping",
        bytes: size_of::<proto::Mapping>(),
        fields: &[],
    };
    static LINE: MessageShape = MessageShape {
        name: "Line",
        bytes: size_of::<proto::Line>(),
        fields: &[],
    };
    static LOCATION: MessageShape = MessageShape {
        name: "Location",
        bytes: size_of::<proto::Location>(),
        fields: &[FieldShape::messages(4, "line", &[], &LINE)],
    };
    static FUNCTION: MessageShape = MessageShape {
        name: "Function",
        bytes: size_of::<proto::Function>(),
        fields: &[],
    };
    /// `perftools.profiles.Profile`.
    pub static PROFILE: MessageShape = MessageShape {
        name: "Profile",
        bytes: size_of::<proto::Profile>(),
        fields: &[
            FieldShape::messages(1, "sample_type", &[], &VALUE_TYPE),
            FieldShape::messages(2, "sample", &[], &SAMPLE),
            FieldShape::messages(3, "mapping", &[], &MAPPING),
            FieldShape::messages(4, "location", &[], &LOCATION),
            FieldShape::messages(5, "function", &[], &FUNCTION),
            FieldShape::strings(6, "string_table", &[]),
            FieldShape::message(11, "period_type", &[], &VALUE_TYPE),
            FieldShape::numbers(13, "comment", &[], 8, NumberWire::Varint),
        ],
    };
}

/// Encodes a profile as gzipped pprof protobuf, frames as functions (no addresses).
pub fn encode(profile: &Profile) -> Vec<u8> {
    encode_labeled(profile, &[])
}

/// [`encode`] with labeled samples: `profile` holds the samples taken without labels,
/// each entry of `labeled` those of one label set, written as string `Sample.label`s
/// exactly as Go's `pprof.Do` labels are, so `go tool pprof -tags` and `-tagfocus`
/// read them. The span and period are `profile`'s.
pub fn encode_labeled(
    profile: &Profile,
    labeled: &[(&SampleLabels, &HashMap<String, u64>)],
) -> Vec<u8> {
    encode_with(profile, labeled, None)
}

/// A profile whose counts are not periods of CPU (bytes allocated, objects in use,
/// nanoseconds of contention...), as pprof with the one sample type `(kind, unit)`
/// (`alloc_space`/`bytes`), values the counts as they are; no period unless
/// `profile.period_ns` is set (wall-clock periods).
pub fn encode_typed(profile: &Profile, kind: &str, unit: &str) -> Vec<u8> {
    encode_with(profile, &[], Some((kind, unit)))
}

fn encode_with(
    profile: &Profile,
    labeled: &[(&SampleLabels, &HashMap<String, u64>)],
    single: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut strings = StringTable::default();
    strings.intern("");
    let (samples_ty, cpu_ty) = match single {
        None => (
            proto::ValueType {
                r#type: strings.intern("samples"),
                unit: strings.intern("count"),
            },
            Some(proto::ValueType {
                r#type: strings.intern("cpu"),
                unit: strings.intern("nanoseconds"),
            }),
        ),
        Some((kind, unit)) => (
            proto::ValueType {
                r#type: strings.intern(kind),
                unit: strings.intern(unit),
            },
            None,
        ),
    };
    let mut functions: Vec<proto::Function> = Vec::new();
    let mut locations: Vec<proto::Location> = Vec::new();
    let mut location_of: HashMap<String, u64> = HashMap::new();
    let mut samples = Vec::new();
    let groups =
        std::iter::once((None, &profile.stacks)).chain(labeled.iter().map(|(l, s)| (Some(*l), *s)));
    for (labels, stacks) in groups {
        let label: Vec<proto::Label> = labels
            .into_iter()
            .flatten()
            .map(|(k, v)| proto::Label {
                key: strings.intern(k),
                str: strings.intern(v),
                ..Default::default()
            })
            .collect();
        let mut stacks: Vec<(&String, &u64)> = stacks.iter().collect();
        stacks.sort_unstable();
        for (stack, count) in stacks {
            let mut ids: Vec<u64> = Vec::new();
            for frame in stack.split(';').rev() {
                let id = match location_of.get(frame) {
                    Some(id) => *id,
                    None => {
                        let id = locations.len() as u64 + 1;
                        let name = strings.intern(frame);
                        functions.push(proto::Function {
                            id,
                            name,
                            system_name: name,
                            ..Default::default()
                        });
                        locations.push(proto::Location {
                            id,
                            line: vec![proto::Line {
                                function_id: id,
                                ..Default::default()
                            }],
                            ..Default::default()
                        });
                        location_of.insert(frame.to_owned(), id);
                        id
                    }
                };
                ids.push(id);
            }
            let count = (*count).min(i64::MAX as u64) as i64;
            let value = if cpu_ty.is_some() {
                vec![count, count.saturating_mul(profile.period_ns as i64)]
            } else {
                vec![count]
            };
            samples.push(proto::Sample {
                location_id: ids,
                value,
                label: label.clone(),
            });
        }
    }
    let period_type = match (&cpu_ty, single) {
        (Some(cpu), _) => Some(cpu.clone()),
        (None, Some(_)) if profile.period_ns > 0 => Some(proto::ValueType {
            r#type: strings.intern("wall"),
            unit: strings.intern("nanoseconds"),
        }),
        _ => None,
    };
    let sample_type = match cpu_ty {
        Some(cpu) => vec![samples_ty, cpu],
        None => vec![samples_ty],
    };
    let msg = proto::Profile {
        sample_type,
        sample: samples,
        location: locations,
        function: functions,
        time_nanos: profile.start_unix_ns.min(i64::MAX as u64) as i64,
        duration_nanos: profile.duration_ns.min(i64::MAX as u64) as i64,
        period_type,
        period: profile.period_ns as i64,
        string_table: strings.into_vec(),
        ..Default::default()
    };
    let raw = msg.encode_to_vec();
    let mut gz = GzEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::fast(),
    );
    gz.write_all(&raw).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

/// Decodes a pprof profile (gzipped or raw) into folded stacks.
///
/// The value summed per stack is the `samples` sample type when present, otherwise
/// the profile's default sample type (or the first one). Decompression stops at
/// `max_decompressed` bytes; what the samples expand into is bounded by `budget`
/// (frames per stack, bytes of stack text over all samples, distinct stacks, periods),
/// so neither memory nor time grows with anything but those limits.
pub fn decode(
    bytes: &[u8],
    max_decompressed: usize,
    budget: &StackBudget,
) -> Result<Profile, PprofError> {
    decode_bounded(bytes, max_decompressed, budget).map(|(p, _)| p)
}

/// [`decode`], also returning what the budget cut (`stacks` of the second value is
/// empty: they are the profile's, summed over any labels).
pub fn decode_bounded(
    bytes: &[u8],
    max_decompressed: usize,
    budget: &StackBudget,
) -> Result<(Profile, BoundedStacks), PprofError> {
    let (mut profile, mut bounded) =
        decode_labeled(bytes, max_decompressed, budget, &LabelBudget::default())?;
    if !bounded.labeled.is_empty() {
        profile.stacks = bounded.summed();
        bounded.labeled.clear();
    }
    bounded.stacks.clear();
    Ok((profile, bounded))
}

/// Decodes a pprof profile keeping its string sample labels (Go's `pprof.Do`,
/// `Sample.label` with `str` set; numeric labels are not sample dimensions and are
/// ignored). The returned profile holds the samples without labels; the bounded stacks
/// hold them too (`stacks`) and the labeled ones per set (`labeled`), with what the
/// stack and label budgets cut.
///
/// The value summed is that of [`PprofProfile::default_sample_type`];
/// [`decode_sample_type`] picks another.
pub fn decode_labeled(
    bytes: &[u8],
    max_decompressed: usize,
    budget: &StackBudget,
    label_budget: &LabelBudget,
) -> Result<(Profile, BoundedStacks), PprofError> {
    let parsed = PprofProfile::parse(
        bytes,
        max_decompressed,
        max_message_bytes(budget, max_decompressed),
    )?;
    let index = parsed.default_sample_type()?;
    parsed.stacks(index, 1, budget, label_budget)
}

/// The sample types a pprof profile (gzipped or raw) declares, in order: what
/// [`decode_sample_type`] takes the index of. Decompression stops at `max_decompressed`;
/// the decoded protobuf is bounded by the default [`StackBudget`]'s `max_decoded_bytes`.
pub fn sample_types(bytes: &[u8], max_decompressed: usize) -> Result<Vec<SampleType>, PprofError> {
    PprofProfile::parse(
        bytes,
        max_decompressed,
        max_message_bytes(&StackBudget::default(), max_decompressed),
    )?
    .sample_types()
}

/// [`decode_labeled`] summing sample type `index` (see [`sample_types`]) instead of the
/// default one. An index the profile does not declare is an error.
pub fn decode_sample_type(
    bytes: &[u8],
    max_decompressed: usize,
    index: usize,
    budget: &StackBudget,
    label_budget: &LabelBudget,
) -> Result<(Profile, BoundedStacks), PprofError> {
    PprofProfile::parse(
        bytes,
        max_decompressed,
        max_message_bytes(budget, max_decompressed),
    )?
    .stacks(index, 1, budget, label_budget)
}

/// The memory the decoded protobuf of one batch may take, given its stack `budget` and
/// decompression cap: twice the larger of `max_decoded_bytes` and `max_decompressed`
/// (128 MiB with the defaults). A real profile decodes into 7-9 times its inflated
/// size (measured: every sample is a struct and three vectors), so this admits real
/// profiles up to about 15 MiB inflated and refuses messages built to expand (a million
/// empty samples in 2 MiB), while one batch costs at most its inflated body, this and
/// its stack text.
pub fn max_message_bytes(budget: &StackBudget, max_decompressed: usize) -> usize {
    budget
        .max_decoded_bytes
        .max(max_decompressed)
        .saturating_mul(2)
}

/// A sample type (or the period type) of a pprof profile, named from its string table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleType {
    /// What is measured: `samples`, `cpu`, `alloc_space`, `inuse_objects`, ...
    pub ty: String,
    /// Its unit: `count`, `nanoseconds`, `bytes`, ...
    pub unit: String,
}

/// A pprof profile parsed (decompressed within a cap, the protobuf decoded) but not yet
/// expanded into stacks: what it declares, and [`PprofProfile::stacks`] to expand one of
/// its sample types. Parsing once and expanding each sample type of interest is how a
/// profile with several (Go's heap profile: `alloc_objects`, `alloc_space`,
/// `inuse_objects`, `inuse_space`) becomes one profile per type.
///
/// What parsing costs is bounded by `max_decompressed` and `max_message_bytes`; what
/// expanding costs by the [`StackBudget`] and [`LabelBudget`] given to each
/// [`stacks`](PprofProfile::stacks).
#[derive(Debug, Clone)]
pub struct PprofProfile {
    msg: proto::Profile,
    raw_len: usize,
    message_bytes: usize,
}

impl PprofProfile {
    /// Parses a gzipped or raw pprof profile, refusing one that decompresses past
    /// `max_decompressed` bytes (or is larger than that raw), and one whose decoded
    /// protobuf would take more than `max_message_bytes` of memory (counted on the wire
    /// before decoding, [`wire_scan`]: a few KiB of gzip can hold millions of empty
    /// samples, gigabytes once decoded). Callers pass [`max_message_bytes`] of their
    /// budget and cap.
    pub fn parse(
        bytes: &[u8],
        max_decompressed: usize,
        max_message_bytes: usize,
    ) -> Result<PprofProfile, PprofError> {
        let raw: std::borrow::Cow<'_, [u8]> = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            GzDecoder::new(bytes)
                .take(max_decompressed as u64 + 1)
                .read_to_end(&mut out)
                .map_err(PprofError::Gzip)?;
            if out.len() > max_decompressed {
                return Err(PprofError::TooLarge {
                    limit: max_decompressed,
                });
            }
            out.into()
        } else {
            if bytes.len() > max_decompressed {
                return Err(PprofError::TooLarge {
                    limit: max_decompressed,
                });
            }
            bytes.into()
        };
        let cost = wire_scan::scan_protobuf(&shape::PROFILE, &raw, max_message_bytes)?;
        let msg = proto::Profile::decode(&*raw)?;
        Ok(PprofProfile {
            msg,
            raw_len: raw.len(),
            message_bytes: cost.bytes,
        })
    }

    /// Bytes of the protobuf once decompressed.
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }

    /// Bytes of memory the decoded protobuf takes (as counted before decoding it).
    pub fn message_bytes(&self) -> usize {
        self.message_bytes
    }

    fn string(&self, i: i64) -> Result<&str, PprofError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.msg.string_table.get(i))
            .map(String::as_str)
            .ok_or_else(|| PprofError::Dangling(format!("string index {i} out of range")))
    }

    fn value_type(&self, t: &proto::ValueType) -> Result<SampleType, PprofError> {
        Ok(SampleType {
            ty: self.string(t.r#type)?.to_owned(),
            unit: self.string(t.unit)?.to_owned(),
        })
    }

    /// The declared sample types, in order (a name that points outside the string
    /// table is an error).
    pub fn sample_types(&self) -> Result<Vec<SampleType>, PprofError> {
        self.msg
            .sample_type
            .iter()
            .map(|t| self.value_type(t))
            .collect()
    }

    /// The period type (`cpu/nanoseconds`, `space/bytes`), if declared.
    pub fn period_type(&self) -> Result<Option<SampleType>, PprofError> {
        self.msg
            .period_type
            .as_ref()
            .map(|t| self.value_type(t))
            .transpose()
    }

    /// The period in units of the period type (0 when absent or negative).
    pub fn period(&self) -> u64 {
        self.msg.period.max(0) as u64
    }

    /// When the profile was taken, Unix ns (0 when absent or negative).
    pub fn time_nanos(&self) -> u64 {
        self.msg.time_nanos.max(0) as u64
    }

    /// How long it covers, ns (0 when absent or negative).
    pub fn duration_nanos(&self) -> u64 {
        self.msg.duration_nanos.max(0) as u64
    }

    /// The sample type [`decode`] sums: `samples` when declared, otherwise the
    /// profile's default sample type, otherwise the first.
    pub fn default_sample_type(&self) -> Result<usize, PprofError> {
        for (i, ty) in self.msg.sample_type.iter().enumerate() {
            if self.string(ty.r#type)? == "samples" {
                return Ok(i);
            }
        }
        Ok(match self.msg.default_sample_type {
            0 => 0,
            d => self
                .msg
                .sample_type
                .iter()
                .position(|t| t.r#type == d)
                .unwrap_or(0),
        })
    }

    /// Expands sample type `index` into folded stacks (with its string sample labels, as
    /// [`decode_labeled`] does), each sample's value divided by `divisor` (rounded to the
    /// nearest; `0` or `1`: as is), e.g. CPU nanoseconds by the period into periods. A
    /// sample whose value is not positive (or rounds to 0) is skipped. The profile's
    /// `period_ns` is the period when the period type is in nanoseconds, else 0.
    ///
    /// An `index` the profile does not declare, a sample without that value, a location,
    /// function or string that does not exist are errors; stacks are bounded by `budget`
    /// (deeper ones truncated, more text or periods than it allows an error) and label
    /// sets by `label_budget`.
    pub fn stacks(
        &self,
        index: usize,
        divisor: u64,
        budget: &StackBudget,
        label_budget: &LabelBudget,
    ) -> Result<(Profile, BoundedStacks), PprofError> {
        let msg = &self.msg;
        if !msg.sample_type.is_empty() && index >= msg.sample_type.len() {
            return Err(PprofError::Dangling(format!(
                "sample type {index} wanted, the profile declares {}",
                msg.sample_type.len()
            )));
        }
        // Names are borrowed from the string table: nothing here is copied per reference.
        let mut function_names: HashMap<u64, &str> = HashMap::with_capacity(msg.function.len());
        for f in &msg.function {
            function_names.insert(f.id, self.string(f.name)?);
        }
        let mut locations: HashMap<u64, &proto::Location> =
            HashMap::with_capacity(msg.location.len());
        for loc in &msg.location {
            if let Some(line) = loc
                .line
                .iter()
                .find(|l| !function_names.contains_key(&l.function_id))
            {
                return Err(PprofError::Dangling(format!(
                    "location {} names missing function {}",
                    loc.id, line.function_id
                )));
            }
            locations.insert(loc.id, loc);
        }
        let period_ns = match &msg.period_type {
            Some(pt) if self.string(pt.unit)? == "nanoseconds" => self.period(),
            _ => 0,
        };
        let mut acc = StackAccumulator::with_labels(*budget, *label_budget);
        let mut addresses: Vec<String> = Vec::new();
        // The label sets met so far, by their (key, str) string indices.
        let mut sets: HashMap<Vec<(i64, i64)>, Option<LabelSetIndex>> = HashMap::new();
        let mut pairs: Vec<(i64, i64)> = Vec::new();
        for sample in &msg.sample {
            let Some(&value) = sample.value.get(index) else {
                return Err(PprofError::Dangling(format!(
                    "sample has {} values, sample type {index} wanted",
                    sample.value.len()
                )));
            };
            if value <= 0 {
                continue;
            }
            let count = if divisor > 1 {
                (value as u64).saturating_add(divisor / 2) / divisor
            } else {
                value as u64
            };
            if count == 0 {
                continue;
            }
            // Frames root first: locations are leaf first, and a location's lines
            // innermost first. Locations without lines are named by address.
            addresses.clear();
            let mut frames: Vec<&proto::Location> = Vec::new();
            for id in sample.location_id.iter().rev() {
                let loc = *locations.get(id).ok_or_else(|| {
                    PprofError::Dangling(format!("sample names missing location {id}"))
                })?;
                if loc.line.is_empty() {
                    addresses.push(format!("{:#x}", loc.address));
                }
                frames.push(loc);
                // Enough frames to fill the budget's depth (and see that it is exceeded).
                if frames.len() > budget.max_depth {
                    break;
                }
            }
            let mut next_address = addresses.iter();
            let names = frames.iter().flat_map(|loc| {
                let unnamed = loc
                    .line
                    .is_empty()
                    .then(|| next_address.next().map_or("[unknown]", String::as_str));
                loc.line
                    .iter()
                    .rev()
                    .map(|l| {
                        function_names
                            .get(&l.function_id)
                            .copied()
                            .unwrap_or("[unknown]")
                    })
                    .chain(unnamed)
            });
            pairs.clear();
            pairs.extend(
                sample
                    .label
                    .iter()
                    .filter(|l| l.str != 0)
                    .map(|l| (l.key, l.str)),
            );
            let set = if pairs.is_empty() {
                None
            } else {
                pairs.sort_unstable();
                match sets.get(&pairs) {
                    Some(set) => *set,
                    None => {
                        let mut labels = SampleLabels::new();
                        for (k, v) in &pairs {
                            labels.insert(self.string(*k)?.to_owned(), self.string(*v)?.to_owned());
                        }
                        let set = acc.intern_labels(&labels)?;
                        sets.insert(pairs.clone(), set);
                        set
                    }
                }
            };
            acc.add_frames_in(set, names, count)?;
        }
        let bounded = acc.finish();
        let profile = Profile {
            stacks: bounded.stacks.clone(),
            period_ns,
            start_unix_ns: self.time_nanos(),
            duration_ns: self.duration_nanos(),
        };
        Ok((profile, bounded))
    }
}

#[derive(Default)]
struct StringTable {
    index: HashMap<String, i64>,
    strings: Vec<String>,
}

impl StringTable {
    fn intern(&mut self, s: &str) -> i64 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
    fn into_vec(self) -> Vec<String> {
        self.strings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_round_trips_stacks() {
        let mut p =
            Profile::from_folded("main;a;b 3\nmain;a 2\nworker;<script> 1\n", 10_101_010).unwrap();
        p.start_unix_ns = 1_700_000_000_000_000_000;
        p.duration_ns = 10_000_000_000;
        let bytes = encode(&p);
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        let back = decode(&bytes, 1 << 20, &StackBudget::default()).unwrap();
        assert_eq!(back.stacks, p.stacks);
        assert_eq!(back.period_ns, p.period_ns);
        assert_eq!(back.duration_ns, p.duration_ns);
    }

    #[test]
    fn labels_round_trip_as_go_writes_them() {
        let p = Profile::from_folded("main;a 3\n", 10_101_010).unwrap();
        let orders: SampleLabels = [("table".to_string(), "orders".to_string())].into();
        let both: SampleLabels = [
            ("table".to_string(), "users".to_string()),
            ("op".to_string(), "<script>".to_string()),
        ]
        .into();
        let s1: HashMap<String, u64> =
            [("main;a".to_string(), 2), ("main;b".to_string(), 5)].into();
        let s2: HashMap<String, u64> = [("main;b".to_string(), 4)].into();
        let bytes = encode_labeled(&p, &[(&orders, &s1), (&both, &s2)]);
        let mut raw = Vec::new();
        GzDecoder::new(&bytes[..]).read_to_end(&mut raw).unwrap();
        let msg = proto::Profile::decode(&raw[..]).unwrap();
        let labeled = msg.sample.iter().filter(|s| !s.label.is_empty()).count();
        assert_eq!(labeled, 3);
        let (profile, bounded) = decode_labeled(
            &bytes,
            1 << 20,
            &StackBudget::default(),
            &LabelBudget::default(),
        )
        .unwrap();
        assert_eq!(profile.stacks, p.stacks);
        assert_eq!(bounded.labeled, vec![(both, s2), (orders, s1)]);
        // A client that knows nothing of labels gets everything summed.
        let summed = decode(&bytes, 1 << 20, &StackBudget::default()).unwrap();
        assert_eq!(summed.stacks["main;b"], 9);
        assert_eq!(summed.total(), 14);
    }

    #[test]
    fn a_typed_profile_has_its_one_sample_type() {
        let p = Profile::from_folded("main;alloc 4096\n", 0).unwrap();
        let bytes = encode_typed(&p, "alloc_space", "bytes");
        let mut raw = Vec::new();
        GzDecoder::new(&bytes[..]).read_to_end(&mut raw).unwrap();
        let msg = proto::Profile::decode(&raw[..]).unwrap();
        assert_eq!(msg.sample_type.len(), 1);
        assert_eq!(
            msg.string_table[msg.sample_type[0].r#type as usize],
            "alloc_space"
        );
        assert_eq!(msg.string_table[msg.sample_type[0].unit as usize], "bytes");
        assert_eq!(msg.sample[0].value, vec![4096]);
        assert!(msg.period_type.is_none());
        let back = decode(&bytes, 1 << 20, &StackBudget::default()).unwrap();
        assert_eq!(back.stacks["main;alloc"], 4096);
    }

    #[test]
    fn cpu_value_is_count_times_period() {
        let p = Profile::from_folded("t;f 7\n", 1_000_000).unwrap();
        let bytes = encode(&p);
        let mut raw = Vec::new();
        GzDecoder::new(&bytes[..]).read_to_end(&mut raw).unwrap();
        let msg = proto::Profile::decode(&raw[..]).unwrap();
        assert_eq!(msg.sample[0].value, vec![7, 7_000_000]);
        assert_eq!(msg.string_table[msg.sample_type[1].r#type as usize], "cpu");
    }

    /// A Go heap profile: four sample types, one profile per type.
    fn heap_profile() -> proto::Profile {
        let strings: Vec<String> = [
            "",
            "alloc_objects",
            "count",
            "alloc_space",
            "bytes",
            "inuse_objects",
            "inuse_space",
            "space",
            "main.alloc",
            "main",
            "kind",
            "big",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let vt = |t, u| proto::ValueType { r#type: t, unit: u };
        proto::Profile {
            string_table: strings,
            sample_type: vec![vt(1, 2), vt(3, 4), vt(5, 2), vt(6, 4)],
            period_type: Some(vt(7, 4)),
            period: 524_288,
            function: vec![
                proto::Function {
                    id: 1,
                    name: 8,
                    ..Default::default()
                },
                proto::Function {
                    id: 2,
                    name: 9,
                    ..Default::default()
                },
            ],
            location: (1..=2)
                .map(|id| proto::Location {
                    id,
                    line: vec![proto::Line {
                        function_id: id,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            sample: vec![
                proto::Sample {
                    location_id: vec![1, 2],
                    value: vec![3, 3000, 1, 1000],
                    label: vec![],
                },
                proto::Sample {
                    location_id: vec![2],
                    value: vec![2, 64, 0, 0],
                    label: vec![proto::Label {
                        key: 10,
                        str: 11,
                        ..Default::default()
                    }],
                },
            ],
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 15_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn each_sample_type_decodes_on_its_own() {
        let bytes = heap_profile().encode_to_vec();
        let types = sample_types(&bytes, 1 << 20).unwrap();
        let names: Vec<(&str, &str)> = types
            .iter()
            .map(|t| (t.ty.as_str(), t.unit.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes")
            ]
        );
        let (b, l) = (StackBudget::default(), LabelBudget::default());
        let (p, bounded) = decode_sample_type(&bytes, 1 << 20, 1, &b, &l).unwrap();
        assert_eq!(p.stacks["main;main.alloc"], 3000);
        assert_eq!(bounded.labeled.len(), 1);
        assert_eq!(bounded.labeled[0].1["main"], 64);
        assert_eq!(p.period_ns, 0, "space/bytes is not a time period");
        assert_eq!(p.start_unix_ns, 1_700_000_000_000_000_000);
        // In-use: the second sample's zero values are skipped.
        let (p, bounded) = decode_sample_type(&bytes, 1 << 20, 3, &b, &l).unwrap();
        assert_eq!(p.stacks["main;main.alloc"], 1000);
        assert!(bounded.labeled.is_empty());
        // An index past the declared types is an error, not a panic.
        let err = decode_sample_type(&bytes, 1 << 20, 4, &b, &l).unwrap_err();
        assert!(err.to_string().contains("sample type 4"), "{err}");
        let parsed = PprofProfile::parse(&bytes, 1 << 20, 1 << 20).unwrap();
        assert_eq!(parsed.default_sample_type().unwrap(), 0);
        assert_eq!(parsed.period_type().unwrap().unwrap().ty, "space");
        assert_eq!(parsed.period(), 524_288);
        assert_eq!(parsed.raw_len(), bytes.len());
    }

    #[test]
    fn nanoseconds_divide_into_periods_rounded() {
        let mut p = Profile::from_folded("a;b 7\na;c 2\n", 10_000_000).unwrap();
        p.start_unix_ns = 1;
        let bytes = encode(&p);
        let parsed = PprofProfile::parse(&bytes, 1 << 20, 1 << 20).unwrap();
        let types = parsed.sample_types().unwrap();
        assert_eq!(types[1].ty, "cpu");
        let (b, l) = (StackBudget::default(), LabelBudget::default());
        let (cpu, _) = parsed.stacks(1, 10_000_000, &b, &l).unwrap();
        assert_eq!(cpu.stacks, p.stacks);
        assert_eq!(cpu.period_ns, 10_000_000);
        // Half a period and more rounds up, less rounds to nothing.
        let (coarse, _) = parsed.stacks(1, 40_000_000, &b, &l).unwrap();
        assert_eq!(coarse.stacks.get("a;b"), Some(&2));
        assert_eq!(coarse.stacks.get("a;c"), Some(&1));
        let (coarse, _) = parsed.stacks(1, 50_000_000, &b, &l).unwrap();
        assert_eq!(coarse.stacks.get("a;b"), Some(&1));
        assert_eq!(coarse.stacks.get("a;c"), None);
        // Values that would overflow the periods budget are refused.
        let mut huge = heap_profile();
        huge.sample[0].value = vec![i64::MAX; 4];
        huge.sample[1].value = vec![i64::MAX; 4];
        let parsed = PprofProfile::parse(&huge.encode_to_vec(), 1 << 20, 1 << 20).unwrap();
        let err = parsed.stacks(0, 1, &b, &l).unwrap_err();
        assert!(err.to_string().contains("max_samples"), "{err}");
    }

    #[test]
    fn garbage_and_bombs_are_errors() {
        assert!(decode(b"\x1f\x8bnot gzip at all", 1 << 20, &StackBudget::default()).is_err());
        assert!(decode(&[0xff; 64], 1 << 20, &StackBudget::default()).is_err());
        // A gzip stream that inflates past the cap.
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(matches!(
            decode(&bomb, 1 << 20, &StackBudget::default()),
            Err(PprofError::TooLarge { .. })
        ));
    }

    /// Issue #24, item 4: 33.5 million empty samples (two bytes each, 64 KiB of gzip)
    /// took 2.4 GB to refuse; they are now counted on the wire and refused before
    /// anything is decoded.
    #[test]
    fn millions_of_empty_samples_are_refused_before_decoding() {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = [0x12u8, 0x00].repeat(1 << 16);
        for _ in 0..256 {
            gz.write_all(&chunk).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let started = std::time::Instant::now();
        let err = decode(&bomb, 64 << 20, &StackBudget::default()).unwrap_err();
        assert!(
            matches!(
                err,
                PprofError::Expands(OverLimit {
                    message: "Profile",
                    field: "sample",
                    limit: 134_217_728,
                    ..
                })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("max_decoded_bytes"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // What a real profile costs is counted too, and it decodes.
        let folded = "main;a;b 3\nmain;a 2\nworker;c 1\n";
        let bytes = encode(&Profile::from_folded(folded, 10_101_010).unwrap());
        let p = PprofProfile::parse(&bytes, 1 << 20, 1 << 20).unwrap();
        assert!(p.message_bytes() > std::mem::size_of::<proto::Profile>());
        assert!(matches!(
            PprofProfile::parse(&bytes, 1 << 20, 256),
            Err(PprofError::Expands(_))
        ));
    }

    /// Issue #10, item 1: one sample naming a 1 KB function a million times (1 KB of
    /// gzip) took 2 GB and 5.6 s; four million aborted the collector.
    #[test]
    fn a_tiny_body_cannot_expand_into_a_huge_profile() {
        let msg = proto::Profile {
            string_table: vec![
                "".into(),
                "samples".into(),
                "count".into(),
                "f".repeat(1024),
            ],
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            function: vec![proto::Function {
                id: 1,
                name: 3,
                ..Default::default()
            }],
            location: vec![proto::Location {
                id: 1,
                line: vec![proto::Line {
                    function_id: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            sample: vec![proto::Sample {
                location_id: vec![1; 1_000_000],
                value: vec![1],
                label: vec![],
            }],
            ..Default::default()
        };
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&msg.encode_to_vec()).unwrap();
        let body = gz.finish().unwrap();
        assert!(body.len() < 4096, "{}", body.len());
        let started = std::time::Instant::now();
        let p = decode(&body, 64 << 20, &StackBudget::default()).unwrap();
        let (stack, count) = p.stacks.iter().next().unwrap();
        assert_eq!(*count, 1);
        assert_eq!(stack.split(';').count(), 513, "512 frames and [truncated]");
        assert!(stack.ends_with(";[truncated]"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The same frames over many samples hit the decoded-bytes budget.
        let mut many = msg.clone();
        many.sample = vec![
            proto::Sample {
                location_id: vec![1; 600],
                value: vec![1],
                label: vec![],
            };
            200
        ];
        let budget = StackBudget {
            max_decoded_bytes: 16 << 20,
            ..StackBudget::default()
        };
        let err = decode(&many.encode_to_vec(), 64 << 20, &budget).unwrap_err();
        assert!(err.to_string().contains("max_decoded_bytes"), "{err}");
    }

    #[test]
    fn dangling_ids_are_errors_not_panics() {
        let msg = proto::Profile {
            string_table: vec!["".into(), "samples".into(), "count".into()],
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            sample: vec![proto::Sample {
                location_id: vec![42],
                value: vec![1],
                label: vec![],
            }],
            ..Default::default()
        };
        let err = decode(&msg.encode_to_vec(), 1 << 20, &StackBudget::default()).unwrap_err();
        assert!(err.to_string().contains("location 42"), "{err}");
        let msg = proto::Profile {
            sample_type: vec![proto::ValueType {
                r#type: 99,
                unit: 2,
            }],
            ..Default::default()
        };
        assert!(decode(&msg.encode_to_vec(), 1 << 20, &StackBudget::default()).is_err());
    }

    #[test]
    fn inlined_lines_become_separate_frames_root_first() {
        let msg = proto::Profile {
            string_table: vec![
                "".into(),
                "samples".into(),
                "count".into(),
                "outer".into(),
                "inlined".into(),
                "main".into(),
            ],
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            function: vec![
                proto::Function {
                    id: 1,
                    name: 3,
                    ..Default::default()
                },
                proto::Function {
                    id: 2,
                    name: 4,
                    ..Default::default()
                },
                proto::Function {
                    id: 3,
                    name: 5,
                    ..Default::default()
                },
            ],
            location: vec![
                proto::Location {
                    id: 10,
                    line: vec![
                        proto::Line {
                            function_id: 2,
                            ..Default::default()
                        },
                        proto::Line {
                            function_id: 1,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
                proto::Location {
                    id: 11,
                    line: vec![proto::Line {
                        function_id: 3,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            sample: vec![proto::Sample {
                location_id: vec![10, 11],
                value: vec![5],
                label: vec![],
            }],
            ..Default::default()
        };
        let p = decode(&msg.encode_to_vec(), 1 << 20, &StackBudget::default()).unwrap();
        assert_eq!(p.stacks["main;outer;inlined"], 5);
    }
}
