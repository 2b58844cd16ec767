//! Where messages go: Redis Streams, a JSON-lines file, stdout, or nowhere.
//!
//! A sink *acknowledges* a batch by returning `Ok` from [`Sink::publish`], and only then
//! may the pipeline checkpoint past it. So each sink returns only once the batch is as
//! durable as that sink can make it: Redis has replied to every `XADD` of the pipeline,
//! the file is `fdatasync`ed, stdout is flushed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::encode::{MessageBuf, MessageFormat};

/// Parsed `--sink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `redis://host:port/STREAM`.
    Redis {
        /// `redis://host:port/` (the connection part).
        url: String,
        /// Stream key.
        stream: String,
    },
    /// `file:PATH`, JSON lines appended.
    File(PathBuf),
    /// `stdout`, JSON lines.
    Stdout,
    /// `null`: acknowledges and discards (benchmarks).
    Null,
}

/// Errors from sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// `--sink` did not parse.
    #[error("--sink {0:?}: expected redis://host:port/STREAM, file:PATH, stdout or null")]
    BadSpec(String),
    /// The format cannot be written to this sink.
    #[error("{0}")]
    Unsupported(String),
    /// Redis refused or the connection failed.
    #[error("redis {stream}: {source}")]
    Redis {
        /// Stream key.
        stream: String,
        /// Cause.
        source: redis::RedisError,
    },
    /// Writing failed.
    #[error("{what}: {source}")]
    Io {
        /// Which sink.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl std::str::FromStr for SinkSpec {
    type Err = SinkError;
    fn from_str(s: &str) -> Result<Self, SinkError> {
        let bad = || SinkError::BadSpec(s.to_string());
        if s == "stdout" {
            return Ok(SinkSpec::Stdout);
        }
        if s == "null" {
            return Ok(SinkSpec::Null);
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(SinkSpec::File(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("redis://") {
            let (authority, stream) = rest.split_once('/').ok_or_else(bad)?;
            if authority.is_empty() || stream.is_empty() || stream.contains('/') {
                return Err(bad());
            }
            return Ok(SinkSpec::Redis {
                url: format!("redis://{authority}/"),
                stream: stream.to_string(),
            });
        }
        Err(bad())
    }
}

/// A destination for batches of messages.
pub trait Sink: Send {
    /// Publishes every message of `batch`, returning once they are acknowledged.
    fn publish(&mut self, batch: &[MessageBuf]) -> Result<(), SinkError>;

    /// What kind of sink this is (`redis`, `file`, `stdout`, `null`): the `sink` label
    /// of the CPU spent publishing. Sinks from elsewhere are `custom`.
    fn kind(&self) -> &'static str {
        "custom"
    }
}

impl SinkSpec {
    /// Opens the sink for messages in `format`.
    pub fn open(&self, format: MessageFormat) -> Result<Box<dyn Sink>, SinkError> {
        match self {
            SinkSpec::Redis { url, stream } => Ok(Box::new(RedisSink::new(url, stream)?)),
            SinkSpec::File(path) => {
                text_only(format, "file")?;
                let io = |source| SinkError::Io {
                    what: format!("opening {}", path.display()),
                    source,
                };
                drop_partial_line(path).map_err(io)?;
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io)?;
                Ok(Box::new(FileSink {
                    path: path.clone(),
                    out: BufWriter::with_capacity(1 << 20, f),
                }))
            }
            SinkSpec::Stdout => {
                text_only(format, "stdout")?;
                Ok(Box::new(StdoutSink))
            }
            SinkSpec::Null => Ok(Box::new(NullSink)),
        }
    }
}

/// A worker killed mid-write leaves a partial last line. That batch was never
/// acknowledged (the checkpoint did not move), so its rows come again: cut the fragment
/// off so the first line written now does not get glued to it.
fn drop_partial_line(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Scan back from the end in blocks for the last newline.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        std::io::Read::read_exact(&mut f, &mut block[..n])?;
        if end == len && block[n - 1] == b'\n' {
            return Ok(());
        }
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            tracing::warn!(file = %path.display(), dropped = len - keep, "dropping a partial last line (unacknowledged)");
            return f.set_len(keep).and_then(|_| f.sync_all());
        }
        if start == 0 {
            tracing::warn!(file = %path.display(), dropped = len, "dropping a partial line (unacknowledged)");
            return f.set_len(0).and_then(|_| f.sync_all());
        }
        end = start;
    }
}

fn text_only(format: MessageFormat, sink: &str) -> Result<(), SinkError> {
    if format == MessageFormat::Avro {
        return Err(SinkError::Unsupported(format!(
            "the {sink} sink writes JSON lines; use --format json, or the redis/null sink for Avro"
        )));
    }
    Ok(())
}

/// Redis Streams: one `XADD <stream> * m <message>` per message, pipelined per batch.
pub struct RedisSink {
    client: redis::Client,
    stream: String,
    conn: Option<redis::Connection>,
}

impl RedisSink {
    /// A sink for `stream` on the server at `url` (connects lazily).
    pub fn new(url: &str, stream: &str) -> Result<Self, SinkError> {
        let client = redis::Client::open(url).map_err(|source| SinkError::Redis {
            stream: stream.to_string(),
            source,
        })?;
        Ok(Self {
            client,
            stream: stream.to_string(),
            conn: None,
        })
    }
}

impl Sink for RedisSink {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish(&mut self, batch: &[MessageBuf]) -> Result<(), SinkError> {
        let err = |stream: &str, source| SinkError::Redis {
            stream: stream.to_string(),
            source,
        };
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(std::time::Duration::from_secs(5))
                .map_err(|e| err(&self.stream, e))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut pipe = redis::pipe();
        for buf in batch {
            for m in buf.iter() {
                pipe.cmd("XADD")
                    .arg(&self.stream)
                    .arg("*")
                    .arg("m")
                    .arg(m)
                    .ignore();
            }
        }
        if let Err(e) = pipe.exec(conn) {
            // The connection may be half-way through a reply: start afresh next time.
            self.conn = None;
            return Err(err(&self.stream, e));
        }
        Ok(())
    }
}

/// JSON lines appended to a file, synced before the batch is acknowledged.
pub struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Sink for FileSink {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn publish(&mut self, batch: &[MessageBuf]) -> Result<(), SinkError> {
        let io = |path: &PathBuf, source| SinkError::Io {
            what: format!("writing {}", path.display()),
            source,
        };
        for buf in batch {
            for m in buf.iter() {
                self.out.write_all(m).map_err(|e| io(&self.path, e))?;
                self.out.write_all(b"\n").map_err(|e| io(&self.path, e))?;
            }
        }
        self.out.flush().map_err(|e| io(&self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| io(&self.path, e))?;
        Ok(())
    }
}

/// JSON lines on standard output.
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn publish(&mut self, batch: &[MessageBuf]) -> Result<(), SinkError> {
        let io = |source| SinkError::Io {
            what: "writing stdout".into(),
            source,
        };
        let mut out = std::io::stdout().lock();
        for buf in batch {
            for m in buf.iter() {
                out.write_all(m).map_err(io)?;
                out.write_all(b"\n").map_err(io)?;
            }
        }
        out.flush().map_err(io)
    }
}

/// Acknowledges everything, keeps nothing.
pub struct NullSink;

impl Sink for NullSink {
    fn kind(&self) -> &'static str {
        "null"
    }

    fn publish(&mut self, _batch: &[MessageBuf]) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_specs_parse_and_bad_ones_are_named() {
        assert_eq!(
            "redis://127.0.0.1:6379/rows".parse::<SinkSpec>().unwrap(),
            SinkSpec::Redis {
                url: "redis://127.0.0.1:6379/".into(),
                stream: "rows".into()
            }
        );
        assert_eq!(
            "file:/tmp/x.jsonl".parse::<SinkSpec>().unwrap(),
            SinkSpec::File("/tmp/x.jsonl".into())
        );
        assert_eq!("null".parse::<SinkSpec>().unwrap(), SinkSpec::Null);
        for bad in ["redis://host", "redis:///s", "file:", "kafka://x", ""] {
            let e = bad.parse::<SinkSpec>().unwrap_err().to_string();
            assert!(e.contains("--sink"), "{bad}: {e}");
        }
        assert!(SinkSpec::Stdout.open(MessageFormat::Avro).is_err());
    }

    #[test]
    fn a_partial_last_line_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, b"{\"a\":1}\n{\"a\":2}\n{\"a\"").unwrap();
        let mut sink = SinkSpec::File(p.clone()).open(MessageFormat::Json).unwrap();
        sink.publish(&[]).unwrap();
        drop(sink);
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        std::fs::write(&p, b"no newline at all").unwrap();
        drop(SinkSpec::File(p.clone()).open(MessageFormat::Json).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"");
    }
}
