//! Column values as the worker publishes them.
//!
//! `mysql_common` decodes each binlog value into a protocol [`Value`]; [`CellValue`] adds
//! back what only the column type knows (a decimal is exact text, a `TIMESTAMP` is an
//! instant, a `DATE` has no time of day, a blob in a binary column is bytes) so that the
//! JSON and Avro encoders write each kind the same way whichever source it came from.

use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::value::Value;

/// One decoded column value.
#[derive(Debug, Clone, PartialEq)]
pub enum CellValue {
    /// SQL NULL.
    Null,
    /// Signed integer types (and `ENUM` indexes).
    Int(i64),
    /// Unsigned integer types, `BIT` and `SET` bitmasks.
    UInt(u64),
    /// `FLOAT`.
    Float(f32),
    /// `DOUBLE`.
    Double(f64),
    /// `DECIMAL`, exact, as the server prints it (`-1234.50`).
    Decimal(String),
    /// Character data in a text column.
    Text(String),
    /// Binary data (binary columns, or bytes that are not UTF-8).
    Bytes(Vec<u8>),
    /// `DATE`.
    Date {
        /// Year.
        year: u16,
        /// Month, 1-12 (0 for zero dates).
        month: u8,
        /// Day, 1-31 (0 for zero dates).
        day: u8,
    },
    /// `DATETIME`, a wall-clock time without a zone.
    DateTime {
        /// Year.
        year: u16,
        /// Month.
        month: u8,
        /// Day.
        day: u8,
        /// Hour.
        hour: u8,
        /// Minute.
        minute: u8,
        /// Second.
        second: u8,
        /// Microseconds.
        micros: u32,
    },
    /// `TIME`, a signed duration.
    Time {
        /// Below zero.
        negative: bool,
        /// Whole hours (days folded in).
        hours: u32,
        /// Minutes.
        minutes: u8,
        /// Seconds.
        seconds: u8,
        /// Microseconds.
        micros: u32,
    },
    /// `TIMESTAMP`, an instant (seconds since the Unix epoch, UTC).
    Timestamp {
        /// Whole seconds.
        seconds: i64,
        /// Microseconds.
        micros: u32,
    },
    /// A MySQL binary `JSON` document.
    Json(serde_json::Value),
}

/// How the bytes of a character or blob column are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextEncoding {
    /// UTF-8 (`utf8mb4`, `utf8mb3`, `ascii`), or unknown: kept as text when valid UTF-8.
    #[default]
    Utf8,
    /// MySQL's `latin1`, which is Windows-1252.
    Latin1,
    /// The `binary` character set: bytes, never text.
    Binary,
}

impl TextEncoding {
    /// The encoding of a MySQL/MariaDB character set (collation) id.
    pub fn from_charset(id: u16) -> Self {
        match id {
            63 => TextEncoding::Binary,
            5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => TextEncoding::Latin1,
            _ => TextEncoding::Utf8,
        }
    }
}

/// Everything about a column needed to interpret its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnKind {
    /// The real type (`ENUM`/`SET` resolved from `STRING` metadata).
    pub column_type: ColumnType,
    /// How character data of the column is encoded.
    pub text: TextEncoding,
    /// `ENUM`/`SET` member names (from `binlog_row_metadata=FULL`); empty when unknown,
    /// and the value is then published as its index or bitmask.
    pub labels: Vec<String>,
}

/// Windows-1252 code points for bytes 0x80-0x9F (the rest of latin1 maps to itself).
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// Decodes MySQL `latin1` (Windows-1252) text.
pub fn decode_latin1(b: &[u8]) -> String {
    b.iter()
        .map(|&x| match x {
            0x80..=0x9f => CP1252_HIGH[(x - 0x80) as usize],
            _ => x as char,
        })
        .collect()
}

impl CellValue {
    /// Interprets a decoded binlog value of a column of `kind`.
    pub fn from_binlog(value: BinlogValue<'_>, kind: &ColumnKind) -> Result<Self, String> {
        use ColumnType::*;
        let value = match value {
            BinlogValue::Value(v) => v,
            BinlogValue::Jsonb(j) => {
                return serde_json::Value::try_from(j)
                    .map(CellValue::Json)
                    .map_err(|e| format!("JSON value: {e}"))
            }
            BinlogValue::JsonDiff(_) => return Err(
                "partial JSON updates (binlog_row_value_options=PARTIAL_JSON) are not supported"
                    .into(),
            ),
        };
        Ok(match value {
            Value::NULL => CellValue::Null,
            Value::Int(i) if kind.column_type == MYSQL_TYPE_ENUM && !kind.labels.is_empty() => {
                // 1-based; 0 is the empty string MySQL stores for an invalid value.
                match usize::try_from(i).ok().and_then(|i| i.checked_sub(1)) {
                    Some(k) => CellValue::Text(kind.labels.get(k).cloned().ok_or_else(|| {
                        format!("ENUM index {i} beyond {} members", kind.labels.len())
                    })?),
                    None => CellValue::Text(String::new()),
                }
            }
            Value::Int(i) => CellValue::Int(i),
            Value::UInt(u) => CellValue::UInt(u),
            Value::Float(f) => CellValue::Float(f),
            Value::Double(d) => CellValue::Double(d),
            Value::Date(year, month, day, hour, minute, second, micros) => {
                if matches!(kind.column_type, MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE) {
                    CellValue::Date { year, month, day }
                } else {
                    CellValue::DateTime {
                        year,
                        month,
                        day,
                        hour,
                        minute,
                        second,
                        micros,
                    }
                }
            }
            Value::Time(negative, days, hours, minutes, seconds, micros) => CellValue::Time {
                negative,
                hours: days * 24 + hours as u32,
                minutes,
                seconds,
                micros,
            },
            Value::Bytes(b) => match kind.column_type {
                MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => {
                    CellValue::Decimal(String::from_utf8(b).map_err(|_| "decimal is not ASCII")?)
                }
                MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => parse_timestamp(&b)?,
                MYSQL_TYPE_YEAR => CellValue::Int(
                    std::str::from_utf8(&b)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or("year is not a number")?,
                ),
                MYSQL_TYPE_SET if !kind.labels.is_empty() && b.len() <= 8 => {
                    let mask = b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64);
                    let members: Vec<&str> = kind
                        .labels
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i < 64 && mask & (1 << i) != 0)
                        .map(|(_, l)| l.as_str())
                        .collect();
                    CellValue::Text(members.join(","))
                }
                MYSQL_TYPE_BIT | MYSQL_TYPE_SET => {
                    if b.len() > 8 {
                        CellValue::Bytes(b)
                    } else {
                        let v = if kind.column_type == MYSQL_TYPE_SET {
                            // SET bitmasks are little-endian, BIT values big-endian.
                            b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64)
                        } else {
                            b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64)
                        };
                        CellValue::UInt(v)
                    }
                }
                _ if kind.text == TextEncoding::Binary => CellValue::Bytes(b),
                _ if kind.text == TextEncoding::Latin1 => CellValue::Text(decode_latin1(&b)),
                _ => match String::from_utf8(b) {
                    Ok(s) => CellValue::Text(s),
                    Err(e) => CellValue::Bytes(e.into_bytes()),
                },
            },
        })
    }
}

/// `mysql_common` renders a `TIMESTAMP` as `seconds[.micros]`.
fn parse_timestamp(b: &[u8]) -> Result<CellValue, String> {
    let s = std::str::from_utf8(b).map_err(|_| "timestamp is not ASCII")?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let seconds = secs
        .parse::<i64>()
        .map_err(|_| format!("timestamp {s:?}"))?;
    let micros = if frac.is_empty() {
        0
    } else {
        let digits = &frac[..frac.len().min(6)];
        let v = digits
            .parse::<u32>()
            .map_err(|_| format!("timestamp {s:?}"))?;
        v * 10u32.pow(6 - digits.len() as u32)
    };
    Ok(CellValue::Timestamp { seconds, micros })
}

/// Appends `v` as exactly `width` decimal digits (zero-padded; wider values keep all
/// their digits). `format!` costs several times more, and this runs for every temporal
/// column of every row.
fn digits(out: &mut Vec<u8>, v: u64, width: usize) {
    // The common case, a value that fits its width (2, 4 or 6 digits), as one fixed-size
    // copy: a variable-length `extend_from_slice` is a call into `memcpy` for a few bytes.
    match width {
        2 if v < 100 => return out.extend_from_slice(&fixed::<2>(v)),
        4 if v < 10_000 => return out.extend_from_slice(&fixed::<4>(v)),
        6 if v < 1_000_000 => return out.extend_from_slice(&fixed::<6>(v)),
        _ => {}
    }
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

/// `v` (below `10^N`) as exactly `N` zero-padded digits.
#[inline(always)]
fn fixed<const N: usize>(mut v: u64) -> [u8; N] {
    let mut b = [b'0'; N];
    for d in b.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    b
}

fn ymd(out: &mut Vec<u8>, y: u64, m: u64, d: u64) {
    digits(out, y, 4);
    out.push(b'-');
    digits(out, m, 2);
    out.push(b'-');
    digits(out, d, 2);
}

fn hms(out: &mut Vec<u8>, h: u64, m: u64, s: u64, micros: u32) {
    digits(out, h, 2);
    out.push(b':');
    digits(out, m, 2);
    out.push(b':');
    digits(out, s, 2);
    if micros != 0 {
        out.push(b'.');
        digits(out, micros as u64, 6);
    }
}

/// Writes `DATE`, `DATETIME`, `TIME` and `TIMESTAMP` values the way MySQL prints them
/// (timestamps as RFC 3339 in UTC), into `out`.
pub fn write_temporal(v: &CellValue, out: &mut Vec<u8>) -> bool {
    match *v {
        CellValue::Date { year, month, day } => {
            ymd(out, year as u64, month as u64, day as u64);
        }
        CellValue::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => {
            ymd(out, year as u64, month as u64, day as u64);
            out.push(b' ');
            hms(out, hour as u64, minute as u64, second as u64, micros);
        }
        CellValue::Time {
            negative,
            hours,
            minutes,
            seconds,
            micros,
        } => {
            if negative {
                out.push(b'-');
            }
            hms(out, hours as u64, minutes as u64, seconds as u64, micros);
        }
        CellValue::Timestamp { seconds, micros } => {
            let (y, m, d, hh, mm, ss) = civil_from_unix(seconds);
            if y < 0 {
                out.push(b'-');
            }
            ymd(out, y.unsigned_abs(), m as u64, d as u64);
            out.push(b'T');
            hms(out, hh as u64, mm as u64, ss as u64, micros);
            out.push(b'Z');
        }
        _ => return false,
    }
    true
}

/// UTC calendar fields of a Unix time (Howard Hinnant's `civil_from_days`).
pub fn civil_from_unix(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(kind: ColumnType) -> ColumnKind {
        ColumnKind {
            column_type: kind,
            text: TextEncoding::Utf8,
            labels: Vec::new(),
        }
    }

    #[test]
    fn timestamps_and_temporals_print_like_the_server() {
        let v = parse_timestamp(b"1700000000.250000").unwrap();
        let mut s = Vec::new();
        write_temporal(&v, &mut s);
        assert_eq!(s, b"2023-11-14T22:13:20.250000Z");
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
        let t = CellValue::from_binlog(
            BinlogValue::Value(Value::Time(true, 1, 2, 3, 4, 5)),
            &text(ColumnType::MYSQL_TYPE_TIME2),
        )
        .unwrap();
        let mut s = Vec::new();
        write_temporal(&t, &mut s);
        assert_eq!(s, b"-26:03:04.000005");
    }

    #[test]
    fn bytes_follow_the_column_kind() {
        let dec = CellValue::from_binlog(
            BinlogValue::Value(Value::Bytes(b"-12.50".to_vec())),
            &text(ColumnType::MYSQL_TYPE_NEWDECIMAL),
        );
        assert_eq!(dec, Ok(CellValue::Decimal("-12.50".into())));
        let bin = ColumnKind {
            column_type: ColumnType::MYSQL_TYPE_BLOB,
            text: TextEncoding::Binary,
            labels: Vec::new(),
        };
        let latin1 = ColumnKind {
            column_type: ColumnType::MYSQL_TYPE_VARCHAR,
            text: TextEncoding::from_charset(8),
            labels: Vec::new(),
        };
        let colour = ColumnKind {
            column_type: ColumnType::MYSQL_TYPE_ENUM,
            text: TextEncoding::Utf8,
            labels: vec!["red".into(), "green".into()],
        };
        assert_eq!(
            CellValue::from_binlog(BinlogValue::Value(Value::Int(2)), &colour),
            Ok(CellValue::Text("green".into()))
        );
        assert!(CellValue::from_binlog(BinlogValue::Value(Value::Int(3)), &colour).is_err());
        let flags = ColumnKind {
            column_type: ColumnType::MYSQL_TYPE_SET,
            ..colour
        };
        assert_eq!(
            CellValue::from_binlog(BinlogValue::Value(Value::Bytes(vec![3])), &flags),
            Ok(CellValue::Text("red,green".into()))
        );
        assert_eq!(
            CellValue::from_binlog(
                BinlogValue::Value(Value::Bytes(b"h\xe9 \x80".to_vec())),
                &latin1
            ),
            Ok(CellValue::Text("hé €".into()))
        );
        assert_eq!(
            CellValue::from_binlog(BinlogValue::Value(Value::Bytes(b"ab".to_vec())), &bin),
            Ok(CellValue::Bytes(b"ab".to_vec()))
        );
        assert_eq!(
            CellValue::from_binlog(
                BinlogValue::Value(Value::Bytes(vec![0xff, 0xfe])),
                &text(ColumnType::MYSQL_TYPE_VARCHAR)
            ),
            Ok(CellValue::Bytes(vec![0xff, 0xfe]))
        );
        assert!(CellValue::from_binlog(
            BinlogValue::Value(Value::Bytes(b"x".to_vec())),
            &text(ColumnType::MYSQL_TYPE_TIMESTAMP2)
        )
        .is_err());
    }
}
