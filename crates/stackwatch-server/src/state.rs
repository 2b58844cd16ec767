//! [`ApiState`]: what every route shares (configuration, target health, the store's
//! readers and writer counters, the query slots), so the route modules depend on this
//! one and not on each other.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use stackwatch_http::ServeStats;
use stackwatch_store::Readers;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ReadAccess;
use crate::membership::Membership;
use crate::scope::{HoldsReadTokens, ReadTokens};
use crate::scrape::HealthMap;
use crate::writer::WriterStats;
use crate::Config;

/// Shared state of the routes.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) cfg: Arc<Config>,
    pub(crate) health: HealthMap,
    pub(crate) writer: Arc<WriterStats>,
    pub(crate) readers: Readers,
    pub(crate) slots: Arc<QuerySlots>,
    pub(crate) http: Arc<ServeStats>,
    pub(crate) members: Arc<Membership>,
    pub(crate) push: Option<Arc<crate::push::gate::PushGate>>,
    pub(crate) read_tokens: ReadTokens,
}

impl ApiState {
    /// Shared state of the routes; `read` says which tokens read what
    /// ([`Config::read_access`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Config,
        health: HealthMap,
        writer: Arc<WriterStats>,
        readers: Readers,
        http: Arc<ServeStats>,
        members: Arc<Membership>,
        push: Option<Arc<crate::push::gate::PushGate>>,
        read: &ReadAccess,
    ) -> Self {
        let slots = Arc::new(QuerySlots::new(&cfg));
        ApiState {
            cfg: Arc::new(cfg),
            health,
            writer,
            readers,
            slots,
            http,
            members,
            push,
            read_tokens: ReadTokens::new(read),
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

/// A query's work, run on a query thread.
type Job = Box<dyn FnOnce() + Send>;

/// Admission of queries: `query.max_concurrent` run, `query.max_queued` wait up to
/// `query.queue_timeout`, the rest are shed at once.
///
/// Admitted queries run on `max_concurrent` threads of their own, not on the runtime's
/// blocking pool: the allocator then keeps one arena per query thread instead of one
/// per pool thread a burst happened to touch, and after each query the thread hands
/// its freed memory back to the system, so a burst's memory does not outlive it.
pub struct QuerySlots {
    running: Arc<Semaphore>,
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
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
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..cfg.query.max_concurrent {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("stackwatch-query-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return, // the server is gone
                        };
                        // A panicking query answers 503 (its sender is dropped) and the
                        // thread lives on for the next one.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        release_freed_memory();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a query thread");
            }
        }
        QuerySlots {
            jobs: std::sync::Mutex::new(tx),
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

    /// Runs `f` on a query thread (call with a [`QuerySlot`] held, so one is free).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, QueryThreadGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| QueryThreadGone)?;
        rx.await.map_err(|_| QueryThreadGone)
    }

    /// Queries waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// The query threads stopped (or one panicked) before answering.
#[derive(Debug, thiserror::Error)]
#[error("the query thread stopped before answering")]
pub struct QueryThreadGone;

/// How much lower than the rest of the collector query threads run (a nice value):
/// when queries and scrapes compete for the CPU, the scheduler serves the scrape loop
/// and the writer first.
const QUERY_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority by [`QUERY_NICE`] (Linux: a nice
/// value is per thread). Failure only costs the preference; it is logged once.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        // SAFETY: setpriority takes plain integers; on Linux PRIO_PROCESS with a thread
        // id sets that thread's nice value, here our own thread's.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, QUERY_NICE) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the query thread's priority");
        }
    }
}

/// Returns the memory a query freed to the system (glibc keeps it in its arenas
/// otherwise, and RSS stays at the burst's peak).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and may be called at any time by any
    // thread; it only returns free pages of the allocator's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl HoldsReadTokens for ApiState {
    fn read_tokens(&self) -> &ReadTokens {
        &self.read_tokens
    }
}
