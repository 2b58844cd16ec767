//! [`ApiState`]: what every route shares (configuration, target health, the store's
//! readers and writer counters, the query slots), so the route modules depend on this
//! one and not on each other.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use stackwatch_http::ServeStats;
use stackwatch_store::ReaderPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::scrape::HealthMap;
use crate::writer::WriterStats;
use crate::Config;

/// Shared state of the routes.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) cfg: Arc<Config>,
    pub(crate) health: HealthMap,
    pub(crate) writer: Arc<WriterStats>,
    pub(crate) readers: ReaderPool,
    pub(crate) slots: Arc<QuerySlots>,
    pub(crate) http: Arc<ServeStats>,
}

impl ApiState {
    /// Shared state of the routes.
    pub fn new(
        cfg: Config,
        health: HealthMap,
        writer: Arc<WriterStats>,
        readers: ReaderPool,
        http: Arc<ServeStats>,
    ) -> Self {
        let slots = Arc::new(QuerySlots::new(&cfg));
        ApiState {
            cfg: Arc::new(cfg),
            health,
            writer,
            readers,
            slots,
            http,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

/// Why a query was not run: the collector sheds load rather than queue without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// `query.max_queued` queries were already waiting.
    QueueFull,
    /// No slot freed up within `query.queue_timeout`.
    QueueTimeout,
}

impl Shed {
    /// The reason as shown to clients and in `/metrics`.
    pub fn reason(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::QueueTimeout => "queue_timeout",
        }
    }
}

/// Admission of queries: `query.max_concurrent` run, `query.max_queued` wait up to
/// `query.queue_timeout`, the rest are shed at once.
pub struct QuerySlots {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queued: usize,
    queue_timeout: std::time::Duration,
    /// Counters for `/metrics`.
    pub stats: QueryStats,
}

/// Query counters.
#[derive(Debug, Default)]
pub struct QueryStats {
    /// Queries admitted.
    pub admitted: AtomicU64,
    /// Queries running now.
    pub in_flight: AtomicU64,
    /// Shed because the queue was full.
    pub shed_queue_full: AtomicU64,
    /// Shed after waiting `queue_timeout`.
    pub shed_queue_timeout: AtomicU64,
    /// Stopped at `query.timeout`.
    pub timed_out: AtomicU64,
    /// Stopped because the client went away.
    pub abandoned: AtomicU64,
    /// Refused with a 400 for exceeding a selector budget.
    pub selector_refused: AtomicU64,
    /// Time spent running queries, µs.
    pub micros: AtomicU64,
}

/// A running query's slot; frees it when dropped.
pub struct QuerySlot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<QuerySlots>,
    started: std::time::Instant,
}

impl Drop for QuerySlot {
    fn drop(&mut self) {
        let s = &self.slots.stats;
        s.in_flight.fetch_sub(1, Ordering::Relaxed);
        s.micros
            .fetch_add(self.started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

impl QuerySlots {
    fn new(cfg: &Config) -> Self {
        QuerySlots {
            running: Arc::new(Semaphore::new(cfg.query.max_concurrent)),
            waiting: AtomicUsize::new(0),
            max_queued: cfg.query.max_queued,
            queue_timeout: cfg.query.queue_timeout,
            stats: QueryStats::default(),
        }
    }

    /// A slot, or why there is none.
    pub async fn acquire(self: &Arc<Self>) -> Result<QuerySlot, Shed> {
        let permit = match self.running.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    self.stats.shed_queue_full.fetch_add(1, Ordering::Relaxed);
                    return Err(Shed::QueueFull);
                }
                let waited =
                    tokio::time::timeout(self.queue_timeout, self.running.clone().acquire_owned())
                        .await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                match waited {
                    Ok(Ok(p)) => p,
                    _ => {
                        self.stats
                            .shed_queue_timeout
                            .fetch_add(1, Ordering::Relaxed);
                        return Err(Shed::QueueTimeout);
                    }
                }
            }
        };
        self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(QuerySlot {
            _permit: permit,
            slots: self.clone(),
            started: std::time::Instant::now(),
        })
    }

    /// Queries waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}
