//! The stackwatch collector (`stackwatch server`): scrapes targets into the store and
//! serves the HTTP API.
//!
//! - [`config`][crate::config]: `stackwatch.toml`.
//! - [`scrape`][crate::scrape]: the scrape loop and per-target health.
//! - [`writer`][crate::writer]: the single store writer with size-or-time batching.
//! - [`api`][crate::api]: the HTTP routes; [`query`][crate::query] the query routes;
//!   [`state`][crate::state] what the routes share (and the query slots);
//!   [`analysis`][crate::analysis] CPU in cores, top functions, sandwich, changes.
//! - [`data_dir`][crate::data_dir]: the data directory and its lock.
//! - [`verdict`][crate::verdict]: which functions changed significantly between two
//!   selections.

pub mod analysis;
pub mod api;
pub mod config;
pub mod data_dir;
pub mod query;
pub mod scrape;
pub mod state;
pub mod verdict;
pub mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackwatch_http::{ServeOptions, ServeStats};
use stackwatch_store::{ReaderOptions, ReaderPool, SqliteStore, StoreOptions};
use thiserror::Error;
use tokio::task::JoinHandle;

pub use config::Config;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The data directory could not be created or locked.
    #[error(transparent)]
    DataDir(#[from] data_dir::DataDirError),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] stackwatch_store::StoreError),
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// Path of the SQLite file inside a data directory.
pub fn db_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("stackwatch.db")
}

/// A bound, not yet running server (so callers learn the address before it runs).
pub struct Server {
    cfg: Config,
    listener: tokio::net::TcpListener,
    lock: data_dir::DataDirLock,
}

impl Server {
    /// Opens the store and binds the listen address.
    ///
    /// Fails before anything listens if the data directory is another collector's
    /// (locked), or the store cannot be written.
    pub async fn bind(cfg: Config) -> Result<Server, ServerError> {
        let lock = data_dir::DataDirLock::acquire(&cfg.data_dir)?;
        // Create the schema now, so readers can open the file; this also proves the
        // store can be written.
        drop(SqliteStore::open(
            &db_path(&cfg.data_dir),
            store_options(&cfg),
        )?);
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        if cfg.storage.flush_interval >= cfg.scrape.interval {
            tracing::warn!(
                flush_interval = ?cfg.storage.flush_interval,
                interval = ?cfg.scrape.interval,
                "storage.flush_interval is not below scrape.interval: every scrape waits for a flush, so scrapes fall behind their schedule; set flush_interval below the interval"
            );
        }
        if !cfg.listen.ip().is_loopback() && cfg.bearer_token.is_none() {
            tracing::warn!(
                listen = %cfg.listen,
                "listening beyond loopback without a bearer_token: anyone who can reach this address can read every profile (see docs/operations.md)"
            );
        }
        Ok(Server {
            cfg,
            listener,
            lock,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.cfg.listen)
    }

    /// Scrapes and serves until `shutdown` resolves; then stops scraping, flushes what is
    /// buffered and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let cfg = self.cfg;
        let _lock = self.lock;
        let db = db_path(&cfg.data_dir);
        let store = SqliteStore::open(&db, store_options(&cfg))?;
        let (writer, writer_thread) = writer::spawn(
            store,
            writer::WriterOptions {
                flush_interval: cfg.storage.flush_interval,
                flush_rows: cfg.storage.flush_rows,
            },
        );
        let health: scrape::HealthMap = Arc::new(Mutex::new(Default::default()));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.scrape.concurrency)
            .connect_timeout(cfg.scrape.timeout)
            .build()
            .map_err(|e| ServerError::Http(std::io::Error::other(e)))?;
        let ctx = scrape::ScrapeContext {
            client,
            cfg: cfg.scrape.clone(),
            permits: Arc::new(tokio::sync::Semaphore::new(cfg.scrape.concurrency)),
            writer: writer.clone(),
            health: health.clone(),
            db_path: db.clone(),
            base_dir: cfg.base_dir.clone(),
        };
        let writer_stats = writer.stats.clone();
        let manager = tokio::spawn(manage_targets(cfg.clone(), ctx));
        let readers = ReaderPool::new(
            db,
            ReaderOptions {
                cache_kib: (cfg.query.cache_bytes / 1024).clamp(64, u32::MAX as usize) as u32,
                max_answer_stacks: cfg.query.max_answer_stacks,
            },
            cfg.query.max_concurrent,
        );
        let http_stats = Arc::new(ServeStats::default());
        let serve_opts = ServeOptions {
            header_read_timeout: cfg.http.header_read_timeout,
            max_connections: cfg.http.max_connections,
            ..ServeOptions::default()
        };
        let state = state::ApiState::new(
            cfg.clone(),
            health,
            writer_stats,
            readers,
            http_stats.clone(),
        );
        let app = api::router(state);
        stackwatch_http::serve(self.listener, app, serve_opts, http_stats, shutdown).await;
        // Stop scraping; the writer flushes and exits once every handle is gone.
        manager.abort();
        let _ = manager.await;
        drop(writer);
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        Ok(())
    }
}

fn store_options(cfg: &Config) -> StoreOptions {
    StoreOptions {
        raw_retention: cfg.storage.raw_retention.min(cfg.storage.retention),
        minute_retention: cfg.storage.retention,
        retention: cfg.storage.retention,
    }
}

/// Keeps one scrape task per target, re-reading target files when they change.
async fn manage_targets(cfg: Config, ctx: scrape::ScrapeContext) {
    struct Running(HashMap<String, JoinHandle<()>>);
    impl Drop for Running {
        fn drop(&mut self) {
            for (_, t) in self.0.drain() {
                t.abort();
            }
        }
    }
    let mut running = Running(HashMap::new());
    let mut stamp = None;
    loop {
        let now = cfg.target_files_stamp();
        if stamp.as_ref() != Some(&now) {
            stamp = Some(now);
            let (targets, errors) = cfg.all_targets();
            for e in errors {
                tracing::warn!(error = %e, "target file");
            }
            let wanted: HashMap<String, config::TargetConfig> = targets
                .into_iter()
                .map(|t| (scrape::target_key(&t), t))
                .collect();
            running.0.retain(|k, task| {
                let keep = wanted.contains_key(k);
                if !keep {
                    task.abort();
                    ctx.health
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(k);
                }
                keep
            });
            for (k, t) in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.0.entry(k) {
                    tracing::info!(url = %t.url, "scraping target");
                    slot.insert(tokio::spawn(scrape::run_target(ctx.clone(), t)));
                }
            }
        }
        tokio::time::sleep(cfg.scrape.interval.min(Duration::from_secs(5))).await;
    }
}
