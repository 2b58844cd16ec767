//! Turning binlog events into row changes.
//!
//! [`RowDecoder`] is the one decoder every source feeds (replication stream, files,
//! generator). It keeps the table maps, turns rows events into [`RowChange`]s and tells
//! the pipeline where transactions start and end, which is what makes a position safe to
//! checkpoint. Table maps are parsed once per distinct definition, not once per row: the
//! optional metadata (column names, signedness, character sets) is resolved into a
//! [`TableSchema`] and rows are read column by column with `mysql_common`'s value codec.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_common::binlog::consts::{EventType, RowsEventFlags};
use mysql_common::binlog::events::{
    Event, GtidEvent, OptionalMetaExtractor, OptionalMetadataField, QueryEvent, RotateEvent,
    RowsEventData, TableMapEvent,
};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use mysql_common::proto::MySerialize;

use crate::value::{CellValue, ColumnKind, TextEncoding};

/// MariaDB-only event type codes (`log_event.h`), which `mysql_common` does not name.
pub mod mariadb {
    /// The statement that produced the following rows (`binlog_annotate_row_events`).
    pub const ANNOTATE_ROWS: u8 = 160;
    /// Names the oldest binlog still needed for crash recovery.
    pub const BINLOG_CHECKPOINT: u8 = 161;
    /// Starts an event group and names its GTID.
    pub const GTID: u8 = 162;
    /// The GTID state at the start of a binlog file.
    pub const GTID_LIST: u8 = 163;
    /// Following events are encrypted.
    pub const START_ENCRYPTION: u8 = 164;
    /// First of the compressed query and rows events (`log_bin_compress=ON`), 165-171.
    pub const FIRST_COMPRESSED: u8 = 165;
    /// Last of the compressed events.
    pub const LAST_COMPRESSED: u8 = 171;
}

/// Insert, update or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new row (after image only).
    Insert,
    /// A changed row (before and after images).
    Update,
    /// A removed row (before image only).
    Delete,
}

impl ChangeKind {
    /// `insert`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One column of a table as the table map describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    /// Name from `binlog_row_metadata=FULL`, else `@<index>`.
    pub name: String,
    /// How values of this column are interpreted.
    pub kind: ColumnKind,
    meta: Vec<u8>,
    unsigned: bool,
    /// `"name":`, JSON-escaped once here rather than for every row.
    json_key: Vec<u8>,
}

impl ColumnSchema {
    /// A column of a text (or numeric) type with default metadata, for tests and tools.
    pub fn named(name: &str, column_type: ColumnType) -> Self {
        Self {
            name: name.to_string(),
            kind: ColumnKind {
                column_type,
                text: TextEncoding::Utf8,
                labels: Vec::new(),
            },
            meta: Vec::new(),
            unsigned: false,
            json_key: json_key(name),
        }
    }

    /// The column's name as a JSON object key with its colon (`"name":`).
    pub fn json_key(&self) -> &[u8] {
        &self.json_key
    }
}

fn json_key(name: &str) -> Vec<u8> {
    let mut k = serde_json::to_vec(name).expect("a string serializes");
    k.push(b':');
    k
}

/// A table as its latest table map describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Database (schema) name.
    pub database: String,
    /// Table name.
    pub table: String,
    /// Columns in table order.
    pub columns: Vec<ColumnSchema>,
    /// `"database":"..","table":".."`, JSON-escaped once.
    json_names: Vec<u8>,
}

impl TableSchema {
    /// A table.
    pub fn new(database: String, table: String, columns: Vec<ColumnSchema>) -> Self {
        let mut json_names = b"\"database\":".to_vec();
        json_names.extend(serde_json::to_vec(&database).expect("a string serializes"));
        json_names.extend_from_slice(b",\"table\":");
        json_names.extend(serde_json::to_vec(&table).expect("a string serializes"));
        Self {
            database,
            table,
            columns,
            json_names,
        }
    }

    /// The database and table as JSON object members (`"database":"shop","table":"t"`).
    pub fn json_names(&self) -> &[u8] {
        &self.json_names
    }
}

/// One row image: the logged columns (by index into the schema) and their values.
pub type RowImage = Vec<(u32, CellValue)>;

/// One changed row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// What happened to the row.
    pub kind: ChangeKind,
    /// The table it belongs to.
    pub table: Arc<TableSchema>,
    /// Row before the change (updates, deletes).
    pub before: Option<RowImage>,
    /// Row after the change (inserts, updates).
    pub after: Option<RowImage>,
    /// Binlog file of the rows event.
    pub file: Arc<str>,
    /// Offset of the rows event in that file.
    pub pos: u64,
    /// Index of the row within its rows event: `(file, pos, row)` identifies a row change,
    /// so a consumer can drop the duplicates a restart may produce.
    pub row: u32,
    /// When the server executed the statement (seconds since the epoch).
    pub event_time: u32,
}

/// What one event means to the pipeline.
#[derive(Debug)]
pub enum Decoded {
    /// Rows changed.
    Rows {
        /// The changed rows, in event order.
        changes: Vec<RowChange>,
        /// The rows event ends its statement (`STMT_END_F`).
        statement_end: bool,
    },
    /// A transaction (or a standalone DDL) begins; its GTID when the server logs one.
    TransactionStart {
        /// `domain-server-seq` (MariaDB) or `uuid:gno` (MySQL).
        gtid: Option<String>,
    },
    /// A transaction ended (commit) or a statement outside transactions completed.
    TransactionEnd,
    /// The server moves on to another binlog file.
    Rotate {
        /// Next file name.
        file: String,
        /// Offset in it.
        pos: u64,
        /// Fake rotates open a replication stream; they do not end a file.
        fake: bool,
    },
    /// Understood and not relevant to row data (format description, table map,
    /// heartbeat, MariaDB annotate/checkpoint/GTID list, previous GTIDs, ...).
    Ignored,
}

/// Why an event could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An event type this decoder does not know (`--skip-unknown` skips it).
    #[error("unknown event type {0}")]
    UnknownType(u8),
    /// A known event this decoder cannot turn into rows without losing data.
    #[error("unsupported event type {event_type}: {reason}")]
    Unsupported {
        /// Type code.
        event_type: u8,
        /// Why.
        reason: &'static str,
    },
    /// A rows event names a table no table map described.
    #[error("rows event for table id {0} without a preceding table map")]
    NoTableMap(u64),
    /// The event's bytes do not parse.
    #[error("malformed type {event_type} event: {message}")]
    Malformed {
        /// Type code.
        event_type: u8,
        /// What went wrong.
        message: String,
    },
}

impl DecodeError {
    /// Whether `--skip-unknown` may skip past this error.
    pub fn skippable(&self) -> bool {
        matches!(
            self,
            DecodeError::UnknownType(_) | DecodeError::Unsupported { .. }
        )
    }
}

struct CachedTable {
    raw: Vec<u8>,
    schema: Arc<TableSchema>,
}

/// Decodes events in stream order, keeping the table maps seen so far.
#[derive(Default)]
pub struct RowDecoder {
    tables: HashMap<u64, CachedTable>,
}

impl RowDecoder {
    /// A decoder with no table maps yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `event`, which starts at offset `pos` of `file`.
    pub fn decode(
        &mut self,
        event: &Event,
        file: &Arc<str>,
        pos: u64,
    ) -> Result<Decoded, DecodeError> {
        let header = event.header();
        let event_type = header.event_type_raw();
        let malformed = |e: std::io::Error| DecodeError::Malformed {
            event_type,
            message: e.to_string(),
        };
        if header.event_type().is_err() {
            return match event_type {
                mariadb::GTID => mariadb_gtid(event.data(), header.server_id())
                    .map(|gtid| Decoded::TransactionStart { gtid: Some(gtid) })
                    .ok_or(DecodeError::Malformed {
                        event_type,
                        message: "GTID event shorter than 13 bytes".into(),
                    }),
                mariadb::ANNOTATE_ROWS | mariadb::BINLOG_CHECKPOINT | mariadb::GTID_LIST => {
                    Ok(Decoded::Ignored)
                }
                mariadb::START_ENCRYPTION => Err(DecodeError::Unsupported {
                    event_type,
                    reason: "encrypted binlogs (encrypt_binlog=ON) cannot be read",
                }),
                mariadb::FIRST_COMPRESSED..=mariadb::LAST_COMPRESSED => {
                    Err(DecodeError::Unsupported {
                        event_type,
                        reason: "compressed binlog events (log_bin_compress=ON) are not decoded",
                    })
                }
                other => Err(DecodeError::UnknownType(other)),
            };
        }
        // Only the events that matter are parsed: parsing the rest (previous-GTID sets,
        // user variables, ...) would only widen what corrupt bytes can reach.
        use EventType::*;
        let event_type_known = header.event_type().unwrap_or(UNKNOWN_EVENT);
        Ok(match event_type_known {
            TABLE_MAP_EVENT => {
                // Identical table maps (one per transaction) are recognised by their bytes
                // before anything is parsed.
                if !self.known_table_map(event.data()) {
                    let tme = event.read_event::<TableMapEvent<'_>>().map_err(malformed)?;
                    self.remember_table(&tme, event.data()).map_err(malformed)?;
                }
                Decoded::Ignored
            }
            WRITE_ROWS_EVENT_V1 | UPDATE_ROWS_EVENT_V1 | DELETE_ROWS_EVENT_V1
            | WRITE_ROWS_EVENT | UPDATE_ROWS_EVENT | DELETE_ROWS_EVENT => {
                let rows = match event_type_known {
                    WRITE_ROWS_EVENT_V1 => {
                        RowsEventData::WriteRowsEventV1(event.read_event().map_err(malformed)?)
                    }
                    UPDATE_ROWS_EVENT_V1 => {
                        RowsEventData::UpdateRowsEventV1(event.read_event().map_err(malformed)?)
                    }
                    DELETE_ROWS_EVENT_V1 => {
                        RowsEventData::DeleteRowsEventV1(event.read_event().map_err(malformed)?)
                    }
                    WRITE_ROWS_EVENT => {
                        RowsEventData::WriteRowsEvent(event.read_event().map_err(malformed)?)
                    }
                    UPDATE_ROWS_EVENT => {
                        RowsEventData::UpdateRowsEvent(event.read_event().map_err(malformed)?)
                    }
                    _ => RowsEventData::DeleteRowsEvent(event.read_event().map_err(malformed)?),
                };
                let statement_end = ends_statement(&rows);
                let changes =
                    self.rows(&rows, file, pos, header.timestamp())
                        .map_err(|message| DecodeError::Malformed {
                            event_type,
                            message,
                        })?;
                Decoded::Rows {
                    changes,
                    statement_end,
                }
            }
            PARTIAL_UPDATE_ROWS_EVENT => return Err(DecodeError::Unsupported {
                event_type,
                reason:
                    "partial JSON updates (binlog_row_value_options=PARTIAL_JSON) are not decoded",
            }),
            XID_EVENT => Decoded::TransactionEnd,
            QUERY_EVENT => {
                let q = event.read_event::<QueryEvent<'_>>().map_err(malformed)?;
                let text = q.query_raw();
                if text.eq_ignore_ascii_case(b"BEGIN") {
                    Decoded::TransactionStart { gtid: None }
                } else {
                    // COMMIT (non-transactional engines), ROLLBACK, or DDL, which
                    // commits implicitly: each ends an event group. A DDL may change
                    // a table's columns, so the next table map is parsed afresh.
                    if !text.eq_ignore_ascii_case(b"COMMIT") {
                        self.tables.clear();
                    }
                    Decoded::TransactionEnd
                }
            }
            GTID_EVENT | GTID_TAGGED_LOG_EVENT => {
                let g = event.read_event::<GtidEvent>().map_err(malformed)?;
                Decoded::TransactionStart {
                    gtid: Some(format!("{}:{}", uuid(&g.sid()), g.gno())),
                }
            }
            ANONYMOUS_GTID_EVENT => Decoded::TransactionStart { gtid: None },
            ROTATE_EVENT => {
                let r = event.read_event::<RotateEvent<'_>>().map_err(malformed)?;
                Decoded::Rotate {
                    file: r.name().into_owned(),
                    pos: r.position(),
                    fake: header.timestamp() == 0 || header.log_pos() == 0,
                }
            }
            TRANSACTION_PAYLOAD_EVENT => return Err(DecodeError::Unsupported {
                event_type,
                reason:
                    "compressed transactions (binlog_transaction_compression=ON) are not decoded",
            }),
            INCIDENT_EVENT => {
                return Err(DecodeError::Unsupported {
                    event_type,
                    reason: "the server logged an incident: changes may be missing from the binlog",
                })
            }
            UNKNOWN_EVENT | ENUM_END_EVENT => return Err(DecodeError::UnknownType(event_type)),
            _ => Decoded::Ignored,
        })
    }

    /// The table a rows event changes and how, read from its type and the table id in
    /// its post-header only, before (and much cheaper than) [`RowDecoder::decode`]: the
    /// pipeline labels the decoding with it. Returns the table id, the table as its
    /// table map described it, and the kind of change; `None` for any other event, a
    /// table id no table map described, or an event too short to hold one (decoding
    /// reports those).
    pub fn rows_event_table(&self, event: &Event) -> Option<(u64, &Arc<TableSchema>, ChangeKind)> {
        use EventType::*;
        let header = event.header();
        let event_type = header.event_type().ok()?;
        let kind = match event_type {
            WRITE_ROWS_EVENT_V1 | WRITE_ROWS_EVENT => ChangeKind::Insert,
            UPDATE_ROWS_EVENT_V1 | UPDATE_ROWS_EVENT => ChangeKind::Update,
            DELETE_ROWS_EVENT_V1 | DELETE_ROWS_EVENT => ChangeKind::Delete,
            _ => return None,
        };
        // As mysql_common reads it: a 4-byte table id from servers whose rows events have
        // a 6-byte post-header (MySQL 5.1.0-5.1.15), else 6 bytes.
        let id_len = if event.fde().get_event_type_header_length(event_type) == 6 {
            4
        } else {
            6
        };
        let raw = event.data().get(..id_len)?;
        let mut id = [0u8; 8];
        id[..id_len].copy_from_slice(raw);
        let table_id = u64::from_le_bytes(id);
        let table = self.tables.get(&table_id)?;
        Some((table_id, &table.schema, kind))
    }

    fn known_table_map(&self, raw: &[u8]) -> bool {
        if raw.len() < 6 {
            return false;
        }
        let mut id = [0u8; 8];
        id[..6].copy_from_slice(&raw[..6]);
        self.tables
            .get(&u64::from_le_bytes(id))
            .is_some_and(|t| t.raw == raw)
    }

    fn remember_table(&mut self, tme: &TableMapEvent<'_>, raw: &[u8]) -> std::io::Result<()> {
        let id = tme.table_id();
        let schema = Arc::new(table_schema(tme)?);
        self.tables.insert(
            id,
            CachedTable {
                raw: raw.to_vec(),
                schema,
            },
        );
        Ok(())
    }

    fn rows(
        &self,
        rows: &RowsEventData<'_>,
        file: &Arc<str>,
        pos: u64,
        event_time: u32,
    ) -> Result<Vec<RowChange>, String> {
        let table_id = rows.table_id();
        let Some(table) = self.tables.get(&table_id) else {
            return Err(DecodeError::NoTableMap(table_id).to_string());
        };
        let schema = &table.schema;
        let (kind, data) =
            match rows {
                RowsEventData::WriteRowsEventV1(e) => (ChangeKind::Insert, e.rows_data()),
                RowsEventData::WriteRowsEvent(e) => (ChangeKind::Insert, e.rows_data()),
                RowsEventData::UpdateRowsEventV1(e) => (ChangeKind::Update, e.rows_data()),
                RowsEventData::UpdateRowsEvent(e) => (ChangeKind::Update, e.rows_data()),
                RowsEventData::DeleteRowsEventV1(e) => (ChangeKind::Delete, e.rows_data()),
                RowsEventData::DeleteRowsEvent(e) => (ChangeKind::Delete, e.rows_data()),
                RowsEventData::PartialUpdateRowsEvent(_) => return Err(
                    "partial JSON updates (binlog_row_value_options=PARTIAL_JSON) are not decoded"
                        .into(),
                ),
            };
        let n = rows.num_columns() as usize;
        if n != schema.columns.len() {
            return Err(format!(
                "rows event has {n} columns, table map of {}.{} has {}",
                schema.database,
                schema.table,
                schema.columns.len()
            ));
        }
        // Which columns each image logs, resolved once per event rather than per row.
        let before_cols = rows
            .columns_before_image()
            .map(|b| logged_columns(b.iter().by_vals(), n));
        let after_cols = rows
            .columns_after_image()
            .map(|b| logged_columns(b.iter().by_vals(), n));
        let mut buf = ParseBuf(data);
        let mut out = Vec::new();
        let mut row = 0u32;
        while !buf.is_empty() {
            let left = buf.len();
            let before = match &before_cols {
                Some(cols) => Some(read_image(&mut buf, schema, cols)?),
                None => None,
            };
            let after = match &after_cols {
                Some(cols) => Some(read_image(&mut buf, schema, cols)?),
                None => None,
            };
            if buf.len() == left {
                // An image of no columns reads no bytes: the rest would loop forever.
                return Err("rows event logs no columns".into());
            }
            out.push(RowChange {
                kind,
                table: schema.clone(),
                before,
                after,
                file: file.clone(),
                pos,
                row,
                event_time,
            });
            row += 1;
        }
        Ok(out)
    }
}

/// Whether a rows event carries the end-of-statement flag (a safe point when rows are
/// logged outside a transaction).
fn ends_statement(rows: &RowsEventData<'_>) -> bool {
    let flags = match rows {
        RowsEventData::WriteRowsEventV1(e) => e.flags(),
        RowsEventData::WriteRowsEvent(e) => e.flags(),
        RowsEventData::UpdateRowsEventV1(e) => e.flags(),
        RowsEventData::UpdateRowsEvent(e) => e.flags(),
        RowsEventData::DeleteRowsEventV1(e) => e.flags(),
        RowsEventData::DeleteRowsEvent(e) => e.flags(),
        RowsEventData::PartialUpdateRowsEvent(e) => e.flags(),
    };
    flags.contains(RowsEventFlags::STMT_END)
}

/// Indexes of the set bits among the first `n`.
fn logged_columns(bits: impl Iterator<Item = bool>, n: usize) -> Vec<usize> {
    bits.take(n)
        .enumerate()
        .filter_map(|(i, set)| set.then_some(i))
        .collect()
}

/// Reads one row image: a null bitmap over the logged columns, then their values.
fn read_image<'a>(
    buf: &mut ParseBuf<'a>,
    schema: &'a TableSchema,
    logged: &[usize],
) -> Result<RowImage, String> {
    let nulls: &[u8] = buf
        .parse(logged.len().div_ceil(8))
        .map_err(|e| format!("row null bitmap: {e}"))?;
    let mut image = Vec::with_capacity(logged.len());
    for (k, &i) in logged.iter().enumerate() {
        let col = &schema.columns[i];
        if nulls[k / 8] & (1 << (k % 8)) != 0 {
            image.push((i as u32, CellValue::Null));
            continue;
        }
        let own = match col.kind.column_type {
            ColumnType::MYSQL_TYPE_TIME2 => Some(read_time2(buf, col.meta[0])),
            ColumnType::MYSQL_TYPE_INT24 => Some(read_int24(buf, col.unsigned)),
            ColumnType::MYSQL_TYPE_YEAR => Some(read_year(buf)),
            ColumnType::MYSQL_TYPE_DATETIME2 => Some(read_datetime2(buf, col.meta[0])),
            ColumnType::MYSQL_TYPE_TIMESTAMP2 => Some(read_timestamp2(buf, col.meta[0])),
            ColumnType::MYSQL_TYPE_NEWDECIMAL => Some(read_decimal(buf, col.meta[0], col.meta[1])),
            _ => None,
        };
        if let Some(cell) = own {
            let cell = cell.map_err(|e| format!("column {} ({}): {e}", col.name, i))?;
            image.push((i as u32, cell));
            continue;
        }
        let value: BinlogValue<'_> = buf
            .parse((
                col.kind.column_type,
                col.meta.as_slice(),
                col.unsigned,
                false,
            ))
            .map_err(|e| format!("column {} ({}): {e}", col.name, i))?;
        let cell = CellValue::from_binlog(value, &col.kind)
            .map_err(|e| format!("column {} ({}): {e}", col.name, i))?;
        image.push((i as u32, cell));
    }
    Ok(image)
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Decodes a `DECIMAL(precision, scale)` straight to its exact text (the server's
/// `bin2decimal`). `mysql_common` builds a digit vector and formats it through `fmt`,
/// which was a tenth of the decode time for a table with one decimal column.
fn read_decimal(buf: &mut ParseBuf<'_>, precision: u8, scale: u8) -> std::io::Result<CellValue> {
    use std::fmt::Write;
    let (precision, scale) = (precision as usize, scale as usize);
    let intg = precision - scale; // check_metadata guarantees scale <= precision
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale / 9, scale % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let raw: &[u8] = buf.parse(size)?;
    let mut b = [0u8; 32];
    let b = &mut b[..size];
    b.copy_from_slice(raw);
    let negative = b[0] & 0x80 == 0;
    b[0] ^= 0x80;
    if negative {
        b.iter_mut().for_each(|x| *x ^= 0xff);
    }
    let mut at = 0;
    let mut group = |n: usize, digits: u32| -> std::io::Result<u32> {
        let v = b[at..at + n]
            .iter()
            .fold(0u32, |acc, &x| (acc << 8) | x as u32);
        at += n;
        if v >= 10u32.pow(digits) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "decimal digit group out of range",
            ));
        }
        Ok(v)
    };
    let mut int = String::with_capacity(precision + 3);
    if intg0x > 0 {
        let v = group(DIG2BYTES[intg0x], intg0x as u32)?;
        if v > 0 {
            let _ = write!(int, "{v}");
        }
    }
    for _ in 0..intg0 {
        let v = group(4, 9)?;
        if int.is_empty() {
            if v > 0 {
                let _ = write!(int, "{v}");
            }
        } else {
            let _ = write!(int, "{v:09}");
        }
    }
    let mut text = String::with_capacity(precision + 3);
    if negative {
        text.push('-');
    }
    text.push_str(if int.is_empty() { "0" } else { &int });
    if scale > 0 {
        text.push('.');
        for _ in 0..frac0 {
            let v = group(4, 9)?;
            let _ = write!(text, "{v:09}");
        }
        if frac0x > 0 {
            let v = group(DIG2BYTES[frac0x], frac0x as u32)?;
            let _ = write!(text, "{v:0width$}", width = frac0x);
        }
    }
    Ok(CellValue::Decimal(text))
}

/// The text of a binary `DECIMAL(precision, scale)` (for tests of the generator).
#[doc(hidden)]
pub fn decimal_text(bytes: &[u8], precision: u8, scale: u8) -> std::io::Result<String> {
    match read_decimal(&mut ParseBuf(bytes), precision, scale)? {
        CellValue::Decimal(t) => Ok(t),
        _ => unreachable!("read_decimal returns decimals"),
    }
}

/// Decodes a `DATETIME(dec)` (the server's `my_datetime_packed_from_binary`).
/// `mysql_common` 0.37 adds the fraction to the shifted integer part unchecked, which
/// overflows (a panic in debug builds) on corrupt bytes; the debug-build fuzz run found it.
fn read_datetime2(buf: &mut ParseBuf<'_>, dec: u8) -> std::io::Result<CellValue> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let len = 5 + fraction_bytes(dec);
    let b: &[u8] = buf.parse(len)?;
    let int_part = b[..5].iter().fold(0i64, |acc, &x| (acc << 8) | x as i64) - 0x80_0000_0000;
    if int_part < 0 {
        return Err(invalid("DATETIME before year 0"));
    }
    let micros: i64 = match dec {
        1 | 2 => b[5] as i8 as i64 * 10_000,
        3 | 4 => i16::from_be_bytes([b[5], b[6]]) as i64 * 100,
        5 | 6 => {
            ((((b[5] as u32) << 16 | (b[6] as u32) << 8 | b[7] as u32) << 8) as i32 >> 8) as i64
        }
        _ => 0,
    };
    if !(0..1_000_000).contains(&micros) {
        return Err(invalid("DATETIME fraction out of range"));
    }
    let ymd = int_part >> 17;
    let ym = ymd >> 5;
    let hms = int_part % (1 << 17);
    let year = ym / 13;
    if year > 9999 {
        return Err(invalid("DATETIME after year 9999"));
    }
    Ok(CellValue::DateTime {
        year: year as u16,
        month: (ym % 13) as u8,
        day: (ymd % (1 << 5)) as u8,
        hour: (hms >> 12) as u8,
        minute: ((hms >> 6) % (1 << 6)) as u8,
        second: (hms % (1 << 6)) as u8,
        micros: micros as u32,
    })
}

/// Bytes of the fractional second of a `TIME`, `DATETIME` or `TIMESTAMP` with `dec`
/// digits: `(dec + 1) / 2`.
fn fraction_bytes(dec: u8) -> usize {
    match dec {
        1..=6 => (dec as usize).div_ceil(2),
        _ => 0,
    }
}

/// Decodes a `TIMESTAMP(dec)` (the server's `my_timestamp_from_binary`): big-endian
/// unsigned seconds, then the fraction in `(dec + 1) / 2` bytes. `mysql_common` formats
/// it into a `"secs.micros"` string (a fifth of the decode time of a row with one
/// timestamp) and reads the seconds as `i32`, which turns instants after 2038 negative.
fn read_timestamp2(buf: &mut ParseBuf<'_>, dec: u8) -> std::io::Result<CellValue> {
    let len = 4 + fraction_bytes(dec);
    let b: &[u8] = buf.parse(len)?;
    let seconds = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64;
    let micros: i64 = match dec {
        1 | 2 => b[4] as i64 * 10_000,
        3 | 4 => i16::from_be_bytes([b[4], b[5]]) as i64 * 100,
        5 | 6 => {
            ((((b[4] as u32) << 16 | (b[5] as u32) << 8 | b[6] as u32) << 8) as i32 >> 8) as i64
        }
        _ => 0,
    };
    if !(0..1_000_000).contains(&micros) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "TIMESTAMP fraction out of range",
        ));
    }
    Ok(CellValue::Timestamp {
        seconds,
        micros: micros as u32,
    })
}

/// The value of a binary `TIMESTAMP(dec)` (for tests of the generator).
#[doc(hidden)]
pub fn timestamp_value(bytes: &[u8], dec: u8) -> std::io::Result<CellValue> {
    read_timestamp2(&mut ParseBuf(bytes), dec)
}

/// The value of a binary `DATETIME(dec)` (for tests of the generator).
#[doc(hidden)]
pub fn datetime_value(bytes: &[u8], dec: u8) -> std::io::Result<CellValue> {
    read_datetime2(&mut ParseBuf(bytes), dec)
}

/// Decodes a `YEAR`: one byte, years since 1900, with 0 meaning `0000` (`mysql_common`
/// 0.37 turns 0 into 1900).
fn read_year(buf: &mut ParseBuf<'_>) -> std::io::Result<CellValue> {
    let b: &[u8] = buf.parse(1)?;
    Ok(CellValue::Int(if b[0] == 0 {
        0
    } else {
        1900 + b[0] as i64
    }))
}

/// Decodes a `MEDIUMINT`. `mysql_common` 0.37 reads signed 24-bit integers without
/// sign extension (-8388608 comes out as 8388608); the real-server test found it.
fn read_int24(buf: &mut ParseBuf<'_>, unsigned: bool) -> std::io::Result<CellValue> {
    let b: &[u8] = buf.parse(3)?;
    let v = b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16;
    Ok(if unsigned {
        CellValue::Int(v as i64)
    } else {
        CellValue::Int(((v << 8) as i32 >> 8) as i64)
    })
}

/// Decodes a `TIME(dec)` value (the server's `my_time_packed_from_binary`).
///
/// Not `mysql_common`'s: its version (0.37) keeps the fraction unsigned, so a negative
/// time with a fraction of one to four digits (`-12:34:56.78`) underflows: a panic in
/// debug builds and a wrong value in release. The real-server test found it.
fn read_time2(buf: &mut ParseBuf<'_>, dec: u8) -> std::io::Result<CellValue> {
    let len = 3 + fraction_bytes(dec);
    let b: &[u8] = buf.parse(len)?;
    let be = |s: &[u8]| s.iter().fold(0i64, |acc, &x| (acc << 8) | x as i64);
    let mut int_part = be(&b[..3]) - 0x80_0000;
    let packed = match dec {
        1 | 2 => {
            let mut frac = b[3] as i64;
            if int_part < 0 && frac > 0 {
                int_part += 1;
                frac -= 0x100;
            }
            int_part * (1 << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut frac = be(&b[3..5]);
            if int_part < 0 && frac > 0 {
                int_part += 1;
                frac -= 0x1_0000;
            }
            int_part * (1 << 24) + frac * 100
        }
        5 | 6 => be(b) - 0x8000_0000_0000,
        _ => int_part * (1 << 24),
    };
    let negative = packed < 0;
    let abs = packed.unsigned_abs();
    let hms = abs >> 24;
    Ok(CellValue::Time {
        negative,
        hours: ((hms >> 12) % (1 << 10)) as u32,
        minutes: ((hms >> 6) % (1 << 6)) as u8,
        seconds: (hms % (1 << 6)) as u8,
        micros: (abs % (1 << 24)) as u32,
    })
}

/// The member names of each ENUM (or SET) column from a table map's `ENUM_STR_VALUE`
/// (`SET_STR_VALUE`) field: per column a length-encoded count, then that many
/// length-encoded strings. Counts and lengths are checked against the bytes left.
fn member_names(payload: &[u8]) -> std::io::Result<Vec<Vec<String>>> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut rest = payload;
    let lenenc = |rest: &mut &[u8]| -> std::io::Result<u64> {
        let (&first, tail) = rest
            .split_first()
            .ok_or_else(|| invalid("ENUM/SET names cut short"))?;
        let width = match first {
            0..=0xfa => {
                *rest = tail;
                return Ok(first as u64);
            }
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return Err(invalid("ENUM/SET names: bad length prefix")),
        };
        if tail.len() < width {
            return Err(invalid("ENUM/SET names cut short"));
        }
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(&tail[..width]);
        *rest = &tail[width..];
        Ok(u64::from_le_bytes(v))
    };
    let mut columns = Vec::new();
    while !rest.is_empty() {
        let count = lenenc(&mut rest)?;
        // Every member takes at least its one-byte length.
        if count > rest.len() as u64 {
            return Err(invalid("ENUM/SET names: more members than bytes"));
        }
        let mut names = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = lenenc(&mut rest)?;
            if len > rest.len() as u64 {
                return Err(invalid("ENUM/SET names cut short"));
            }
            let (name, tail) = rest.split_at(len as usize);
            names.push(String::from_utf8_lossy(name).into_owned());
            rest = tail;
        }
        columns.push(names);
    }
    Ok(columns)
}

/// Resolves a table map and its optional metadata into a [`TableSchema`].
fn table_schema(tme: &TableMapEvent<'_>) -> std::io::Result<TableSchema> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
    let mut signedness = meta.iter_signedness();
    let mut charsets = meta.iter_charset();
    let mut names = meta.iter_column_name();
    // ENUM and SET member names, one list per such column in order (FULL metadata).
    let mut enum_labels = Vec::new();
    let mut set_labels = Vec::new();
    for field in tme.iter_optional_meta() {
        // The member lists are read by `member_names`, not by `mysql_common`'s iterators,
        // which reserve a vector as long as the count the bytes claim (the fuzzer's
        // "capacity overflow" from one flipped byte).
        let mut payload = Vec::new();
        match field? {
            OptionalMetadataField::EnumStrValue(v) => {
                v.serialize(&mut payload);
                enum_labels.extend(member_names(&payload)?);
            }
            OptionalMetadataField::SetStrValue(v) => {
                v.serialize(&mut payload);
                set_labels.extend(member_names(&payload)?);
            }
            _ => {}
        }
    }
    let mut enum_labels = enum_labels.into_iter();
    let mut set_labels = set_labels.into_iter();
    let n = tme.columns_count() as usize;
    let mut columns = Vec::with_capacity(n);
    for i in 0..n {
        let column_type = tme
            .get_column_type(i)
            .map_err(|e| invalid(format!("column {i}: {e}")))?
            .ok_or_else(|| invalid(format!("column {i} has no type")))?;
        let col_meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
        check_metadata(column_type, &col_meta).map_err(|m| invalid(format!("column {i}: {m}")))?;
        let unsigned = if column_type.is_numeric_type() {
            signedness.next().unwrap_or(false)
        } else {
            false
        };
        let text = if column_type.is_character_type() {
            charsets
                .next()
                .transpose()?
                .map(TextEncoding::from_charset)
                .unwrap_or_default()
        } else {
            TextEncoding::Utf8
        };
        let name = match names.next().transpose()? {
            Some(n) => n.name().into_owned(),
            None => format!("@{i}"),
        };
        columns.push(ColumnSchema {
            json_key: json_key(&name),
            name,
            kind: ColumnKind {
                column_type,
                text,
                labels: match column_type {
                    ColumnType::MYSQL_TYPE_ENUM => enum_labels.next().unwrap_or_default(),
                    ColumnType::MYSQL_TYPE_SET => set_labels.next().unwrap_or_default(),
                    _ => Vec::new(),
                },
            },
            meta: col_meta,
            unsigned,
        });
    }
    Ok(TableSchema::new(
        tme.database_name().into_owned(),
        tme.table_name().into_owned(),
        columns,
    ))
}

/// Refuses column metadata shorter than the value codec indexes into.
fn check_metadata(t: ColumnType, meta: &[u8]) -> Result<(), String> {
    use ColumnType::*;
    let need = match t {
        MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING => 2,
        MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_JSON
        | MYSQL_TYPE_DOUBLE
        | MYSQL_TYPE_FLOAT
        | MYSQL_TYPE_VECTOR => 1,
        MYSQL_TYPE_TYPED_ARRAY => {
            return Err("typed arrays (multi-valued indexes) are not decoded".into())
        }
        _ => 0,
    };
    if meta.len() < need {
        return Err(format!(
            "{t:?} needs {need} metadata bytes, table map has {}",
            meta.len()
        ));
    }
    if t == MYSQL_TYPE_NEWDECIMAL {
        let (precision, scale) = (meta[0], meta[1]);
        if precision == 0 || precision > 65 || scale > 38 || scale > precision {
            return Err(format!("DECIMAL({precision},{scale}) is impossible"));
        }
    }
    if matches!(
        t,
        MYSQL_TYPE_TIMESTAMP2 | MYSQL_TYPE_DATETIME2 | MYSQL_TYPE_TIME2
    ) && meta[0] > 6
    {
        return Err(format!(
            "{t:?} with {} fractional digits is impossible",
            meta[0]
        ));
    }
    Ok(())
}

/// A MariaDB GTID event's `domain-server-seq`.
fn mariadb_gtid(data: &[u8], server_id: u32) -> Option<String> {
    if data.len() < 13 {
        return None;
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().ok()?);
    let domain = u32::from_le_bytes(data[8..12].try_into().ok()?);
    Some(format!("{domain}-{server_id}-{seq}"))
}

fn uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The event type of a raw event, for messages.
pub fn event_type_name(code: u8) -> String {
    match EventType::try_from(code) {
        Ok(t) => format!("{t:?}"),
        Err(_) => match code {
            mariadb::ANNOTATE_ROWS => "ANNOTATE_ROWS_EVENT".into(),
            mariadb::BINLOG_CHECKPOINT => "BINLOG_CHECKPOINT_EVENT".into(),
            mariadb::GTID => "GTID_EVENT (MariaDB)".into(),
            mariadb::GTID_LIST => "GTID_LIST_EVENT".into(),
            mariadb::START_ENCRYPTION => "START_ENCRYPTION_EVENT".into(),
            c => format!("type {c}"),
        },
    }
}
