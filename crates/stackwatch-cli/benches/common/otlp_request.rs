//! OTLP profile requests as the OpenTelemetry Collector's `otlphttp` exporter sends them
//! (the collector's own decoder's types): one process's CPU profile in the dictionary
//! model, for the push benchmarks.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Location, Mapping, Profile, ProfilesDictionary,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// One CPU period (99 Hz), ns.
pub const PERIOD_NS: i64 = 10_101_010;
/// How often a process pushes: each profile covers this long.
pub const INTERVAL: Duration = Duration::from_secs(10);

fn string_value(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

/// The OTLP request of one push: `stacks` (root first) of one process.
pub fn request(
    service: &str,
    host: &str,
    stacks: &[(String, u64)],
) -> ExportProfilesServiceRequest {
    let mut strings: HashMap<String, i32> = HashMap::new();
    let mut d = ProfilesDictionary {
        mapping_table: vec![Mapping::default()],
        location_table: vec![Location::default()],
        function_table: vec![Function::default()],
        stack_table: vec![Stack::default()],
        attribute_table: vec![KeyValueAndUnit::default()],
        ..Default::default()
    };
    let mut string = |d: &mut ProfilesDictionary, s: &str| -> i32 {
        *strings.entry(s.to_owned()).or_insert_with(|| {
            d.string_table.push(s.to_owned());
            d.string_table.len() as i32 - 1
        })
    };
    string(&mut d, "");
    let mut locations: HashMap<String, i32> = HashMap::new();
    let mut threads: HashMap<String, i32> = HashMap::new();
    let mut samples = Vec::with_capacity(stacks.len());
    for (stack, count) in stacks {
        let frames: Vec<&str> = stack.split(';').collect();
        let mut indices = Vec::with_capacity(frames.len());
        for f in frames.iter().rev() {
            let loc = match locations.get(*f) {
                Some(l) => *l,
                None => {
                    let name = string(&mut d, f);
                    d.function_table.push(Function {
                        name_strindex: name,
                        system_name_strindex: name,
                        ..Default::default()
                    });
                    d.location_table.push(Location {
                        address: 0x40_0000 + d.location_table.len() as u64 * 16,
                        lines: vec![Line {
                            function_index: d.function_table.len() as i32 - 1,
                            line: 0,
                            column: 0,
                        }],
                        ..Default::default()
                    });
                    let l = d.location_table.len() as i32 - 1;
                    locations.insert(f.to_string(), l);
                    l
                }
            };
            indices.push(loc);
        }
        d.stack_table.push(Stack {
            location_indices: indices,
        });
        let thread = frames[0];
        let attr = match threads.get(thread) {
            Some(a) => *a,
            None => {
                let key = string(&mut d, "thread.name");
                d.attribute_table.push(KeyValueAndUnit {
                    key_strindex: key,
                    value: string_value(thread),
                    unit_strindex: 0,
                });
                let a = d.attribute_table.len() as i32 - 1;
                threads.insert(thread.to_string(), a);
                a
            }
        };
        samples.push(Sample {
            stack_index: d.stack_table.len() as i32 - 1,
            attribute_indices: vec![attr],
            values: vec![*count as i64],
            ..Default::default()
        });
    }
    let sample_type = ValueType {
        type_strindex: string(&mut d, "samples"),
        unit_strindex: string(&mut d, "count"),
    };
    let period_type = ValueType {
        type_strindex: string(&mut d, "cpu"),
        unit_strindex: string(&mut d, "nanoseconds"),
    };
    let attr = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: string_value(v),
        key_strindex: 0,
    };
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(Resource {
                attributes: vec![attr("service.name", service), attr("host.name", host)],
                ..Default::default()
            }),
            scope_profiles: vec![ScopeProfiles {
                profiles: vec![Profile {
                    sample_type: Some(sample_type),
                    period_type: Some(period_type),
                    period: PERIOD_NS,
                    duration_nano: INTERVAL.as_nanos() as u64,
                    samples,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
        dictionary: Some(d),
    }
}
