//! The ingest writer: the one thread that writes to the store.
//!
//! Scrapers hand it windows and wait for the acknowledgement; it buffers them and
//! commits one transaction when `flush_rows` rows are buffered or `flush_interval` has
//! passed, whichever comes first (rows and checkpoints together, see the store). When
//! idle it rolls up a bounded chunk or applies retention, so maintenance never holds a
//! scrape up for long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stackwatch_store::{IngestWindow, ProfileStore, SqliteStore};
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
}

struct WriteRequest {
    windows: Vec<IngestWindow>,
    ack: oneshot::Sender<Result<(), String>>,
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
    pub async fn write(&self, windows: Vec<IngestWindow>) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        let tx = self.tx.clone();
        // A full queue blocks the sender: do that off the async threads.
        tokio::task::spawn_blocking(move || tx.send(WriteRequest { windows, ack }))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "writer stopped".to_string())?;
        done.await.map_err(|_| "writer stopped".to_string())?
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

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

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
                    tracing::warn!(error = %e, "rollup failed");
                }
            }
        } else if self.last_retention.elapsed() >= RETENTION_EVERY {
            self.last_retention = Instant::now();
            match store.apply_retention(now_s()) {
                Ok(n) => tracing::info!(deleted = n, "retention applied"),
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
    let windows: Vec<IngestWindow> = buffer
        .iter_mut()
        .flat_map(|r| std::mem::take(&mut r.windows))
        .collect();
    let result = store.ingest(&windows);
    if start.elapsed() > Duration::from_millis(500) {
        tracing::warn!(took = ?start.elapsed(), windows = windows.len(), "slow ingest transaction");
    }
    stats
        .flush_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    let ack = match result {
        Ok(s) => {
            stats.rows.fetch_add(s.rows as u64, Ordering::Relaxed);
            stats.windows.fetch_add(s.windows as u64, Ordering::Relaxed);
            stats.flushes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            stats.flush_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "ingest transaction failed");
            Err(e.to_string())
        }
    };
    for req in buffer.drain(..) {
        let _ = req.ack.send(ack.clone());
    }
}
