//! A synthetic primary: realistic row events written as binlog bytes.
//!
//! [`BinlogGenerator`] writes what a MariaDB 10.11 primary with `binlog_format=ROW` and
//! `binlog_row_metadata=FULL` writes for a small shop schema: a format description,
//! then transactions of `GTID`, `TABLE_MAP`, `WRITE/UPDATE/DELETE_ROWS` (v2) and `XID`
//! events with CRC32 checksums, rotating to a new file every [`ROTATE_AT`] bytes.
//!
//! The schema ([`DATABASE`] `shop`, [`TABLES`]) has three tables of different shapes,
//! each with its own mix of changes, so the worker's CPU differs visibly per table (its
//! `table` sample label):
//!
//! | table | columns | transactions | rows per statement | insert / update / delete |
//! |---|---|---|---|---|
//! | `orders` | 11: ids, a status string, decimal, double, datetimes, a date, a note, JSON attributes | 45% | 1-6 | 60 / 30 / 10 |
//! | `users` | 3: id, email, last seen | 35% | 1-4 | 20 / 75 / 5 |
//! | `events` | 6: ids, kind, timestamp, a JSON payload of 180-400 bytes, a binary digest | 20% | 1-8 | 90 / 0 / 10 |
//!
//! The
//! bytes go through the same framer and decoder as a real server's, so the demo and the
//! benchmarks exercise the real decode path without a database. The byte encodings
//! follow the server's (`my_decimal2bin`, `my_datetime_packed_to_binary`, ...); the tests
//! check every value round-trips through the decoder.

use mysql_common::constants::ColumnType;
use mysql_common::constants::ColumnType::*;

use crate::frame::HEADER_LEN;

/// Bytes after which the generator rotates to a new file (`max_binlog_size`).
pub const ROTATE_AT: u64 = 1 << 30;
/// Server id the generator writes in event headers.
pub const SERVER_ID: u32 = 1;
/// The `server_version` of the generated format description.
pub const SERVER_VERSION: &str = "10.11.19-MariaDB-stackwatch-generator";

const FDE: u8 = 15;
const ROTATE: u8 = 4;
const XID: u8 = 16;
const TABLE_MAP: u8 = 19;
const WRITE_ROWS: u8 = 30;
const UPDATE_ROWS: u8 = 31;
const DELETE_ROWS: u8 = 32;
const MARIADB_GTID: u8 = 162;

/// Post-header lengths for event types 1..=35, as a MySQL 5.6+/MariaDB server writes them.
const POST_HEADER_LENGTHS: [u8; 35] = [
    56, 13, 0, 8, 0, 18, 0, 4, 4, 4, 4, 18, 0, 0, 84, 0, 4, 26, 8, 0, 0, 0, 8, 8, 8, 2, 0, 0, 0,
    10, 10, 10, 42, 42, 0,
];

struct GenColumn {
    name: &'static str,
    column_type: ColumnType,
    meta: &'static [u8],
    nullable: bool,
    unsigned: bool,
    binary: bool,
}

const fn col(name: &'static str, column_type: ColumnType, meta: &'static [u8]) -> GenColumn {
    GenColumn {
        name,
        column_type,
        meta,
        nullable: false,
        unsigned: false,
        binary: false,
    }
}

/// `shop.orders`: the wide table, strings, decimals and dates.
const ORDERS: &[GenColumn] = &[
    GenColumn {
        unsigned: true,
        ..col("id", MYSQL_TYPE_LONGLONG, &[])
    },
    col("customer_id", MYSQL_TYPE_LONG, &[]),
    col("status", MYSQL_TYPE_VARCHAR, &[64, 0]),
    col("amount", MYSQL_TYPE_NEWDECIMAL, &[12, 2]),
    col("quantity", MYSQL_TYPE_SHORT, &[]),
    col("unit_price", MYSQL_TYPE_DOUBLE, &[8]),
    col("created_at", MYSQL_TYPE_DATETIME2, &[6]),
    col("updated_at", MYSQL_TYPE_TIMESTAMP2, &[3]),
    col("ship_on", MYSQL_TYPE_DATE, &[]),
    GenColumn {
        nullable: true,
        ..col("note", MYSQL_TYPE_BLOB, &[2])
    },
    GenColumn {
        nullable: true,
        ..col("attrs", MYSQL_TYPE_BLOB, &[4])
    },
];

/// `shop.users`: narrow, mostly updated (a login touches `last_seen`).
const USERS: &[GenColumn] = &[
    GenColumn {
        unsigned: true,
        ..col("id", MYSQL_TYPE_LONG, &[])
    },
    col("email", MYSQL_TYPE_VARCHAR, &[0, 1]),
    col("last_seen", MYSQL_TYPE_TIMESTAMP2, &[0]),
];

/// `shop.events`: an append-mostly log with a JSON document and a binary digest per row.
const EVENTS: &[GenColumn] = &[
    GenColumn {
        unsigned: true,
        ..col("id", MYSQL_TYPE_LONGLONG, &[])
    },
    col("user_id", MYSQL_TYPE_LONG, &[]),
    col("kind", MYSQL_TYPE_VARCHAR, &[32, 0]),
    col("at", MYSQL_TYPE_TIMESTAMP2, &[6]),
    // MariaDB's JSON is LONGTEXT with a check: a blob of text on the wire.
    col("payload", MYSQL_TYPE_BLOB, &[2]),
    GenColumn {
        nullable: true,
        binary: true,
        ..col("digest", MYSQL_TYPE_BLOB, &[1])
    },
];

/// The database of every generated table.
pub const DATABASE: &str = "shop";

/// The tables the generator writes (all in [`DATABASE`]).
pub const TABLES: [&str; 3] = ["orders", "users", "events"];

/// One generated table and how it is written.
struct GenTable {
    /// Table id of its table maps.
    id: u64,
    name: &'static str,
    columns: &'static [GenColumn],
    /// Transactions on this table, out of 100.
    share: u64,
    /// Most rows per statement.
    max_rows: u64,
    /// Statements that insert, then update, out of 100; the rest delete.
    inserts: u64,
    updates: u64,
}

const GEN_TABLES: [GenTable; 3] = [
    GenTable {
        id: 70,
        name: TABLES[0],
        columns: ORDERS,
        share: 45,
        max_rows: 6,
        inserts: 60,
        updates: 30,
    },
    GenTable {
        id: 71,
        name: TABLES[1],
        columns: USERS,
        share: 35,
        max_rows: 4,
        inserts: 20,
        updates: 75,
    },
    GenTable {
        id: 72,
        name: TABLES[2],
        columns: EVENTS,
        share: 20,
        max_rows: 8,
        inserts: 90,
        updates: 0,
    },
];

const STATUSES: &[&str] = &["new", "paid", "packed", "shipped", "delivered", "returned"];
const NAMES: &[&str] = &[
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances",
];
const EVENT_KINDS: &[&str] = &["page_view", "search", "add_to_cart", "checkout", "login"];
const PATHS: &[&str] = &[
    "/",
    "/search?q=red+shoes&sort=price",
    "/cart",
    "/checkout/payment",
    "/account/orders?page=2",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "shop-app/4.2.1 (Android 14; Pixel 8)",
];

/// Writes an endless, deterministic binlog (starting after the 4-byte file magic).
pub struct BinlogGenerator {
    rng: u64,
    file_index: u32,
    offset: u64,
    xid: u64,
    gtid_seq: u64,
    /// The last id inserted, per table of [`GEN_TABLES`].
    next_id: [u64; 3],
    started: bool,
    timestamp: u32,
    scratch: Vec<u8>,
    /// The JSON document being built for a row.
    json: Vec<u8>,
}

impl BinlogGenerator {
    /// A generator seeded with `seed` (same seed, same bytes).
    pub fn new(seed: u64) -> Self {
        Self {
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            file_index: 1,
            offset: 4,
            xid: 0,
            gtid_seq: 0,
            next_id: [1; 3],
            started: false,
            timestamp: 0,
            scratch: Vec::with_capacity(4096),
            json: Vec::with_capacity(1024),
        }
    }

    /// Name of the binlog file being written.
    pub fn file_name(&self) -> String {
        binlog_file_name(self.file_index)
    }

    /// Appends whole transactions to `out` holding exactly `rows` row changes (the last
    /// transaction is made smaller to fit). Returns `rows`.
    ///
    /// `now` is the event timestamp (seconds since the epoch).
    pub fn write_rows(&mut self, out: &mut Vec<u8>, rows: usize, now: u32) -> usize {
        self.timestamp = now;
        let mut written = 0;
        if !self.started {
            self.started = true;
            self.format_description(out);
        }
        while written < rows {
            written += self.transaction(out, rows - written);
            if self.offset >= ROTATE_AT {
                self.rotate(out);
            }
        }
        written
    }

    fn next(&mut self) -> u64 {
        // splitmix64: fast, good enough for test data, no dependency.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn transaction(&mut self, out: &mut Vec<u8>, budget: usize) -> usize {
        self.gtid_seq += 1;
        let mut body = Vec::with_capacity(19);
        body.extend_from_slice(&self.gtid_seq.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes()); // domain id
        body.push(0x04 | 0x08); // FL_TRANSACTIONAL | FL_ALLOW_PARALLEL
        body.extend_from_slice(&[0; 6]);
        self.event(out, MARIADB_GTID, &body);

        let mut pick = self.below(100);
        let t = GEN_TABLES
            .iter()
            .position(|t| {
                let here = pick < t.share;
                pick = pick.saturating_sub(t.share);
                here
            })
            .unwrap_or(0);
        let spec = &GEN_TABLES[t];
        let (table_id, columns) = (spec.id, spec.columns);
        let tm = table_map(table_id, DATABASE, spec.name, columns);
        self.event(out, TABLE_MAP, &tm);

        let mut statements = 1 + self.below(3) as usize;
        let mut rows = 0;
        for s in 0.. {
            if s == statements {
                break;
            }
            let kind = match self.below(100) {
                p if p < spec.inserts => WRITE_ROWS,
                p if p < spec.inserts + spec.updates => UPDATE_ROWS,
                _ => DELETE_ROWS,
            };
            let n = (1 + self.below(spec.max_rows) as usize).min(budget - rows);
            if rows + n == budget {
                statements = s + 1;
            }
            let mut body = std::mem::take(&mut self.scratch);
            body.clear();
            body.extend_from_slice(&table_id.to_le_bytes()[..6]);
            let last = s + 1 == statements;
            body.extend_from_slice(&(if last { 1u16 } else { 0 }).to_le_bytes());
            body.extend_from_slice(&2u16.to_le_bytes()); // no extra data
            put_lenenc(&mut body, columns.len() as u64);
            let bitmap_len = columns.len().div_ceil(8);
            let images = if kind == UPDATE_ROWS { 2 } else { 1 };
            for _ in 0..images {
                for i in 0..bitmap_len {
                    let bits = columns.len() - i * 8;
                    body.push(if bits >= 8 { 0xff } else { (1u8 << bits) - 1 });
                }
            }
            for _ in 0..n {
                let id = if kind == WRITE_ROWS {
                    self.next_id[t] += 1;
                    self.next_id[t]
                } else {
                    1 + self.below(self.next_id[t])
                };
                for _ in 0..images {
                    self.row(&mut body, columns, id);
                }
            }
            self.event(out, kind, &body);
            self.scratch = body;
            rows += n;
        }
        self.xid += 1;
        let xid = self.xid.to_le_bytes();
        self.event(out, XID, &xid);
        rows
    }

    fn row(&mut self, out: &mut Vec<u8>, columns: &[GenColumn], id: u64) {
        let null_pos = out.len();
        out.resize(out.len() + columns.len().div_ceil(8), 0);
        for (i, c) in columns.iter().enumerate() {
            if c.nullable && self.below(4) == 0 {
                out[null_pos + i / 8] |= 1 << (i % 8);
                continue;
            }
            self.value(out, c, id);
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, c: &GenColumn, id: u64) {
        match (c.column_type, c.name) {
            (MYSQL_TYPE_LONGLONG, _) => out.extend_from_slice(&id.to_le_bytes()),
            (MYSQL_TYPE_LONG, "id") => out.extend_from_slice(&(id as u32).to_le_bytes()),
            (MYSQL_TYPE_LONG, _) => {
                out.extend_from_slice(&(self.below(100_000) as i32 - 1000).to_le_bytes())
            }
            (MYSQL_TYPE_SHORT, _) => {
                out.extend_from_slice(&(1 + self.below(50) as i16).to_le_bytes())
            }
            (MYSQL_TYPE_DOUBLE, _) => {
                let v = (self.below(1_000_000) as f64) / 100.0 + 0.25;
                out.extend_from_slice(&v.to_le_bytes())
            }
            (MYSQL_TYPE_NEWDECIMAL, _) => {
                let v = self.below(10_000_000) as i64 - 1_000_000;
                encode_decimal(out, v, c.meta[0], c.meta[1]);
            }
            (MYSQL_TYPE_VARCHAR, "status") => {
                let s = STATUSES[self.below(STATUSES.len() as u64) as usize];
                put_varchar(out, s.as_bytes(), c.meta);
            }
            (MYSQL_TYPE_VARCHAR, "email") => {
                let name = NAMES[self.below(NAMES.len() as u64) as usize].to_ascii_lowercase();
                let s = format!("{name}.{id}@example.com");
                put_varchar(out, s.as_bytes(), c.meta);
            }
            (MYSQL_TYPE_VARCHAR, "kind") => {
                let s = EVENT_KINDS[self.below(EVENT_KINDS.len() as u64) as usize];
                put_varchar(out, s.as_bytes(), c.meta);
            }
            (MYSQL_TYPE_VARCHAR, _) => {
                let s = format!("{} #{}", NAMES[self.below(NAMES.len() as u64) as usize], id);
                put_varchar(out, s.as_bytes(), c.meta);
            }
            (MYSQL_TYPE_DATETIME2, _) => {
                let secs = self.timestamp as i64 - self.below(86_400 * 365) as i64;
                let micros = if c.meta[0] > 0 {
                    self.below(1_000_000) as u32
                } else {
                    0
                };
                encode_datetime2(out, secs, micros, c.meta[0]);
            }
            (MYSQL_TYPE_TIMESTAMP2, _) => {
                let micros = match c.meta[0] {
                    0 => 0,
                    1..=3 => self.below(1000) as u32 * 1000,
                    _ => self.below(1_000_000) as u32,
                };
                encode_timestamp2(out, self.timestamp, micros, c.meta[0]);
            }
            (MYSQL_TYPE_DATE, _) => {
                let (y, m, d, ..) = crate::value::civil_from_unix(
                    self.timestamp as i64 + self.below(86_400 * 30) as i64,
                );
                let v = d | (m << 5) | ((y as u32) << 9);
                out.extend_from_slice(&v.to_le_bytes()[..3]);
            }
            (MYSQL_TYPE_BLOB, "attrs") => {
                // {"gift":true,"channel":"web","items":[12,345]}, built without format!.
                let mut body = [0u8; 64];
                let mut n = 0;
                let mut put = |s: &[u8]| {
                    body[n..n + s.len()].copy_from_slice(s);
                    n += s.len();
                };
                put(br#"{"gift":"#);
                put(if self.below(2) == 1 {
                    b"true"
                } else {
                    b"false"
                });
                put(br#","channel":""#);
                put([&b"web"[..], b"app", b"store"][self.below(3) as usize]);
                put(br#"","items":["#);
                let (a, b) = (self.below(1000), self.below(1000));
                put(&small_number(a));
                put(b",");
                put(&small_number(b));
                put(b"]}");
                put_blob(out, &body[..n], c.meta[0]);
            }
            (MYSQL_TYPE_BLOB, "payload") => {
                let mut json = std::mem::take(&mut self.json);
                self.event_payload(&mut json, id);
                put_blob(out, &json, c.meta[0]);
                self.json = json;
            }
            (MYSQL_TYPE_BLOB, _) if c.binary => {
                let n = 32;
                let start = out.len();
                put_blob(out, &vec![0u8; n], c.meta[0]);
                for b in &mut out[start + c.meta[0] as usize..] {
                    *b = self.next() as u8;
                }
            }
            (MYSQL_TYPE_BLOB, _) => {
                let note = [
                    "leave at the door",
                    "call first <b>twice</b>",
                    "fragile & heavy",
                    "\"gift\" wrap",
                ][self.below(4) as usize];
                put_blob(out, note.as_bytes(), c.meta[0]);
            }
            (t, n) => unreachable!("generator has no encoder for {n} ({t:?})"),
        }
    }

    /// A clickstream event's JSON document, 180-400 bytes, built without `format!`.
    fn event_payload(&mut self, b: &mut Vec<u8>, id: u64) {
        b.clear();
        b.extend_from_slice(br#"{"session":"s-"#);
        b.extend_from_slice(&small_number(self.below(1000)));
        b.extend_from_slice(&small_number(id % 1000));
        b.extend_from_slice(br#"","path":""#);
        b.extend_from_slice(PATHS[self.below(PATHS.len() as u64) as usize].as_bytes());
        b.extend_from_slice(br#"","device":{"ua":""#);
        b.extend_from_slice(AGENTS[self.below(AGENTS.len() as u64) as usize].as_bytes());
        b.extend_from_slice(br#"","screen":[1920,1080],"dark":"#);
        b.extend_from_slice(if self.below(2) == 1 {
            b"true"
        } else {
            b"false"
        });
        b.extend_from_slice(br#"},"items":["#);
        for i in 0..4 + self.below(20) {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(&small_number(self.below(1000)));
        }
        b.extend_from_slice(br#"],"note":"<i>\"first\" visit</i> & more","ms":"#);
        b.extend_from_slice(&small_number(self.below(1000)));
        b.push(b'}');
    }

    fn format_description(&mut self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(100);
        body.extend_from_slice(&4u16.to_le_bytes());
        let mut version = [0u8; 50];
        version[..SERVER_VERSION.len()].copy_from_slice(SERVER_VERSION.as_bytes());
        body.extend_from_slice(&version);
        body.extend_from_slice(&self.timestamp.to_le_bytes());
        body.push(HEADER_LEN as u8);
        body.extend_from_slice(&POST_HEADER_LENGTHS);
        body.push(1); // checksum algorithm: CRC32
        self.event(out, FDE, &body);
    }

    fn rotate(&mut self, out: &mut Vec<u8>) {
        self.file_index += 1;
        let mut body = Vec::new();
        body.extend_from_slice(&4u64.to_le_bytes());
        body.extend_from_slice(self.file_name().as_bytes());
        self.event(out, ROTATE, &body);
        self.offset = 4;
        self.format_description(out);
    }

    fn event(&mut self, out: &mut Vec<u8>, event_type: u8, body: &[u8]) {
        let start = out.len();
        let size = (HEADER_LEN + body.len() + 4) as u32;
        let end = self.offset + size as u64;
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.push(event_type);
        out.extend_from_slice(&SERVER_ID.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(end.min(u32::MAX as u64) as u32).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(body);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out[start..]);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        self.offset = end;
    }
}

/// `binlog.000001`-style names.
pub fn binlog_file_name(index: u32) -> String {
    format!("generated-bin.{index:06}")
}

fn table_map(table_id: u64, db: &str, table: &str, columns: &[GenColumn]) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(&table_id.to_le_bytes()[..6]);
    b.extend_from_slice(&1u16.to_le_bytes());
    b.push(db.len() as u8);
    b.extend_from_slice(db.as_bytes());
    b.push(0);
    b.push(table.len() as u8);
    b.extend_from_slice(table.as_bytes());
    b.push(0);
    put_lenenc(&mut b, columns.len() as u64);
    for c in columns {
        b.push(c.column_type as u8);
    }
    let meta: Vec<u8> = columns
        .iter()
        .flat_map(|c| c.meta.iter().copied())
        .collect();
    put_lenenc(&mut b, meta.len() as u64);
    b.extend_from_slice(&meta);
    let mut nulls = vec![0u8; columns.len().div_ceil(8)];
    for (i, c) in columns.iter().enumerate() {
        if c.nullable {
            nulls[i / 8] |= 1 << (i % 8);
        }
    }
    b.extend_from_slice(&nulls);
    // Optional metadata (binlog_row_metadata=FULL): SIGNEDNESS, COLUMN_CHARSET, COLUMN_NAME.
    let numeric: Vec<bool> = columns
        .iter()
        .filter(|c| c.column_type.is_numeric_type())
        .map(|c| c.unsigned)
        .collect();
    let mut sign = vec![0u8; numeric.len().div_ceil(8)];
    for (i, u) in numeric.iter().enumerate() {
        if *u {
            sign[i / 8] |= 0x80 >> (i % 8);
        }
    }
    tlv(&mut b, 1, &sign); // SIGNEDNESS
    let mut charsets = Vec::new();
    for c in columns.iter().filter(|c| c.column_type.is_character_type()) {
        put_lenenc(&mut charsets, if c.binary { 63 } else { 45 });
    }
    tlv(&mut b, 3, &charsets); // COLUMN_CHARSET
    let mut names = Vec::new();
    for c in columns {
        put_lenenc(&mut names, c.name.len() as u64);
        names.extend_from_slice(c.name.as_bytes());
    }
    tlv(&mut b, 4, &names); // COLUMN_NAME
    b
}

/// Decimal digits of `v` (< 1000) without leading zeros.
fn small_number(v: u64) -> Vec<u8> {
    let mut d = Vec::with_capacity(3);
    if v >= 100 {
        d.push(b'0' + (v / 100) as u8);
    }
    if v >= 10 {
        d.push(b'0' + (v / 10 % 10) as u8);
    }
    d.push(b'0' + (v % 10) as u8);
    d
}

fn tlv(out: &mut Vec<u8>, t: u8, v: &[u8]) {
    out.push(t);
    put_lenenc(out, v.len() as u64);
    out.extend_from_slice(v);
}

fn put_lenenc(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&v.to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn put_varchar(out: &mut Vec<u8>, s: &[u8], meta: &[u8]) {
    let max = u16::from_le_bytes([meta[0], meta[1]]);
    if max < 256 {
        out.push(s.len() as u8);
    } else {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(s);
}

fn put_blob(out: &mut Vec<u8>, s: &[u8], len_bytes: u8) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes()[..len_bytes as usize]);
    out.extend_from_slice(s);
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// `DECIMAL(precision, scale)` binary form of `unscaled / 10^scale` (`decimal2bin`).
pub fn encode_decimal(out: &mut Vec<u8>, unscaled: i64, precision: u8, scale: u8) {
    let (precision, scale) = (precision as usize, scale as usize);
    let negative = unscaled < 0;
    let abs = unscaled.unsigned_abs();
    let pow = 10u64.pow(scale as u32);
    let (mut int_part, frac_part) = (abs / pow, abs % pow);
    let intg = precision - scale;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale / 9, scale % 9);
    let start = out.len();
    // Integer part: a leading partial group, then whole groups of nine digits.
    let mut groups = Vec::with_capacity(intg0);
    for _ in 0..intg0 {
        groups.push((int_part % 1_000_000_000) as u32);
        int_part /= 1_000_000_000;
    }
    if intg0x > 0 {
        let n = DIG2BYTES[intg0x];
        out.extend_from_slice(&(int_part as u32).to_be_bytes()[4 - n..]);
    }
    for g in groups.iter().rev() {
        out.extend_from_slice(&g.to_be_bytes());
    }
    // Fraction: whole groups first, then the trailing partial group.
    let mut frac = frac_part;
    let mut frac_groups = Vec::with_capacity(frac0);
    let tail = frac % 10u64.pow(frac0x as u32);
    frac /= 10u64.pow(frac0x as u32);
    for _ in 0..frac0 {
        frac_groups.push((frac % 1_000_000_000) as u32);
        frac /= 1_000_000_000;
    }
    for g in frac_groups.iter().rev() {
        out.extend_from_slice(&g.to_be_bytes());
    }
    if frac0x > 0 {
        let n = DIG2BYTES[frac0x];
        out.extend_from_slice(&(tail as u32).to_be_bytes()[4 - n..]);
    }
    if negative {
        for b in &mut out[start..] {
            *b ^= 0xff;
        }
    }
    out[start] ^= 0x80;
}

fn put_fraction(out: &mut Vec<u8>, micros: u32, dec: u8) {
    match dec {
        1 | 2 => out.push((micros / 10_000) as u8),
        3 | 4 => out.extend_from_slice(&((micros / 100) as u16).to_be_bytes()),
        5 | 6 => out.extend_from_slice(&micros.to_be_bytes()[1..]),
        _ => {}
    }
}

/// `DATETIME(dec)` binary form of a UTC wall-clock time.
pub fn encode_datetime2(out: &mut Vec<u8>, unix: i64, micros: u32, dec: u8) {
    let (y, m, d, hh, mm, ss) = crate::value::civil_from_unix(unix);
    let ym = y as u64 * 13 + m as u64;
    let ymd = (ym << 5) | d as u64;
    let hms = ((hh as u64) << 12) | ((mm as u64) << 6) | ss as u64;
    let packed = ((ymd << 17) | hms) + 0x80_0000_0000;
    out.extend_from_slice(&packed.to_be_bytes()[3..]);
    let micros = match dec {
        1 | 2 => micros / 10_000 * 10_000,
        3 | 4 => micros / 100 * 100,
        _ => micros,
    };
    put_fraction(out, micros, dec);
}

/// `TIMESTAMP(dec)` binary form.
pub fn encode_timestamp2(out: &mut Vec<u8>, unix: u32, micros: u32, dec: u8) {
    out.extend_from_slice(&unix.to_be_bytes());
    put_fraction(out, micros, dec);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, RowDecoder};
    use crate::frame::{EventFramer, Framed};
    use crate::value::CellValue;
    use std::sync::Arc;

    fn decode_all(bytes: &[u8]) -> Vec<crate::decode::RowChange> {
        let mut framer = EventFramer::new();
        let mut decoder = RowDecoder::new();
        let file: Arc<str> = Arc::from("generated-bin.000001");
        let mut off = 0;
        let mut rows = Vec::new();
        while let Framed::Event(ev, n) = framer.frame(&bytes[off..]).unwrap() {
            if let Decoded::Rows { changes, .. } = decoder.decode(&ev, &file, off as u64).unwrap() {
                rows.extend(changes);
            }
            off += n;
        }
        assert_eq!(off, bytes.len(), "every generated byte frames");
        rows
    }

    #[test]
    fn generated_bytes_decode_with_names_and_types() {
        let mut g = BinlogGenerator::new(7);
        let mut out = Vec::new();
        let n = g.write_rows(&mut out, 500, 1_700_000_000);
        let rows = decode_all(&out);
        assert_eq!(rows.len(), n);
        let orders: Vec<_> = rows.iter().filter(|r| r.table.table == "orders").collect();
        assert!(!orders.is_empty());
        let names: Vec<&str> = orders[0]
            .table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names[..4], ["id", "customer_id", "status", "amount"]);
        let any = |pred: &dyn Fn(&CellValue) -> bool| {
            rows.iter()
                .flat_map(|r| r.after.iter().chain(r.before.iter()))
                .flatten()
                .any(|(_, v)| pred(v))
        };
        assert!(any(
            &|v| matches!(v, CellValue::Decimal(s) if s.contains('.'))
        ));
        assert!(any(
            &|v| matches!(v, CellValue::Timestamp { micros, .. } if *micros > 0)
        ));
        assert!(any(&|v| matches!(v, CellValue::DateTime { .. })));
        assert!(any(&|v| matches!(v, CellValue::Date { .. })));
        assert!(any(&|v| matches!(v, CellValue::Bytes(_))));
        assert!(any(&|v| matches!(v, CellValue::Null)));
        assert!(any(&|v| matches!(v, CellValue::Double(_))));
        assert!(any(&|v| matches!(v, CellValue::Text(t) if t.contains('<'))));
    }

    #[test]
    fn every_table_is_written_with_its_own_shape_and_mix_and_rows_events_name_their_table() {
        let mut g = BinlogGenerator::new(5);
        let mut out = Vec::new();
        g.write_rows(&mut out, 5000, 1_700_000_000);
        // Deterministic: the same seed writes the same bytes.
        let mut again = Vec::new();
        BinlogGenerator::new(5).write_rows(&mut again, 5000, 1_700_000_000);
        assert!(out == again, "same seed, same bytes");

        // The cheap peek at a rows event names what decoding it finds.
        let mut framer = EventFramer::new();
        let mut decoder = RowDecoder::new();
        let file: Arc<str> = Arc::from("generated-bin.000001");
        let (mut off, mut rows_events) = (0, 0);
        let mut rows = Vec::new();
        while let Framed::Event(ev, n) = framer.frame(&out[off..]).unwrap() {
            let peeked = decoder
                .rows_event_table(&ev)
                .map(|(_, t, k)| (t.table.clone(), k));
            if let Decoded::Rows { changes, .. } = decoder.decode(&ev, &file, off as u64).unwrap() {
                rows_events += 1;
                let first = &changes[0];
                assert_eq!(peeked, Some((first.table.table.clone(), first.kind)));
                rows.extend(changes);
            } else {
                assert_eq!(peeked, None);
            }
            off += n;
        }
        assert!(rows_events > 0);

        use crate::decode::ChangeKind::*;
        let count = |table: &str, kind| {
            rows.iter()
                .filter(|r| r.table.table == table && r.kind == kind)
                .count()
        };
        for (table, columns, kinds) in [
            ("orders", 11, [Insert, Update, Delete].as_slice()),
            ("users", 3, &[Insert, Update, Delete]),
            ("events", 6, &[Insert, Delete]),
        ] {
            let first = rows.iter().find(|r| r.table.table == table).unwrap();
            assert_eq!(first.table.database, DATABASE);
            assert_eq!(first.table.columns.len(), columns, "{table}");
            for &k in kinds {
                assert!(count(table, k) > 0, "{table} {k:?}");
            }
        }
        assert_eq!(count("events", Update), 0, "events are never updated");
        let users_updates = count("users", Update) as f64;
        assert!(users_updates > 2.0 * count("users", Insert) as f64);
        // The event payload is a JSON document, the digest 32 bytes.
        let ev = rows
            .iter()
            .find(|r| r.table.table == "events" && r.kind == Insert)
            .unwrap();
        let after = ev.after.as_ref().unwrap();
        let CellValue::Text(payload) = &after[4].1 else {
            panic!("{after:?}")
        };
        let doc: serde_json::Value = serde_json::from_str(payload).expect(payload);
        assert!(doc["items"].as_array().unwrap().len() >= 4);
        let sizes: Vec<usize> = rows
            .iter()
            .filter(|r| r.table.table == "events")
            .filter_map(|r| match &r.after.as_ref().or(r.before.as_ref())?[4].1 {
                CellValue::Text(t) => Some(t.len()),
                _ => None,
            })
            .collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(
            *min >= 180 && *max <= 400,
            "payloads of {min}..={max} bytes"
        );
        assert!(rows.iter().any(|r| r.table.table == "events"
            && matches!(r.after.as_ref().map(|a| &a[5].1), Some(CellValue::Bytes(b)) if b.len() == 32)));
    }

    #[test]
    fn decimals_and_datetimes_round_trip_through_the_decoder() {
        use mysql_common::binlog::value::BinlogValue;
        use mysql_common::io::ParseBuf;
        let cases: &[(i64, u8, u8, &str)] = &[
            (123_450, 12, 2, "1234.50"),
            (-123_450, 12, 2, "-1234.50"),
            (0, 12, 2, "0.00"),
            (-5, 14, 4, "-0.0005"),
            (1_234_567_890_123_456_789, 30, 10, "123456789.0123456789"),
        ];
        for &(v, p, s, want) in cases {
            let mut b = Vec::new();
            encode_decimal(&mut b, v, p, s);
            let meta = [p, s];
            let got: BinlogValue<'_> = ParseBuf(&b)
                .parse((MYSQL_TYPE_NEWDECIMAL, &meta[..], false, false))
                .unwrap();
            let BinlogValue::Value(mysql_common::value::Value::Bytes(got)) = got else {
                panic!("{got:?}")
            };
            assert_eq!(String::from_utf8(got).unwrap(), want, "{v} ({p},{s})");
        }
        let mut b = Vec::new();
        encode_datetime2(&mut b, 1_700_000_000, 123_456, 6);
        let got: BinlogValue<'_> = ParseBuf(&b)
            .parse((MYSQL_TYPE_DATETIME2, &[6u8][..], false, false))
            .unwrap();
        assert_eq!(
            got,
            BinlogValue::Value(mysql_common::value::Value::Date(
                2023, 11, 14, 22, 13, 20, 123_456
            ))
        );
    }

    #[test]
    fn our_decimal_decoder_agrees_with_the_encoder() {
        let cases: &[(i64, u8, u8, &str)] = &[
            (123_450, 12, 2, "1234.50"),
            (-123_450, 12, 2, "-1234.50"),
            (0, 12, 2, "0.00"),
            (-5, 14, 4, "-0.0005"),
            (7, 5, 0, "7"),
            (1_234_567_890_123_456_789, 30, 10, "123456789.0123456789"),
            (-1_000_000_000_000_000_000, 30, 10, "-100000000.0000000000"),
        ];
        for &(v, p, s, want) in cases {
            let mut b = Vec::new();
            encode_decimal(&mut b, v, p, s);
            assert_eq!(
                crate::decode::decimal_text(&b, p, s).unwrap(),
                want,
                "{v} ({p},{s})"
            );
        }
    }

    #[test]
    fn our_temporal_decoders_agree_with_the_encoder_and_with_mysql_common() {
        use crate::decode::{datetime_value, timestamp_value};
        use mysql_common::binlog::value::BinlogValue;
        use mysql_common::io::ParseBuf;
        for (unix, micros, dec, want_micros) in [
            (1_700_000_000u32, 0u32, 0u8, 0u32),
            (1_700_000_000, 120_000, 2, 120_000),
            (1_700_000_000, 990_000, 1, 990_000),
            (1_700_000_000, 123_400, 4, 123_400),
            (1_700_000_000, 999_999, 6, 999_999),
            // After 2038: TIMESTAMP is unsigned on the wire (mysql_common reads it as i32).
            (3_000_000_000, 500_000, 6, 500_000),
        ] {
            let mut b = Vec::new();
            encode_timestamp2(&mut b, unix, micros, dec);
            let want = CellValue::Timestamp {
                seconds: unix as i64,
                micros: want_micros,
            };
            assert_eq!(
                timestamp_value(&b, dec).unwrap(),
                want,
                "{unix}.{micros} ({dec})"
            );
            if unix < i32::MAX as u32 {
                let meta = [dec];
                let theirs: BinlogValue<'_> = ParseBuf(&b)
                    .parse((MYSQL_TYPE_TIMESTAMP2, &meta[..], false, false))
                    .unwrap();
                let BinlogValue::Value(mysql_common::value::Value::Bytes(text)) = theirs else {
                    panic!("{theirs:?}")
                };
                let kind = crate::value::ColumnKind {
                    column_type: MYSQL_TYPE_TIMESTAMP2,
                    text: crate::value::TextEncoding::Utf8,
                    labels: Vec::new(),
                };
                let via_text = CellValue::from_binlog(
                    BinlogValue::Value(mysql_common::value::Value::Bytes(text)),
                    &kind,
                )
                .unwrap();
                assert_eq!(via_text, want);
            }
        }
        // A fraction the server never writes is an error, not a wrong instant.
        assert!(timestamp_value(&[0x65, 0x53, 0xf1, 0x00, 0xff, 0xff, 0xff], 6).is_err());
        assert!(timestamp_value(&[0x65, 0x53], 0).is_err());
        let mut b = Vec::new();
        encode_datetime2(&mut b, 1_700_000_000, 123_456, 6);
        assert_eq!(
            datetime_value(&b, 6).unwrap(),
            CellValue::DateTime {
                year: 2023,
                month: 11,
                day: 14,
                hour: 22,
                minute: 13,
                second: 20,
                micros: 123_456
            }
        );
    }

    #[test]
    fn rotation_starts_a_new_file_with_a_format_description() {
        let mut g = BinlogGenerator::new(1);
        g.offset = ROTATE_AT - 10;
        g.started = true;
        let mut out = Vec::new();
        g.write_rows(&mut out, 1, 1_700_000_000);
        assert_eq!(g.file_name(), "generated-bin.000002");
    }
}
