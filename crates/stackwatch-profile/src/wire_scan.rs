//! What decoding a protobuf message (or its JSON mapping) will build, counted on the
//! wire before anything is built.
//!
//! prost's generated types decode a message whole, and no budget can look at it before
//! it exists: a 64 MiB body of 33.5 million empty `Sample`s (two bytes each on the wire)
//! becomes 2.6 GB of structs. A [`MessageShape`] says what each field of a message
//! costs once decoded: an element of its type per repeated message, its width per
//! repeated number, its bytes per string, and what nested messages hold. [`scan_protobuf`]
//! walks the wire bytes with prost's own helpers (`decode_key`, `decode_varint`,
//! `skip_field`), adds up those costs recursively and stops as soon as they pass a
//! limit, so the decoder only ever runs on messages that fit; [`scan_json`] does the
//! same over a JSON document through serde, building nothing.
//!
//! The cost counted is what the allocator is asked for: vectors grown one push at a
//! time (capacity doubling from 4 elements, 8 for bytes), strings at their length, each
//! block with the allocator's header and rounding. Fields a shape does not name (scalars,
//! unknown fields) cost nothing beyond the struct they sit in.

use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

/// Fields of one message a shape may list, at most.
pub const MAX_FIELDS: usize = 16;

/// Messages nested deeper than this are refused, as prost refuses them.
pub const MAX_DEPTH: usize = 100;

/// What decoding one message type builds.
#[derive(Debug)]
pub struct MessageShape {
    /// Its name, for errors (`Profile`).
    pub name: &'static str,
    /// `size_of` its Rust type: what one element of a repeated field of it takes.
    pub bytes: usize,
    /// The fields that hold memory of their own (at most [`MAX_FIELDS`]).
    pub fields: &'static [FieldShape],
}

/// One field of a [`MessageShape`].
#[derive(Debug)]
pub struct FieldShape {
    /// Its field number.
    pub tag: u32,
    /// Its name, for errors (`samples`).
    pub name: &'static str,
    /// The names a JSON decoder reads it under (empty: the JSON decoder ignores it).
    pub json: &'static [&'static str],
    /// What it holds.
    pub kind: FieldKind,
}

/// What a field holds once decoded.
#[derive(Debug, Clone, Copy)]
pub enum FieldKind {
    /// A repeated message: each occurrence one element of a vector.
    Messages(&'static MessageShape),
    /// A singular (optional or oneof) message: merged in place, so only what it holds
    /// costs.
    Message(&'static MessageShape),
    /// A repeated number of this many bytes in memory, packed or not.
    Numbers {
        /// Bytes of one element in memory.
        bytes: usize,
        /// How it is encoded.
        wire: NumberWire,
    },
    /// A repeated string or bytes field: a vector of them, and each one's bytes.
    Strings,
    /// A singular string or bytes field: its bytes.
    Bytes,
}

/// How a number is encoded, to count the elements of a packed field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberWire {
    /// A varint (`int32`, `int64`, `uint64`, `bool`, enums).
    Varint,
    /// Four bytes (`fixed32`, `sfixed32`, `float`).
    Fixed32,
    /// Eight bytes (`fixed64`, `sfixed64`, `double`).
    Fixed64,
}

impl FieldShape {
    /// A repeated message field.
    pub const fn messages(
        tag: u32,
        name: &'static str,
        json: &'static [&'static str],
        of: &'static MessageShape,
    ) -> FieldShape {
        FieldShape {
            tag,
            name,
            json,
            kind: FieldKind::Messages(of),
        }
    }

    /// A singular message field.
    pub const fn message(
        tag: u32,
        name: &'static str,
        json: &'static [&'static str],
        of: &'static MessageShape,
    ) -> FieldShape {
        FieldShape {
            tag,
            name,
            json,
            kind: FieldKind::Message(of),
        }
    }

    /// A repeated number field of `bytes` bytes in memory.
    pub const fn numbers(
        tag: u32,
        name: &'static str,
        json: &'static [&'static str],
        bytes: usize,
        wire: NumberWire,
    ) -> FieldShape {
        FieldShape {
            tag,
            name,
            json,
            kind: FieldKind::Numbers { bytes, wire },
        }
    }

    /// A repeated string (or bytes) field.
    pub const fn strings(
        tag: u32,
        name: &'static str,
        json: &'static [&'static str],
    ) -> FieldShape {
        FieldShape {
            tag,
            name,
            json,
            kind: FieldKind::Strings,
        }
    }

    /// A singular string (or bytes) field.
    pub const fn bytes(tag: u32, name: &'static str, json: &'static [&'static str]) -> FieldShape {
        FieldShape {
            tag,
            name,
            json,
            kind: FieldKind::Bytes,
        }
    }

    /// Bytes of one element of the vector this field fills (0: it fills none).
    fn element_bytes(&self) -> usize {
        match self.kind {
            FieldKind::Messages(m) => m.bytes,
            FieldKind::Numbers { bytes, .. } => bytes,
            FieldKind::Strings => std::mem::size_of::<String>(),
            FieldKind::Message(_) | FieldKind::Bytes => 0,
        }
    }
}

/// Decoding would build more than the limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "decoding it would take more than {limit} bytes of memory (passed at {count} {message}.{field}); refused before decoding"
)]
pub struct OverLimit {
    /// The limit, bytes.
    pub limit: usize,
    /// The message type whose field passed it.
    pub message: &'static str,
    /// The field.
    pub field: &'static str,
    /// Elements of that field in that message when the limit was passed.
    pub count: usize,
}

/// Why a scan refused its input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScanError {
    /// Decoding would build more than the limit.
    #[error("{0}")]
    OverLimit(#[from] OverLimit),
    /// The wire bytes are not a protobuf message (prost would refuse them too).
    #[error("bad protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The wire bytes are not a protobuf message: a length past the end, or messages
    /// nested deeper than [`MAX_DEPTH`] (prost would refuse them too).
    #[error("bad protobuf: {0}")]
    Malformed(&'static str),
    /// The JSON does not parse.
    #[error("bad JSON: {0}")]
    Json(String),
}

/// What a scan found decoding would build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCost {
    /// Bytes of memory, as the allocator is asked for them.
    pub bytes: usize,
}

/// Blocks of this size and more are mapped pages of their own (glibc's mmap
/// threshold): no header, no rounding worth counting.
const LARGE_BLOCK: usize = 128 << 10;

/// Bytes the allocator holds for a block of `bytes`: glibc's 8-byte header, 16-byte
/// rounding, 32 bytes at least.
fn block(bytes: usize) -> usize {
    match bytes {
        0 => 0,
        b if b >= LARGE_BLOCK => b,
        b => ((b + 8 + 15) & !15).max(32),
    }
}

/// Bytes of a vector of `n` elements of `size` bytes filled one push at a time: its
/// capacity doubles from 4 elements (8 for bytes), as `Vec` grows.
fn vec_bytes(n: usize, size: usize) -> usize {
    if n == 0 || size == 0 {
        return 0;
    }
    let min = if size == 1 { 8 } else { 4 };
    let cap = n.checked_next_power_of_two().unwrap_or(usize::MAX).max(min);
    block(cap.saturating_mul(size))
}

/// Bytes of a string (or bytes) of `len` bytes as prost decodes it (reserved exactly,
/// 8 bytes at least).
fn string_bytes(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        block(len.max(8))
    }
}

/// The running total of a scan, which refuses past its limit.
struct Tally {
    bytes: usize,
    limit: usize,
    /// How many copies of the decoded message live at once.
    copies: usize,
}

impl Tally {
    fn add(
        &mut self,
        bytes: usize,
        shape: &MessageShape,
        field: &FieldShape,
        count: usize,
    ) -> Result<(), OverLimit> {
        self.bytes = self.bytes.saturating_add(bytes.saturating_mul(self.copies));
        if self.bytes > self.limit {
            return Err(OverLimit {
                limit: self.limit,
                message: shape.name,
                field: field.name,
                count,
            });
        }
        Ok(())
    }

    /// Counts `more` elements of field `i`, of which `counts[i]` were counted before.
    fn grow(
        &mut self,
        shape: &MessageShape,
        i: usize,
        counts: &mut [usize; MAX_FIELDS],
        more: usize,
    ) -> Result<(), OverLimit> {
        let field = &shape.fields[i];
        let size = field.element_bytes();
        let before = vec_bytes(counts[i], size);
        counts[i] = counts[i].saturating_add(more);
        let after = vec_bytes(counts[i], size);
        self.add(after - before, shape, field, counts[i])
    }
}

fn field_of(shape: &MessageShape, tag: u32) -> Option<usize> {
    shape.fields.iter().position(|f| f.tag == tag)
}

/// Scans the protobuf `bytes` of a message of `shape`, refusing once decoding it would
/// take more than `limit` bytes. Malformed wire bytes are an error, as they are to prost.
pub fn scan_protobuf(
    shape: &'static MessageShape,
    bytes: &[u8],
    limit: usize,
) -> Result<WireCost, ScanError> {
    check_shape(shape);
    let mut tally = Tally {
        bytes: 0,
        limit,
        copies: 1,
    };
    if shape.bytes > limit {
        return Err(OverLimit {
            limit,
            message: shape.name,
            field: "",
            count: 1,
        }
        .into());
    }
    tally.bytes = shape.bytes;
    let mut buf = bytes;
    scan_message(shape, &mut buf, 0, &mut tally)?;
    Ok(WireCost { bytes: tally.bytes })
}

/// The length of a length-delimited field, checked against what is left.
fn length(buf: &mut &[u8]) -> Result<usize, ScanError> {
    let len = decode_varint(buf)?;
    if len > buf.remaining() as u64 {
        return Err(ScanError::Malformed("a length past the end of its message"));
    }
    Ok(len as usize)
}

fn scan_message(
    shape: &'static MessageShape,
    buf: &mut &[u8],
    depth: usize,
    tally: &mut Tally,
) -> Result<(), ScanError> {
    if depth > MAX_DEPTH {
        return Err(ScanError::Malformed("messages nested deeper than 100"));
    }
    let mut counts = [0usize; MAX_FIELDS];
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(buf)?;
        let Some(i) = field_of(shape, tag) else {
            skip_field(wire_type, tag, buf, DecodeContext::default())?;
            continue;
        };
        let field = &shape.fields[i];
        match (field.kind, wire_type) {
            (FieldKind::Messages(inner) | FieldKind::Message(inner), WireType::LengthDelimited) => {
                let len = length(buf)?;
                let (mut body, rest) = buf.split_at(len);
                if let FieldKind::Messages(_) = field.kind {
                    tally.grow(shape, i, &mut counts, 1)?;
                }
                scan_message(inner, &mut body, depth + 1, tally)?;
                *buf = rest;
            }
            (FieldKind::Numbers { wire, .. }, WireType::LengthDelimited) => {
                let len = length(buf)?;
                let packed = &buf[..len];
                let n = match wire {
                    // Every varint ends in the one byte of it below 0x80.
                    NumberWire::Varint => packed.iter().filter(|b| **b < 0x80).count(),
                    NumberWire::Fixed32 => len / 4,
                    NumberWire::Fixed64 => len / 8,
                };
                tally.grow(shape, i, &mut counts, n)?;
                buf.advance(len);
            }
            (FieldKind::Numbers { .. }, _) => {
                tally.grow(shape, i, &mut counts, 1)?;
                skip_field(wire_type, tag, buf, DecodeContext::default())?;
            }
            (FieldKind::Strings, WireType::LengthDelimited) => {
                let len = length(buf)?;
                tally.grow(shape, i, &mut counts, 1)?;
                tally.add(string_bytes(len), shape, field, counts[i])?;
                buf.advance(len);
            }
            (FieldKind::Bytes, WireType::LengthDelimited) => {
                let len = length(buf)?;
                tally.add(string_bytes(len), shape, field, 1)?;
                buf.advance(len);
            }
            // Not the wire type the field has: prost refuses it, nothing is built.
            _ => skip_field(wire_type, tag, buf, DecodeContext::default())?,
        }
    }
    Ok(())
}

/// Panics on a shape with more than [`MAX_FIELDS`] fields (a programming error, caught
/// by any test that scans with it).
fn check_shape(shape: &MessageShape) {
    assert!(
        shape.fields.len() <= MAX_FIELDS,
        "{}: more than {MAX_FIELDS} fields in a MessageShape",
        shape.name
    );
}

/// Scans a JSON document (the proto3 JSON mapping of a message of `shape`, fields under
/// their [`FieldShape::json`] names) from `de`, refusing once decoding it would take
/// more than `limit` bytes with `copies` copies of the message alive at once (a JSON
/// decoder that maps its own types into the protobuf ones holds 2). Call `end` on a
/// serde_json deserializer after it to refuse trailing data.
pub fn scan_json<'de, D: Deserializer<'de>>(
    shape: &'static MessageShape,
    de: D,
    limit: usize,
    copies: usize,
) -> Result<WireCost, ScanError> {
    check_shape(shape);
    let mut tally = Tally {
        bytes: 0,
        limit,
        copies: copies.max(1),
    };
    let mut over = None;
    let root = FieldShape::message(0, "", &[], shape);
    let result = ValueSeed {
        shape,
        field: &root,
        index: 0,
        counts: &mut [0; MAX_FIELDS],
        tally: &mut tally,
        over: &mut over,
        depth: 0,
    }
    .deserialize(de);
    if let Some(o) = over {
        return Err(ScanError::OverLimit(o));
    }
    result.map_err(|e| ScanError::Json(e.to_string()))?;
    let bytes = tally.bytes.saturating_add(shape.bytes);
    if bytes > limit {
        return Err(OverLimit {
            limit,
            message: shape.name,
            field: "",
            count: 1,
        }
        .into());
    }
    Ok(WireCost { bytes })
}

/// The value of field `index` of a message of `shape` (whose element counts so far are
/// `counts`): a message, an array of them, numbers or strings. A value of another JSON
/// type than the field's costs nothing: the decoder refuses it.
struct ValueSeed<'a> {
    shape: &'static MessageShape,
    field: &'a FieldShape,
    index: usize,
    counts: &'a mut [usize; MAX_FIELDS],
    tally: &'a mut Tally,
    over: &'a mut Option<OverLimit>,
    depth: usize,
}

impl ValueSeed<'_> {
    fn grow<E: de::Error>(&mut self, more: usize) -> Result<(), E> {
        self.tally
            .grow(self.shape, self.index, self.counts, more)
            .map_err(|o| self.refuse(o))
    }

    fn add<E: de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        let count = self.counts[self.index].max(1);
        self.tally
            .add(bytes, self.shape, self.field, count)
            .map_err(|o| self.refuse(o))
    }

    fn refuse<E: de::Error>(&mut self, o: OverLimit) -> E {
        let e = E::custom(&o);
        *self.over = Some(o);
        e
    }

    /// The fields of a message of `inner`.
    fn message<'de, A: MapAccess<'de>>(
        &mut self,
        inner: &'static MessageShape,
        mut map: A,
    ) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested deeper than 100"));
        }
        let mut counts = [0usize; MAX_FIELDS];
        while let Some(i) = map.next_key_seed(KeySeed(inner))? {
            match i {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(i) => map.next_value_seed(ValueSeed {
                    shape: inner,
                    field: &inner.fields[i],
                    index: i,
                    counts: &mut counts,
                    tally: self.tally,
                    over: self.over,
                    depth: self.depth + 1,
                })?,
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "the JSON of {}.{}", self.shape.name, self.field.name)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        match self.field.kind {
            FieldKind::Message(inner) => self.message(inner, map),
            // An object where an array is wanted: counted as one element.
            FieldKind::Messages(inner) => {
                self.grow(1)?;
                self.message(inner, map)
            }
            _ => drain_map(map),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        match self.field.kind {
            FieldKind::Messages(inner) => {
                while let Some(()) = seq.next_element_seed(ElementSeed {
                    parent: &mut self,
                    inner,
                })? {}
                Ok(())
            }
            FieldKind::Numbers { .. } => {
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    self.grow(1)?;
                }
                Ok(())
            }
            FieldKind::Strings => {
                while let Some(len) = seq.next_element_seed(StringLen)? {
                    self.grow(1)?;
                    self.add(string_bytes(len))?;
                }
                Ok(())
            }
            FieldKind::Message(_) | FieldKind::Bytes => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(())
            }
        }
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        match self.field.kind {
            FieldKind::Bytes => self.add(string_bytes(v.len())),
            _ => Ok(()),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// One element of an array of messages: counted, then its fields scanned.
struct ElementSeed<'p, 'a> {
    parent: &'p mut ValueSeed<'a>,
    inner: &'static MessageShape,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a {}", self.inner.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.parent.grow(1)?;
        self.parent.message(self.inner, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The length of a JSON string, read without keeping it (any other value: 0).
struct StringLen;

impl<'de> DeserializeSeed<'de> for StringLen {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringLen {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        Ok(v.len())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<usize, A::Error> {
        drain_map(map).map(|()| 0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(0)
    }
}

/// A key of a JSON object of `shape`: the index of the field it names, `None` for a
/// field the shape does not list (read without keeping it).
struct KeySeed(&'static MessageShape);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.fields.iter().position(|f| f.json.contains(&v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static LEAF: MessageShape = MessageShape {
        name: "Leaf",
        bytes: 32,
        fields: &[
            FieldShape::numbers(1, "ids", &["ids"], 8, NumberWire::Varint),
            FieldShape::bytes(2, "name", &["name"]),
        ],
    };
    static ROOT: MessageShape = MessageShape {
        name: "Root",
        bytes: 48,
        fields: &[
            FieldShape::messages(1, "leaves", &["leaves"], &LEAF),
            FieldShape::strings(2, "strings", &["strings"]),
            FieldShape::message(3, "nested", &["nested"], &ROOT),
        ],
    };

    fn key(tag: u32, wt: WireType, out: &mut Vec<u8>) {
        prost::encoding::encode_key(tag, wt, out);
    }

    fn empty_leaves(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            key(1, WireType::LengthDelimited, &mut out);
            out.push(0);
        }
        out
    }

    #[test]
    fn empty_messages_cost_their_struct_each() {
        let cost = scan_protobuf(&ROOT, &empty_leaves(1000), 1 << 20).unwrap();
        // 1 000 leaves of 32 bytes in a vector of 1 024 (and its block's header), and
        // the root.
        assert_eq!(cost.bytes, 48 + 1024 * 32 + 16);
        let err = scan_protobuf(&ROOT, &empty_leaves(100_000), 1 << 20).unwrap_err();
        let ScanError::OverLimit(o) = err else {
            panic!("{err}")
        };
        assert_eq!((o.message, o.field, o.limit), ("Root", "leaves", 1 << 20));
        assert!(o.count <= 32_769, "stops as soon as it passes: {}", o.count);
    }

    #[test]
    fn packed_and_unpacked_numbers_strings_and_nesting_count() {
        let mut leaf = Vec::new();
        key(1, WireType::LengthDelimited, &mut leaf);
        leaf.extend([3, 1, 0xac, 0x02]); // two varints packed in 3 bytes
        key(1, WireType::Varint, &mut leaf);
        leaf.push(7);
        key(2, WireType::LengthDelimited, &mut leaf);
        leaf.extend([3, b'a', b'b', b'c']);
        let mut root = Vec::new();
        key(1, WireType::LengthDelimited, &mut root);
        root.push(leaf.len() as u8);
        root.extend(&leaf);
        key(2, WireType::LengthDelimited, &mut root);
        root.extend([0]);
        key(3, WireType::LengthDelimited, &mut root);
        root.push(2);
        key(2, WireType::LengthDelimited, &mut root);
        root.push(0);
        // An unknown field is skipped.
        key(9, WireType::SixtyFourBit, &mut root);
        root.extend([0; 8]);
        // Root 48; leaves: a vector of 4 (144); the leaf's 3 ids, a vector of 4 (48), its
        // name (32); strings: a vector of 4 (112) of one empty string; the nested root's
        // own strings (112).
        assert_eq!(scan_protobuf(&ROOT, &root, 1 << 20).unwrap().bytes, 496);
        let json = r#"{"leaves":[{"ids":[1,"2",3],"name":"abc"}],"strings":[""],
            "nested":{"strings":[""]},"other":[1,{"a":[2]}]}"#;
        let mut de = serde_json::Deserializer::from_str(json);
        assert_eq!(scan_json(&ROOT, &mut de, 1 << 20, 1).unwrap().bytes, 496);
        let mut de = serde_json::Deserializer::from_str(json);
        assert_eq!(
            scan_json(&ROOT, &mut de, 1 << 20, 2).unwrap().bytes,
            48 + 2 * 448
        );
    }

    #[test]
    fn json_arrays_of_empty_objects_are_refused_early() {
        let mut json = String::from("{\"leaves\":[");
        for i in 0..200_000 {
            json.push_str(if i == 0 { "{}" } else { ",{}" });
        }
        json.push_str("]}");
        let mut de = serde_json::Deserializer::from_str(&json);
        let err = scan_json(&ROOT, &mut de, 1 << 20, 2).unwrap_err();
        assert!(
            matches!(
                err,
                ScanError::OverLimit(OverLimit {
                    field: "leaves",
                    ..
                })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("Root.leaves"), "{err}");
    }

    #[test]
    fn malformed_and_too_deep_input_is_an_error() {
        // A length past the end.
        let mut bad = Vec::new();
        key(1, WireType::LengthDelimited, &mut bad);
        bad.push(50);
        assert!(matches!(
            scan_protobuf(&ROOT, &bad, 1 << 20),
            Err(ScanError::Malformed(_))
        ));
        assert!(matches!(
            scan_protobuf(&ROOT, &[0xff; 11], 1 << 20),
            Err(ScanError::Protobuf(_))
        ));
        // 150 nested roots.
        let mut deep: Vec<u8> = Vec::new();
        for _ in 0..150 {
            let mut outer = Vec::new();
            key(3, WireType::LengthDelimited, &mut outer);
            prost::encoding::encode_varint(deep.len() as u64, &mut outer);
            outer.extend(&deep);
            deep = outer;
        }
        assert!(matches!(
            scan_protobuf(&ROOT, &deep, 1 << 20),
            Err(ScanError::Malformed(_))
        ));
        let mut de = serde_json::Deserializer::from_str("{\"leaves\":[{]}");
        assert!(matches!(
            scan_json(&ROOT, &mut de, 1 << 20, 1),
            Err(ScanError::Json(_))
        ));
    }
}
