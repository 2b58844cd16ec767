//! The stackwatch collector (`stackwatch server`): scrapes targets into the store and
//! serves the HTTP API.
//!
//! - [`config`][crate::config]: `stackwatch.toml`.
//! - [`scrape`][crate::scrape]: the scrape loop and per-target health.
//! - [`writer`][crate::writer]: the single store writer with size-or-time batching.
//! - [`api`][crate::api]: the HTTP routes.

pub mod api;
pub mod config;
pub mod query;
pub mod scrape;
pub mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackwatch_store::{SqliteStore, StoreOptions};
use thiserror::Error;
use tokio::task::JoinHandle;

pub use config::Config;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
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
}

impl Server {
    /// Opens the store and binds the listen address.
    pub async fn bind(cfg: Config) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ServerError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        // Create the schema now, so readers can open the file.
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
        Ok(Server { cfg, listener })
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
        };
        let manager = tokio::spawn(manage_targets(cfg.clone(), ctx));
        let state = api::ApiState::new(cfg.clone(), health, writer);
        let app = api::router(state);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServerError::Http);
        // Stop scraping; the writer flushes and exits once every handle is gone.
        manager.abort();
        let _ = manager.await;
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        served
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
