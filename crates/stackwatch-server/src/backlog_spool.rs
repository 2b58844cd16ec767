//! The writer's backlog on disk: what the writer acknowledged while the store was
//! unavailable survives the collector stopping, crashing or being killed.
//!
//! # Layout
//!
//! A directory of segment files, `<first id, 20 digits>.seg`, each a sequence of
//! records:
//!
//! ```text
//! length: u32 LE | xxh3_64(payload): u64 LE | payload (JSON: {"id": N, "windows": [...]})
//! ```
//!
//! Every spooled request has an id, one more than the last (ids never go back, across
//! restarts too: the next id follows the highest on disk and the highest the store
//! recorded). A record is appended and `fsync`ed (and, for a new segment, the directory
//! too) before the request is acknowledged. Records are never rewritten: a request
//! leaves the spool when every record of its segment is resolved (stored, or dropped
//! as refused for good) and the segment file is deleted; when the backlog is empty the
//! whole spool is. New records go to a segment of their own once the current one
//! reaches `SEGMENT_BYTES` (4 MiB), so a draining spool frees its space as it goes.
//!
//! # Torn and corrupt records
//!
//! A crash while appending leaves a partial record at a segment's end (a short length,
//! a short payload, or one that does not match its checksum). On open, reading a
//! segment stops at the first record that does not check out: it and whatever follows
//! in that segment are skipped and counted (the rest of the segment cannot be framed
//! once one length is wrong). Such a record was never acknowledged, since its `fsync`
//! did not return. Nothing in a segment's bytes can make opening panic; a segment that
//! cannot be read at all is an error (the collector does not start over a spool it
//! cannot read, rather than acknowledge over it). New records are never appended after
//! a torn tail: each start appends to a new segment.
//!
//! # Where it lives
//!
//! `<data_dir>/backlog/` for the embedded SQLite store (the data directory is locked
//! by its collector). A collector over ClickHouse locks nothing of `data_dir` (several
//! share a store, and may share a host and a default `data_dir`), so its spool is
//! `<data_dir>/backlog/<collector id>/`, locked (`flock`) by this module: a second
//! collector with the same id and directory refuses to start.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stackwatch_store::{IngestWindow, Labels};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

use stackwatch_profile::SampleLabels;

/// A new segment is started once the current one holds this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 4 << 20;

/// Bytes of a record's header: length and checksum.
const HEADER_BYTES: usize = 12;

/// Why the spool cannot be used.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// Reading, writing, syncing or deleting a spool file failed.
    #[error("backlog spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Another process holds the spool directory.
    #[error("backlog spool {path} is in use by another stackwatch: give each collector its own [collector] id or data_dir")]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// A request too large for one record (4 GiB).
    #[error("backlog spool: a request of {0} bytes is too large for one record")]
    TooLarge(usize),
    /// A request could not be encoded.
    #[error("backlog spool: encoding a request: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One window as spooled: the fields of [`IngestWindow`], kept apart from the store's
/// type so the format on disk changes only when this module says so.
#[derive(Serialize, Deserialize)]
struct SpooledWindow {
    target: Labels,
    instance: String,
    seq: u64,
    start_unix_s: i64,
    stacks: Vec<(String, u64)>,
    labeled: Vec<(SampleLabels, Vec<(String, u64)>)>,
    period_ns: u64,
}

impl From<&IngestWindow> for SpooledWindow {
    fn from(w: &IngestWindow) -> Self {
        SpooledWindow {
            target: w.target.clone(),
            instance: w.instance.clone(),
            seq: w.seq,
            start_unix_s: w.start_unix_s,
            stacks: w.stacks.clone(),
            labeled: w.labeled.clone(),
            period_ns: w.period_ns,
        }
    }
}

impl From<SpooledWindow> for IngestWindow {
    fn from(w: SpooledWindow) -> Self {
        IngestWindow {
            target: w.target,
            instance: w.instance,
            seq: w.seq,
            start_unix_s: w.start_unix_s,
            stacks: w.stacks,
            labeled: w.labeled,
            period_ns: w.period_ns,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    id: u64,
    windows: Vec<SpooledWindow>,
}

/// A request read back from the spool.
pub(crate) struct SpooledRequest {
    /// Its id.
    pub(crate) id: u64,
    /// Its windows.
    pub(crate) windows: Vec<IngestWindow>,
    /// Bytes it takes in the spool.
    pub(crate) bytes: u64,
}

/// What opening the spool found.
pub(crate) struct Recovered {
    /// The requests, in id order.
    pub(crate) requests: Vec<SpooledRequest>,
    /// Torn or corrupt records skipped (each stops its segment).
    pub(crate) corrupt: u64,
}

struct Segment {
    path: PathBuf,
    /// The highest id in it (0: none yet).
    last_id: u64,
}

/// The spool: an append-only log of acknowledged requests in a directory.
pub(crate) struct Spool {
    dir: PathBuf,
    /// Sealed segments, oldest first, then the one being appended to (last).
    segments: VecDeque<Segment>,
    /// The segment being appended to (the last of `segments`) and its length.
    current: Option<(File, u64)>,
    next_id: u64,
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Spool {
    /// Opens (creating) the spool in `dir`, locks it and reads back every request it
    /// holds. Ids continue after the highest found ([`Spool::ids_after`] raises them).
    pub(crate) fn open(dir: &Path) -> Result<(Spool, Recovered), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = File::open(dir).map_err(io(dir))?;
        // SAFETY: flock on a descriptor this function owns and keeps open (in the
        // returned Spool, so the lock lasts as long as it); LOCK_NB fails at once.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(SpoolError::InUse {
                    path: dir.to_owned(),
                });
            }
            return Err(io(dir)(err));
        }
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            names.push((first, entry.path()));
        }
        names.sort();
        let mut segments = VecDeque::new();
        let mut requests = Vec::new();
        let mut corrupt = 0;
        let mut next_id = 1;
        for (_, path) in names {
            let mut data = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io(&path))?;
            let (records, torn) = parse_segment(&data);
            if torn {
                corrupt += 1;
                tracing::warn!(path = %path.display(), "backlog spool: a torn or corrupt record (a write the crash cut short, never acknowledged); skipping the rest of its segment");
            }
            if records.is_empty() {
                // Nothing in it was acknowledged: it would only be counted again.
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let mut last_id = 0;
            for r in records {
                last_id = last_id.max(r.id);
                next_id = next_id.max(r.id + 1);
                requests.push(r);
            }
            segments.push_back(Segment { path, last_id });
        }
        requests.sort_by_key(|r| r.id);
        Ok((
            Spool {
                dir: dir.to_owned(),
                segments,
                current: None,
                next_id,
                _lock: lock,
            },
            Recovered { requests, corrupt },
        ))
    }

    /// Makes the next id at least `id` + 1 (the store recorded `id` as stored).
    pub(crate) fn ids_after(&mut self, id: u64) {
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    /// The record of `windows`, for the next id (its length is what it takes on disk).
    pub(crate) fn encode(&self, windows: &[IngestWindow]) -> Result<Vec<u8>, SpoolError> {
        let payload = serde_json::to_vec(&Record {
            id: self.next_id,
            windows: windows.iter().map(SpooledWindow::from).collect(),
        })?;
        let len = u32::try_from(payload.len()).map_err(|_| SpoolError::TooLarge(payload.len()))?;
        let mut record = Vec::with_capacity(HEADER_BYTES + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        Ok(record)
    }

    /// Appends `record` (from [`Spool::encode`], for the next id) and syncs it to disk;
    /// returns its id. Only once this returns may the request be acknowledged.
    pub(crate) fn append(&mut self, record: &[u8]) -> Result<u64, SpoolError> {
        let id = self.next_id;
        if self
            .current
            .as_ref()
            .is_none_or(|(_, len)| *len >= SEGMENT_BYTES)
        {
            let path = self.dir.join(format!("{id:020}.seg"));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            // The new name must survive a crash as well as its contents.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
            self.segments.push_back(Segment { path, last_id: 0 });
            self.current = Some((file, 0));
        }
        let (file, len) = self.current.as_mut().expect("a current segment");
        let seg = self.segments.back_mut().expect("the current segment");
        let written = file.write_all(record).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // What is on disk of this record is a torn tail now: append to a new
            // segment next time, never after it.
            self.current = None;
            return Err(io(&seg.path)(e));
        }
        *len += record.len() as u64;
        seg.last_id = id;
        self.next_id += 1;
        Ok(id)
    }

    /// Every request up to `id` is resolved (stored or dropped), and `more` says
    /// whether any later one is not: deletes the segments that hold nothing unresolved
    /// (the one appended to as well once nothing is left).
    pub(crate) fn resolved_through(&mut self, id: u64, more: bool) {
        while let Some(seg) = self.segments.front() {
            let current = self.segments.len() == 1 && self.current.is_some();
            if seg.last_id > id || (current && more) {
                break;
            }
            if let Err(e) = std::fs::remove_file(&seg.path) {
                // Left behind, its records are replayed at the next start: found already
                // stored (SQLite: the store's marker; ClickHouse: the same rows again,
                // which FINAL counts once), or refused again.
                tracing::warn!(path = %seg.path.display(), error = %e, "backlog spool: deleting a resolved segment failed");
            }
            if current {
                self.current = None;
            }
            self.segments.pop_front();
        }
    }
}

/// The records of one segment's bytes, and whether reading stopped at a torn or corrupt
/// one.
fn parse_segment(data: &[u8]) -> (Vec<SpooledRequest>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let Some(header) = data.get(at..at + HEADER_BYTES) else {
            return (out, true);
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
        let Some(payload) = data.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else {
            return (out, true);
        };
        if xxh3_64(payload) != sum {
            return (out, true);
        }
        let Ok(record) = serde_json::from_slice::<Record>(payload) else {
            return (out, true);
        };
        out.push(SpooledRequest {
            id: record.id,
            windows: record.windows.into_iter().map(IngestWindow::from).collect(),
            bytes: (HEADER_BYTES + len) as u64,
        });
        at += HEADER_BYTES + len;
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(seq: u64) -> IngestWindow {
        IngestWindow {
            target: [("service".to_string(), "s".to_string())].into(),
            instance: String::new(),
            seq,
            start_unix_s: 1_700_000_000,
            stacks: vec![("main;work".into(), 7)],
            labeled: vec![(
                [("table".to_string(), "orders".to_string())].into(),
                vec![("main;sql".into(), 3)],
            )],
            period_ns: 10,
        }
    }

    fn append(spool: &mut Spool, seq: u64) -> u64 {
        let record = spool.encode(&[window(seq)]).unwrap();
        spool.append(&record).unwrap()
    }

    /// A request comes back whole, and ids go on after a reopen.
    #[test]
    fn requests_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, found) = Spool::open(dir.path()).unwrap();
        assert!(found.requests.is_empty());
        assert_eq!(append(&mut spool, 1), 1);
        assert_eq!(append(&mut spool, 2), 2);
        drop(spool);
        let (mut spool, found) = Spool::open(dir.path()).unwrap();
        assert_eq!(found.corrupt, 0);
        let got: Vec<(u64, Vec<IngestWindow>)> = found
            .requests
            .into_iter()
            .map(|r| (r.id, r.windows))
            .collect();
        assert_eq!(got, vec![(1, vec![window(1)]), (2, vec![window(2)])]);
        assert_eq!(append(&mut spool, 3), 3, "ids never go back");
    }

    /// A record cut short by a crash, or with a flipped byte, is skipped and counted;
    /// the records before it come back, and new records go to a new segment.
    #[test]
    fn a_torn_or_corrupt_tail_is_skipped_and_counted() {
        for damage in ["cut", "flip", "garbage length"] {
            let dir = tempfile::tempdir().unwrap();
            let (mut spool, _) = Spool::open(dir.path()).unwrap();
            append(&mut spool, 1);
            append(&mut spool, 2);
            drop(spool);
            let seg = dir.path().join(format!("{:020}.seg", 1));
            let mut data = std::fs::read(&seg).unwrap();
            let second = data.len() / 2;
            match damage {
                "cut" => data.truncate(data.len() - 5),
                "flip" => *data.last_mut().unwrap() ^= 0x20,
                _ => data[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes()),
            }
            std::fs::write(&seg, &data).unwrap();
            let (mut spool, found) = Spool::open(dir.path()).unwrap();
            assert_eq!(found.corrupt, 1, "{damage}");
            let ids: Vec<u64> = found.requests.iter().map(|r| r.id).collect();
            assert_eq!(ids, vec![1], "{damage}");
            assert_eq!(
                append(&mut spool, 3),
                2,
                "{damage}: the torn id is free again"
            );
            drop(spool);
            let (_, found) = Spool::open(dir.path()).unwrap();
            let ids: Vec<u64> = found.requests.iter().map(|r| r.id).collect();
            assert_eq!(ids, vec![1, 2], "{damage}: appended to a new segment");
            assert_eq!(found.corrupt, 1);
        }
        // A segment with nothing whole in it held nothing acknowledged: counted once, then
        // gone.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{:020}.seg", 7)), [3, 0, 0]).unwrap();
        let (spool, found) = Spool::open(dir.path()).unwrap();
        assert_eq!((found.requests.len(), found.corrupt), (0, 1));
        drop(spool);
        let (_, found) = Spool::open(dir.path()).unwrap();
        assert_eq!(found.corrupt, 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Any bytes at all: never a panic.
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let _ = parse_segment(&junk);
        }
    }

    /// Resolved segments are deleted; an empty backlog leaves no file.
    #[test]
    fn resolved_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        let a = append(&mut spool, 1);
        let b = append(&mut spool, 2);
        spool.resolved_through(a, true);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "b unresolved"
        );
        spool.resolved_through(b, false);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(append(&mut spool, 3), 3);
        drop(spool);
        let (_, found) = Spool::open(dir.path()).unwrap();
        let ids: Vec<u64> = found.requests.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![3]);
    }

    /// A second collector on the same spool is refused.
    #[test]
    fn one_spool_one_collector() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path()).unwrap();
        assert!(matches!(
            Spool::open(dir.path()),
            Err(SpoolError::InUse { .. })
        ));
    }
}
