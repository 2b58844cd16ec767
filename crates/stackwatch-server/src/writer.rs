//! The ingest writer: the one thread that writes to the store.
//!
//! Scrapers hand it windows and wait for the acknowledgement; it buffers them and
//! commits one transaction when `flush_rows` rows are buffered or `flush_interval` has
//! passed, whichever comes first (rows and checkpoints together, see the store). When
//! idle it rolls up a bounded chunk or applies retention, so maintenance never holds a
//! scrape up for long.
//!
//! One target's bad data never fails another's write: when a shared transaction fails,
//! each request in it is retried in a transaction of its own, so only the request that
//! caused the failure gets the error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stackwatch_store::StoreError;
use stackwatch_store::{IngestWindow, ProfileStore, SqliteStore};
use thiserror::Error;
use tokio::sync::oneshot;

/// Counters the writer keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Rows committed.
    pub rows: AtomicU64,
    /// Windows committed.
    pub windows: AtomicU64,
    /// Transactions committed.
    pub flushes: AtomicU64,
    /// Failed transactions.
    pub flush_errors: AtomicU64,
    /// Time spent in ingest transactions, µs.
    pub flush_micros: AtomicU64,
    /// Rollup chunks done.
    pub rollups: AtomicU64,
    /// Rollup steps that failed.
    pub rollup_errors: AtomicU64,
    /// Requests refused by the store alone after a shared transaction failed.
    pub isolated_failures: AtomicU64,
    /// Rows deleted by retention (samples, stacks, targets, checkpoints).
    pub retention_deleted: AtomicU64,
}

/// Why a write was not stored.
#[derive(Debug, Error, Clone)]
pub enum WriteError {
    /// The store refused this request's windows.
    #[error("{0}")]
    Store(String),
    /// The writer has stopped (the server is shutting down).
    #[error("the store writer has stopped")]
    Stopped,
}

impl From<&StoreError> for WriteError {
    fn from(e: &StoreError) -> Self {
        WriteError::Store(e.to_string())
    }
}

struct WriteRequest {
    windows: Vec<IngestWindow>,
    ack: oneshot::Sender<Result<(), WriteError>>,
}

/// The sending side, cloned into every scraper.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<WriteRequest>,
    /// Counters.
    pub stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Stores `windows`; resolves once they are committed (or failed).
    pub async fn write(&self, windows: Vec<IngestWindow>) -> Result<(), WriteError> {
        let (ack, done) = oneshot::channel();
        let tx = self.tx.clone();
        // A full queue blocks the sender: do that off the async threads.
        tokio::task::spawn_blocking(move || tx.send(WriteRequest { windows, ack }))
            .await
            .map_err(|_| WriteError::Stopped)?
            .map_err(|_| WriteError::Stopped)?;
        done.await.map_err(|_| WriteError::Stopped)?
    }
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Flush after this long.
    pub flush_interval: Duration,
    /// Or when this many rows are buffered.
    pub flush_rows: usize,
}

/// Starts the writer thread over `store`. It stops (after a last flush) when every
/// handle is dropped.
pub fn spawn(store: SqliteStore, opts: WriterOptions) -> (WriterHandle, JoinHandle<()>) {
    let (tx, rx) = sync_channel(1024);
    let stats = Arc::new(WriterStats::default());
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name("stackwatch-writer".into())
        .spawn(move || run(store, rx, opts, thread_stats))
        .expect("spawning the writer thread");
    (WriterHandle { tx, stats }, thread)
}

use stackwatch_profile::clock::unix_s as now_s;

fn run(
    mut store: SqliteStore,
    rx: Receiver<WriteRequest>,
    opts: WriterOptions,
    stats: Arc<WriterStats>,
) {
    let mut buffer: Vec<WriteRequest> = Vec::new();
    let mut rows = 0usize;
    let mut oldest: Option<Instant> = None;
    let mut maintenance = Maintenance {
        last_rollup: Instant::now() - ROLLUP_EVERY,
        last_retention: Instant::now() - RETENTION_EVERY,
        rollup_due: true,
    };
    loop {
        let wait = match oldest {
            Some(t) => opts.flush_interval.saturating_sub(t.elapsed()),
            None => Duration::from_millis(200),
        };
        match rx.recv_timeout(wait) {
            Ok(req) => {
                rows += req.windows.iter().map(|w| w.stacks.len()).sum::<usize>();
                oldest.get_or_insert_with(Instant::now);
                buffer.push(req);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush(&mut store, &mut buffer, &stats);
                return;
            }
        }
        if rows >= opts.flush_rows || oldest.is_some_and(|t| t.elapsed() >= opts.flush_interval) {
            flush(&mut store, &mut buffer, &stats);
            rows = 0;
            oldest = None;
        }
        // Between flushes, one bounded maintenance step at a time: a busy writer still
        // rolls up (every ROLLUP_EVERY), an idle one catches up back to back.
        if oldest.is_none() {
            maintenance.step(&mut store, &stats);
        }
    }
}

const ROLLUP_EVERY: Duration = Duration::from_secs(2);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

struct Maintenance {
    last_rollup: Instant,
    last_retention: Instant,
    rollup_due: bool,
}

impl Maintenance {
    fn step(&mut self, store: &mut SqliteStore, stats: &WriterStats) {
        if self.rollup_due || self.last_rollup.elapsed() >= ROLLUP_EVERY {
            self.last_rollup = Instant::now();
            let result = store.rollup(now_s());
            let took = self.last_rollup.elapsed();
            if took > Duration::from_millis(500) {
                tracing::warn!(?took, "slow rollup step");
            }
            match result {
                Ok(more) => {
                    self.rollup_due = more;
                    stats.rollups.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.rollup_due = false;
                    stats.rollup_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "rollup failed");
                }
            }
        } else if self.last_retention.elapsed() >= RETENTION_EVERY {
            self.last_retention = Instant::now();
            match store.apply_retention(now_s()) {
                Ok(n) => {
                    stats.retention_deleted.fetch_add(
                        n.sample_rows + n.stacks + n.targets + n.series,
                        Ordering::Relaxed,
                    );
                    tracing::info!(
                        sample_rows = n.sample_rows,
                        stacks = n.stacks,
                        targets = n.targets,
                        checkpoints = n.series,
                        "retention applied"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            }
        }
    }
}

fn flush(store: &mut SqliteStore, buffer: &mut Vec<WriteRequest>, stats: &WriterStats) {
    if buffer.is_empty() {
        return;
    }
    let start = Instant::now();
    let mut windows: Vec<IngestWindow> = Vec::new();
    let mut ranges = Vec::with_capacity(buffer.len());
    for r in buffer.iter_mut() {
        let from = windows.len();
        windows.append(&mut r.windows);
        ranges.push(from..windows.len());
    }
    match store.ingest(&windows) {
        Ok(s) => {
            record(stats, s);
            for req in buffer.drain(..) {
                let _ = req.ack.send(Ok(()));
            }
        }
        Err(e) if buffer.len() == 1 => {
            stats.flush_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "ingest refused");
            for req in buffer.drain(..) {
                let _ = req.ack.send(Err(WriteError::from(&e)));
            }
        }
        Err(e) => {
            // Retry each request alone: only the one that fails gets the error.
            tracing::warn!(error = %e, requests = buffer.len(), "shared ingest transaction failed; retrying each request alone");
            for (req, range) in buffer.drain(..).zip(ranges) {
                let ack = match store.ingest(&windows[range]) {
                    Ok(s) => {
                        record(stats, s);
                        Ok(())
                    }
                    Err(e) => {
                        stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                        stats.isolated_failures.fetch_add(1, Ordering::Relaxed);
                        Err(WriteError::from(&e))
                    }
                };
                let _ = req.ack.send(ack);
            }
        }
    }
    if start.elapsed() > Duration::from_millis(500) {
        tracing::warn!(took = ?start.elapsed(), "slow ingest transaction");
    }
    stats
        .flush_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
}

fn record(stats: &WriterStats, s: stackwatch_store::IngestStats) {
    stats.rows.fetch_add(s.rows as u64, Ordering::Relaxed);
    stats.windows.fetch_add(s.windows as u64, Ordering::Relaxed);
    stats.flushes.fetch_add(1, Ordering::Relaxed);
}
