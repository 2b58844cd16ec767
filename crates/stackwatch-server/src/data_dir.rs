//! The data directory: created if missing, and locked for as long as one collector
//! uses it, so a second collector given the same `data_dir` refuses to start instead
//! of silently sharing (and showing) another fleet's SQLite file.
//!
//! # What is locked, and why
//!
//! The lock must live as long as the data it protects: a lock on a file of its own
//! (`stackwatch.lock`, as before) is gone as soon as someone deletes that file, and the
//! next collector creates a new one and locks it beside the first. The candidates:
//!
//! - **`flock` on the database file.** It exists as long as the data, but the lock
//!   needs a second descriptor on the very file SQLite locks with POSIX (`fcntl`)
//!   locks, and closing *any* descriptor of a file drops every POSIX lock the process
//!   holds on it: that descriptor could never be closed while a connection (the
//!   writer, a pooled reader, a query still running at shutdown) is open, or another
//!   process could take the locks SQLite relies on (a WAL reader's shared lock) and
//!   checkpoint or delete the WAL under it. The file must also exist before the first
//!   start opens SQLite (an empty file is refused as "not a store"), and on NFS Linux
//!   emulates `flock` with POSIX locks, which would collide with SQLite's own.
//! - **`PRAGMA locking_mode = EXCLUSIVE`** keeps the readers (the query pool) out.
//! - **A lock file re-checked** (its inode compared with the path's) only notices a
//!   deletion after a second collector may already have started.
//! - **`flock` on the directory itself** (chosen). The directory exists as long as the
//!   database, its WAL and its shared-memory file inside it: deleting it deletes the
//!   data. SQLite takes no POSIX lock on the directory (it only opens it to `fsync`), and
//!   `flock` locks belong to the open file description, so SQLite opening and closing
//!   the directory never releases this lock, and closing this descriptor (when the
//!   collector stops) releases nothing of SQLite's. The kernel drops it when the
//!   process dies.
//!
//! `stackwatch.lock` is still written with the holder's pid, for the next collector's
//! error message, and still `flock`ed as earlier versions did, so a collector of an
//! earlier version on the same directory is refused too (and refuses this one).
//!
//! A collector over ClickHouse takes no lock: its data directory holds none of the
//! store's data, and several collectors share the store by design (`membership`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Name of the file inside the data directory that names the collector holding it.
pub const LOCK_FILE: &str = "stackwatch.lock";

/// Why the data directory cannot be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// Creating, opening or locking the directory or its lock file failed.
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

/// An exclusive lock on a data directory (an `flock` on the directory itself, see the
/// module's documentation), released when dropped or when the process dies.
#[derive(Debug)]
pub struct DataDirLock {
    _dir: File,
    _file: File,
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when another open
/// file description holds one.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor the caller owns and keeps open for the call;
    // LOCK_NB makes it fail at once instead of blocking.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
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
        let in_use = || {
            let mut holder = String::new();
            let holder = match File::open(&path) {
                Ok(mut f) => {
                    let _ = f.read_to_string(&mut holder);
                    holder.trim().chars().take(200).collect::<String>()
                }
                Err(_) => String::new(),
            };
            DataDirError::InUse {
                path: dir.to_owned(),
                holder: if holder.is_empty() {
                    format!("unknown process: {LOCK_FILE}, which names it, is missing or empty; the directory itself is locked")
                } else {
                    holder
                },
            }
        };
        let dir_file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(io)?;
        if !try_flock(&dir_file).map_err(io)? {
            return Err(in_use());
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if !try_flock(&file).map_err(io)? {
            // A collector of an earlier version, which locks only the file.
            return Err(in_use());
        }
        // Who holds it, for the next one's error message.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "pid {}", std::process::id());
        let _ = file.flush();
        Ok(DataDirLock {
            _dir: dir_file,
            _file: file,
        })
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

    /// Issue 24 item 9: deleting the lock file used to let a second holder in.
    #[test]
    fn deleting_the_lock_file_does_not_let_a_second_holder_in() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        let e = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("in use by another stackwatch") && e.contains("unknown process"),
            "{e}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    /// A holder that locks only the file (an earlier version) keeps this one out.
    #[test]
    fn a_holder_of_the_lock_file_alone_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let mut earlier = File::create(dir.path().join(LOCK_FILE)).unwrap();
        write!(earlier, "pid 1").unwrap();
        assert!(try_flock(&earlier).unwrap());
        let e = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another stackwatch (pid 1)"), "{e}");
        drop(earlier);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
