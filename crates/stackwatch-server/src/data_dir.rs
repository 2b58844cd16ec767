//! The data directory: created if missing, and locked for as long as one collector
//! uses it, so a second collector given the same `data_dir` refuses to start instead
//! of silently sharing (and showing) another fleet's SQLite file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "stackwatch.lock";

/// Why the data directory cannot be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// Creating the directory or its lock file failed.
    #[error("data_dir {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("data_dir {path} is in use by another stackwatch ({holder}); give this one its own data_dir")]
    InUse {
        /// The directory.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
}

/// An exclusive lock on a data directory, released when dropped (or when the process
/// dies: the kernel drops `flock` locks with the file descriptor).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let io = |source| DataDirError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor this function owns (kept open in `file`);
        // LOCK_NB makes it fail at once instead of blocking.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(DataDirError::InUse {
                    path: dir.to_owned(),
                    holder: if holder.is_empty() {
                        "unknown process".into()
                    } else {
                        holder.chars().take(200).collect()
                    },
                });
            }
            return Err(io(err));
        }
        // Who holds it, for the next one's error message.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "pid {}", std::process::id());
        let _ = file.flush();
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let e = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("in use by another stackwatch")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
