//! OTLP/JSON: the protobuf mapping of the request's messages as the OTLP specification
//! has it (lowerCamelCase names, unknown fields ignored, every field optional, 64-bit
//! integers as decimal strings or numbers). Only the fields stackwatch reads are
//! declared; they are converted to the protobuf types, so both encodings share one
//! decoder.

use std::fmt;
use std::marker::PhantomData;

use opentelemetry_proto::tonic::collector::profiles::v1development as collector;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::profiles::v1development as pb;
use opentelemetry_proto::tonic::resource::v1 as resource;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

use crate::push::error::PushError;

/// An integer of the proto3 JSON mapping: a number, or a decimal string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Int<T>(pub T);

impl<'de, T> Deserialize<'de> for Int<T>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T> Visitor<'_> for V<T>
        where
            T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
        {
            type Value = Int<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer (a number or a decimal string)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int<T>, E> {
                T::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int<T>, E> {
                T::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int<T>, E> {
                v.trim().parse::<T>().map(Int).map_err(|_| {
                    E::custom(format!(
                        "{:?} is not an integer in range",
                        v.chars().take(40).collect::<String>()
                    ))
                })
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

fn ints<T: Copy>(v: Vec<Int<T>>) -> Vec<T> {
    v.into_iter().map(|i| i.0).collect()
}

/// A double of the JSON mapping: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`
/// (or a decimal string).
#[derive(Debug, Clone, Copy, Default)]
pub struct Double(pub f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Double;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Double, E> {
                Ok(Double(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Double, E> {
                v.trim()
                    .parse::<f64>()
                    .map(Double)
                    .map_err(|_| E::custom("not a number"))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Request {
    resource_profiles: Vec<ResourceProfiles>,
    dictionary: Option<Dictionary>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResourceProfiles {
    resource: Option<Resource>,
    scope_profiles: Vec<ScopeProfiles>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Resource {
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ScopeProfiles {
    profiles: Vec<Profile>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct KeyValue {
    key: String,
    value: Option<AnyValue>,
    key_strindex: Int<i32>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AnyValue {
    string_value: Option<String>,
    bool_value: Option<bool>,
    int_value: Option<Int<i64>>,
    double_value: Option<Double>,
    string_value_strindex: Option<Int<i32>>,
    // Not label material: skipped (still parsed, within serde_json's depth limit).
    array_value: Option<IgnoredAny>,
    kvlist_value: Option<IgnoredAny>,
    bytes_value: Option<IgnoredAny>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default, rename_all = "camelCase")]
struct ValueType {
    type_strindex: Int<i32>,
    unit_strindex: Int<i32>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Profile {
    sample_type: Option<ValueType>,
    samples: Vec<Sample>,
    time_unix_nano: Int<u64>,
    duration_nano: Int<u64>,
    period_type: Option<ValueType>,
    period: Int<i64>,
    attribute_indices: Vec<Int<i32>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Sample {
    stack_index: Int<i32>,
    attribute_indices: Vec<Int<i32>>,
    link_index: Int<i32>,
    values: Vec<Int<i64>>,
    timestamps_unix_nano: Vec<Int<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Dictionary {
    mapping_table: Vec<Mapping>,
    location_table: Vec<Location>,
    function_table: Vec<Function>,
    string_table: Vec<String>,
    attribute_table: Vec<KeyValueAndUnit>,
    stack_table: Vec<Stack>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Mapping {
    memory_start: Int<u64>,
    memory_limit: Int<u64>,
    file_offset: Int<u64>,
    filename_strindex: Int<i32>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Location {
    mapping_index: Int<i32>,
    address: Int<u64>,
    lines: Vec<Line>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Line {
    function_index: Int<i32>,
    line: Int<i64>,
    column: Int<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Function {
    name_strindex: Int<i32>,
    system_name_strindex: Int<i32>,
    filename_strindex: Int<i32>,
    start_line: Int<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct KeyValueAndUnit {
    key_strindex: Int<i32>,
    value: Option<AnyValue>,
    unit_strindex: Int<i32>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Stack {
    location_indices: Vec<Int<i32>>,
}

impl From<AnyValue> for common::AnyValue {
    fn from(v: AnyValue) -> Self {
        use common::any_value::Value;
        let value = if let Some(s) = v.string_value {
            Some(Value::StringValue(s))
        } else if let Some(i) = v.string_value_strindex {
            Some(Value::StringValueStrindex(i.0))
        } else if let Some(i) = v.int_value {
            Some(Value::IntValue(i.0))
        } else if let Some(b) = v.bool_value {
            Some(Value::BoolValue(b))
        } else if let Some(d) = v.double_value {
            Some(Value::DoubleValue(d.0))
        } else if v.array_value.is_some() {
            Some(Value::ArrayValue(common::ArrayValue::default()))
        } else if v.kvlist_value.is_some() {
            Some(Value::KvlistValue(common::KeyValueList::default()))
        } else {
            v.bytes_value.map(|_| Value::BytesValue(Vec::new()))
        };
        common::AnyValue { value }
    }
}

fn value_type(v: ValueType) -> pb::ValueType {
    pb::ValueType {
        type_strindex: v.type_strindex.0,
        unit_strindex: v.unit_strindex.0,
    }
}

impl From<Request> for collector::ExportProfilesServiceRequest {
    fn from(r: Request) -> Self {
        collector::ExportProfilesServiceRequest {
            resource_profiles: r
                .resource_profiles
                .into_iter()
                .map(|rp| pb::ResourceProfiles {
                    resource: rp.resource.map(|res| resource::Resource {
                        attributes: res
                            .attributes
                            .into_iter()
                            .map(|kv| common::KeyValue {
                                key: kv.key,
                                value: kv.value.map(Into::into),
                                key_strindex: kv.key_strindex.0,
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    scope_profiles: rp
                        .scope_profiles
                        .into_iter()
                        .map(|sp| pb::ScopeProfiles {
                            profiles: sp
                                .profiles
                                .into_iter()
                                .map(|p| pb::Profile {
                                    sample_type: p.sample_type.map(value_type),
                                    samples: p
                                        .samples
                                        .into_iter()
                                        .map(|s| pb::Sample {
                                            stack_index: s.stack_index.0,
                                            attribute_indices: ints(s.attribute_indices),
                                            link_index: s.link_index.0,
                                            values: ints(s.values),
                                            timestamps_unix_nano: ints(s.timestamps_unix_nano),
                                        })
                                        .collect(),
                                    time_unix_nano: p.time_unix_nano.0,
                                    duration_nano: p.duration_nano.0,
                                    period_type: p.period_type.map(value_type),
                                    period: p.period.0,
                                    attribute_indices: ints(p.attribute_indices),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            dictionary: r.dictionary.map(|d| pb::ProfilesDictionary {
                mapping_table: d
                    .mapping_table
                    .into_iter()
                    .map(|m| pb::Mapping {
                        memory_start: m.memory_start.0,
                        memory_limit: m.memory_limit.0,
                        file_offset: m.file_offset.0,
                        filename_strindex: m.filename_strindex.0,
                        attribute_indices: Vec::new(),
                    })
                    .collect(),
                location_table: d
                    .location_table
                    .into_iter()
                    .map(|l| pb::Location {
                        mapping_index: l.mapping_index.0,
                        address: l.address.0,
                        lines: l
                            .lines
                            .into_iter()
                            .map(|line| pb::Line {
                                function_index: line.function_index.0,
                                line: line.line.0,
                                column: line.column.0,
                            })
                            .collect(),
                        attribute_indices: Vec::new(),
                    })
                    .collect(),
                function_table: d
                    .function_table
                    .into_iter()
                    .map(|f| pb::Function {
                        name_strindex: f.name_strindex.0,
                        system_name_strindex: f.system_name_strindex.0,
                        filename_strindex: f.filename_strindex.0,
                        start_line: f.start_line.0,
                    })
                    .collect(),
                link_table: Vec::new(),
                string_table: d.string_table,
                attribute_table: d
                    .attribute_table
                    .into_iter()
                    .map(|a| pb::KeyValueAndUnit {
                        key_strindex: a.key_strindex.0,
                        value: a.value.map(Into::into),
                        unit_strindex: a.unit_strindex.0,
                    })
                    .collect(),
                stack_table: d
                    .stack_table
                    .into_iter()
                    .map(|s| pb::Stack {
                        location_indices: ints(s.location_indices),
                    })
                    .collect(),
            }),
        }
    }
}

/// Parses an OTLP/JSON `ExportProfilesServiceRequest`.
pub fn parse(body: &[u8]) -> Result<collector::ExportProfilesServiceRequest, PushError> {
    let r: Request = serde_json::from_slice(body)
        .map_err(|e| PushError::Invalid(format!("bad OTLP/JSON: {e}")))?;
    Ok(r.into())
}
