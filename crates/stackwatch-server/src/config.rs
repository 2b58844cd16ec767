//! `stackwatch.toml`: the collector's configuration (docs/configuration.md lists every key).
//!
//! Parsed by the `toml` crate with serde, unknown keys refused, so a typo is an error
//! naming the key and its line rather than a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// TOML syntax or a key of the wrong type or name (the message names key and line).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What toml said, with the line and the key.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
}

/// How a target is scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The stackwatch window protocol (`GET <url>/windows?after=SEQ`): lossless.
    #[default]
    Stackwatch,
    /// A Go-style `/debug/pprof/profile?seconds=N` endpoint.
    Pprof,
    /// A plain folded-text endpoint.
    Folded,
}

/// How counts on a folded endpoint behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FoldedCounts {
    /// Counts grow since the process started (stackwatch's `/`, pprof-rs); the
    /// collector stores the difference between two scrapes.
    #[default]
    Cumulative,
    /// Every read returns only what happened since the previous read (nylas-perftools).
    Delta,
}

/// One scrape target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Base URL (stackwatch) or full endpoint URL (pprof, folded).
    pub url: String,
    /// Protocol; default `stackwatch`.
    #[serde(default)]
    pub kind: TargetKind,
    /// Labels (`service`, `instance`, `version`, anything).
    #[serde(default)]
    pub labels: stackwatch_store::Labels,
    /// For `folded` targets: cumulative (default) or delta counts.
    #[serde(default)]
    pub folded_counts: FoldedCounts,
    /// Sent as `Authorization: Bearer <token>` (a worker started with a token).
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Read the token from this file instead (relative to the config file; trailing
    /// whitespace ignored), so it stays out of the config.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

impl TargetConfig {
    /// The token to send, from `bearer_token` or `bearer_token_file` (read each time,
    /// so a rotated file is picked up).
    pub fn token(&self, base_dir: &Path) -> Result<Option<String>, std::io::Error> {
        if let Some(t) = &self.bearer_token {
            return Ok(Some(t.clone()));
        }
        match &self.bearer_token_file {
            Some(f) => Ok(Some(
                std::fs::read_to_string(base_dir.join(f))?
                    .trim_end()
                    .to_owned(),
            )),
            None => Ok(None),
        }
    }
}

/// A file pattern of target files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFileConfig {
    /// Glob pattern, relative to the config file's directory.
    pub path: String,
}

/// The content of a target file: the same `[[targets]]` tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// Targets.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

/// `[scrape]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    /// Time between scrapes of one target (default 10 s).
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Limit for one scrape (default 5 s); pprof targets get `pprof_seconds` more.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Scrapes in flight at once (default 64).
    pub concurrency: usize,
    /// Largest response accepted (default 64 MiB).
    pub max_body_bytes: usize,
    /// Length of the profile asked from pprof targets (default: the interval, at most 60 s).
    #[serde(deserialize_with = "opt_duration")]
    pub pprof_seconds: Option<Duration>,
    /// Frames kept per stack; deeper stacks keep their root side and end in
    /// `[truncated]` (default 512).
    pub max_stack_depth: usize,
    /// Distinct stacks kept per window (pprof and folded: per scrape); the rarest fold
    /// into `[pruned]`, totals exact (default 50 000).
    pub max_stacks_per_window: usize,
    /// Bytes of stack text one scrape may decode into (default 64 MiB); more fails the
    /// scrape.
    pub max_decoded_bytes: usize,
    /// Periods one window may carry (default 2^32); more fails the scrape.
    pub max_samples_per_window: u64,
    /// (window, label set, stack) rows stored per scrape of one target (default
    /// 200 000); a stackwatch target's remaining windows wait for the next scrape,
    /// nothing is lost.
    pub max_rows_per_scrape: usize,
    /// Distinct sample label sets kept per window (pprof: per scrape); the lightest
    /// fold into one `[labels pruned]` set, totals exact (default 256).
    pub max_label_sets_per_window: usize,
    /// Label pairs kept per sample label set, first by key order (default 16).
    pub max_label_pairs: usize,
    /// Bytes of a sample label key; longer keys are cut (default 64).
    pub max_label_key_bytes: usize,
    /// Bytes of a sample label value; longer values are cut (default 256).
    pub max_label_value_bytes: usize,
}

impl ScrapeConfig {
    /// The stack budget of one window or scrape.
    pub fn stack_budget(&self) -> stackwatch_profile::StackBudget {
        stackwatch_profile::StackBudget {
            max_depth: self.max_stack_depth,
            max_stacks: self.max_stacks_per_window,
            max_decoded_bytes: self.max_decoded_bytes,
            max_samples: self.max_samples_per_window,
        }
    }

    /// The sample label budget of one window or scrape.
    pub fn label_budget(&self) -> stackwatch_profile::LabelBudget {
        stackwatch_profile::LabelBudget {
            max_sets_per_window: self.max_label_sets_per_window,
            max_pairs: self.max_label_pairs,
            max_key_bytes: self.max_label_key_bytes,
            max_value_bytes: self.max_label_value_bytes,
        }
    }
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            concurrency: 64,
            max_body_bytes: 64 << 20,
            pprof_seconds: None,
            max_stack_depth: 512,
            max_stacks_per_window: 50_000,
            max_decoded_bytes: 64 << 20,
            max_samples_per_window: 1 << 32,
            max_rows_per_scrape: 200_000,
            max_label_sets_per_window: 256,
            max_label_pairs: 16,
            max_label_key_bytes: 64,
            max_label_value_bytes: 256,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Everything older is deleted (default 14 days).
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// Raw windows are kept this long; older ranges are answered from rollups (default 2 days).
    #[serde(deserialize_with = "duration")]
    pub raw_retention: Duration,
    /// Buffered rows are written at least this often (default 1 s).
    #[serde(deserialize_with = "duration")]
    pub flush_interval: Duration,
    /// ... or as soon as this many rows are buffered (default 50 000).
    pub flush_rows: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            retention: Duration::from_secs(14 * 86_400),
            raw_retention: Duration::from_secs(2 * 86_400),
            flush_interval: Duration::from_secs(1),
            flush_rows: 50_000,
        }
    }
}

/// Which store backend `[store] kind` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One SQLite file in `data_dir` (the default).
    #[default]
    Sqlite,
    /// ClickHouse over its HTTP interface, shared by several collectors.
    Clickhouse,
}

/// `[store]`: where profiles are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite` (default) or `clickhouse`.
    pub kind: StoreKind,
    /// ClickHouse's HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: Option<String>,
    /// ClickHouse database (must exist; default `stackwatch`).
    pub database: String,
    /// ClickHouse user (default `default`).
    pub user: String,
    /// ClickHouse password.
    pub password: Option<String>,
    /// File holding the ClickHouse password (relative to the config file).
    pub password_file: Option<PathBuf>,
    /// ClickHouse cluster (`remote_servers`): `Distributed` tables over per-shard ones.
    pub cluster: Option<String>,
    /// With `cluster`: every shard's HTTP URL (tables are created node by node).
    pub shard_urls: Vec<String>,
    /// Longest one ClickHouse statement may take (default 30 s).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Rows held in memory while the store is unavailable (default 2 000 000); when
    /// full, checkpoints stop advancing and workers keep their windows.
    pub max_buffered_rows: usize,
    /// Bytes of requests the backlog's spool on disk (`<data_dir>/backlog`) holds while
    /// the store is unavailable (default 1 GiB); past it, as past `max_buffered_rows`.
    pub max_backlog_bytes: u64,
    /// SQLite page cache of the writing connection (SQLite only; default 64 MiB).
    pub cache_bytes: Option<usize>,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            kind: StoreKind::Sqlite,
            url: None,
            database: "stackwatch".into(),
            user: "default".into(),
            password: None,
            password_file: None,
            cluster: None,
            shard_urls: Vec::new(),
            timeout: Duration::from_secs(30),
            max_buffered_rows: 2_000_000,
            max_backlog_bytes: crate::writer::DEFAULT_MAX_SPOOL_BYTES,
            cache_bytes: None,
        }
    }
}

/// `[collector]`: this collector among others sharing a ClickHouse store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorSection {
    /// This collector's id, unique among those sharing the store (default:
    /// `<hostname>:<listen port>`). Targets are split by rendezvous hashing over ids.
    pub id: Option<String>,
}

/// `[query]`: what queries may cost, so a burst of them cannot starve scraping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Queries running at once (default 2: scrapes and the writer keep the rest of a
    /// small machine).
    pub max_concurrent: usize,
    /// Queries waiting for a slot; more are answered 503 at once (default 16).
    pub max_queued: usize,
    /// Longest wait for a slot before a 503 (default 5 s).
    #[serde(deserialize_with = "duration")]
    pub queue_timeout: Duration,
    /// Longest a running query may take (default 30 s); it is stopped and answered 503.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// SQLite page cache of each query connection (default 16 MiB).
    pub cache_bytes: usize,
    /// Distinct stacks in one answer; the rest fold into `[other]` (default 100 000).
    pub max_answer_stacks: usize,
    /// Matchers in one selector (default 16).
    pub max_matchers: usize,
    /// Bytes of one regex in a selector (default 1 024).
    pub max_regex_bytes: usize,
    /// Bytes of one compiled regex (default 1 MiB).
    pub max_regex_program_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_concurrent: 2,
            max_queued: 16,
            queue_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            cache_bytes: 16 << 20,
            max_answer_stacks: 100_000,
            max_matchers: 16,
            max_regex_bytes: 1024,
            max_regex_program_bytes: 1 << 20,
        }
    }
}

impl QueryConfig {
    /// The selector limits.
    pub fn selector_limits(&self) -> stackwatch_store::SelectorLimits {
        stackwatch_store::SelectorLimits {
            max_matchers: self.max_matchers,
            max_regex_bytes: self.max_regex_bytes,
            max_regex_program_bytes: self.max_regex_program_bytes,
        }
    }
}

/// `[http]`: the API's connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Time a client has to send its request headers (default 10 s).
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// Connections open at once (default 1 024).
    pub max_connections: u64,
    /// Mark the dashboard's login cookie `Secure` (sent over TLS only) on every login
    /// (default false: only when the login request says it came over TLS,
    /// `X-Forwarded-Proto: https` from a proxy that terminates it).
    pub cookie_secure: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = stackwatch_http::ServeOptions::default();
        HttpConfig {
            header_read_timeout: d.header_read_timeout,
            max_connections: d.max_connections,
            cookie_secure: false,
        }
    }
}

/// One push token: who may push, and under which tenant.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushToken {
    /// The bearer token (or `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (trailing newline ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The tenant its pushes are stored under: every series gets the target label
    /// `tenant = "<name>"`.
    pub tenant: String,
}

impl std::fmt::Debug for PushToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushToken")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("token_file", &self.token_file)
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// `[push]`: the push endpoints (Pyroscope's ingest API, OTLP profiles). Off unless
/// the section enables them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Serve the push endpoints (default false).
    pub enabled: bool,
    /// Accept pushes without a token (default false; only sensible on loopback). They
    /// are stored without a `tenant` label.
    pub allow_anonymous: bool,
    /// Tokens, one per tenant or source.
    pub tokens: Vec<PushToken>,
    /// Bytes of one request body as sent (default 8 MiB): more is 413.
    pub max_body_bytes: usize,
    /// Bytes a body may decompress to (default 64 MiB): more is 413.
    pub max_decompressed_bytes: usize,
    /// Requests per second one source (tenant and service) may make, with a burst of
    /// twice that (default 20): more is 429 with Retry-After.
    pub max_requests_per_second: u32,
    /// Distinct series (target label sets: service, tags, profile type) one source may
    /// create (default 1 000): a push that would create more is 400.
    pub max_series_per_source: usize,
    /// Sources (tenant and service) tracked at once, all tenants together (default
    /// 10 000): the ceiling that protects the process. Pushes from new sources past it
    /// are 429 until old ones go quiet for `source_idle`.
    pub max_sources: usize,
    /// Sources one tenant may have at once (default 1 000, at most `max_sources`): past
    /// it the tenant's pushes from new sources are 429 until its old ones go quiet,
    /// whatever the other tenants do.
    pub max_sources_per_tenant: usize,
    /// Series one tenant may have at once, all its sources together (default 10 000): a
    /// push that would create more is 400.
    pub max_series_per_tenant: usize,
    /// Bytes of profile data (stack text, sample and target labels, 8 bytes per count)
    /// one tenant may store per second, with a burst of twice that (default 16 MiB): a
    /// request is admitted while the tenant is within it and then charged (it may go
    /// past it: its next requests wait, 429 with Retry-After, until it is paid back).
    /// Only stored requests are charged.
    pub max_bytes_per_second_per_tenant: u64,
    /// Bytes of target labels (names and values, `tenant` and the profile type
    /// included) one series may have (default 2 048): a push with a series past it is
    /// 400. With `max_label_bytes_per_tenant` it bounds what cardinality costs memory.
    pub max_label_bytes_per_series: usize,
    /// Bytes of target labels all series of one tenant may have together (default
    /// 4 MiB): a push that would pass it is 400.
    pub max_label_bytes_per_tenant: usize,
    /// A source silent for this long is forgotten by the rate and series limits and
    /// the Fleet page (default 1 h).
    #[serde(deserialize_with = "duration")]
    pub source_idle: Duration,
    /// A push repeated within this long (same source, same time range, same content) is
    /// acknowledged and not stored again (default 10 min).
    #[serde(deserialize_with = "duration")]
    pub dedup_window: Duration,
    /// How long a request's body may take to arrive once its headers have (default
    /// 2 min): a client that stalls is answered `408` and its connection closed.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// The amount the profiles of one push request other than CPU and wall may carry
    /// together: bytes or objects allocated, nanoseconds waited, contentions, goroutines
    /// (default 2^36, at most 2^40: with the per-source rate limit, one source's sums
    /// over the raw retention stay far below 63 bits). CPU and wall profiles are
    /// periods, bounded by `scrape.max_samples_per_window` like scrapes.
    pub max_amount_per_push: u64,
    /// Push requests inflating and decoding at once (default 4): each may hold its body
    /// inflated (`max_decompressed_bytes`) and its decoded messages
    /// (`scrape.max_decoded_bytes`) at the same time.
    pub max_concurrent_decodes: usize,
    /// Push requests waiting for a decode slot (default 32, each up to 10 s): more are
    /// `503` with `Retry-After`.
    pub max_queued_decodes: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: false,
            allow_anonymous: false,
            tokens: Vec::new(),
            max_body_bytes: 8 << 20,
            max_decompressed_bytes: 64 << 20,
            max_requests_per_second: 20,
            max_series_per_source: 1000,
            max_sources: 10_000,
            max_sources_per_tenant: 1_000,
            max_series_per_tenant: 10_000,
            max_bytes_per_second_per_tenant: 16 << 20,
            max_label_bytes_per_series: 2048,
            max_label_bytes_per_tenant: 4 << 20,
            source_idle: Duration::from_secs(3600),
            dedup_window: Duration::from_secs(600),
            body_timeout: Duration::from_secs(120),
            max_amount_per_push: 1 << 36,
            max_concurrent_decodes: 4,
            max_queued_decodes: 32,
        }
    }
}

impl PushConfig {}

/// One read token (`[[read_tokens]]`): reads the series of some tenants only, those
/// whose target label `tenant` is one of `tenants`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadToken {
    /// The bearer token (or `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (relative to the config file; trailing newline ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The tenants it reads (at least one).
    pub tenants: Vec<String>,
}

impl std::fmt::Debug for ReadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadToken")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("token_file", &self.token_file)
            .field("tenants", &self.tenants)
            .finish()
    }
}

/// A tenant name as tokens carry it: 1 to 128 bytes without control characters.
fn valid_tenant(t: &str) -> bool {
    !t.is_empty() && t.len() <= 128 && !t.chars().any(char::is_control)
}

/// Who may read what, with token files read: the operator token (`bearer_token`) and the
/// read tokens with their tenants.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReadAccess {
    /// `bearer_token`: reads everything.
    pub operator: Option<String>,
    /// `(token, tenants)` of each `[[read_tokens]]`.
    pub scoped: Vec<(String, Vec<String>)>,
}

impl std::fmt::Debug for ReadAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAccess")
            .field("operator", &self.operator.as_ref().map(|_| "<set>"))
            .field(
                "scoped",
                &self.scoped.iter().map(|(_, t)| t).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the API and dashboard (default 127.0.0.1:7070).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the SQLite file lives (default ./stackwatch-data).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The operator token: when set, every API request needs a token, and this one
    /// reads every tenant's series.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Tokens that read only some tenants' series; with any, every API request needs a
    /// token even without `bearer_token`.
    #[serde(default)]
    pub read_tokens: Vec<ReadToken>,
    /// Scrape settings.
    #[serde(default)]
    pub scrape: ScrapeConfig,
    /// Storage settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Query budgets.
    #[serde(default)]
    pub query: QueryConfig,
    /// HTTP connection limits.
    #[serde(default)]
    pub http: HttpConfig,
    /// The store backend.
    #[serde(default)]
    pub store: StoreSection,
    /// Identity among collectors sharing a store.
    #[serde(default)]
    pub collector: CollectorSection,
    /// The push endpoints.
    #[serde(default)]
    pub push: PushConfig,
    /// Static targets.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Files of targets.
    #[serde(default)]
    pub target_files: Vec<TargetFileConfig>,
    /// Directory of the config file (target file patterns are relative to it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The largest `scrape.max_label_key_bytes` and `scrape.max_label_value_bytes` accepted.
pub const MAX_LABEL_TEXT_BYTES: usize = 65_536;

fn default_listen() -> SocketAddr {
    "127.0.0.1:7070".parse().expect("valid address")
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./stackwatch-data")
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            data_dir: default_data_dir(),
            bearer_token: None,
            read_tokens: Vec::new(),
            scrape: ScrapeConfig::default(),
            storage: StorageConfig::default(),
            query: QueryConfig::default(),
            http: HttpConfig::default(),
            store: StoreSection::default(),
            collector: CollectorSection::default(),
            push: PushConfig::default(),
            targets: Vec::new(),
            target_files: Vec::new(),
            base_dir: PathBuf::from("."),
        }
    }
}

impl Config {
    /// A token given as `token` or `token_file` (relative to `base_dir`, trailing newline
    /// ignored) under `key`: exactly one of the two, not empty or blank.
    fn token(
        &self,
        key: &str,
        token: Option<&str>,
        file: Option<&Path>,
    ) -> Result<String, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: self.base_dir.join("stackwatch.toml"),
            key,
            message,
        };
        let token = match (token, file) {
            (Some(tok), None) => tok.to_owned(),
            (None, Some(file)) => {
                let path = self.base_dir.join(file);
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        invalid(
                            format!("{key}.token_file"),
                            format!("{}: {e}", path.display()),
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned()
            }
            _ => {
                return Err(invalid(
                    key.to_owned(),
                    "set exactly one of token and token_file".into(),
                ))
            }
        };
        if token.trim().is_empty() {
            return Err(invalid(
                key.to_owned(),
                "the token is empty or blank".into(),
            ));
        }
        Ok(token)
    }

    /// The read tokens with their files read (relative to `base_dir`), checked: none
    /// empty, no two equal (nor equal to `bearer_token`), so a token names one scope.
    pub fn read_access(&self) -> Result<ReadAccess, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: self.base_dir.join("stackwatch.toml"),
            key,
            message,
        };
        let mut scoped: Vec<(String, Vec<String>)> = Vec::new();
        for (i, t) in self.read_tokens.iter().enumerate() {
            let key = format!("read_tokens[{i}]");
            let token = self.token(&key, t.token.as_deref(), t.token_file.as_deref())?;
            if self.bearer_token.as_deref() == Some(token.as_str())
                || scoped.iter().any(|(other, _)| *other == token)
            {
                return Err(invalid(
                    key,
                    "the same token twice (or equal to bearer_token): a token must name one scope"
                        .into(),
                ));
            }
            scoped.push((token, t.tenants.clone()));
        }
        Ok(ReadAccess {
            operator: self.bearer_token.clone(),
            scoped,
        })
    }

    /// The push tokens with their files read, `(token, tenant)`, checked: none empty or
    /// blank, no two equal, none equal to `bearer_token` or a read token (a token names
    /// one role and one scope: a push token that is also the operator's would read every
    /// tenant). `read` is [`Config::read_access`]'s answer.
    pub fn push_tokens(&self, read: &ReadAccess) -> Result<Vec<(String, String)>, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: self.base_dir.join("stackwatch.toml"),
            key,
            message,
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for (i, t) in self.push.tokens.iter().enumerate() {
            let key = format!("push.tokens[{i}]");
            let token = self.token(&key, t.token.as_deref(), t.token_file.as_deref())?;
            if read.operator.as_deref() == Some(token.as_str())
                || read.scoped.iter().any(|(other, _)| *other == token)
            {
                return Err(invalid(
                    key,
                    "equal to bearer_token or a read token: a push token must not read".into(),
                ));
            }
            if out.iter().any(|(other, _)| *other == token) {
                return Err(invalid(
                    key,
                    "the same token twice: a token must name one tenant".into(),
                ));
            }
            out.push((token, t.tenant.clone()));
        }
        Ok(out)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Config::parse(&text, path)?;
        cfg.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        Ok(cfg)
    }

    /// Parses and validates config text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message: message.to_owned(),
        };
        for (key, value) in [
            ("push.max_body_bytes", cfg.push.max_body_bytes),
            (
                "push.max_decompressed_bytes",
                cfg.push.max_decompressed_bytes,
            ),
            (
                "push.max_requests_per_second",
                cfg.push.max_requests_per_second as usize,
            ),
            ("push.max_series_per_source", cfg.push.max_series_per_source),
            ("push.max_sources", cfg.push.max_sources),
            (
                "push.max_concurrent_decodes",
                cfg.push.max_concurrent_decodes,
            ),
            (
                "push.max_sources_per_tenant",
                cfg.push.max_sources_per_tenant,
            ),
            ("push.max_series_per_tenant", cfg.push.max_series_per_tenant),
            (
                "push.max_bytes_per_second_per_tenant",
                usize::try_from(cfg.push.max_bytes_per_second_per_tenant).unwrap_or(usize::MAX),
            ),
            (
                "push.max_label_bytes_per_series",
                cfg.push.max_label_bytes_per_series,
            ),
            (
                "push.max_label_bytes_per_tenant",
                cfg.push.max_label_bytes_per_tenant,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if cfg.push.max_sources_per_tenant > cfg.push.max_sources {
            return Err(invalid(
                "push.max_sources_per_tenant",
                "must be at most push.max_sources",
            ));
        }
        if cfg.push.max_label_bytes_per_tenant < cfg.push.max_label_bytes_per_series {
            return Err(invalid(
                "push.max_label_bytes_per_tenant",
                "must be at least push.max_label_bytes_per_series",
            ));
        }
        if cfg.push.max_decompressed_bytes < cfg.push.max_body_bytes {
            return Err(invalid(
                "push.max_decompressed_bytes",
                "must be at least push.max_body_bytes",
            ));
        }
        if cfg.push.enabled && cfg.push.tokens.is_empty() && !cfg.push.allow_anonymous {
            return Err(invalid(
                "push.tokens",
                "push is enabled without tokens: add [[push.tokens]] or set push.allow_anonymous = true",
            ));
        }
        for (i, t) in cfg.push.tokens.iter().enumerate() {
            if t.tenant.is_empty() || t.tenant.len() > 128 || t.tenant.chars().any(char::is_control)
            {
                return Err(invalid(
                    &format!("push.tokens[{i}].tenant"),
                    "must be 1 to 128 bytes without control characters",
                ));
            }
            if t.token.is_some() == t.token_file.is_some() {
                return Err(invalid(
                    &format!("push.tokens[{i}]"),
                    "set exactly one of token and token_file",
                ));
            }
        }
        if cfg.scrape.interval < Duration::from_millis(100) {
            return Err(invalid("scrape.interval", "must be at least 100ms"));
        }
        if cfg.scrape.timeout.is_zero() {
            return Err(invalid("scrape.timeout", "must be positive"));
        }
        if cfg.push.body_timeout.is_zero() {
            return Err(invalid("push.body_timeout", "must be positive"));
        }
        if cfg.scrape.concurrency == 0 {
            return Err(invalid("scrape.concurrency", "must be at least 1"));
        }
        if cfg.storage.flush_rows == 0 {
            return Err(invalid("storage.flush_rows", "must be at least 1"));
        }
        for (key, value) in [
            ("scrape.max_stack_depth", cfg.scrape.max_stack_depth),
            (
                "scrape.max_stacks_per_window",
                cfg.scrape.max_stacks_per_window,
            ),
            ("scrape.max_decoded_bytes", cfg.scrape.max_decoded_bytes),
            ("scrape.max_rows_per_scrape", cfg.scrape.max_rows_per_scrape),
            (
                "scrape.max_label_sets_per_window",
                cfg.scrape.max_label_sets_per_window,
            ),
            ("scrape.max_label_pairs", cfg.scrape.max_label_pairs),
            ("scrape.max_label_key_bytes", cfg.scrape.max_label_key_bytes),
            (
                "scrape.max_label_value_bytes",
                cfg.scrape.max_label_value_bytes,
            ),
            ("query.max_concurrent", cfg.query.max_concurrent),
            ("query.max_answer_stacks", cfg.query.max_answer_stacks),
            ("query.max_matchers", cfg.query.max_matchers),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        for (key, value) in [
            ("scrape.max_label_key_bytes", cfg.scrape.max_label_key_bytes),
            (
                "scrape.max_label_value_bytes",
                cfg.scrape.max_label_value_bytes,
            ),
        ] {
            if value > MAX_LABEL_TEXT_BYTES {
                return Err(invalid(
                    key,
                    &format!("must be at most {MAX_LABEL_TEXT_BYTES} (a label names work, it is not a payload)"),
                ));
            }
        }
        if cfg.scrape.max_samples_per_window == 0 || cfg.scrape.max_samples_per_window > 1 << 40 {
            return Err(invalid(
                "scrape.max_samples_per_window",
                "must be 1..=2^40 (sums over the retention must fit in 63 bits)",
            ));
        }
        if cfg.push.max_amount_per_push == 0 || cfg.push.max_amount_per_push > 1 << 40 {
            return Err(invalid(
                "push.max_amount_per_push",
                "must be 1..=2^40 (sums over the retention must fit in 63 bits)",
            ));
        }
        if cfg.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        if cfg.bearer_token.as_deref() == Some("") {
            return Err(invalid("bearer_token", "must not be empty"));
        }
        for (i, t) in cfg.read_tokens.iter().enumerate() {
            if t.token.is_some() == t.token_file.is_some() {
                return Err(invalid(
                    &format!("read_tokens[{i}]"),
                    "set exactly one of token and token_file",
                ));
            }
            if t.token.as_deref() == Some("") {
                return Err(invalid(
                    &format!("read_tokens[{i}].token"),
                    "must not be empty",
                ));
            }
            if t.tenants.is_empty() {
                return Err(invalid(
                    &format!("read_tokens[{i}].tenants"),
                    "name at least one tenant (the operator's bearer_token reads them all)",
                ));
            }
            if let Some(bad) = t.tenants.iter().find(|n| !valid_tenant(n)) {
                return Err(invalid(
                    &format!("read_tokens[{i}].tenants"),
                    &format!(
                        "{:?}: a tenant is 1 to 128 bytes without control characters",
                        bad.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
        for (i, t) in cfg.targets.iter().enumerate() {
            validate_target(t).map_err(|m| invalid(&format!("targets[{i}].url"), &m))?;
        }
        let st = &cfg.store;
        match st.kind {
            StoreKind::Sqlite => {
                for (key, set) in [
                    ("store.url", st.url.is_some()),
                    ("store.cluster", st.cluster.is_some()),
                    ("store.shard_urls", !st.shard_urls.is_empty()),
                    ("store.password", st.password.is_some()),
                    ("store.password_file", st.password_file.is_some()),
                ] {
                    if set {
                        return Err(invalid(key, "only applies to kind = \"clickhouse\""));
                    }
                }
            }
            StoreKind::Clickhouse if st.cache_bytes.is_some() => {
                return Err(invalid(
                    "store.cache_bytes",
                    "only applies to kind = \"sqlite\"",
                ));
            }
            StoreKind::Clickhouse => {
                if st.url.as_deref().unwrap_or("").is_empty() {
                    return Err(invalid(
                        "store.url",
                        "kind = \"clickhouse\" needs the URL of ClickHouse's HTTP interface",
                    ));
                }
                if st.password.is_some() && st.password_file.is_some() {
                    return Err(invalid(
                        "store.password",
                        "set password or password_file, not both",
                    ));
                }
                if !st.shard_urls.is_empty() && st.cluster.is_none() {
                    return Err(invalid(
                        "store.shard_urls",
                        "only applies with store.cluster",
                    ));
                }
                if st.timeout.is_zero() {
                    return Err(invalid("store.timeout", "must be positive"));
                }
            }
        }
        if cfg.store.max_buffered_rows == 0 {
            return Err(invalid("store.max_buffered_rows", "must be at least 1"));
        }
        if cfg.store.max_backlog_bytes == 0 {
            return Err(invalid("store.max_backlog_bytes", "must be at least 1"));
        }
        if cfg.collector.id.as_deref() == Some("") {
            return Err(invalid("collector.id", "must not be empty"));
        }
        Ok(cfg)
    }

    /// The store this configuration names (reads `store.password_file`).
    pub fn store_config(&self) -> Result<stackwatch_store::StoreConfig, ConfigError> {
        let st = &self.store;
        Ok(match st.kind {
            StoreKind::Sqlite => stackwatch_store::StoreConfig::Sqlite {
                path: self.data_dir.join("stackwatch.db"),
                options: self.retention(),
                reader: stackwatch_store::ReaderOptions {
                    cache_kib: (self.query.cache_bytes / 1024).clamp(64, u32::MAX as usize) as u32,
                    max_answer_stacks: self.query.max_answer_stacks,
                },
                max_idle_readers: self.query.max_concurrent,
            },
            StoreKind::Clickhouse => {
                let password = match (&st.password, &st.password_file) {
                    (Some(p), _) => p.clone(),
                    (None, Some(f)) => {
                        let path = self.base_dir.join(f);
                        std::fs::read_to_string(&path)
                            .map_err(|e| ConfigError::Invalid {
                                path: path.clone(),
                                key: "store.password_file".into(),
                                message: e.to_string(),
                            })?
                            .trim_end_matches(['\n', '\r'])
                            .to_string()
                    }
                    (None, None) => String::new(),
                };
                stackwatch_store::StoreConfig::ClickHouse(stackwatch_store::ClickHouseOptions {
                    url: st.url.clone().unwrap_or_default(),
                    database: st.database.clone(),
                    user: st.user.clone(),
                    password,
                    cluster: st.cluster.clone(),
                    shard_urls: st.shard_urls.clone(),
                    timeout: st.timeout,
                    retention: self.retention(),
                    max_answer_stacks: self.query.max_answer_stacks,
                })
            }
        })
    }

    fn retention(&self) -> stackwatch_store::StoreOptions {
        stackwatch_store::StoreOptions {
            raw_retention: self.storage.raw_retention.min(self.storage.retention),
            minute_retention: self.storage.retention,
            retention: self.storage.retention,
            cache_kib: self
                .store
                .cache_bytes
                .map_or(stackwatch_store::StoreOptions::default().cache_kib, |b| {
                    (b / 1024).clamp(64, u32::MAX as usize) as u32
                }),
        }
    }

    /// This collector's id: `[collector] id`, or `<hostname>:<listen port>`.
    pub fn collector_id(&self) -> String {
        if let Some(id) = &self.collector.id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", self.listen.port())
    }

    /// Static targets plus those of every target file (files that fail to parse are
    /// reported and skipped, so one bad file does not stop the others).
    pub fn all_targets(&self) -> (Vec<TargetConfig>, Vec<String>) {
        let mut targets = self.targets.clone();
        let mut errors = Vec::new();
        for tf in &self.target_files {
            let pattern = self.base_dir.join(&tf.path);
            let paths = match glob::glob(&pattern.to_string_lossy()) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("target_files {:?}: {e}", tf.path));
                    continue;
                }
            };
            for path in paths.flatten() {
                match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| toml::from_str::<TargetFile>(&t).map_err(|e| e.to_string()))
                {
                    Ok(f) => {
                        for (i, t) in f.targets.into_iter().enumerate() {
                            match validate_target(&t) {
                                Ok(()) => targets.push(t),
                                Err(m) => errors
                                    .push(format!("{}: targets[{i}].url: {m}", path.display())),
                            }
                        }
                    }
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                }
            }
        }
        (targets, errors)
    }

    /// Newest modification time over all target files (to notice changes).
    pub fn target_files_stamp(&self) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
        let mut out = Vec::new();
        for tf in &self.target_files {
            if let Ok(paths) = glob::glob(&self.base_dir.join(&tf.path).to_string_lossy()) {
                for p in paths.flatten() {
                    let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                    out.push((p, m));
                }
            }
        }
        out.sort();
        out
    }
}

fn validate_target(t: &TargetConfig) -> Result<(), String> {
    let url = reqwest::Url::parse(&t.url).map_err(|e| format!("{:?}: {e}", t.url))?;
    if url.scheme() != "http" {
        return Err(format!("{:?}: only http:// targets are supported", t.url));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
listen = "127.0.0.1:7070"
data_dir = "./stackwatch-data"
[scrape]
interval = "10s"
timeout = "5s"
[[targets]]
url = "http://127.0.0.1:6060"          # kind defaults to "stackwatch"
labels = { service = "binlog-streamer", instance = "a", version = "main" }
[[targets]]
url = "http://127.0.0.1:6061/debug/pprof/profile"
kind = "pprof"                          # or "folded"
labels = { service = "some-go-service", instance = "b" }
[[target_files]]
path = "targets/*.toml"                 # same [[targets]] tables, re-read on change
"#;

    #[test]
    fn the_documented_example_loads_as_written() {
        let c = Config::parse(EXAMPLE, Path::new("stackwatch.toml")).unwrap();
        assert_eq!(c.scrape.interval, Duration::from_secs(10));
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[0].kind, TargetKind::Stackwatch);
        assert_eq!(c.targets[1].kind, TargetKind::Pprof);
        assert_eq!(c.targets[0].labels["version"], "main");
        assert_eq!(c.target_files[0].path, "targets/*.toml");
        assert_eq!(c.storage.retention, Duration::from_secs(14 * 86_400));
    }

    #[test]
    fn the_example_in_docs_configuration_md_loads_with_its_stated_defaults() {
        // Read at run time, not embedded: the packaged crate holds no docs/ (and this
        // test runs only from the workspace).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc.find("```toml\n").expect("a toml example") + 8;
        let text = &doc[start..start + doc[start..].find("```").unwrap()];
        let c = Config::parse(text, Path::new("docs/configuration.md")).unwrap();
        let d = Config::default();
        assert_eq!(c.scrape, d.scrape, "the example states the defaults");
        assert_eq!(c.query, d.query);
        assert_eq!(c.http, d.http);
        assert_eq!(c.storage, d.storage);
        assert_eq!(c.push, d.push);
        assert_eq!(c.store, d.store);
    }

    #[test]
    fn push_tokens_name_one_role_and_one_tenant() {
        let push_err = |text: &str| {
            let cfg = Config::parse(text, Path::new("s.toml")).unwrap();
            let read = cfg.read_access().unwrap();
            cfg.push_tokens(&read).unwrap_err().to_string()
        };
        let head = "bearer_token = \"op\"\n[[read_tokens]]\ntoken = \"read-a\"\ntenants = [\"a\"]\n[push]\nenabled = true\n";
        // The operator's token or a read token as a push token would read as well.
        let e = push_err(&format!(
            "{head}[[push.tokens]]\ntoken = \"op\"\ntenant = \"b\"\n"
        ));
        assert!(
            e.contains("push.tokens[0]") && e.contains("must not read"),
            "{e}"
        );
        let e = push_err(&format!(
            "{head}[[push.tokens]]\ntoken = \"read-a\"\ntenant = \"b\"\n"
        ));
        assert!(e.contains("must not read"), "{e}");
        let e = push_err(&format!(
            "{head}[[push.tokens]]\ntoken = \"p\"\ntenant = \"a\"\n[[push.tokens]]\ntoken = \"p\"\ntenant = \"b\"\n"
        ));
        assert!(
            e.contains("push.tokens[1]") && e.contains("one tenant"),
            "{e}"
        );
        let e = push_err(&format!(
            "{head}[[push.tokens]]\ntoken = \"  \"\ntenant = \"a\"\n"
        ));
        assert!(e.contains("empty or blank"), "{e}");
        let cfg = Config::parse(
            &format!("{head}[[push.tokens]]\ntoken = \"p\"\ntenant = \"a\"\n"),
            Path::new("s.toml"),
        )
        .unwrap();
        let read = cfg.read_access().unwrap();
        assert_eq!(
            cfg.push_tokens(&read).unwrap(),
            vec![("p".to_string(), "a".to_string())]
        );
    }

    #[test]
    fn read_tokens_are_checked_and_resolved() {
        let err = |text: &str| {
            Config::parse(text, Path::new("s.toml"))
                .unwrap_err()
                .to_string()
        };
        assert!(err("[[read_tokens]]\ntenants = [\"a\"]\n").contains("read_tokens[0]"));
        assert!(
            err("[[read_tokens]]\ntoken = \"t\"\ntoken_file = \"f\"\ntenants = [\"a\"]\n")
                .contains("exactly one of token and token_file")
        );
        assert!(err("[[read_tokens]]\ntoken = \"t\"\ntenants = []\n")
            .contains("read_tokens[0].tenants"));
        assert!(err("[[read_tokens]]\ntoken = \"t\"\ntenants = [\"\"]\n")
            .contains("read_tokens[0].tenants"));
        assert!(err("[[read_tokens]]\ntoken = \"\"\ntenants = [\"a\"]\n")
            .contains("read_tokens[0].token"));
        assert!(err("[[read_tokens]]\ntoken = \"t\"\n").contains("tenants"));
        // Files are read relative to the config; a token names one scope.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.token"), "read-a\n").unwrap();
        let path = dir.path().join("s.toml");
        let write = |text: &str| std::fs::write(&path, text).unwrap();
        write("bearer_token = \"op\"\n[[read_tokens]]\ntoken_file = \"a.token\"\ntenants = [\"team-a\"]\n[[read_tokens]]\ntoken = \"read-b\"\ntenants = [\"team-b\", \"team-c\"]\n");
        let access = Config::load(&path).unwrap().read_access().unwrap();
        assert_eq!(access.operator.as_deref(), Some("op"));
        assert_eq!(
            access.scoped,
            vec![
                ("read-a".to_string(), vec!["team-a".to_string()]),
                (
                    "read-b".to_string(),
                    vec!["team-b".to_string(), "team-c".to_string()]
                ),
            ]
        );
        assert!(
            !format!("{access:?}").contains("read-a"),
            "tokens stay out of logs"
        );
        write("bearer_token = \"op\"\n[[read_tokens]]\ntoken = \"op\"\ntenants = [\"a\"]\n");
        let e = Config::load(&path)
            .unwrap()
            .read_access()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("read_tokens[0]") && e.contains("one scope"),
            "{e}"
        );
        write("[[read_tokens]]\ntoken_file = \"missing.token\"\ntenants = [\"a\"]\n");
        let e = Config::load(&path)
            .unwrap()
            .read_access()
            .unwrap_err()
            .to_string();
        assert!(e.contains("read_tokens[0].token_file"), "{e}");
    }

    #[test]
    fn store_keys_are_checked_against_the_kind() {
        let err = |text: &str| {
            Config::parse(text, Path::new("s.toml"))
                .unwrap_err()
                .to_string()
        };
        assert!(err("[store]\nkind = \"clickhouse\"\n").contains("store.url"));
        assert!(err("[store]\nurl = \"http://ch:8123\"\n").contains("store.url"));
        assert!(err("[store]\nkind = \"clickhouse\"\nurl = \"http://ch:8123\"\npassword = \"a\"\npassword_file = \"p\"\n")
            .contains("store.password"));
        assert!(err("[store]\nkind = \"clickhouse\"\nurl = \"http://ch:8123\"\nshard_urls = [\"http://a:1\"]\n")
            .contains("store.shard_urls"));
        assert!(err("[store]\nkind = \"mongodb\"\n").contains("kind"));
        assert!(err("[store]\nmax_buffered_rows = 0\n").contains("store.max_buffered_rows"));
        assert!(err("[store]\nmax_backlog_bytes = 0\n").contains("store.max_backlog_bytes"));
        assert!(err("[store]\nkind = \"clickhouse\"\nurl = \"http://127.0.0.1:8123\"\ncache_bytes = 1048576\n")
            .contains("store.cache_bytes"));
        assert!(err("[collector]\nid = \"\"\n").contains("collector.id"));
        // A password file is read relative to the config file, without its newline.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "[store]\nkind = \"clickhouse\"\nurl = \"http://ch:8123\"\npassword_file = \"pw\"\n",
        )
        .unwrap();
        match Config::load(&path).unwrap().store_config().unwrap() {
            stackwatch_store::StoreConfig::ClickHouse(o) => assert_eq!(o.password, "s3cret"),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(dir.path().join("pw")).unwrap();
        let e = Config::load(&path)
            .unwrap()
            .store_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.password_file"), "{e}");
    }

    #[test]
    fn label_budget_keys_are_checked_and_reach_the_label_budget() {
        let err = |text: &str| {
            Config::parse(text, Path::new("s.toml"))
                .unwrap_err()
                .to_string()
        };
        for key in [
            "max_label_sets_per_window",
            "max_label_pairs",
            "max_label_key_bytes",
            "max_label_value_bytes",
        ] {
            let e = err(&format!("[scrape]\n{key} = 0\n"));
            assert!(e.contains(&format!("scrape.{key}")), "{e}");
        }
        let e = err("[scrape]\nmax_label_value_bytes = 1000000\n");
        assert!(e.contains("scrape.max_label_value_bytes"), "{e}");
        let c = Config::parse(
            "[scrape]\nmax_label_sets_per_window = 7\nmax_label_pairs = 3\nmax_label_key_bytes = 10\nmax_label_value_bytes = 20\n",
            Path::new("s.toml"),
        )
        .unwrap();
        let b = c.scrape.label_budget();
        assert_eq!(
            (
                b.max_sets_per_window,
                b.max_pairs,
                b.max_key_bytes,
                b.max_value_bytes
            ),
            (7, 3, 10, 20)
        );
        assert_eq!(
            Config::default().scrape.label_budget(),
            stackwatch_profile::LabelBudget::default(),
            "the collector's defaults are the sampler's"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let bad = "listen = \"127.0.0.1:7070\"\n[scrape]\ninterval = \"ten seconds\"\n";
        let e = Config::parse(bad, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("interval"), "{e}");
        let typo = "[scrape]\nintervall = \"10s\"\n";
        let e = Config::parse(typo, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("intervall"), "{e}");
        let kind = "[[targets]]\nurl = \"http://x:1\"\nkind = \"grpc\"\n";
        let e = Config::parse(kind, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("grpc"), "{e}");
        let url = "[[targets]]\nurl = \"ftp://x\"\n";
        let e = Config::parse(url, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("targets[0].url"), "{e}");
        for amount in ["0", "1099511627777"] {
            let e = Config::parse(
                &format!("[push]\nmax_amount_per_push = {amount}\n"),
                Path::new("s.toml"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("push.max_amount_per_push"), "{e}");
        }
        for (text, key) in [
            (
                "[push]\nmax_sources_per_tenant = 0\n",
                "push.max_sources_per_tenant",
            ),
            (
                "[push]\nmax_series_per_tenant = 0\n",
                "push.max_series_per_tenant",
            ),
            (
                "[push]\nmax_bytes_per_second_per_tenant = 0\n",
                "push.max_bytes_per_second_per_tenant",
            ),
            (
                "[push]\nmax_sources = 100\nmax_sources_per_tenant = 101\n",
                "push.max_sources_per_tenant",
            ),
            (
                "[push]\nmax_label_bytes_per_series = 0\n",
                "push.max_label_bytes_per_series",
            ),
            (
                "[push]\nmax_label_bytes_per_series = 4096\nmax_label_bytes_per_tenant = 4095\n",
                "push.max_label_bytes_per_tenant",
            ),
        ] {
            let e = Config::parse(text, Path::new("s.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let c = Config::parse(
            "[push]\nmax_amount_per_push = 1099511627776\n",
            Path::new("s.toml"),
        );
        assert_eq!(c.unwrap().push.max_amount_per_push, 1 << 40);
    }

    #[test]
    fn target_files_are_read_and_bad_ones_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("targets")).unwrap();
        std::fs::write(
            dir.path().join("targets/a.toml"),
            "[[targets]]\nurl = \"http://127.0.0.1:9\"\nlabels = { service = \"x\" }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("targets/b.toml"), "[[targets]]\nurl = 5\n").unwrap();
        let cfg_path = dir.path().join("stackwatch.toml");
        std::fs::write(&cfg_path, "[[target_files]]\npath = \"targets/*.toml\"\n").unwrap();
        let c = Config::load(&cfg_path).unwrap();
        let (targets, errors) = c.all_targets();
        assert_eq!(targets.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("b.toml"), "{errors:?}");
    }
}
