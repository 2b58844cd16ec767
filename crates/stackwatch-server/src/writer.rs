//! The ingest writer: the one thread that writes to the store.
//!
//! Scrapers hand it windows and wait for the acknowledgement; it buffers them and
//! commits one transaction when `flush_rows` rows are buffered or `flush_interval` has
//! passed, whichever comes first (rows and checkpoints together, see the store). When
//! idle it rolls up a bounded chunk or applies retention, so maintenance never holds a
//! scrape up for long; a store that takes concurrent writes (ClickHouse) gets its
//! maintenance on a thread of its own instead, so it never holds a scrape up at all.
//!
//! One target's bad data never fails another's write: when a shared transaction fails,
//! each request in it is retried in a transaction of its own, so only the request that
//! caused the failure gets the error.
//!
//! When the store is unavailable (ClickHouse down or slow), requests are kept in a
//! backlog of at most `max_buffered_rows` rows and acknowledged, so scraping goes on;
//! the backlog is retried before anything new. Once it is full, requests are refused:
//! their scrapers keep their checkpoints and the workers keep the windows until the
//! store is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stackwatch_store::StoreError;
use stackwatch_store::{IngestWindow, Labels, ProfileStore};
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
    /// Rows waiting in the backlog for the store to come back.
    pub backlog_rows: AtomicU64,
    /// Windows waiting in the backlog.
    pub backlog_windows: AtomicU64,
    /// Backlogged windows the store refused when it came back (not for being down).
    pub backlog_dropped_windows: AtomicU64,
    /// Requests refused because the backlog was full.
    pub backlog_refused: AtomicU64,
    /// 1 while the last write found the store unavailable.
    pub store_unavailable: AtomicU64,
    /// Backlogged rows per target (labels), for `/api/targets`.
    pub backlog_by_target: Mutex<HashMap<Labels, u64>>,
}

/// Why a write was not stored.
///
/// [`WriteError::is_transient`] tells the two kinds apart for the caller: a transient
/// error (the store unavailable or busy and the backlog full, the writer stopping) may
/// succeed if the same windows are written again later, a permanent one (the store
/// refuses these windows for what they are) never will.
#[derive(Debug, Error, Clone)]
pub enum WriteError {
    /// The store failed this request's windows; its error is kept whole (shared, as one
    /// error may answer several requests), so its kind decides [`WriteError::is_transient`].
    #[error("{0}")]
    Store(Arc<StoreError>),
    /// The writer has stopped (the server is shutting down).
    #[error("the store writer has stopped")]
    Stopped,
    /// The store is unavailable and the backlog is full.
    #[error("store unavailable ({why}) and {rows} rows already wait in the backlog (store.max_buffered_rows): the worker keeps its windows until the store is back")]
    BacklogFull {
        /// Rows waiting.
        rows: u64,
        /// Why the store is unavailable.
        why: String,
    },
}

impl WriteError {
    /// True when writing the same windows again later may succeed: the backlog is full
    /// while the store is unavailable, the store is unavailable or busy
    /// ([`StoreError::is_transient`]), or the writer is stopping. The caller keeps what
    /// it wrote and tries again (a push answers 503 with `Retry-After`, a scrape keeps
    /// its checkpoint). False when the store refuses the windows for what they are:
    /// writing them again fails again (a push answers 400).
    pub fn is_transient(&self) -> bool {
        match self {
            WriteError::Store(e) => e.is_transient(),
            WriteError::Stopped | WriteError::BacklogFull { .. } => true,
        }
    }
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(Arc::new(e))
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
pub struct WriterOptions {
    /// Flush after this long.
    pub flush_interval: Duration,
    /// Or when this many rows are buffered.
    pub flush_rows: usize,
    /// Rows kept while the store is unavailable.
    pub max_buffered_rows: usize,
    /// Whether this writer does rollups and retention (of several collectors sharing
    /// a store, one does; it can change while running).
    pub maintenance: Arc<AtomicBool>,
    /// A second handle on the store for rollups and retention on a thread of their
    /// own (a store that takes concurrent writes, ClickHouse: a long rollup never holds
    /// ingest up). `None`: the writer does them between flushes (SQLite, one writer).
    pub maintenance_store: Option<BoxedStore>,
}

/// The store the writer owns.
pub type BoxedStore = Box<dyn ProfileStore + Send>;

/// Starts the writer thread over `store`. It stops (after a last flush) when every
/// handle is dropped.
pub fn spawn(store: BoxedStore, mut opts: WriterOptions) -> (WriterHandle, JoinHandle<()>) {
    let (tx, rx) = sync_channel(1024);
    let stats = Arc::new(WriterStats::default());
    let thread_stats = stats.clone();
    let separate = opts.maintenance_store.take().map(|mstore| {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, mstats, mstop) = (opts.maintenance.clone(), stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("stackwatch-maintenance".into())
            .spawn(move || run_maintenance(mstore, flag, mstats, mstop))
            .expect("spawning the maintenance thread");
        (stop, thread)
    });
    let thread = std::thread::Builder::new()
        .name("stackwatch-writer".into())
        .spawn(move || {
            let inline = separate.is_none();
            run(store, rx, opts, thread_stats, inline);
            if let Some((stop, t)) = separate {
                stop.store(true, Ordering::Relaxed);
                let _ = t.join();
            }
        })
        .expect("spawning the writer thread");
    (WriterHandle { tx, stats }, thread)
}

/// Rollups and retention on their own thread, while `flag` says this collector does
/// them, until `stop`.
fn run_maintenance(
    mut store: BoxedStore,
    flag: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
    stop: Arc<AtomicBool>,
) {
    let mut m = Maintenance {
        last_rollup: Instant::now() - ROLLUP_EVERY,
        last_retention: Instant::now() - RETENTION_EVERY,
        rollup_due: true,
    };
    while !stop.load(Ordering::Relaxed) {
        // Back to back only while this collector owns maintenance and a rollup is due.
        let owner = flag.load(Ordering::Relaxed);
        if owner {
            m.step(&mut store, &stats);
        }
        if !owner || !m.rollup_due {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

use stackwatch_profile::clock::unix_s as now_s;

fn run(
    mut store: BoxedStore,
    rx: Receiver<WriteRequest>,
    opts: WriterOptions,
    stats: Arc<WriterStats>,
    inline_maintenance: bool,
) {
    let mut backlog = Backlog::default();
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
                rows += rows_of(&req.windows) as usize;
                oldest.get_or_insert_with(Instant::now);
                buffer.push(req);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                backlog.retry(&mut store, &stats, &opts);
                flush(&mut store, &mut buffer, &stats, &mut backlog, &opts);
                if backlog.rows > 0 {
                    tracing::warn!(rows = backlog.rows, "stopping with a backlog: its windows are fetched again from the workers by the next collector");
                }
                return;
            }
        }
        if backlog.rows > 0 && backlog.last_try.elapsed() >= opts.flush_interval {
            backlog.retry(&mut store, &stats, &opts);
        }
        if rows >= opts.flush_rows || oldest.is_some_and(|t| t.elapsed() >= opts.flush_interval) {
            flush(&mut store, &mut buffer, &stats, &mut backlog, &opts);
            rows = 0;
            oldest = None;
        }
        // Between flushes, one bounded maintenance step at a time: a busy writer still
        // rolls up (every ROLLUP_EVERY), an idle one catches up back to back.
        if inline_maintenance
            && oldest.is_none()
            && backlog.rows == 0
            && opts.maintenance.load(Ordering::Relaxed)
        {
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
    fn step(&mut self, store: &mut BoxedStore, stats: &WriterStats) {
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

/// Windows acknowledged while the store was unavailable, oldest first.
struct Backlog {
    requests: Vec<Vec<IngestWindow>>,
    rows: u64,
    last_try: Instant,
    why: String,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            requests: Vec::new(),
            rows: 0,
            last_try: Instant::now(),
            why: String::new(),
        }
    }
}

/// (window, label set, stack) rows of some windows: unlabeled and labeled stacks alike.
fn rows_of(windows: &[IngestWindow]) -> u64 {
    windows
        .iter()
        .map(|w| w.stacks.len() as u64 + w.labeled.iter().map(|(_, s)| s.len() as u64).sum::<u64>())
        .sum()
}

impl Backlog {
    /// Keeps `windows` if there is room; false when full.
    fn push(
        &mut self,
        windows: Vec<IngestWindow>,
        opts: &WriterOptions,
        stats: &WriterStats,
    ) -> bool {
        let n = rows_of(&windows);
        if self.rows + n > opts.max_buffered_rows as u64 && self.rows > 0 {
            stats.backlog_refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.rows += n;
        {
            let mut by = stats
                .backlog_by_target
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for w in &windows {
                *by.entry(w.target.clone()).or_insert(0) += rows_of(std::slice::from_ref(w));
            }
        }
        self.requests.push(windows);
        self.publish(stats);
        true
    }

    fn publish(&self, stats: &WriterStats) {
        stats.backlog_rows.store(self.rows, Ordering::Relaxed);
        stats.backlog_windows.store(
            self.requests.iter().map(|r| r.len() as u64).sum(),
            Ordering::Relaxed,
        );
    }

    /// Stores what the backlog holds, `flush_rows` at a time, until the store fails.
    fn retry(&mut self, store: &mut BoxedStore, stats: &WriterStats, opts: &WriterOptions) {
        self.last_try = Instant::now();
        while !self.requests.is_empty() {
            let mut take = 0;
            let mut rows = 0u64;
            while take < self.requests.len() && (take == 0 || rows < opts.flush_rows as u64) {
                rows += rows_of(&self.requests[take]);
                take += 1;
            }
            let windows: Vec<IngestWindow> =
                self.requests[..take].iter().flatten().cloned().collect();
            let result = store.ingest(&windows);
            match result {
                Ok(s) => record(stats, s),
                Err(e) if e.is_transient() => {
                    self.why = e.to_string();
                    stats.store_unavailable.store(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    // Refused for what they are, not for the store being down: each
                    // request alone, and what still fails is dropped (it would block
                    // the backlog forever).
                    tracing::warn!(error = %e, "backlogged windows refused; retrying each request alone");
                    for req in &self.requests[..take] {
                        match store.ingest(req) {
                            Ok(s) => record(stats, s),
                            Err(e) if e.is_transient() => {
                                self.why = e.to_string();
                                return;
                            }
                            Err(e) => {
                                stats
                                    .backlog_dropped_windows
                                    .fetch_add(req.len() as u64, Ordering::Relaxed);
                                tracing::warn!(error = %e, windows = req.len(), "dropping backlogged windows the store refuses");
                            }
                        }
                    }
                }
            }
            stats.store_unavailable.store(0, Ordering::Relaxed);
            let done: Vec<Vec<IngestWindow>> = self.requests.drain(..take).collect();
            {
                let mut by = stats
                    .backlog_by_target
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                for w in done.iter().flatten() {
                    if let Some(n) = by.get_mut(&w.target) {
                        *n = n.saturating_sub(rows_of(std::slice::from_ref(w)));
                        if *n == 0 {
                            by.remove(&w.target);
                        }
                    }
                }
            }
            self.rows = self.rows.saturating_sub(rows);
            self.publish(stats);
        }
    }
}

/// Answers a request the store could not take because it is unavailable: kept in the
/// backlog (acknowledged) while there is room, refused when it is full.
fn backlog_or_refuse(
    req: WriteRequest,
    windows: Vec<IngestWindow>,
    why: &str,
    backlog: &mut Backlog,
    opts: &WriterOptions,
    stats: &WriterStats,
) {
    backlog.why = why.to_string();
    let rows = backlog.rows;
    let ack = if backlog.push(windows, opts, stats) {
        Ok(())
    } else {
        Err(WriteError::BacklogFull {
            rows,
            why: why.to_string(),
        })
    };
    let _ = req.ack.send(ack);
}

fn flush(
    store: &mut BoxedStore,
    buffer: &mut Vec<WriteRequest>,
    stats: &WriterStats,
    backlog: &mut Backlog,
    opts: &WriterOptions,
) {
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
    // While a backlog waits, the store is known to be down: join it without trying.
    let result = if backlog.rows > 0 {
        Err(stackwatch_store::StoreError::Unavailable(
            backlog.why.clone(),
        ))
    } else {
        store.ingest(&windows)
    };
    match result {
        Ok(s) => {
            stats.store_unavailable.store(0, Ordering::Relaxed);
            record(stats, s);
            for req in buffer.drain(..) {
                let _ = req.ack.send(Ok(()));
            }
        }
        Err(e) if e.is_transient() => {
            stats.store_unavailable.store(1, Ordering::Relaxed);
            if backlog.rows == 0 {
                tracing::warn!(error = %e, "store unavailable: keeping windows in the backlog (store.max_buffered_rows)");
            }
            let why = e.to_string();
            for (req, range) in buffer.drain(..).zip(ranges) {
                let w = windows[range].to_vec();
                backlog_or_refuse(req, w, &why, backlog, opts, stats);
            }
        }
        Err(e) if buffer.len() == 1 => {
            stats.flush_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "ingest refused");
            if let Some(req) = buffer.pop() {
                let _ = req.ack.send(Err(WriteError::from(e)));
            }
        }
        Err(e) => {
            // Retry each request alone: only the one that fails gets the error.
            tracing::warn!(error = %e, requests = buffer.len(), "shared ingest transaction failed; retrying each request alone");
            for (req, range) in buffer.drain(..).zip(ranges) {
                match store.ingest(&windows[range.clone()]) {
                    Ok(s) => {
                        record(stats, s);
                        let _ = req.ack.send(Ok(()));
                    }
                    Err(e) if e.is_transient() => {
                        let w = windows[range].to_vec();
                        backlog_or_refuse(req, w, &e.to_string(), backlog, opts, stats);
                    }
                    Err(e) => {
                        stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                        stats.isolated_failures.fetch_add(1, Ordering::Relaxed);
                        let _ = req.ack.send(Err(WriteError::from(e)));
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errors_say_whether_a_retry_may_succeed() {
        let store = |e: StoreError| WriteError::from(e).is_transient();
        assert!(store(StoreError::Unavailable("ClickHouse down".into())));
        assert!(!store(StoreError::Invalid("window 3 starts at -1".into())));
        assert!(WriteError::Stopped.is_transient());
        assert!(WriteError::BacklogFull {
            rows: 10,
            why: "ClickHouse down".into()
        }
        .is_transient());
        // The store's error survives the writer: its message and its kind.
        let e = WriteError::from(StoreError::Invalid("window 3 starts at -1".into()));
        assert_eq!(e.to_string(), "window 3 starts at -1");
        assert!(matches!(e, WriteError::Store(s) if matches!(*s, StoreError::Invalid(_))));
    }
}
