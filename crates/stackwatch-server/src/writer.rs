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
//! When the store is unavailable (a transient error: ClickHouse down or slow, SQLite
//! locked by another process past its busy timeout), requests are kept in a backlog of
//! at most `max_buffered_rows` rows and acknowledged, so scraping goes on; the backlog
//! is retried before anything new, and each request leaves it once stored, so none is
//! stored (or counted) twice. Once it is full, requests are refused as transient
//! ([`WriteError::is_transient`]): their scrapers keep their checkpoints and the workers
//! keep the windows until the store is back. A request with a window the store would
//! refuse in any state (too old for its retention) is refused before it is buffered,
//! so nothing is acknowledged that the store will not take.
//!
//! The backlog is durable: a request is acknowledged into it only once it is written
//! and synced to the spool ([`crate::backlog_spool`], `<data_dir>/backlog`), and it
//! leaves the spool once stored or dropped. At start the writer replays the spool before
//! anything new, each request exactly once (see [`WriterSpool::open`]). Past the spool's
//! byte bound, or when it cannot be written, a request is refused as transient.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stackwatch_store::StoreError;
use stackwatch_store::{IngestWindow, Labels, ProfileWriter};

use crate::backlog_spool::{Recovered, Spool, SpoolError};
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
    /// Rows written to the backlog's spool on disk (each acknowledged only once synced).
    pub spooled_rows: AtomicU64,
    /// Bytes of the requests waiting in the spool.
    pub spool_bytes: AtomicU64,
    /// Requests read back from the spool when the writer started.
    pub spool_replayed: AtomicU64,
    /// Of those, requests the store had already committed (a crash between its commit
    /// and the spool's removal): skipped, not stored twice.
    pub spool_already_stored: AtomicU64,
    /// Torn or corrupt spool records skipped when the writer started.
    pub spool_corrupt_records: AtomicU64,
    /// Requests refused because writing them to the spool failed (disk full, I/O error).
    pub spool_errors: AtomicU64,
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
    /// The store is unavailable and the spool holds its byte bound.
    #[error("store unavailable ({why}) and {bytes} bytes already wait in the backlog's spool: the worker keeps its windows until the store is back")]
    SpoolFull {
        /// Bytes waiting.
        bytes: u64,
        /// Why the store is unavailable.
        why: String,
    },
    /// The store is unavailable and the request could not be written to the backlog's
    /// spool (so it is not acknowledged).
    #[error("store unavailable ({why}) and the backlog's spool failed: {error}")]
    Spool {
        /// Why writing the spool failed.
        error: Arc<SpoolError>,
        /// Why the store is unavailable.
        why: String,
    },
}

impl WriteError {
    /// True when writing the same windows again later may succeed: the backlog is full
    /// while the store is unavailable, the store is unavailable or busy (ClickHouse down,
    /// SQLite locked by another connection: [`StoreError::is_transient`]), or the writer
    /// is stopping. The caller keeps what it wrote and tries again (a push answers 503
    /// with `Retry-After`, a scrape keeps its checkpoint or its cumulative baseline).
    /// False when the store refuses the windows for what they are: writing them again
    /// fails again (a push answers 400, a scrape moves on).
    pub fn is_transient(&self) -> bool {
        match self {
            WriteError::Store(e) => e.is_transient(),
            WriteError::Stopped
            | WriteError::BacklogFull { .. }
            | WriteError::SpoolFull { .. }
            | WriteError::Spool { .. } => true,
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
    /// The backlog's spool on disk; `None` keeps the backlog in memory only (lost if the
    /// collector stops before the store is back).
    pub spool: Option<WriterSpool>,
}

/// Most bytes of requests the spool holds by default (`store.max_backlog_bytes`,
/// beside `max_buffered_rows`).
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 1 << 30;

/// The instance of the marker checkpoint (see [`WriterSpool::open`]).
const SPOOL_MARKER_INSTANCE: &str = "spool";

/// The target of the marker checkpoint of a store that sums rows written twice (see
/// [`WriterSpool::open`]). Its profile type is none a query asks for (every selection
/// carries a `__profile_type__` matcher of a known type), so no query selects it, and
/// the label APIs leave names starting with `__` out.
pub fn spool_marker() -> Labels {
    [
        (
            crate::profile_type::PROFILE_TYPE_LABEL.to_string(),
            "__stackwatch_spool__".to_string(),
        ),
        ("__stackwatch_spool__".to_string(), "backlog".to_string()),
    ]
    .into()
}

/// The backlog's spool, opened (and locked) before the writer starts, with what it held.
pub struct WriterSpool {
    spool: Spool,
    recovered: Recovered,
    max_bytes: u64,
    marker: Option<Labels>,
}

impl WriterSpool {
    /// Opens and locks the spool in `dir` and reads back what it holds; it takes at most
    /// `max_bytes` bytes of waiting requests.
    ///
    /// `marker`: the target whose checkpoint records the id of the last spooled request
    /// stored, in the same transaction as its windows. A store that sums rows written
    /// twice (SQLite adds on conflict) needs one, so a request stored just before a
    /// crash, still in the spool, is not stored again when the spool is replayed:
    ///
    /// - Recording the id in the store's own transaction is the only order that is
    ///   exact: removing the request from the spool first loses it if the commit then
    ///   fails or the process dies; committing first and removing after leaves a window
    ///   (commit done, removal not) in which a crash replays it, and no marker kept
    ///   outside the store can tell whether the commit happened.
    /// - The checkpoint table already commits with the windows, takes the maximum of
    ///   what is written, and is read with [`ProfileReader::checkpoints`]: a window with
    ///   no stacks, target `marker`, instance `spool` and `seq` the request's id rides
    ///   along with the request, and no schema changes. Requests are stored in id order
    ///   (the backlog is retried oldest first and stops at the first that finds the
    ///   store down), so every id at or below the checkpoint is stored (or was refused
    ///   for good). The marker target ([`spool_marker`]) has no samples and is selected
    ///   by no query.
    ///
    /// A store whose rows are idempotent needs none (`None`): ClickHouse writes the same
    /// rows again for a request replayed, which `FINAL` counts once (as for windows
    /// fetched again after a failed insert); there a marker target would also show in
    /// the fleet's stored targets.
    pub fn open(
        dir: &std::path::Path,
        max_bytes: u64,
        marker: Option<Labels>,
    ) -> Result<WriterSpool, SpoolError> {
        let (mut spool, recovered) = Spool::open(dir)?;
        // Ids never go back, even with the spool emptied and the marker unreadable at
        // the next start: they are at least the wall clock's microseconds (and above
        // the marker, read when the writer starts).
        spool.ids_after(stackwatch_profile::clock::unix_ms().saturating_mul(1000));
        if !recovered.requests.is_empty() || recovered.corrupt > 0 {
            tracing::warn!(
                requests = recovered.requests.len(),
                corrupt = recovered.corrupt,
                dir = %dir.display(),
                "backlog spool: replaying requests acknowledged before the last stop"
            );
        }
        Ok(WriterSpool {
            spool,
            recovered,
            max_bytes,
            marker,
        })
    }
}

/// The store the writer owns.
pub type BoxedStore = Box<dyn ProfileWriter + Send>;

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
    mut opts: WriterOptions,
    stats: Arc<WriterStats>,
    inline_maintenance: bool,
) {
    let mut backlog = Backlog::default();
    if let Some(spool) = opts.spool.take() {
        backlog.recover(spool, &stats);
        // The marker before any new id is handed out (see Backlog::read_marker); if the
        // store cannot say yet, nothing is spooled until it can.
        if let Err(e) = backlog.read_marker(&store) {
            tracing::warn!(error = %e, "backlog spool: the store's marker is not readable yet; nothing is spooled until it is");
        }
    }
    let mut buffer: Vec<WriteRequest> = Vec::new();
    let mut rows = 0usize;
    let mut oldest: Option<Instant> = None;
    let mut maintenance = Maintenance {
        last_rollup: Instant::now() - ROLLUP_EVERY,
        last_retention: Instant::now() - RETENTION_EVERY,
        rollup_due: true,
    };
    // What the spool held is stored before anything new: new requests join the backlog
    // behind it while it waits.
    if !backlog.requests.is_empty() {
        backlog.retry(&mut store, &stats, &opts);
    }
    loop {
        let wait = match oldest {
            Some(t) => opts.flush_interval.saturating_sub(t.elapsed()),
            None => Duration::from_millis(200),
        };
        match rx.recv_timeout(wait) {
            Ok(req) => match check_request(&store, &req.windows) {
                Ok(()) => {
                    rows += rows_of(&req.windows) as usize;
                    oldest.get_or_insert_with(Instant::now);
                    buffer.push(req);
                }
                Err(e) => {
                    // Refused before it is buffered: never acknowledged, never
                    // backlogged while the store is down, only to be dropped later.
                    stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "write refused: a window the store does not take");
                    let _ = req.ack.send(Err(WriteError::from(e)));
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                backlog.retry(&mut store, &stats, &opts);
                flush(&mut store, &mut buffer, &stats, &mut backlog, &opts);
                if backlog.rows > 0 && backlog.spool.is_some() {
                    tracing::warn!(rows = backlog.rows, "stopping with a backlog: it stays in the spool and is stored when the collector starts again");
                } else if backlog.rows > 0 {
                    tracing::warn!(rows = backlog.rows, "stopping with a backlog in memory only: pushed windows in it are lost, scraped ones fetched again by the next collector");
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

/// Refuses a request with a window the store would refuse for what it is (too old for
/// its retention, too far ahead of the clock: [`ProfileWriter::check_window`]), so that
/// what is acknowledged while the store is unavailable is what it will take once back.
/// The whole request: the store takes a request whole or not at all.
fn check_request(store: &BoxedStore, windows: &[IngestWindow]) -> Result<(), StoreError> {
    let now = now_s();
    windows.iter().try_for_each(|w| store.check_window(w, now))
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

/// A request acknowledged while the store was unavailable.
struct Pending {
    /// Its id in the spool (0: not spooled).
    id: u64,
    windows: Vec<IngestWindow>,
    /// Bytes it takes in the spool.
    bytes: u64,
}

/// Windows acknowledged while the store was unavailable, oldest first; with a spool,
/// each written to disk before it was acknowledged.
struct Backlog {
    requests: Vec<Pending>,
    rows: u64,
    bytes: u64,
    last_try: Instant,
    why: String,
    spool: Option<Spool>,
    max_bytes: u64,
    /// The marker target (see [`WriterSpool::open`]).
    marker: Option<Labels>,
    /// With a marker: the highest spooled id the store holds, once read.
    stored_through: Option<u64>,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            requests: Vec::new(),
            rows: 0,
            bytes: 0,
            last_try: Instant::now(),
            why: String::new(),
            spool: None,
            max_bytes: u64::MAX,
            marker: None,
            stored_through: None,
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
    /// Takes over `spool` and what it held: the requests wait in the backlog, in order.
    fn recover(&mut self, spool: WriterSpool, stats: &WriterStats) {
        let WriterSpool {
            spool,
            recovered,
            max_bytes,
            marker,
        } = spool;
        stats
            .spool_corrupt_records
            .fetch_add(recovered.corrupt, Ordering::Relaxed);
        stats
            .spool_replayed
            .fetch_add(recovered.requests.len() as u64, Ordering::Relaxed);
        for r in recovered.requests {
            self.keep(
                Pending {
                    id: r.id,
                    windows: r.windows,
                    bytes: r.bytes,
                },
                stats,
            );
        }
        self.spool = Some(spool);
        self.max_bytes = max_bytes;
        self.marker = marker;
        self.why = "replaying the spool".into();
        self.publish(stats);
    }

    /// Keeps `windows` if there is room, written to the spool (and synced) first.
    fn push(
        &mut self,
        windows: Vec<IngestWindow>,
        why: &str,
        opts: &WriterOptions,
        stats: &WriterStats,
    ) -> Result<(), WriteError> {
        let n = rows_of(&windows);
        if self.rows + n > opts.max_buffered_rows as u64 && self.rows > 0 {
            stats.backlog_refused.fetch_add(1, Ordering::Relaxed);
            return Err(WriteError::BacklogFull {
                rows: self.rows,
                why: why.to_string(),
            });
        }
        let (id, bytes) = match &mut self.spool {
            None => (0, 0),
            Some(spool) => {
                let spooled = spool.encode(&windows).and_then(|record| {
                    let bytes = record.len() as u64;
                    if self.bytes + bytes > self.max_bytes && self.rows > 0 {
                        return Ok(None);
                    }
                    spool.append(&record).map(|id| Some((id, bytes)))
                });
                match spooled {
                    Ok(Some(spooled)) => spooled,
                    Ok(None) => {
                        stats.backlog_refused.fetch_add(1, Ordering::Relaxed);
                        return Err(WriteError::SpoolFull {
                            bytes: self.bytes,
                            why: why.to_string(),
                        });
                    }
                    Err(e) => {
                        stats.spool_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "backlog spool: a request could not be written; refused (not acknowledged)");
                        return Err(WriteError::Spool {
                            error: Arc::new(e),
                            why: why.to_string(),
                        });
                    }
                }
            }
        };
        stats
            .spooled_rows
            .fetch_add(if id > 0 { n } else { 0 }, Ordering::Relaxed);
        self.keep(Pending { id, windows, bytes }, stats);
        self.publish(stats);
        Ok(())
    }

    /// Adds `p` at the end, and its rows to the counts.
    fn keep(&mut self, p: Pending, stats: &WriterStats) {
        self.rows += rows_of(&p.windows);
        self.bytes += p.bytes;
        {
            let mut by = stats
                .backlog_by_target
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for w in &p.windows {
                *by.entry(w.target.clone()).or_insert(0) += rows_of(std::slice::from_ref(w));
            }
        }
        self.requests.push(p);
    }

    fn publish(&self, stats: &WriterStats) {
        stats.backlog_rows.store(self.rows, Ordering::Relaxed);
        stats.spool_bytes.store(self.bytes, Ordering::Relaxed);
        stats.backlog_windows.store(
            self.requests.iter().map(|r| r.windows.len() as u64).sum(),
            Ordering::Relaxed,
        );
    }

    /// The windows of `requests`, and with a marker the marker window of the last
    /// spooled one (the checkpoint keeps the maximum: one marker answers for all).
    fn windows_of(&self, requests: &[Pending]) -> (Vec<IngestWindow>, usize) {
        let mut windows: Vec<IngestWindow> =
            requests.iter().flat_map(|r| &r.windows).cloned().collect();
        let last = requests.iter().map(|r| r.id).max().unwrap_or(0);
        match &self.marker {
            Some(marker) if last > 0 => {
                windows.push(IngestWindow {
                    target: marker.clone(),
                    instance: SPOOL_MARKER_INSTANCE.into(),
                    seq: last,
                    start_unix_s: now_s(),
                    stacks: Vec::new(),
                    labeled: Vec::new(),
                    period_ns: 0,
                });
                (windows, 1)
            }
            _ => (windows, 0),
        }
    }

    /// With a marker, reads (once) the id of the last spooled request the store holds,
    /// and makes every id handed out from now on larger: a request spooled in this run
    /// must never carry an id the marker already covers, or a replay would take it for
    /// stored (the wall clock the ids start from may have gone back since the marker
    /// was written). Called when the writer starts and before anything is spooled.
    fn read_marker(&mut self, store: &BoxedStore) -> Result<(), StoreError> {
        let Some(marker) = &self.marker else {
            return Ok(());
        };
        if self.stored_through.is_some() {
            return Ok(());
        }
        let through = store
            .checkpoints(marker)?
            .iter()
            .filter(|c| c.instance == SPOOL_MARKER_INSTANCE)
            .map(|c| c.last_seq)
            .max()
            .unwrap_or(0);
        if let Some(spool) = &mut self.spool {
            spool.ids_after(through);
        }
        self.stored_through = Some(through);
        Ok(())
    }

    /// With a marker, reads once which spooled requests the store already holds and
    /// takes them out (not stored twice). False while the store cannot tell.
    fn skip_stored(&mut self, store: &BoxedStore, stats: &WriterStats) -> bool {
        if self.marker.is_none() {
            return true;
        }
        if let Err(e) = self.read_marker(store) {
            tracing::warn!(error = %e, "backlog spool: reading which spooled requests the store holds failed; trying again");
            self.unavailable(&e, stats);
            return false;
        }
        let through = self.stored_through.unwrap_or(0);
        let stored = self
            .requests
            .iter()
            .take_while(|r| r.id > 0 && r.id <= through)
            .count();
        if stored > 0 {
            tracing::warn!(
                requests = stored,
                "backlog spool: requests the store committed before the last stop (not stored again)"
            );
            stats
                .spool_already_stored
                .fetch_add(stored as u64, Ordering::Relaxed);
            self.remove_first(stored, stats);
        }
        true
    }

    /// Stores what the backlog holds, `flush_rows` at a time, until the store fails.
    ///
    /// Each request leaves the backlog the moment it is stored (or dropped as refused),
    /// so a transient failure part way through retries only what is not stored yet:
    /// every request is stored once and counted once (SQLite adds a row written twice).
    fn retry(&mut self, store: &mut BoxedStore, stats: &WriterStats, opts: &WriterOptions) {
        self.last_try = Instant::now();
        if !self.skip_stored(store, stats) {
            return;
        }
        while !self.requests.is_empty() {
            let mut take = 0;
            let mut rows = 0u64;
            while take < self.requests.len() && (take == 0 || rows < opts.flush_rows as u64) {
                rows += rows_of(&self.requests[take].windows);
                take += 1;
            }
            let (windows, markers) = self.windows_of(&self.requests[..take]);
            match store.ingest(&windows) {
                Ok(s) => {
                    record(stats, s, markers);
                    self.remove_first(take, stats);
                }
                Err(e) if e.is_transient() => {
                    self.unavailable(&e, stats);
                    return;
                }
                Err(e) => {
                    // Refused for what they are, not for the store being down: each
                    // request alone, and what still fails is dropped (it would block
                    // the backlog forever).
                    tracing::warn!(error = %e, "backlogged windows refused; retrying each request alone");
                    for _ in 0..take {
                        let (windows, markers) = self.windows_of(&self.requests[..1]);
                        match store.ingest(&windows) {
                            Ok(s) => record(stats, s, markers),
                            Err(e) if e.is_transient() => {
                                self.unavailable(&e, stats);
                                return;
                            }
                            Err(e) => {
                                let n = self.requests[0].windows.len();
                                stats
                                    .backlog_dropped_windows
                                    .fetch_add(n as u64, Ordering::Relaxed);
                                tracing::warn!(error = %e, windows = n, "dropping backlogged windows the store refuses");
                            }
                        }
                        self.remove_first(1, stats);
                    }
                }
            }
            stats.store_unavailable.store(0, Ordering::Relaxed);
        }
    }

    /// Notes that the store is still unavailable (`e` says why).
    fn unavailable(&mut self, e: &StoreError, stats: &WriterStats) {
        self.why = e.to_string();
        stats.store_unavailable.store(1, Ordering::Relaxed);
    }

    /// Takes the first `n` requests out (stored or dropped), their rows out of the
    /// counts, and from the spool the segments that hold nothing else.
    fn remove_first(&mut self, n: usize, stats: &WriterStats) {
        let done: Vec<Pending> = self.requests.drain(..n).collect();
        {
            let mut by = stats
                .backlog_by_target
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for w in done.iter().flat_map(|r| &r.windows) {
                if let Some(n) = by.get_mut(&w.target) {
                    *n = n.saturating_sub(rows_of(std::slice::from_ref(w)));
                    if *n == 0 {
                        by.remove(&w.target);
                    }
                }
            }
        }
        self.rows = self
            .rows
            .saturating_sub(done.iter().map(|r| rows_of(&r.windows)).sum::<u64>());
        self.bytes = self
            .bytes
            .saturating_sub(done.iter().map(|r| r.bytes).sum::<u64>());
        let last = done.iter().map(|r| r.id).max().unwrap_or(0);
        if let Some(spool) = &mut self.spool {
            if last > 0 {
                self.stored_through = self.stored_through.map(|t| t.max(last));
                spool.resolved_through(last, !self.requests.is_empty());
            }
        }
        self.publish(stats);
    }
}

/// Answers a request the store could not take because it is unavailable: kept in the
/// backlog (acknowledged) while there is room, refused when it is full.
fn backlog_or_refuse(
    req: WriteRequest,
    windows: Vec<IngestWindow>,
    why: &str,
    store: &BoxedStore,
    backlog: &mut Backlog,
    opts: &WriterOptions,
    stats: &WriterStats,
) {
    backlog.why = why.to_string();
    // A spooled request's id must be above the store's marker: refused (transient, not
    // acknowledged) while the marker cannot be read.
    let ack = match backlog.read_marker(store) {
        Ok(()) => backlog.push(windows, why, opts, stats),
        Err(e) => {
            stats.backlog_refused.fetch_add(1, Ordering::Relaxed);
            Err(WriteError::from(e))
        }
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
        Err(StoreError::Unavailable(backlog.why.clone()))
    } else {
        store.ingest(&windows)
    };
    match result {
        Ok(s) => {
            stats.store_unavailable.store(0, Ordering::Relaxed);
            record(stats, s, 0);
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
                backlog_or_refuse(req, w, &why, store, backlog, opts, stats);
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
            // Once the store turns out unavailable, the rest join the backlog untried.
            tracing::warn!(error = %e, requests = buffer.len(), "shared ingest transaction failed; retrying each request alone");
            let mut down: Option<String> = None;
            for (req, range) in buffer.drain(..).zip(ranges) {
                let result = match &down {
                    Some(why) => Err(StoreError::Unavailable(why.clone())),
                    None => store.ingest(&windows[range.clone()]),
                };
                match result {
                    Ok(s) => {
                        record(stats, s, 0);
                        let _ = req.ack.send(Ok(()));
                    }
                    Err(e) if e.is_transient() => {
                        stats.store_unavailable.store(1, Ordering::Relaxed);
                        let why = down.get_or_insert_with(|| e.to_string());
                        let w = windows[range].to_vec();
                        backlog_or_refuse(req, w, why, store, backlog, opts, stats);
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

/// Counts a commit of `s`, of which `markers` windows were spool markers.
fn record(stats: &WriterStats, s: stackwatch_store::IngestStats, markers: usize) {
    stats.rows.fetch_add(s.rows as u64, Ordering::Relaxed);
    stats
        .windows
        .fetch_add(s.windows.saturating_sub(markers) as u64, Ordering::Relaxed);
    stats.flushes.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackwatch_profile::Profile;
    use stackwatch_store::{
        BucketedStacks, Checkpoint, GroupedSeries, IngestStats, LabelKeys, ProfileReader,
        RetentionStats, Selector, SqliteStore, StoreOptions, TargetSeries,
    };
    use std::collections::VecDeque;

    /// What an ingest call of a [`Scripted`] store does.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        /// Stores the windows.
        Store,
        /// Fails as a store that is down.
        Transient,
        /// Refuses them for what they are.
        Permanent,
    }

    /// The script a [`Scripted`] store follows, and what it stored.
    #[derive(Default)]
    struct Script {
        /// The outcomes of the next ingest calls, in order.
        next: VecDeque<Outcome>,
        /// Once `next` is empty: down (transient failures) or up (stores).
        down: bool,
        /// How many times each (service, seq) was stored.
        stored: HashMap<(String, u64), u32>,
        /// Ingest calls made.
        calls: usize,
    }

    /// A SQLite store whose ingest calls follow a [`Script`], and which, like ClickHouse,
    /// refuses windows older than `raw_retention_s`.
    struct Scripted {
        inner: SqliteStore,
        script: Arc<Mutex<Script>>,
        raw_retention_s: i64,
    }

    impl ProfileReader for Scripted {
        fn checkpoints(&self, target: &Labels) -> Result<Vec<Checkpoint>, StoreError> {
            self.inner.checkpoints(target)
        }
        fn targets(&self) -> Result<Vec<Labels>, StoreError> {
            self.inner.targets()
        }
        fn profile(&self, sel: &Selector, from: i64, to: i64) -> Result<Profile, StoreError> {
            self.inner.profile(sel, from, to)
        }
        fn sample_label_sets(
            &self,
            selector: &Selector,
            from_s: i64,
            to_s: i64,
        ) -> Result<Vec<stackwatch_profile::SampleLabels>, StoreError> {
            self.inner.sample_label_sets(selector, from_s, to_s)
        }
        fn target_series(
            &self,
            sel: &Selector,
            from: i64,
            to: i64,
            step: i64,
        ) -> Result<Vec<TargetSeries>, StoreError> {
            self.inner.target_series(sel, from, to, step)
        }
        fn bucketed_stacks(
            &self,
            sel: &Selector,
            from: i64,
            to: i64,
            step: i64,
        ) -> Result<BucketedStacks, StoreError> {
            self.inner.bucketed_stacks(sel, from, to, step)
        }
        fn label_keys(&self) -> Result<LabelKeys, StoreError> {
            self.inner.label_keys()
        }
        fn label_values(&self, name: &str, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.label_values(name, limit)
        }
        fn grouped_series(
            &self,
            sel: &Selector,
            from: i64,
            to: i64,
            step: i64,
            group_by: &str,
            limit: usize,
        ) -> Result<Vec<GroupedSeries>, StoreError> {
            self.inner
                .grouped_series(sel, from, to, step, group_by, limit)
        }
    }

    impl ProfileWriter for Scripted {
        fn ingest(&mut self, windows: &[IngestWindow]) -> Result<IngestStats, StoreError> {
            let outcome = {
                let mut s = self.script.lock().unwrap();
                s.calls += 1;
                let down = s.down;
                s.next.pop_front().unwrap_or(if down {
                    Outcome::Transient
                } else {
                    Outcome::Store
                })
            };
            match outcome {
                Outcome::Transient => Err(StoreError::Unavailable("scripted: down".into())),
                Outcome::Permanent => Err(StoreError::Invalid("scripted: refused".into())),
                Outcome::Store => {
                    let stats = self.inner.ingest(windows)?;
                    let mut s = self.script.lock().unwrap();
                    for w in windows {
                        let Some(service) = w.target.get("service") else {
                            continue; // the spool's marker
                        };
                        *s.stored.entry((service.clone(), w.seq)).or_insert(0) += 1;
                    }
                    Ok(stats)
                }
            }
        }
        fn check_window(&self, window: &IngestWindow, now_s: i64) -> Result<(), StoreError> {
            if window.start_unix_s < now_s - self.raw_retention_s {
                return Err(StoreError::Invalid(format!(
                    "window {} is older than the raw retention",
                    window.seq
                )));
            }
            self.inner.check_window(window, now_s)
        }
        fn rollup(&mut self, now_s: i64) -> Result<bool, StoreError> {
            self.inner.rollup(now_s)
        }
        fn apply_retention(&mut self, now_s: i64) -> Result<RetentionStats, StoreError> {
            self.inner.apply_retention(now_s)
        }
    }

    /// A scripted store over a new SQLite file in `dir`, refusing windows older than
    /// an hour.
    fn scripted(dir: &std::path::Path, script: &Arc<Mutex<Script>>) -> BoxedStore {
        Box::new(Scripted {
            inner: SqliteStore::open(&dir.join("s.db"), StoreOptions::default()).unwrap(),
            script: script.clone(),
            raw_retention_s: 3600,
        })
    }

    /// One window of `service` (sequence `seq`, starting `age_s` ago): one stack, 7
    /// periods.
    fn window(service: &str, seq: u64, age_s: i64) -> IngestWindow {
        IngestWindow {
            target: [("service".to_string(), service.to_string())].into(),
            instance: "i".into(),
            seq,
            start_unix_s: now_s() - age_s,
            stacks: vec![("main;work".into(), 7)],
            labeled: Vec::new(),
            period_ns: 1,
        }
    }

    type Ack = oneshot::Receiver<Result<(), WriteError>>;

    fn request(service: &str, seq: u64) -> (WriteRequest, Ack) {
        let (ack, done) = oneshot::channel();
        let windows = vec![window(service, seq, 0)];
        (WriteRequest { windows, ack }, done)
    }

    fn options() -> WriterOptions {
        WriterOptions {
            flush_interval: Duration::from_millis(20),
            flush_rows: 1_000,
            max_buffered_rows: 1_000_000,
            maintenance: Arc::new(AtomicBool::new(false)),
            maintenance_store: None,
            spool: None,
        }
    }

    /// Item 3 of issue 24: a backlog retry that fails part way (a later request finds
    /// the store down again) used to send the requests already stored (or dropped)
    /// again: stored twice (SQLite adds), counted twice.
    #[test]
    fn a_backlog_retry_stores_and_counts_each_request_once() {
        let dir = tempfile::tempdir().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let mut store = scripted(dir.path(), &script);
        let (stats, opts, mut backlog) = (WriterStats::default(), options(), Backlog::default());
        // a finds the store down: kept in the backlog and acknowledged; b, c and d join
        // the backlog untried.
        script.lock().unwrap().next = [Outcome::Transient].into();
        let mut acks = Vec::new();
        for (service, seq) in [("a", 1), ("b", 1), ("c", 1), ("d", 1)] {
            let (req, ack) = request(service, seq);
            flush(&mut store, &mut vec![req], &stats, &mut backlog, &opts);
            acks.push(ack);
        }
        for mut ack in acks {
            assert!(matches!(ack.try_recv(), Ok(Ok(()))));
        }
        assert_eq!(stats.backlog_windows.load(Ordering::Relaxed), 4);
        // Back, but the batch is refused; alone, a is stored, b refused (dropped), and c
        // finds the store down again.
        script.lock().unwrap().next = [
            Outcome::Permanent,
            Outcome::Store,
            Outcome::Permanent,
            Outcome::Transient,
        ]
        .into();
        backlog.retry(&mut store, &stats, &opts);
        assert_eq!(
            stats.backlog_windows.load(Ordering::Relaxed),
            2,
            "c and d wait"
        );
        assert_eq!(stats.store_unavailable.load(Ordering::Relaxed), 1);
        // Back for good: only c and d are sent.
        backlog.retry(&mut store, &stats, &opts);
        let stored = script.lock().unwrap().stored.clone();
        let once: HashMap<(String, u64), u32> = [("a", 1), ("c", 1), ("d", 1)]
            .map(|(s, q)| ((s.to_string(), q), 1))
            .into();
        assert_eq!(
            stored, once,
            "each request stored once, the refused one never"
        );
        assert_eq!(stats.rows.load(Ordering::Relaxed), 3);
        assert_eq!(stats.windows.load(Ordering::Relaxed), 3);
        assert_eq!(stats.backlog_dropped_windows.load(Ordering::Relaxed), 1);
        assert_eq!(stats.backlog_rows.load(Ordering::Relaxed), 0);
        assert_eq!(stats.store_unavailable.load(Ordering::Relaxed), 0);
        assert!(stats.backlog_by_target.lock().unwrap().is_empty());
        let reader = SqliteStore::open_reader(&dir.path().join("s.db")).unwrap();
        let mut totals: Vec<(String, u64)> = reader
            .raw_totals()
            .unwrap()
            .into_iter()
            .map(|(l, n)| (l["service"].clone(), n))
            .collect();
        totals.sort();
        assert_eq!(
            totals,
            [("a", 7), ("c", 7), ("d", 7)].map(|(s, n)| (s.to_string(), n))
        );
    }

    /// A shared transaction that fails is retried request by request; once one finds
    /// the store down, the rest join the backlog untried, and each is stored once.
    #[test]
    fn a_failed_shared_transaction_stores_each_request_once() {
        let dir = tempfile::tempdir().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let mut store = scripted(dir.path(), &script);
        let (stats, opts, mut backlog) = (WriterStats::default(), options(), Backlog::default());
        script.lock().unwrap().next =
            [Outcome::Permanent, Outcome::Store, Outcome::Transient].into();
        let (reqs, acks): (Vec<WriteRequest>, Vec<Ack>) = [("a", 1), ("b", 1), ("c", 1)]
            .into_iter()
            .map(|(s, q)| request(s, q))
            .unzip();
        flush(
            &mut store,
            &mut reqs.into_iter().collect(),
            &stats,
            &mut backlog,
            &opts,
        );
        for mut ack in acks {
            assert!(matches!(ack.try_recv(), Ok(Ok(()))), "stored or backlogged");
        }
        assert_eq!(
            script.lock().unwrap().calls,
            3,
            "c joins the backlog untried"
        );
        assert_eq!(stats.backlog_windows.load(Ordering::Relaxed), 2);
        backlog.retry(&mut store, &stats, &opts);
        let stored = script.lock().unwrap().stored.clone();
        let once: HashMap<(String, u64), u32> = [("a", 1), ("b", 1), ("c", 1)]
            .map(|(s, q)| ((s.to_string(), q), 1))
            .into();
        assert_eq!(stored, once);
        assert_eq!(stats.rows.load(Ordering::Relaxed), 3);
        assert_eq!(stats.backlog_windows.load(Ordering::Relaxed), 0);
    }

    /// Item 3 of issue 24: a window older than the store keeps (ClickHouse: its raw
    /// retention) used to be acknowledged into the backlog while the store was down,
    /// then dropped when it came back. It is refused at once, as permanent.
    #[test]
    fn a_window_the_store_will_refuse_is_refused_before_it_is_backlogged() {
        let dir = tempfile::tempdir().unwrap();
        let script = Arc::new(Mutex::new(Script {
            down: true,
            ..Script::default()
        }));
        let (handle, thread) = spawn(scripted(dir.path(), &script), options());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let old = rt
            .block_on(handle.write(vec![window("old", 1, 2 * 3600)]))
            .unwrap_err();
        assert!(!old.is_transient(), "{old}");
        assert!(
            old.to_string().contains("older than the raw retention"),
            "{old}"
        );
        rt.block_on(handle.write(vec![window("fresh", 1, 0)]))
            .expect("kept in the backlog while the store is down");
        let stats = handle.stats.clone();
        assert_eq!(stats.backlog_windows.load(Ordering::Relaxed), 1);
        assert_eq!(stats.flush_errors.load(Ordering::Relaxed), 1);
        script.lock().unwrap().down = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats.backlog_windows.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "the backlog is never stored");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(handle);
        thread.join().unwrap();
        assert_eq!(stats.backlog_dropped_windows.load(Ordering::Relaxed), 0);
        let stored = script.lock().unwrap().stored.clone();
        assert_eq!(stored, [(("fresh".to_string(), 1), 1)].into());
    }

    fn marker() -> Labels {
        spool_marker()
    }

    /// Periods stored per service in the SQLite file `db`.
    fn totals(db: &std::path::Path) -> Vec<(String, u64)> {
        let reader = SqliteStore::open_reader(db).unwrap();
        let mut totals: Vec<(String, u64)> = reader
            .raw_totals()
            .unwrap()
            .into_iter()
            .filter_map(|(l, n)| Some((l.get("service")?.clone(), n)))
            .collect();
        totals.sort();
        totals
    }

    /// Issue 24: requests acknowledged into the backlog while the store is down are in
    /// the spool; the process dies after the store committed two of them but before the
    /// spool let go of them. The next writer replays the spool first, and stores the
    /// third once and the first two not again (SQLite adds a row written twice): the
    /// marker committed with them says they are stored.
    #[test]
    fn a_replayed_spool_stores_each_acknowledged_request_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("backlog");
        let script = Arc::new(Mutex::new(Script {
            down: true,
            ..Script::default()
        }));
        let mut store = scripted(dir.path(), &script);
        let (stats, opts) = (WriterStats::default(), options());
        let mut backlog = Backlog::default();
        backlog.recover(
            WriterSpool::open(&spool_dir, DEFAULT_MAX_SPOOL_BYTES, Some(marker())).unwrap(),
            &stats,
        );
        let mut acks = Vec::new();
        for service in ["a", "b", "c"] {
            let (req, ack) = request(service, 0);
            flush(&mut store, &mut vec![req], &stats, &mut backlog, &opts);
            acks.push(ack);
        }
        for mut ack in acks {
            assert!(matches!(ack.try_recv(), Ok(Ok(()))), "acknowledged");
        }
        assert_eq!(stats.spooled_rows.load(Ordering::Relaxed), 3);
        assert!(stats.spool_bytes.load(Ordering::Relaxed) > 0);
        // The store commits a and b (with their marker, as a retry does) ... and the
        // process dies before the spool hears of it.
        let (committed, markers) = backlog.windows_of(&backlog.requests[..2]);
        assert_eq!(markers, 1);
        script.lock().unwrap().next = [Outcome::Store].into();
        store.ingest(&committed).unwrap();
        drop(backlog);
        drop(store);
        // The next start: the store is up.
        script.lock().unwrap().down = false;
        let mut opts = options();
        opts.spool =
            Some(WriterSpool::open(&spool_dir, DEFAULT_MAX_SPOOL_BYTES, Some(marker())).unwrap());
        let (handle, thread) = spawn(scripted(dir.path(), &script), opts);
        let stats = handle.stats.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats.backlog_windows.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "the spool is never replayed");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(handle);
        thread.join().unwrap();
        assert_eq!(stats.spool_replayed.load(Ordering::Relaxed), 3);
        assert_eq!(stats.spool_already_stored.load(Ordering::Relaxed), 2);
        assert_eq!(stats.windows.load(Ordering::Relaxed), 1, "c alone");
        assert_eq!(
            totals(&dir.path().join("s.db")),
            [("a", 7), ("b", 7), ("c", 7)].map(|(s, n)| (s.to_string(), n))
        );
        assert_eq!(
            std::fs::read_dir(&spool_dir).unwrap().count(),
            0,
            "the spool is empty once everything is stored"
        );
        // And a later start finds nothing to replay.
        let again = WriterSpool::open(&spool_dir, DEFAULT_MAX_SPOOL_BYTES, Some(marker())).unwrap();
        assert!(again.recovered.requests.is_empty());
    }

    /// A marker ahead of this run's clock (the clock stepped back, or the data directory
    /// came from another host) must not cover the requests spooled in this run: each
    /// gets an id above it, so a replay stores it (it was taken for stored and dropped,
    /// acknowledged, before the marker was read ahead of the first id).
    #[test]
    fn a_marker_ahead_of_the_clock_does_not_swallow_new_requests() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("backlog");
        let script = Arc::new(Mutex::new(Script::default()));
        let mut store = scripted(dir.path(), &script);
        // An earlier run's marker, a day ahead of the clock's microseconds.
        let ahead = stackwatch_profile::clock::unix_ms().saturating_mul(1000) + 86_400_000_000;
        store
            .ingest(&[IngestWindow {
                target: marker(),
                instance: SPOOL_MARKER_INSTANCE.into(),
                seq: ahead,
                start_unix_s: now_s(),
                period_ns: 0,
                stacks: Vec::new(),
                labeled: Vec::new(),
            }])
            .unwrap();
        // This run: the store goes down, a request is acknowledged into the spool.
        script.lock().unwrap().down = true;
        let (stats, opts) = (WriterStats::default(), options());
        let mut backlog = Backlog::default();
        backlog.recover(
            WriterSpool::open(&spool_dir, DEFAULT_MAX_SPOOL_BYTES, Some(marker())).unwrap(),
            &stats,
        );
        let (req, mut ack) = request("a", 0);
        flush(&mut store, &mut vec![req], &stats, &mut backlog, &opts);
        assert!(matches!(ack.try_recv(), Ok(Ok(()))), "acknowledged");
        assert!(backlog.requests[0].id > ahead, "an id above the marker");
        drop(backlog);
        drop(store);
        // The next start, the store up: the request is replayed and stored.
        script.lock().unwrap().down = false;
        let mut opts = options();
        opts.spool =
            Some(WriterSpool::open(&spool_dir, DEFAULT_MAX_SPOOL_BYTES, Some(marker())).unwrap());
        let (handle, thread) = spawn(scripted(dir.path(), &script), opts);
        let stats = handle.stats.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats.backlog_windows.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "the spool is never replayed");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(handle);
        thread.join().unwrap();
        assert_eq!(stats.spool_already_stored.load(Ordering::Relaxed), 0);
        assert_eq!(totals(&dir.path().join("s.db")), [("a".to_string(), 7)]);
    }

    /// The spool's byte bound refuses (as transient) what would pass it, and nothing
    /// refused is in the spool.
    #[test]
    fn a_full_spool_refuses_as_transient() {
        let dir = tempfile::tempdir().unwrap();
        let script = Arc::new(Mutex::new(Script {
            down: true,
            ..Script::default()
        }));
        let mut store = scripted(dir.path(), &script);
        let (stats, opts) = (WriterStats::default(), options());
        let mut backlog = Backlog::default();
        let spool = WriterSpool::open(&dir.path().join("backlog"), 1, None).unwrap();
        backlog.recover(spool, &stats);
        let (a, mut a_ack) = request("a", 1);
        let (b, mut b_ack) = request("b", 1);
        flush(&mut store, &mut vec![a], &stats, &mut backlog, &opts);
        flush(&mut store, &mut vec![b], &stats, &mut backlog, &opts);
        assert!(
            matches!(a_ack.try_recv(), Ok(Ok(()))),
            "the first always fits"
        );
        let refused = b_ack.try_recv().unwrap().unwrap_err();
        assert!(refused.is_transient(), "{refused}");
        assert!(matches!(refused, WriteError::SpoolFull { .. }), "{refused}");
        drop(backlog);
        let again = WriterSpool::open(&dir.path().join("backlog"), 1, None).unwrap();
        let ids: Vec<String> = again
            .recovered
            .requests
            .iter()
            .flat_map(|r| &r.windows)
            .map(|w| w.target["service"].clone())
            .collect();
        assert_eq!(ids, ["a"]);
    }

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
