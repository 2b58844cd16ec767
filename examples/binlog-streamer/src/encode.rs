//! Row changes as messages: JSON and Avro.
//!
//! A message is one row change. JSON is one object per row (`serde_json`); Avro uses the
//! [`AVRO_SCHEMA`] record in Avro's single-object encoding (two marker bytes, the
//! schema's Rabin fingerprint, the datum), so each Redis entry is self-describing.
//! Messages of a batch are stored back to back in one buffer ([`MessageBuf`]) rather than
//! as a `Vec` each: batching is where a streamer's throughput comes from.

use std::collections::HashMap;

use apache_avro::types::Value as Avro;
use apache_avro::{GenericSingleObjectWriter, Schema};
use base64::Engine;

use crate::decode::{RowChange, RowImage, TableSchema};
use crate::value::{write_temporal, CellValue};

/// Message encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MessageFormat {
    /// One JSON object per row change.
    Json,
    /// Avro single-object encoding of [`AVRO_SCHEMA`].
    Avro,
}

/// The Avro schema of a row change message.
pub const AVRO_SCHEMA: &str = r#"{
  "type": "record", "name": "RowChange", "namespace": "stackwatch.binlog",
  "fields": [
    {"name": "database", "type": "string"},
    {"name": "table", "type": "string"},
    {"name": "type", "type": {"type": "enum", "name": "ChangeKind", "symbols": ["insert", "update", "delete"]}},
    {"name": "ts", "type": "long"},
    {"name": "file", "type": "string"},
    {"name": "pos", "type": "long"},
    {"name": "row", "type": "int"},
    {"name": "before", "type": ["null", {"type": "map", "values": ["null", "long", "double", "string", "bytes"]}], "default": null},
    {"name": "after", "type": ["null", {"type": "map", "values": ["null", "long", "double", "string", "bytes"]}], "default": null}
  ]
}"#;

/// Messages stored back to back.
#[derive(Debug, Default, Clone)]
pub struct MessageBuf {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl MessageBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty buffer with room for `messages` messages of `bytes` bytes in all.
    pub fn with_capacity(messages: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(messages),
        }
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total payload bytes.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The messages in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let m = &self.data[start..end as usize];
            start = end as usize;
            m
        })
    }

    fn finish_message(&mut self) {
        self.ends.push(self.data.len() as u32);
    }
}

/// Errors encoding a message.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// JSON serialization failed.
    #[error("JSON encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// Avro serialization failed.
    #[error("Avro encoding: {0}")]
    Avro(String),
}

/// Encodes row changes in one format.
pub struct MessageEncoder {
    format: MessageFormat,
    avro: Option<(Schema, GenericSingleObjectWriter)>,
}

impl MessageEncoder {
    /// An encoder for `format`.
    pub fn new(format: MessageFormat) -> Self {
        let avro = (format == MessageFormat::Avro).then(|| {
            let schema = Schema::parse_str(AVRO_SCHEMA).expect("the built-in schema parses");
            let writer = GenericSingleObjectWriter::new_with_capacity(&schema, 1024)
                .expect("the built-in schema is a record");
            (schema, writer)
        });
        Self { format, avro }
    }

    /// The format.
    pub fn format(&self) -> MessageFormat {
        self.format
    }

    /// Appends `change` to `out` as one message.
    pub fn encode(&mut self, change: &RowChange, out: &mut MessageBuf) -> Result<(), EncodeError> {
        match self.format {
            MessageFormat::Json => write_json(change, &mut out.data)?,
            MessageFormat::Avro => {
                let (_, writer) = self.avro.as_mut().expect("avro writer");
                let value = avro_value(change);
                writer
                    .write_value(value, &mut out.data)
                    .map_err(|e| EncodeError::Avro(e.to_string()))?;
            }
        }
        out.finish_message();
        Ok(())
    }

    /// The Avro schema in use, when the format is Avro.
    pub fn avro_schema(&self) -> Option<&Schema> {
        self.avro.as_ref().map(|(s, _)| s)
    }
}

/// Writes `change` as one JSON object. Structure and keys are written directly (the
/// keys were escaped once per table map); string values go through `serde_json`'s
/// escaping, numbers through its formatter.
fn write_json(c: &RowChange, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    out.push(b'{');
    out.extend_from_slice(c.table.json_names());
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(c.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"ts\":");
    push_u64(out, c.event_time as u64);
    out.extend_from_slice(b",\"file\":");
    serde_json::to_writer(&mut *out, &*c.file)?;
    out.extend_from_slice(b",\"pos\":");
    push_u64(out, c.pos);
    out.extend_from_slice(b",\"row\":");
    push_u64(out, c.row as u64);
    out.extend_from_slice(b",\"before\":");
    write_image(&c.table, c.before.as_ref(), out)?;
    out.extend_from_slice(b",\"after\":");
    write_image(&c.table, c.after.as_ref(), out)?;
    out.push(b'}');
    Ok(())
}

fn write_image(
    table: &TableSchema,
    image: Option<&RowImage>,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let Some(image) = image else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    out.push(b'{');
    for (k, (i, v)) in image.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        match table.columns.get(*i as usize) {
            Some(col) => out.extend_from_slice(col.json_key()),
            None => {
                serde_json::to_writer(&mut *out, &format!("@{i}"))?;
                out.push(b':');
            }
        }
        write_cell(v, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_cell(v: &CellValue, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match v {
        CellValue::Null => out.extend_from_slice(b"null"),
        CellValue::Int(i) => {
            if *i < 0 {
                out.push(b'-');
            }
            push_u64(out, i.unsigned_abs());
        }
        CellValue::UInt(u) => push_u64(out, *u),
        CellValue::Float(f) => serde_json::to_writer(&mut *out, f)?,
        CellValue::Double(d) => serde_json::to_writer(&mut *out, d)?,
        CellValue::Decimal(t) | CellValue::Text(t) => serde_json::to_writer(&mut *out, t)?,
        CellValue::Bytes(b) => {
            out.extend_from_slice(b"{\"base64\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .as_bytes(),
            );
            out.extend_from_slice(b"\"}");
        }
        CellValue::Json(j) => serde_json::to_writer(&mut *out, j)?,
        temporal => {
            out.push(b'"');
            write_temporal(temporal, out);
            out.push(b'"');
        }
    }
    Ok(())
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn avro_value(c: &RowChange) -> Avro {
    let kind_index = match c.kind {
        crate::decode::ChangeKind::Insert => 0,
        crate::decode::ChangeKind::Update => 1,
        crate::decode::ChangeKind::Delete => 2,
    };
    Avro::Record(vec![
        ("database".into(), Avro::String(c.table.database.clone())),
        ("table".into(), Avro::String(c.table.table.clone())),
        (
            "type".into(),
            Avro::Enum(kind_index, c.kind.as_str().to_string()),
        ),
        ("ts".into(), Avro::Long(c.event_time as i64)),
        ("file".into(), Avro::String(c.file.to_string())),
        ("pos".into(), Avro::Long(c.pos as i64)),
        ("row".into(), Avro::Int(c.row as i32)),
        ("before".into(), avro_image(&c.table, c.before.as_ref())),
        ("after".into(), avro_image(&c.table, c.after.as_ref())),
    ])
}

fn avro_image(table: &TableSchema, image: Option<&RowImage>) -> Avro {
    let Some(image) = image else {
        return Avro::Union(0, Box::new(Avro::Null));
    };
    let mut map = HashMap::with_capacity(image.len());
    for (i, v) in image {
        let name = table
            .columns
            .get(*i as usize)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("@{i}"));
        let v = match v {
            CellValue::Null => Avro::Union(0, Box::new(Avro::Null)),
            CellValue::Int(x) => Avro::Union(1, Box::new(Avro::Long(*x))),
            CellValue::UInt(x) => match i64::try_from(*x) {
                Ok(x) => Avro::Union(1, Box::new(Avro::Long(x))),
                Err(_) => Avro::Union(3, Box::new(Avro::String(x.to_string()))),
            },
            CellValue::Float(x) => Avro::Union(2, Box::new(Avro::Double(*x as f64))),
            CellValue::Double(x) => Avro::Union(2, Box::new(Avro::Double(*x))),
            CellValue::Decimal(t) | CellValue::Text(t) => {
                Avro::Union(3, Box::new(Avro::String(t.clone())))
            }
            CellValue::Bytes(b) => Avro::Union(4, Box::new(Avro::Bytes(b.clone()))),
            CellValue::Json(j) => Avro::Union(3, Box::new(Avro::String(j.to_string()))),
            temporal => {
                let mut t = Vec::with_capacity(32);
                write_temporal(temporal, &mut t);
                Avro::Union(
                    3,
                    Box::new(Avro::String(String::from_utf8_lossy(&t).into_owned())),
                )
            }
        };
        map.insert(name, v);
    }
    Avro::Union(1, Box::new(Avro::Map(map)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{ChangeKind, ColumnSchema};
    use std::sync::Arc;

    fn change() -> RowChange {
        let table = Arc::new(TableSchema::new(
            "shop".into(),
            "t<script>".into(),
            vec![
                ColumnSchema::named("id", mysql_common::constants::ColumnType::MYSQL_TYPE_LONG),
                ColumnSchema::named("v", mysql_common::constants::ColumnType::MYSQL_TYPE_BLOB),
            ],
        ));
        RowChange {
            kind: ChangeKind::Update,
            table,
            before: Some(vec![
                (0, CellValue::Int(1)),
                (1, CellValue::Bytes(vec![0, 255])),
            ]),
            after: Some(vec![
                (0, CellValue::Int(1)),
                (1, CellValue::Text("\"q\"".into())),
            ]),
            file: Arc::from("mysql-bin.000001"),
            pos: 420,
            row: 2,
            event_time: 1_700_000_000,
        }
    }

    #[test]
    fn json_messages_are_objects_with_names_and_escaped_text() {
        let mut enc = MessageEncoder::new(MessageFormat::Json);
        let mut buf = MessageBuf::new();
        enc.encode(&change(), &mut buf).unwrap();
        enc.encode(&change(), &mut buf).unwrap();
        assert_eq!(buf.len(), 2);
        let m: serde_json::Value = serde_json::from_slice(buf.iter().next().unwrap()).unwrap();
        assert_eq!(m["type"], "update");
        assert_eq!(m["table"], "t<script>");
        assert_eq!(m["pos"], 420);
        assert_eq!(m["before"]["v"]["base64"], "AP8=");
        assert_eq!(m["after"]["v"], "\"q\"");
    }

    #[test]
    fn avro_messages_decode_with_the_schema() {
        let mut enc = MessageEncoder::new(MessageFormat::Avro);
        let mut buf = MessageBuf::new();
        enc.encode(&change(), &mut buf).unwrap();
        let msg = buf.iter().next().unwrap();
        assert_eq!(&msg[..2], &[0xc3, 0x01], "single-object marker");
        let schema = Schema::parse_str(AVRO_SCHEMA).unwrap();
        let v = apache_avro::GenericSingleObjectReader::builder()
            .schema(schema)
            .build()
            .unwrap()
            .read_value(&mut &msg[..])
            .unwrap();
        let Avro::Record(fields) = v else { panic!() };
        assert_eq!(fields[1].1, Avro::String("t<script>".into()));
        assert_eq!(fields[5].1, Avro::Long(420));
    }
}
