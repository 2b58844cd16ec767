//! What decoding the request's messages builds ([`wire_scan`](stackwatch_profile::wire_scan)): the fields that hold
//! memory, under the JSON names [`json`](super::json) reads.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::profiles::v1development as collector;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::profiles::v1development as pb;
use opentelemetry_proto::tonic::resource::v1 as resource;
use stackwatch_profile::wire_scan::{FieldShape, MessageShape, NumberWire};

static ANY_VALUE: MessageShape = MessageShape {
    name: "AnyValue",
    bytes: size_of::<common::AnyValue>(),
    fields: &[
        FieldShape::bytes(1, "string_value", &["stringValue"]),
        FieldShape::message(5, "array_value", &[], &ARRAY_VALUE),
        FieldShape::message(6, "kvlist_value", &[], &KEY_VALUE_LIST),
        FieldShape::bytes(7, "bytes_value", &[]),
    ],
};
static ARRAY_VALUE: MessageShape = MessageShape {
    name: "ArrayValue",
    bytes: size_of::<common::ArrayValue>(),
    fields: &[FieldShape::messages(1, "values", &[], &ANY_VALUE)],
};
static KEY_VALUE_LIST: MessageShape = MessageShape {
    name: "KeyValueList",
    bytes: size_of::<common::KeyValueList>(),
    fields: &[FieldShape::messages(1, "values", &[], &KEY_VALUE)],
};
static KEY_VALUE: MessageShape = MessageShape {
    name: "KeyValue",
    bytes: size_of::<common::KeyValue>(),
    fields: &[
        FieldShape::bytes(1, "key", &["key"]),
        FieldShape::message(2, "value", &["value"], &ANY_VALUE),
    ],
};
static ENTITY_REF: MessageShape = MessageShape {
    name: "EntityRef",
    bytes: size_of::<common::EntityRef>(),
    fields: &[
        FieldShape::bytes(1, "schema_url", &[]),
        FieldShape::bytes(2, "type", &[]),
        FieldShape::strings(3, "id_keys", &[]),
        FieldShape::strings(4, "description_keys", &[]),
    ],
};
static RESOURCE: MessageShape = MessageShape {
    name: "Resource",
    bytes: size_of::<resource::Resource>(),
    fields: &[
        FieldShape::messages(1, "attributes", &["attributes"], &KEY_VALUE),
        FieldShape::messages(3, "entity_refs", &[], &ENTITY_REF),
    ],
};
static SCOPE: MessageShape = MessageShape {
    name: "InstrumentationScope",
    bytes: size_of::<common::InstrumentationScope>(),
    fields: &[
        FieldShape::bytes(1, "name", &[]),
        FieldShape::bytes(2, "version", &[]),
        FieldShape::messages(3, "attributes", &[], &KEY_VALUE),
    ],
};
static VALUE_TYPE: MessageShape = MessageShape {
    name: "ValueType",
    bytes: size_of::<pb::ValueType>(),
    fields: &[],
};
static SAMPLE: MessageShape = MessageShape {
    name: "Sample",
    bytes: size_of::<pb::Sample>(),
    fields: &[
        FieldShape::numbers(
            2,
            "attribute_indices",
            &["attributeIndices"],
            4,
            NumberWire::Varint,
        ),
        FieldShape::numbers(4, "values", &["values"], 8, NumberWire::Varint),
        FieldShape::numbers(
            5,
            "timestamps_unix_nano",
            &["timestampsUnixNano"],
            8,
            NumberWire::Fixed64,
        ),
    ],
};
static PROFILE: MessageShape = MessageShape {
    name: "Profile",
    bytes: size_of::<pb::Profile>(),
    fields: &[
        FieldShape::message(1, "sample_type", &["sampleType"], &VALUE_TYPE),
        FieldShape::messages(2, "samples", &["samples"], &SAMPLE),
        FieldShape::message(5, "period_type", &["periodType"], &VALUE_TYPE),
        FieldShape::bytes(7, "profile_id", &[]),
        FieldShape::bytes(9, "original_payload_format", &[]),
        FieldShape::bytes(10, "original_payload", &[]),
        FieldShape::numbers(
            11,
            "attribute_indices",
            &["attributeIndices"],
            4,
            NumberWire::Varint,
        ),
    ],
};
static SCOPE_PROFILES: MessageShape = MessageShape {
    name: "ScopeProfiles",
    bytes: size_of::<pb::ScopeProfiles>(),
    fields: &[
        FieldShape::message(1, "scope", &[], &SCOPE),
        FieldShape::messages(2, "profiles", &["profiles"], &PROFILE),
        FieldShape::bytes(3, "schema_url", &[]),
    ],
};
static RESOURCE_PROFILES: MessageShape = MessageShape {
    name: "ResourceProfiles",
    bytes: size_of::<pb::ResourceProfiles>(),
    fields: &[
        FieldShape::message(1, "resource", &["resource"], &RESOURCE),
        FieldShape::messages(2, "scope_profiles", &["scopeProfiles"], &SCOPE_PROFILES),
        FieldShape::bytes(3, "schema_url", &[]),
    ],
};
static MAPPING: MessageShape = MessageShape {
    name: "Mapping",
    bytes: size_of::<pb::Mapping>(),
    fields: &[FieldShape::numbers(
        5,
        "attribute_indices",
        &[],
        4,
        NumberWire::Varint,
    )],
};
static LINE: MessageShape = MessageShape {
    name: "Line",
    bytes: size_of::<pb::Line>(),
    fields: &[],
};
static LOCATION: MessageShape = MessageShape {
    name: "Location",
    bytes: size_of::<pb::Location>(),
    fields: &[
        FieldShape::messages(3, "lines", &["lines"], &LINE),
        FieldShape::numbers(4, "attribute_indices", &[], 4, NumberWire::Varint),
    ],
};
static FUNCTION: MessageShape = MessageShape {
    name: "Function",
    bytes: size_of::<pb::Function>(),
    fields: &[],
};
static LINK: MessageShape = MessageShape {
    name: "Link",
    bytes: size_of::<pb::Link>(),
    fields: &[
        FieldShape::bytes(1, "trace_id", &[]),
        FieldShape::bytes(2, "span_id", &[]),
    ],
};
static KEY_VALUE_AND_UNIT: MessageShape = MessageShape {
    name: "KeyValueAndUnit",
    bytes: size_of::<pb::KeyValueAndUnit>(),
    fields: &[FieldShape::message(2, "value", &["value"], &ANY_VALUE)],
};
static STACK: MessageShape = MessageShape {
    name: "Stack",
    bytes: size_of::<pb::Stack>(),
    fields: &[FieldShape::numbers(
        1,
        "location_indices",
        &["locationIndices"],
        4,
        NumberWire::Varint,
    )],
};
static DICTIONARY: MessageShape = MessageShape {
    name: "ProfilesDictionary",
    bytes: size_of::<pb::ProfilesDictionary>(),
    fields: &[
        FieldShape::messages(1, "mapping_table", &["mappingTable"], &MAPPING),
        FieldShape::messages(2, "location_table", &["locationTable"], &LOCATION),
        FieldShape::messages(3, "function_table", &["functionTable"], &FUNCTION),
        FieldShape::messages(4, "link_table", &[], &LINK),
        FieldShape::strings(5, "string_table", &["stringTable"]),
        FieldShape::messages(
            6,
            "attribute_table",
            &["attributeTable"],
            &KEY_VALUE_AND_UNIT,
        ),
        FieldShape::messages(7, "stack_table", &["stackTable"], &STACK),
    ],
};
/// `ExportProfilesServiceRequest`.
pub static EXPORT_REQUEST: MessageShape = MessageShape {
    name: "ExportProfilesServiceRequest",
    bytes: size_of::<collector::ExportProfilesServiceRequest>(),
    fields: &[
        FieldShape::messages(
            1,
            "resource_profiles",
            &["resourceProfiles"],
            &RESOURCE_PROFILES,
        ),
        FieldShape::message(2, "dictionary", &["dictionary"], &DICTIONARY),
    ],
};
