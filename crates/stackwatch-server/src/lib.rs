//! The stackwatch collector (`stackwatch server`): scrapes targets into the store and
//! serves the HTTP API.
//!
//! - [`config`][crate::config]: `stackwatch.toml`.
//! - [`scrape`][crate::scrape]: the scrape loop and per-target health.
//! - [`writer`][crate::writer]: the single store writer with size-or-time batching;
//!   [`backlog_spool`][crate::backlog_spool] its backlog on disk while the store is down.
//! - [`api`][crate::api]: the HTTP routes; [`views`][crate::views] the query routes (a
//!   module each: profile, diff, timeseries, top, sandwich, changes, labels);
//!   [`request`][crate::request] their parameters as extractors; [`query`][crate::query]
//!   the one way they read the store; [`scope`][crate::scope] what each request's token
//!   may read; [`state`][crate::state] what the routes share (and the query slots).
//! - [`data_dir`][crate::data_dir]: the data directory and its lock.
//! - [`membership`][crate::membership]: which collector scrapes which target when
//!   several share a ClickHouse store.
//! - [`verdict`][crate::verdict]: which functions changed significantly between two
//!   selections.
//! - [`push`][crate::push]: push ingest (Pyroscope SDKs, OTLP profiles) and what every
//!   push passes; [`profile_type`][crate::profile_type] what a stored count measures.

pub mod api;
pub mod backlog_spool;
pub mod config;
pub mod data_dir;
pub mod membership;
pub mod profile_type;
pub mod push;
pub mod query;
pub mod request;
pub mod scope;
pub mod scrape;
pub mod state;
pub mod verdict;
pub mod views;
pub mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackwatch_http::{ServeOptions, ServeStats};
use stackwatch_store::{open_writer, Readers, StoreConfig};
use thiserror::Error;
use tokio::task::JoinHandle;

pub use config::Config;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The data directory could not be created or locked.
    #[error(transparent)]
    DataDir(#[from] data_dir::DataDirError),
    /// The configuration names something unusable (a password file, say).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store could not be opened. The store's error is in the message and is not a
    /// `source`, so an error chain (anyhow's `{:#}`) prints it once.
    #[error("opening the store: {0}")]
    Store(stackwatch_store::StoreError),
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error (in the message, not a `source`: an error chain prints it once).
        cause: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    /// The writer's backlog spool could not be opened or locked.
    #[error(transparent)]
    Spool(#[from] backlog_spool::SpoolError),
}

impl From<stackwatch_store::StoreError> for ServerError {
    fn from(e: stackwatch_store::StoreError) -> Self {
        ServerError::Store(e)
    }
}

/// Path of the SQLite file inside a data directory.
pub fn db_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("stackwatch.db")
}

/// A bound, not yet running server (so callers learn the address before it runs).
pub struct Server {
    cfg: Config,
    store: StoreConfig,
    listener: tokio::net::TcpListener,
    lock: Option<data_dir::DataDirLock>,
    spool: writer::WriterSpool,
    read_access: config::ReadAccess,
    /// The push tokens, `(token, tenant)`, checked at bind.
    push_tokens: Vec<(String, String)>,
}

/// The directory of the writer's backlog spool: `<data_dir>/backlog` beside the SQLite
/// file (its collector holds the data directory), or, over a shared store, where several
/// collectors may share one host and `data_dir`, `<data_dir>/backlog/<collector id>`.
pub fn spool_dir(cfg: &Config, store: &StoreConfig) -> PathBuf {
    let dir = cfg.data_dir.join("backlog");
    if !store.is_shared() {
        return dir;
    }
    let id: String = cfg
        .collector_id()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(id.trim_start_matches('.'))
}

impl Server {
    /// Opens the store and binds the listen address.
    ///
    /// Fails before anything listens if the data directory is another collector's
    /// (locked), or the store cannot be reached or written.
    pub async fn bind(cfg: Config) -> Result<Server, ServerError> {
        let store = cfg.store_config()?;
        let read_access = cfg.read_access()?;
        // Checked before anything is locked, created or listening.
        let push_tokens = if cfg.push.enabled {
            cfg.push_tokens(&read_access)?
        } else {
            Vec::new()
        };
        // The embedded store has one collector, which locks its directory; a shared
        // store has any number, which split the targets (see membership).
        let lock = if store.is_shared() {
            None
        } else {
            Some(data_dir::DataDirLock::acquire(&cfg.data_dir)?)
        };
        // Create the schema now, so readers can open it; this also proves the store
        // can be reached and written.
        drop(open_writer(&store)?);
        tracing::info!(store = %store.describe(), "store opened");
        // The spool is read (and locked) before anything listens: what it holds was
        // acknowledged, and is stored before anything new. SQLite sums a row written
        // twice, so it gets a marker (see WriterSpool::open); ClickHouse's rows written
        // twice count once.
        let marker = (!store.is_shared()).then(writer::spool_marker);
        let spool = writer::WriterSpool::open(
            &spool_dir(&cfg, &store),
            cfg.store.max_backlog_bytes,
            marker,
        )?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|cause| ServerError::Bind {
                addr: cfg.listen,
                cause,
            })?;
        if cfg.storage.flush_interval >= cfg.scrape.interval {
            tracing::warn!(
                flush_interval = ?cfg.storage.flush_interval,
                interval = ?cfg.scrape.interval,
                "storage.flush_interval is not below scrape.interval: every scrape waits for a flush, so scrapes fall behind their schedule; set flush_interval below the interval"
            );
        }
        if !cfg.listen.ip().is_loopback()
            && cfg.bearer_token.is_none()
            && cfg.read_tokens.is_empty()
        {
            tracing::warn!(
                listen = %cfg.listen,
                "listening beyond loopback without a bearer_token: anyone who can reach this address can read every profile (see docs/operations.md)"
            );
        }
        Ok(Server {
            cfg,
            store,
            listener,
            lock,
            spool,
            read_access,
            push_tokens,
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
        let local_addr = self.local_addr();
        let cfg = self.cfg;
        let store_cfg = self.store;
        let _lock = self.lock;
        let spool = self.spool;
        let read_access = self.read_access;
        let push_tokens = self.push_tokens;
        let store = open_writer(&store_cfg)?;
        let members = membership::Membership::new(
            cfg.collector_id(),
            local_addr.to_string(),
            store_cfg.is_shared(),
        );
        let stop_beats = Arc::new(AtomicBool::new(false));
        // A server with no targets is a pure query node: it takes no share of the
        // targets (it would never scrape them) and no maintenance.
        let scrapes = !cfg.targets.is_empty() || !cfg.target_files.is_empty();
        if store_cfg.is_shared() && !scrapes {
            members
                .maintenance
                .store(false, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("no targets configured: a query node for the shared store");
        }
        let beats = if store_cfg.is_shared() && scrapes {
            let (m, s, stop) = (
                members.clone(),
                open_writer(&store_cfg)?,
                stop_beats.clone(),
            );
            let interval = cfg.scrape.interval;
            tracing::info!(collector = %members.id(), "sharing the store with other collectors: targets are split by rendezvous hashing");
            Some(
                std::thread::Builder::new()
                    .name("stackwatch-membership".into())
                    .spawn(move || membership::run(m, s, interval, stop))
                    .map_err(ServerError::Http)?,
            )
        } else {
            None
        };
        let (writer, writer_thread) = writer::spawn(
            store,
            writer::WriterOptions {
                flush_interval: cfg.storage.flush_interval,
                flush_rows: cfg.storage.flush_rows,
                max_buffered_rows: cfg.store.max_buffered_rows,
                maintenance: members.maintenance.clone(),
                maintenance_store: if store_cfg.is_shared() {
                    Some(open_writer(&store_cfg)?)
                } else {
                    None
                },
                spool: Some(spool),
            },
        );
        let readers = Readers::open(&store_cfg)?;
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
            readers: readers.clone(),
            base_dir: cfg.base_dir.clone(),
        };
        let writer_stats = writer.stats.clone();
        let manager = tokio::spawn(manage_targets(cfg.clone(), ctx, members.clone()));
        let http_stats = Arc::new(ServeStats::default());
        let serve_opts = ServeOptions {
            header_read_timeout: cfg.http.header_read_timeout,
            max_connections: cfg.http.max_connections,
            ..ServeOptions::default()
        };
        let push_state = if cfg.push.enabled {
            if !cfg.listen.ip().is_loopback() && cfg.push.allow_anonymous {
                tracing::warn!(listen = %cfg.listen, "push.allow_anonymous beyond loopback: anyone who can reach this address can push profiles");
            }
            Some(push::PushState {
                gate: Arc::new(push::gate::PushGate::new(cfg.push.clone(), push_tokens)),
                writer: writer.clone(),
                stack_budget: cfg.scrape.stack_budget(),
                label_budget: cfg.scrape.label_budget(),
                max_amount_per_push: cfg.push.max_amount_per_push,
                decode_slots: Arc::new(push::decode_slots::DecodeSlots::new(
                    cfg.push.max_concurrent_decodes,
                    cfg.push.max_queued_decodes,
                )),
            })
        } else {
            None
        };
        let state = state::ApiState::new(
            cfg.clone(),
            health,
            writer_stats,
            readers,
            http_stats.clone(),
            members,
            push_state.as_ref().map(|p| p.gate.clone()),
            &read_access,
        );
        let app = api::router(state).merge(
            push::router(push_state).layer(axum::middleware::from_fn(api::refuse_browser_pushes)),
        );
        stackwatch_http::serve(self.listener, app, serve_opts, http_stats, shutdown).await;
        // Stop scraping; the writer flushes and exits once every handle is gone.
        manager.abort();
        let _ = manager.await;
        drop(writer);
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        stop_beats.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = beats {
            let _ = tokio::task::spawn_blocking(move || b.join()).await;
        }
        Ok(())
    }
}

/// Keeps one scrape task per target this collector owns, re-reading target files when
/// they change and ownership whenever membership does.
async fn manage_targets(
    cfg: Config,
    ctx: scrape::ScrapeContext,
    members: Arc<membership::Membership>,
) {
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
    let mut owners: Vec<String> = Vec::new();
    let mut all: Vec<config::TargetConfig> = Vec::new();
    let mut first = true;
    let (beat, _) = membership::timing(cfg.scrape.interval);
    loop {
        let now = cfg.target_files_stamp();
        let live: Vec<String> = members.live().into_iter().map(|c| c.id).collect();
        let files_changed = stamp.as_ref() != Some(&now);
        if files_changed || live != owners {
            if files_changed {
                stamp = Some(now);
                let (targets, errors) = cfg.all_targets();
                for e in errors {
                    tracing::warn!(error = %e, "target file");
                }
                all = targets;
            }
            owners = live;
            let wanted: HashMap<String, config::TargetConfig> = all
                .iter()
                .map(|t| (scrape::target_key(t), t.clone()))
                .filter(|(k, _)| members.owns(k))
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
                    // At startup targets spread over the interval; one taken over (or
                    // added) later is scraped at once, so a hand-off loses no time.
                    slot.insert(tokio::spawn(scrape::run_target(ctx.clone(), t, !first)));
                }
            }
            first = false;
        }
        tokio::time::sleep(beat.min(Duration::from_secs(5))).await;
    }
}
