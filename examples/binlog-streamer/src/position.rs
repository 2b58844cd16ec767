//! Binlog positions and the checkpoint file.
//!
//! A [`Checkpoint`] names the place a restarted worker reads from. It is only ever a
//! *transaction boundary* whose rows the sink has acknowledged, so resuming from it can
//! repeat rows of the transaction that was open when the worker died, but never skips one.
//! The file is replaced atomically (write a temporary file, fsync, rename, fsync the
//! directory): a crash leaves either the old checkpoint or the new one.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A byte offset in a named binlog file (`mysql-bin.000003:4711`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// File name as the server names it (no directory).
    pub file: String,
    /// Offset of the next event to read.
    pub pos: u64,
}

impl BinlogPosition {
    /// A position.
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        Self {
            file: file.into(),
            pos,
        }
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// What the checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Where to resume reading.
    pub position: BinlogPosition,
    /// The last GTID committed before `position`, when the server logs GTIDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// Rows acknowledged by the sink over the life of this checkpoint file.
    #[serde(default)]
    pub rows_acked: u64,
}

/// Errors reading or writing the checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but is not a checkpoint.
    #[error("checkpoint {path} is not valid JSON: {source}")]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The checkpoint file at a path.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored checkpoint, `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| CheckpointError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Replaces the stored checkpoint atomically and durably.
    pub fn store(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let mut body = serde_json::to_vec_pretty(checkpoint).expect("checkpoint serializes");
        body.push(b'\n');
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io)?;
        // The rename is durable only once the directory entry is.
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(dir.path().join("cp.json"));
        assert_eq!(f.load().unwrap(), None);
        let a = Checkpoint {
            position: BinlogPosition::new("mysql-bin.000001", 4),
            gtid: None,
            rows_acked: 0,
        };
        f.store(&a).unwrap();
        assert_eq!(f.load().unwrap(), Some(a));
        let b = Checkpoint {
            position: BinlogPosition::new("mysql-bin.000002", 1234),
            gtid: Some("0-1-7".into()),
            rows_acked: 10,
        };
        f.store(&b).unwrap();
        assert_eq!(f.load().unwrap(), Some(b));
        assert!(!dir.path().join("cp.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        fs::write(&p, b"{not json").unwrap();
        let err = CheckpointFile::new(&p).load().unwrap_err().to_string();
        assert!(err.contains("cp.json"), "{err}");
    }
}
