//! Where binlog events come from: a server (as a replica), binlog files, or the generator.
//!
//! Every source yields [`SourceEvent`]s: a verified event plus the file and offsets it
//! occupies, so positions are the server's own (`mysql-bin.000042:1234`) whichever the
//! source. Sources follow `ROTATE` events to the next file themselves.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::{Event, RotateEvent};
use tracing::{debug, info, warn};

use crate::frame::{verify_checksum, EventFramer, FrameError, Framed, BINLOG_MAGIC};
use crate::generate::BinlogGenerator;
use crate::position::BinlogPosition;

/// Parsed `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `mysql://user:pass@host:port`: replicate from a server.
    Mysql(String),
    /// `file:PATH`: read a binlog file (and the files it rotates to).
    File(PathBuf),
    /// `generate`: the built-in synthetic primary.
    Generate,
}

impl std::str::FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "generate" {
            Ok(SourceSpec::Generate)
        } else if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err("file: needs a path (file:/var/lib/mysql/mysql-bin.000001)".into());
            }
            Ok(SourceSpec::File(PathBuf::from(p)))
        } else if s.starts_with("mysql://") || s.starts_with("mariadb://") {
            Ok(SourceSpec::Mysql(s.replacen("mariadb://", "mysql://", 1)))
        } else {
            Err(format!(
                "{s:?}: expected mysql://user:pass@host:port, file:PATH or generate"
            ))
        }
    }
}

/// One event and where it sits.
#[derive(Debug)]
pub struct SourceEvent {
    /// The event (checksum verified).
    pub event: Box<Event>,
    /// File it was read from.
    pub file: Arc<str>,
    /// Offset of its first byte.
    pub pos: u64,
    /// Offset just past it (where the next event starts).
    pub end: u64,
}

/// Errors reading a source. Each names the file and offset it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Bytes at a position are not a valid event.
    #[error("{file}:{pos}: {source}")]
    Frame {
        /// File.
        file: String,
        /// Offset of the bad event.
        pos: u64,
        /// What is wrong.
        source: FrameError,
    },
    /// A file ends in the middle of an event (and `--follow` is off).
    #[error("{file}:{pos}: file ends inside an event ({have} of at least {need} bytes); use --follow to wait for the server to finish writing it")]
    Truncated {
        /// File.
        file: String,
        /// Offset of the partial event.
        pos: u64,
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Not a binlog file.
    #[error("{file}: not a binlog file (bad magic bytes)")]
    BadMagic {
        /// File.
        file: String,
    },
    /// Reading a file failed.
    #[error("{file}: {source}")]
    Io {
        /// File.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The server refused or the stream failed beyond retrying.
    #[error("{0}")]
    Server(String),
}

/// Anything that yields binlog events in order.
pub trait EventSource: Send {
    /// The next event; `Ok(None)` when the source is exhausted.
    fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError>;

    /// Whether [`EventSource::next_event`] would return without waiting (a whole event is
    /// already buffered). The pipeline hands rows over in larger chunks while this holds.
    fn has_buffered_event(&self) -> bool {
        false
    }
}

/// Whether `buf` starts with a complete event (by its length field).
fn complete_event_in(buf: &[u8]) -> bool {
    buf.len() >= crate::frame::HEADER_LEN
        && buf.len() >= u32::from_le_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize
}

fn rotate_target(event: &Event) -> Option<(String, u64, bool)> {
    rotate_target_raw(event, false)
}

fn rotate_target_raw(event: &Event, strip_checksum: bool) -> Option<(String, u64, bool)> {
    if event.header().event_type_raw() != EventType::ROTATE_EVENT as u8 {
        return None;
    }
    let r = event.read_event::<RotateEvent<'_>>().ok()?;
    let fake = event.header().timestamp() == 0 || event.header().log_pos() == 0;
    let mut name = r.name_raw();
    if strip_checksum && name.len() >= 4 {
        name = &name[..name.len() - 4];
    }
    Some((
        String::from_utf8_lossy(name).into_owned(),
        r.position(),
        fake,
    ))
}

/// The fake rotate that opens a replication stream arrives before the format description,
/// so a reader does not yet know it carries a CRC32 and leaves the checksum on the end of
/// the file name: whether to cut it off.
fn unread_checksum(event: &Event, server_crc: bool) -> bool {
    use mysql_common::binlog::consts::BinlogChecksumAlg;
    let read_with_crc = matches!(
        event.footer().get_checksum_alg(),
        Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
    );
    server_crc && !read_with_crc
}

// ---------------------------------------------------------------------------------------
// Files

/// Reads binlog files from disk, optionally waiting for more bytes (`--follow`).
pub struct FileSource {
    dir: PathBuf,
    file: Arc<str>,
    reader: File,
    framer: EventFramer,
    buf: Vec<u8>,
    /// Offset of `buf[start]` in the file.
    buf_pos: u64,
    start: usize,
    follow: bool,
    /// Offset to jump to once the format description has been read.
    resume_at: Option<u64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl FileSource {
    /// Opens `path`; with `start`, events before that offset (other than the format
    /// description) are skipped. `stop` ends a `--follow` wait.
    pub fn open(
        path: &Path,
        start: Option<u64>,
        follow: bool,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, SourceError> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reader = Self::open_file(path, &name, follow, &stop)?;
        let mut src = Self {
            dir,
            file: Arc::from(name.as_str()),
            reader,
            framer: EventFramer::new(),
            buf: Vec::with_capacity(1 << 20),
            buf_pos: 0,
            start: 0,
            follow,
            resume_at: start.filter(|&p| p > 4),
            stop,
        };
        src.read_magic()?;
        Ok(src)
    }

    fn open_file(
        path: &Path,
        name: &str,
        follow: bool,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<File, SourceError> {
        loop {
            match File::open(path) {
                Ok(f) => return Ok(f),
                Err(e) if follow && e.kind() == std::io::ErrorKind::NotFound => {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err(SourceError::Io {
                            file: name.into(),
                            source: e,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(SourceError::Io {
                        file: name.into(),
                        source,
                    })
                }
            }
        }
    }

    fn read_magic(&mut self) -> Result<(), SourceError> {
        while self.buf.len() < 4 {
            if !self.fill()? {
                if self.follow && !self.stopping() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                return Err(SourceError::BadMagic {
                    file: self.file.to_string(),
                });
            }
        }
        if self.buf[..4] != BINLOG_MAGIC {
            return Err(SourceError::BadMagic {
                file: self.file.to_string(),
            });
        }
        self.start = 4;
        Ok(())
    }

    fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads more bytes; `false` at end of file.
    fn fill(&mut self) -> Result<bool, SourceError> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf_pos += self.start as u64;
            self.buf.clear();
            self.start = 0;
        } else if self.start > (1 << 20) {
            self.buf.drain(..self.start);
            self.buf_pos += self.start as u64;
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + (1 << 20), 0);
        let n = self.reader.read(&mut self.buf[len..]);
        match n {
            Ok(n) => {
                self.buf.truncate(len + n);
                Ok(n > 0)
            }
            Err(source) => {
                self.buf.truncate(len);
                Err(SourceError::Io {
                    file: self.file.to_string(),
                    source,
                })
            }
        }
    }

    fn switch_to(&mut self, name: &str) -> Result<(), SourceError> {
        let path = self.dir.join(name);
        info!(file = %path.display(), "following rotate to the next binlog file");
        self.reader = Self::open_file(&path, name, self.follow, &self.stop)?;
        self.file = Arc::from(name);
        self.buf.clear();
        self.buf_pos = 0;
        self.start = 0;
        self.framer = EventFramer::new();
        self.read_magic()
    }
}

impl EventSource for FileSource {
    fn has_buffered_event(&self) -> bool {
        self.buffered()
    }

    fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        loop {
            let pos = self.buf_pos + self.start as u64;
            let framed = self
                .framer
                .frame(&self.buf[self.start..])
                .map_err(|source| SourceError::Frame {
                    file: self.file.to_string(),
                    pos,
                    source,
                })?;
            match framed {
                Framed::Event(event, n) => {
                    self.start += n;
                    let end = pos + n as u64;
                    if let Some(resume) = self.resume_at {
                        let is_fde = event.header().event_type_raw()
                            == EventType::FORMAT_DESCRIPTION_EVENT as u8;
                        if !is_fde {
                            // Jump to the checkpoint (the format description is read).
                            self.resume_at = None;
                            if resume != pos {
                                self.seek(resume)?;
                                continue;
                            }
                        } else if end >= resume {
                            self.resume_at = None;
                        }
                    }
                    if let Some((next, _, false)) = rotate_target(&event) {
                        let ev = SourceEvent {
                            event,
                            file: self.file.clone(),
                            pos,
                            end,
                        };
                        self.switch_to(&next)?;
                        return Ok(Some(ev));
                    }
                    return Ok(Some(SourceEvent {
                        event,
                        file: self.file.clone(),
                        pos,
                        end,
                    }));
                }
                Framed::NeedMore => {
                    if self.fill()? {
                        continue;
                    }
                    let have = self.buf.len() - self.start;
                    if self.follow {
                        if self.stopping() {
                            return Ok(None);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    if have == 0 {
                        return Ok(None);
                    }
                    let need = if have >= 13 {
                        u32::from_le_bytes(
                            self.buf[self.start + 9..self.start + 13]
                                .try_into()
                                .unwrap(),
                        ) as usize
                    } else {
                        crate::frame::HEADER_LEN
                    };
                    return Err(SourceError::Truncated {
                        file: self.file.to_string(),
                        pos,
                        have,
                        need,
                    });
                }
            }
        }
    }
}

impl FileSource {
    fn buffered(&self) -> bool {
        complete_event_in(&self.buf[self.start..])
    }

    fn seek(&mut self, to: u64) -> Result<(), SourceError> {
        use std::io::Seek;
        self.reader
            .seek(std::io::SeekFrom::Start(to))
            .map_err(|source| SourceError::Io {
                file: self.file.to_string(),
                source,
            })?;
        self.buf.clear();
        self.start = 0;
        self.buf_pos = to;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Generator

/// The synthetic primary as a source.
pub struct GeneratorSource {
    generator: BinlogGenerator,
    framer: EventFramer,
    buf: Vec<u8>,
    start: usize,
    file: Arc<str>,
    pos: u64,
    rate: Option<u64>,
    remaining: Option<u64>,
    began: Instant,
    generated: u64,
}

impl GeneratorSource {
    /// `rate` row changes per second (unlimited when `None`); stop after `events` rows.
    pub fn new(seed: u64, rate: Option<u64>, events: Option<u64>) -> Self {
        let generator = BinlogGenerator::new(seed);
        let file = Arc::from(generator.file_name().as_str());
        Self {
            generator,
            framer: EventFramer::new(),
            buf: Vec::with_capacity(1 << 20),
            start: 0,
            file,
            pos: 4,
            rate,
            remaining: events,
            began: Instant::now(),
            generated: 0,
        }
    }

    fn refill(&mut self) -> bool {
        if self.remaining == Some(0) {
            return false;
        }
        let mut want = self.remaining.unwrap_or(u64::MAX).min(1024);
        if let Some(rate) = self.rate.filter(|&r| r > 0) {
            // Pace: never ahead of `rate` per second since the start.
            loop {
                let due = (self.began.elapsed().as_secs_f64() * rate as f64) as u64;
                if due > self.generated {
                    want = want.min(due - self.generated).max(1);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.buf.drain(..self.start);
        self.start = 0;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let n = self.generator.write_rows(&mut self.buf, want as usize, now) as u64;
        self.generated += n;
        if let Some(r) = self.remaining.as_mut() {
            *r = r.saturating_sub(n);
        }
        true
    }
}

impl EventSource for GeneratorSource {
    fn has_buffered_event(&self) -> bool {
        complete_event_in(&self.buf[self.start..])
            || (self.rate.is_none() && self.remaining != Some(0))
    }

    fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        loop {
            let framed = self
                .framer
                .frame(&self.buf[self.start..])
                .map_err(|source| SourceError::Frame {
                    file: self.file.to_string(),
                    pos: self.pos,
                    source,
                })?;
            match framed {
                Framed::Event(event, n) => {
                    self.start += n;
                    let (pos, end) = (self.pos, self.pos + n as u64);
                    let ev = SourceEvent {
                        event,
                        file: self.file.clone(),
                        pos,
                        end,
                    };
                    self.pos = end;
                    if let Some((next, at, false)) = rotate_target(&ev.event) {
                        self.file = Arc::from(next.as_str());
                        self.pos = at;
                    }
                    return Ok(Some(ev));
                }
                Framed::NeedMore => {
                    if !self.refill() {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Replication

/// Settings of the replication source.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// `mysql://user:pass@host:port`.
    pub url: String,
    /// Our server id (must differ from every server and replica in the topology).
    pub server_id: u32,
    /// Where to start; the server's current position when `None`.
    pub start: Option<BinlogPosition>,
}

/// Streams events from a server over the replication protocol, reconnecting (from the
/// next unread event) when the connection drops.
pub struct MysqlSource {
    opts: ReplicaOptions,
    stream: Option<mysql::BinlogStream>,
    file: Arc<str>,
    next_pos: u64,
    server_crc: bool,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl MysqlSource {
    /// Connects, checks the server's settings and requests the binlog.
    pub fn connect(
        opts: ReplicaOptions,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, SourceError> {
        let mut src = Self {
            opts,
            stream: None,
            file: Arc::from(""),
            next_pos: 4,
            server_crc: false,
            stop,
        };
        let start = src.open(src.opts.start.clone())?;
        src.file = Arc::from(start.file.as_str());
        src.next_pos = start.pos;
        Ok(src)
    }

    fn redacted_url(&self) -> String {
        match self.opts.url.split_once('@') {
            Some((_, host)) => format!("mysql://…@{host}"),
            None => self.opts.url.clone(),
        }
    }

    fn open(&mut self, start: Option<BinlogPosition>) -> Result<BinlogPosition, SourceError> {
        let url = self.redacted_url();
        let err = |what: &str, e: mysql::Error| SourceError::Server(format!("{url}: {what}: {e}"));
        let opts = mysql::Opts::from_url(&self.opts.url)
            .map_err(|e| SourceError::Server(format!("{url}: bad URL: {e}")))?;
        let mut conn = mysql::Conn::new(opts).map_err(|e| err("connecting", e))?;
        let format: Option<String> = conn
            .query_first("SELECT @@GLOBAL.binlog_format")
            .map_err(|e| err("reading binlog_format", e))?;
        if format.as_deref() != Some("ROW") {
            return Err(SourceError::Server(format!(
                "{url}: binlog_format is {}, but row events need binlog_format=ROW (SET GLOBAL binlog_format=ROW, or binlog_format=ROW in my.cnf)",
                format.as_deref().unwrap_or("unset (is log_bin on?)")
            )));
        }
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .map_err(|e| err("reading the version", e))?;
        let version = version.unwrap_or_default();
        if version.contains("MariaDB") {
            // GTID events and annotate rows instead of their MySQL-5.1 stand-ins.
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .map_err(|e| err("announcing replica capabilities", e))?;
        }
        let checksum: Option<String> = conn
            .query_first("SELECT @@GLOBAL.binlog_checksum")
            .unwrap_or(None);
        self.server_crc = checksum.as_deref() == Some("CRC32");
        let metadata: Option<String> = conn
            .query_first("SELECT @@GLOBAL.binlog_row_metadata")
            .unwrap_or(None);
        if metadata.as_deref() != Some("FULL") {
            warn!(
                binlog_row_metadata = metadata.as_deref().unwrap_or("unknown"),
                "column names are logged only with binlog_row_metadata=FULL; columns will be named @0, @1, ..."
            );
        }
        let start = match start {
            Some(s) => s,
            None => {
                current_position(&mut conn).map_err(|e| err("reading the binlog position", e))?
            }
        };
        info!(server = %url, %version, position = %start, "requesting binlog");
        let request = mysql::BinlogRequest::new(self.opts.server_id)
            .with_filename(start.file.as_bytes().to_vec())
            .with_pos(start.pos);
        let stream = conn
            .get_binlog_stream(request)
            .map_err(|e| err("requesting the binlog", e))?;
        self.stream = Some(stream);
        Ok(start)
    }
}

fn current_position(conn: &mut mysql::Conn) -> mysql::Result<BinlogPosition> {
    let row: Option<mysql::Row> = match conn.query_first("SHOW BINARY LOG STATUS") {
        Ok(r) => r,
        Err(_) => conn.query_first("SHOW MASTER STATUS")?,
    };
    let Some(row) = row else {
        return Err(mysql::Error::DriverError(mysql::DriverError::SetupError));
    };
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    Ok(BinlogPosition::new(file, pos))
}

impl EventSource for MysqlSource {
    fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.stream.is_none() {
                if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(None);
                }
                let at = BinlogPosition::new(self.file.to_string(), self.next_pos);
                match self.open(Some(at.clone())) {
                    Ok(_) => info!(position = %at, "replication stream re-established"),
                    Err(e) => {
                        warn!(error = %e, retry_in = ?backoff, "reconnecting to the server");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
            let stream = self.stream.as_mut().expect("opened above");
            let event = match stream.next() {
                Some(Ok(e)) => e,
                Some(Err(mysql::Error::MySqlError(e))) => {
                    return Err(SourceError::Server(format!(
                        "{}: the server stopped the binlog stream at {}:{}: {e}",
                        self.redacted_url(),
                        self.file,
                        self.next_pos
                    )))
                }
                Some(Err(e)) => {
                    warn!(error = %e, "replication connection lost");
                    self.stream = None;
                    continue;
                }
                None => return Ok(None),
            };
            let header = event.header();
            let size = header.event_size() as u64;
            let log_pos = header.log_pos() as u64;
            verify_checksum(&event).map_err(|source| SourceError::Frame {
                file: self.file.to_string(),
                pos: log_pos.saturating_sub(size),
                source,
            })?;
            let strip = unread_checksum(&event, self.server_crc);
            if let Some((next, at, fake)) = rotate_target_raw(&event, strip) {
                debug!(file = %next, pos = at, fake, "rotate");
                let ev = SourceEvent {
                    event: Box::new(event),
                    file: self.file.clone(),
                    pos: self.next_pos,
                    end: self.next_pos,
                };
                self.file = Arc::from(next.as_str());
                self.next_pos = at;
                return Ok(Some(ev));
            }
            // Artificial events (format description resent at connect, heartbeats) have
            // log_pos 0 or the current position; only real events advance it.
            let (pos, end) = if log_pos >= size && log_pos > self.next_pos.saturating_sub(1) {
                (log_pos - size, log_pos)
            } else {
                (self.next_pos, self.next_pos)
            };
            self.next_pos = end.max(self.next_pos);
            return Ok(Some(SourceEvent {
                event: Box::new(event),
                file: self.file.clone(),
                pos,
                end,
            }));
        }
    }
}
