//! The scrape loop: every target on its own jittered schedule, a bounded number in flight,
//! each scrape bounded in time and size, its outcome recorded as the target's health.
//!
//! Three kinds of target (see [`TargetKind`]):
//! - stackwatch: `GET <url>/windows?after=SEQ&labels=1`. The last stored sequence per
//!   worker instance comes from the store, so a missed poll, a collector restart or a
//!   crash is caught up losslessly, and a worker restart (new instance id) starts a new
//!   series. With `labels=1` the worker sends the samples taken under a sample label set
//!   (`table="orders"`) per set; an older worker ignores it and sends them summed.
//! - pprof: `GET <url>?seconds=N`, decoded with prost, one window per scrape; Go's
//!   `pprof.Do` labels (string sample labels) become sample labels.
//! - folded: `GET <url>`, folded text; cumulative counts are differenced between scrapes.
//!
//! Whatever a target sends is bounded before it reaches the store: the body by
//! `max_body_bytes`, the decoded stacks by the [`StackBudget`](stackwatch_profile::StackBudget) (depth, text, distinct
//! stacks, periods), the sample label sets by the
//! [`LabelBudget`](stackwatch_profile::LabelBudget) (lengths, pairs, sets per window:
//! the lightest sets fold into one `[labels pruned]` set), the rows of one scrape by
//! `max_rows_per_scrape`. A target that exceeds a budget gets the error on its own
//! health; no other target is touched.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use stackwatch_profile::budget::{bound_labeled_stacks, bound_stacks, BoundedStacks, BudgetError};
use stackwatch_profile::clock::unix_ms;
use stackwatch_profile::protocol::{WindowsResponse, PROTOCOL_VERSION};
use stackwatch_store::{IngestWindow, Labels, Readers};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::config::{FoldedCounts, ScrapeConfig, TargetConfig, TargetKind};
use crate::writer::{WriteError, WriterHandle};

/// Why a scrape failed; shown as the target's `last_error`.
#[derive(Debug, Error)]
pub enum ScrapeError {
    /// The target's URL or token file is unusable.
    #[error("target: {0}")]
    Target(String),
    /// The request failed (connect, reset, protocol).
    #[error("request: {0}")]
    Request(String),
    /// The target answered with a non-2xx status.
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// The body has the wrong content type.
    #[error("unexpected content type {got:?} (want {want})")]
    ContentType {
        /// What the target sent.
        got: String,
        /// What was expected.
        want: String,
    },
    /// The body is over `scrape.max_body_bytes`.
    #[error("body exceeds the {0} byte limit (scrape.max_body_bytes)")]
    TooLarge(usize),
    /// The scrape took longer than allowed.
    #[error("timed out after {0:?} (scrape.timeout)")]
    Timeout(Duration),
    /// The body does not decode or breaks the protocol's rules.
    #[error("{0}")]
    Malformed(String),
    /// The decoded stacks exceed a budget.
    #[error("{0}")]
    Budget(#[from] BudgetError),
    /// Reading the stored checkpoint failed.
    #[error("store: reading the checkpoint: {0}")]
    Checkpoint(String),
    /// The store refused the windows.
    #[error("store: {0}")]
    Store(#[from] WriteError),
}

/// Health of one target, as `/api/targets` and `/metrics` show it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetHealth {
    /// Labels.
    pub labels: Labels,
    /// URL scraped.
    pub url: String,
    /// Protocol.
    pub kind: &'static str,
    /// Whether the last scrape succeeded.
    pub up: bool,
    /// Error of the last failed scrape (cleared by a success).
    pub last_error: Option<String>,
    /// When the last scrape ended, Unix ms (0: never).
    pub last_scrape_unix_ms: u64,
    /// How long it took, seconds.
    pub last_scrape_duration_seconds: f64,
    /// Response size, bytes.
    pub last_scrape_bytes: u64,
    /// Scrapes attempted.
    pub scrapes_total: u64,
    /// Scrapes failed.
    pub scrape_failures_total: u64,
    /// Scrapes skipped because the previous one was still running (fell behind).
    pub scrapes_skipped_total: u64,
    /// Periods stored from this target.
    pub samples_ingested_total: u64,
    /// Windows the worker no longer had when asked (the collector was away longer
    /// than the worker's retention).
    pub windows_lost_total: u64,
    /// Stacks cut at `scrape.max_stack_depth`.
    pub stacks_truncated_total: u64,
    /// Distinct stacks folded into `[pruned]` by `scrape.max_stacks_per_window`.
    pub stacks_pruned_total: u64,
    /// Sample label sets folded into `[labels pruned]` by
    /// `scrape.max_label_sets_per_window`.
    pub label_sets_folded_total: u64,
    /// Scrapes that stored fewer windows than the target had, by
    /// `scrape.max_rows_per_scrape` (the rest came with the next scrape).
    pub scrapes_row_limited_total: u64,
    /// Scrapes of a cumulative folded target whose interval was refused for good (over
    /// a budget, or refused by the store for what it is): its periods are not stored, and
    /// the baseline moved on. A transient store failure drops nothing (the next scrape's
    /// delta carries the interval).
    pub folded_intervals_dropped_total: u64,
    /// Current worker instance (stackwatch targets).
    pub instance: Option<String>,
    /// Last window sequence stored (stackwatch targets).
    pub last_seq: u64,
    /// The collector that scrapes this target (several may share a ClickHouse store).
    pub collector: String,
    /// False for a target another collector scrapes: the fields above are that
    /// collector's to report (see its `/api/targets`).
    pub scraped_here: bool,
    /// Rows of this target waiting in the writer's backlog while the store is
    /// unavailable.
    pub store_backlog_rows: u64,
}

impl TargetHealth {
    /// A target not scraped yet (or not by this collector).
    pub fn new(target: &TargetConfig) -> TargetHealth {
        TargetHealth {
            labels: target.labels.clone(),
            url: target.url.clone(),
            kind: kind_name(target.kind),
            up: false,
            last_error: None,
            last_scrape_unix_ms: 0,
            last_scrape_duration_seconds: 0.0,
            last_scrape_bytes: 0,
            scrapes_total: 0,
            scrape_failures_total: 0,
            scrapes_skipped_total: 0,
            samples_ingested_total: 0,
            windows_lost_total: 0,
            stacks_truncated_total: 0,
            stacks_pruned_total: 0,
            label_sets_folded_total: 0,
            scrapes_row_limited_total: 0,
            folded_intervals_dropped_total: 0,
            instance: None,
            last_seq: 0,
            collector: String::new(),
            scraped_here: true,
            store_backlog_rows: 0,
        }
    }
}

/// The health of every target, shared with the API.
pub type HealthMap = Arc<Mutex<BTreeMap<String, TargetHealth>>>;

/// Identity of a target: its URL and labels.
pub fn target_key(t: &TargetConfig) -> String {
    format!("{}|{:?}", t.url, t.labels)
}

fn kind_name(k: TargetKind) -> &'static str {
    match k {
        TargetKind::Stackwatch => "stackwatch",
        TargetKind::Pprof => "pprof",
        TargetKind::Folded => "folded",
    }
}

/// Everything a scrape needs.
#[derive(Clone)]
pub struct ScrapeContext {
    /// HTTP client (shared connection pool).
    pub client: reqwest::Client,
    /// Settings.
    pub cfg: ScrapeConfig,
    /// Bounded concurrency.
    pub permits: Arc<Semaphore>,
    /// Where windows go.
    pub writer: WriterHandle,
    /// Health.
    pub health: HealthMap,
    /// The store's readers, for checkpoints.
    pub readers: Readers,
    /// Directory of the config file (token files are relative to it).
    pub base_dir: PathBuf,
}

/// Per-target state carried between scrapes.
#[derive(Default)]
struct TargetState {
    instance: Option<String>,
    last_seq: u64,
    /// A cumulative folded target's counts as of the last delta stored (its baseline).
    folded_prev: Option<HashMap<String, u64>>,
    /// Cumulative folded intervals refused for good (a budget, the store refusing them):
    /// their baseline moved on without them.
    folded_intervals_dropped: u64,
}

/// Scrapes `target` forever on its schedule (cancel the task to stop it).
/// `start_now`: scrape at once instead of after the target's offset in the interval.
pub async fn run_target(ctx: ScrapeContext, target: TargetConfig, start_now: bool) {
    let key = target_key(&target);
    {
        let mut h = ctx.health.lock().unwrap_or_else(|e| e.into_inner());
        h.insert(key.clone(), TargetHealth::new(&target));
    }
    // Spread targets over the interval (Prometheus-style: a stable offset per target).
    let interval = ctx.cfg.interval;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let offset = Duration::from_nanos(hasher.finish() % interval.as_nanos().max(1) as u64);
    if !start_now {
        tokio::time::sleep(offset).await;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut state = TargetState::default();
    loop {
        let tick = ticker.tick().await;
        let late = tick.elapsed();
        if late > interval {
            tracing::debug!(url = %target.url, ?late, "scrape fell behind its schedule");
            let mut h = ctx.health.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = h.get_mut(&key) {
                t.scrapes_skipped_total = t
                    .scrapes_skipped_total
                    .saturating_add((late.as_nanos() / interval.as_nanos()) as u64);
            }
        }
        // The permit bounds requests in flight; it is released before waiting for the
        // store's acknowledgement, so a slow commit never starves other targets.
        let Ok(permit) = ctx.permits.clone().acquire_owned().await else {
            return;
        };
        let start = Instant::now();
        let outcome = scrape_once(&ctx, &target, &mut state, permit).await;
        tracing::trace!(url = %target.url, took = ?start.elapsed(), waited = ?start.saturating_duration_since(tick.into_std()), "scraped");
        let mut h = ctx.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = h.get_mut(&key) {
            t.scrapes_total = t.scrapes_total.saturating_add(1);
            t.last_scrape_unix_ms = unix_ms();
            t.last_scrape_duration_seconds = start.elapsed().as_secs_f64();
            t.instance = state.instance.clone();
            t.last_seq = state.last_seq;
            t.folded_intervals_dropped_total = state.folded_intervals_dropped;
            match outcome {
                Ok(o) => {
                    t.up = true;
                    t.last_error = None;
                    t.last_scrape_bytes = o.bytes;
                    // Counts come from outside: saturate, never wrap.
                    t.samples_ingested_total = t.samples_ingested_total.saturating_add(o.samples);
                    t.windows_lost_total = t.windows_lost_total.saturating_add(o.windows_lost);
                    t.stacks_truncated_total = t.stacks_truncated_total.saturating_add(o.truncated);
                    t.stacks_pruned_total = t.stacks_pruned_total.saturating_add(o.pruned);
                    t.label_sets_folded_total = t
                        .label_sets_folded_total
                        .saturating_add(o.label_sets_folded);
                    t.scrapes_row_limited_total += u64::from(o.row_limited);
                }
                Err(e) => {
                    tracing::debug!(url = %target.url, error = %e, "scrape failed");
                    t.up = false;
                    t.scrape_failures_total = t.scrape_failures_total.saturating_add(1);
                    t.last_error = Some(e.to_string());
                }
            }
        }
    }
}

#[derive(Default)]
struct Outcome {
    bytes: u64,
    samples: u64,
    windows_lost: u64,
    truncated: u64,
    pruned: u64,
    label_sets_folded: u64,
    row_limited: bool,
}

impl Outcome {
    fn count(&mut self, b: &BoundedStacks) {
        self.samples = self.samples.saturating_add(b.samples);
        self.truncated = self.truncated.saturating_add(b.truncated);
        self.pruned = self.pruned.saturating_add(b.pruned);
        self.label_sets_folded = self.label_sets_folded.saturating_add(b.label_sets_folded);
    }
}

/// GETs `url` within `limit` (with the target's bearer token, if it has one), refusing
/// bodies over `max` bytes and content types that do not start with one of `types`.
async fn fetch(
    ctx: &ScrapeContext,
    target: &TargetConfig,
    url: reqwest::Url,
    limit: Duration,
    types: &[&str],
) -> Result<Vec<u8>, ScrapeError> {
    let max = ctx.cfg.max_body_bytes;
    let token = target
        .token(&ctx.base_dir)
        .map_err(|e| ScrapeError::Target(format!("bearer_token_file: {e}")))?;
    let work = async {
        let mut req = ctx.client.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| ScrapeError::Request(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ScrapeError::Status(status));
        }
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !types.iter().any(|t| ctype.starts_with(t)) {
            return Err(ScrapeError::ContentType {
                got: ctype.chars().take(100).collect(),
                want: types.join(" or "),
            });
        }
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(ScrapeError::TooLarge(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ScrapeError::Request(format!("reading body: {e}")))?
        {
            if body.len() + chunk.len() > max {
                return Err(ScrapeError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| ScrapeError::Timeout(limit))?
}

type Permit = tokio::sync::OwnedSemaphorePermit;

async fn scrape_once(
    ctx: &ScrapeContext,
    target: &TargetConfig,
    state: &mut TargetState,
    permit: Permit,
) -> Result<Outcome, ScrapeError> {
    match target.kind {
        TargetKind::Stackwatch => scrape_windows(ctx, target, state, permit).await,
        TargetKind::Pprof => scrape_pprof(ctx, target, permit).await,
        TargetKind::Folded => scrape_folded(ctx, target, state, permit).await,
    }
}

/// The stored checkpoint of `instance` (or of the most recent instance when `None`).
async fn stored_checkpoint(
    ctx: &ScrapeContext,
    labels: &Labels,
    instance: Option<String>,
) -> Result<Option<(String, u64)>, ScrapeError> {
    let readers = ctx.readers.clone();
    let labels = labels.clone();
    tokio::task::spawn_blocking(move || {
        let store = readers.get(None)?;
        let cps = store.checkpoints(&labels)?;
        Ok(match instance {
            Some(i) => cps.into_iter().find(|c| c.instance == i),
            None => cps.into_iter().next(),
        }
        .map(|c| (c.instance, c.last_seq)))
    })
    .await
    .map_err(|e| ScrapeError::Checkpoint(e.to_string()))?
    .map_err(|e: stackwatch_store::StoreError| ScrapeError::Checkpoint(e.to_string()))
}

fn target_url(url: &str) -> Result<reqwest::Url, ScrapeError> {
    reqwest::Url::parse(url).map_err(|e| ScrapeError::Target(format!("{url:?}: {e}")))
}

fn windows_url(base: &str, after: u64) -> Result<reqwest::Url, ScrapeError> {
    let mut url = target_url(base)?;
    let path = format!("{}/windows", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.query_pairs_mut()
        .clear()
        .append_pair("after", &after.to_string())
        .append_pair("labels", "1");
    Ok(url)
}

async fn get_windows(
    ctx: &ScrapeContext,
    target: &TargetConfig,
    after: u64,
) -> Result<(WindowsResponse, u64), ScrapeError> {
    let body = fetch(
        ctx,
        target,
        windows_url(&target.url, after)?,
        ctx.cfg.timeout,
        &["application/json"],
    )
    .await?;
    let resp: WindowsResponse = serde_json::from_slice(&body)
        .map_err(|e| ScrapeError::Malformed(format!("bad window protocol body: {e}")))?;
    validate_windows(&resp, after).map_err(ScrapeError::Malformed)?;
    Ok((resp, body.len() as u64))
}

/// Largest sequence number accepted: the store keeps sequences as SQLite integers.
const MAX_SEQ: u64 = i64::MAX as u64;

/// Checks what a worker sent before anything is stored: version, ordering, totals,
/// sequence numbers the store can keep.
pub fn validate_windows(resp: &WindowsResponse, after: u64) -> Result<(), String> {
    if resp.version != PROTOCOL_VERSION {
        return Err(format!(
            "window protocol version {} (want {PROTOCOL_VERSION})",
            resp.version
        ));
    }
    if resp.instance.is_empty() || resp.instance.len() > 128 {
        return Err("bad instance id".into());
    }
    if resp.oldest_seq > MAX_SEQ || resp.latest_seq > MAX_SEQ {
        return Err(format!(
            "sequence numbers beyond 2^63-1 (oldest {}, latest {})",
            resp.oldest_seq, resp.latest_seq
        ));
    }
    let mut prev = after;
    for w in &resp.windows {
        if w.seq <= prev {
            return Err(format!("window {} out of order (after {prev})", w.seq));
        }
        if w.seq > MAX_SEQ {
            return Err(format!("window sequence {} is beyond 2^63-1", w.seq));
        }
        prev = w.seq;
        if w.end_unix_ms < w.start_unix_ms {
            return Err(format!("window {} ends before it starts", w.seq));
        }
        // `samples` counts the labeled samples too.
        let all = || {
            w.stacks
                .iter()
                .chain(w.labeled.iter().flat_map(|l| l.stacks.iter()))
        };
        let sum = all().try_fold(0u64, |a, (_, c)| a.checked_add(*c));
        if sum != Some(w.samples) {
            return Err(format!(
                "window {}: stack counts do not add up to samples",
                w.seq
            ));
        }
        if all().any(|(s, _)| s.is_empty() || s.split(';').any(str::is_empty)) {
            return Err(format!("window {}: malformed stack", w.seq));
        }
    }
    Ok(())
}

async fn scrape_windows(
    ctx: &ScrapeContext,
    target: &TargetConfig,
    state: &mut TargetState,
    permit: Permit,
) -> Result<Outcome, ScrapeError> {
    if state.instance.is_none() {
        if let Some((instance, seq)) = stored_checkpoint(ctx, &target.labels, None).await? {
            state.instance = Some(instance);
            state.last_seq = seq;
        }
    }
    let (mut resp, mut bytes) = get_windows(ctx, target, state.last_seq).await?;
    let mut after = state.last_seq;
    if state.instance.as_deref() != Some(resp.instance.as_str()) {
        // A different worker instance: a restart (new series) or one we stored before.
        let known = stored_checkpoint(ctx, &target.labels, Some(resp.instance.clone())).await?;
        let from = known.map_or(0, |(_, s)| s);
        if from != after {
            let (r, b) = get_windows(ctx, target, from).await?;
            resp = r;
            bytes += b;
        }
        after = from;
    }
    let mut outcome = Outcome {
        bytes,
        windows_lost: resp.oldest_seq.saturating_sub(after.saturating_add(1)),
        ..Outcome::default()
    };
    // Windows in order, each within the stack and label budgets, until the scrape's
    // row budget is spent (at least one window, so a target always makes progress);
    // the rest are asked for again at the next scrape. Labeled rows count like any.
    let budget = ctx.cfg.stack_budget();
    let label_budget = ctx.cfg.label_budget();
    let mut windows: Vec<IngestWindow> = Vec::new();
    let mut rows = 0usize;
    let mut last = after;
    for w in resp.windows {
        let bounded = bound_labeled_stacks(
            w.stacks,
            w.labeled.into_iter().map(|l| (l.labels, l.stacks)),
            &budget,
            &label_budget,
        )?;
        if !windows.is_empty() && rows + bounded.rows() > ctx.cfg.max_rows_per_scrape {
            outcome.row_limited = true;
            break;
        }
        rows += bounded.rows();
        outcome.count(&bounded);
        last = w.seq;
        let start_unix_s = (w.start_unix_ms / 1000).min(i64::MAX as u64) as i64;
        windows.push(ingest_window(
            target,
            resp.instance.clone(),
            w.seq,
            start_unix_s,
            resp.period_ns,
            bounded,
        ));
    }
    drop(permit);
    if !windows.is_empty() {
        ctx.writer.write(windows).await?;
    }
    // Only after the commit: a crash before it re-fetches the same windows.
    state.instance = Some(resp.instance);
    state.last_seq = last;
    Ok(outcome)
}

async fn scrape_pprof(
    ctx: &ScrapeContext,
    target: &TargetConfig,
    permit: Permit,
) -> Result<Outcome, ScrapeError> {
    let seconds = ctx
        .cfg
        .pprof_seconds
        .unwrap_or(ctx.cfg.interval)
        .as_secs()
        .clamp(1, 60);
    let mut url = target_url(&target.url)?;
    url.query_pairs_mut()
        .append_pair("seconds", &seconds.to_string());
    let start = unix_ms() / 1000;
    let body = fetch(
        ctx,
        target,
        url,
        ctx.cfg.timeout + Duration::from_secs(seconds),
        &[
            "application/octet-stream",
            "application/x-protobuf",
            "application/vnd.google.protobuf",
            "application/gzip",
        ],
    )
    .await?;
    let budget = ctx.cfg.stack_budget();
    let label_budget = ctx.cfg.label_budget();
    // Decoding is CPU work bounded by the budget: off the async threads. Go's `pprof.Do`
    // labels (string sample labels) become sample labels.
    let max = ctx.cfg.max_body_bytes;
    let len = body.len();
    let (profile, bounded) = tokio::task::spawn_blocking(move || {
        stackwatch_profile::pprof::decode_labeled(&body, max, &budget, &label_budget)
    })
    .await
    .map_err(|e| ScrapeError::Malformed(e.to_string()))?
    .map_err(|e| match e {
        stackwatch_profile::pprof::PprofError::Budget(b) => ScrapeError::Budget(b),
        e => ScrapeError::Malformed(e.to_string()),
    })?;
    drop(permit);
    // `bounded.stacks` holds the unlabeled samples (as does `profile.stacks`),
    // `bounded.labeled` the others.
    let period_ns = profile.period_ns;
    store_unsequenced(ctx, target, start as i64, period_ns, bounded, len).await
}

async fn scrape_folded(
    ctx: &ScrapeContext,
    target: &TargetConfig,
    state: &mut TargetState,
    permit: Permit,
) -> Result<Outcome, ScrapeError> {
    let url = target_url(&target.url)?;
    let body = fetch(ctx, target, url, ctx.cfg.timeout, &["text/"]).await?;
    let now = stackwatch_profile::folded::parse_folded_bytes(&body)
        .map_err(|e| ScrapeError::Malformed(e.to_string()))?;
    // A cumulative target's delta since the baseline, and the baseline that replaces it
    // once the delta is stored.
    let (stacks, next_baseline): (Vec<(String, u64)>, _) = match target.folded_counts {
        FoldedCounts::Delta => (now.into_iter().collect(), None),
        FoldedCounts::Cumulative => {
            let delta = match &state.folded_prev {
                // The first scrape only sets the baseline.
                None => Vec::new(),
                Some(prev) => {
                    let reset = prev.iter().any(|(s, c)| now.get(s).is_some_and(|n| n < c));
                    now.iter()
                        .filter_map(|(s, c)| {
                            let d = if reset {
                                *c
                            } else {
                                c - prev.get(s).copied().unwrap_or(0)
                            };
                            (d > 0).then(|| (s.clone(), d))
                        })
                        .collect()
                }
            };
            (delta, Some(now))
        }
    };
    drop(permit);
    // Folded text carries no sampling period: CPU time is unknown (0).
    let start = (unix_ms() / 1000) as i64;
    let stored = match bound_stacks(stacks, &ctx.cfg.stack_budget()) {
        Ok(bounded) => store_unsequenced(ctx, target, start, 0, bounded, body.len()).await,
        Err(e) => Err(ScrapeError::Budget(e)),
    };
    // The baseline moves as the window protocol's checkpoint does: once the delta is
    // committed. After a transient write failure (the store unavailable or locked, the
    // backlog full) it stays, so the next scrape's delta carries this interval too. A
    // deliberate refusal (a budget, the store refusing the window for what it is) would
    // refuse every later delta as well, which only grows: the baseline moves on and the
    // interval is counted as dropped.
    if let Some(now) = next_baseline {
        match &stored {
            Err(ScrapeError::Store(e)) if e.is_transient() => {}
            Err(e) if state.folded_prev.is_some() => {
                tracing::warn!(url = %target.url, error = %e, "cumulative folded interval dropped");
                state.folded_intervals_dropped = state.folded_intervals_dropped.saturating_add(1);
                state.folded_prev = Some(now);
            }
            _ => state.folded_prev = Some(now),
        }
    }
    stored
}

/// Stores one scrape of a target without window sequences (pprof, folded) as one window.
async fn store_unsequenced(
    ctx: &ScrapeContext,
    target: &TargetConfig,
    start_unix_s: i64,
    period_ns: u64,
    bounded: BoundedStacks,
    bytes: usize,
) -> Result<Outcome, ScrapeError> {
    let mut outcome = Outcome {
        bytes: bytes as u64,
        ..Outcome::default()
    };
    outcome.count(&bounded);
    if bounded.rows() > 0 {
        ctx.writer
            .write(vec![ingest_window(
                target,
                String::new(),
                0,
                start_unix_s,
                period_ns,
                bounded,
            )])
            .await?;
    }
    Ok(outcome)
}

/// The window to store from bounded stacks: the unlabeled ones and those of each
/// sample label set.
fn ingest_window(
    target: &TargetConfig,
    instance: String,
    seq: u64,
    start_unix_s: i64,
    period_ns: u64,
    bounded: BoundedStacks,
) -> IngestWindow {
    IngestWindow {
        target: target.labels.clone(),
        instance,
        seq,
        start_unix_s,
        stacks: bounded.stacks.into_iter().collect(),
        labeled: bounded
            .labeled
            .into_iter()
            .map(|(labels, stacks)| (labels, stacks.into_iter().collect()))
            .collect(),
        period_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackwatch_profile::protocol::Window;

    fn resp(windows: Vec<Window>) -> WindowsResponse {
        WindowsResponse {
            version: 1,
            instance: "i".into(),
            frequency_hz: 99,
            period_ns: 1,
            window_seconds: 10,
            oldest_seq: 1,
            latest_seq: 2,
            windows,
        }
    }

    fn w(seq: u64, stacks: Vec<(&str, u64)>, samples: u64) -> Window {
        Window {
            seq,
            start_unix_ms: 0,
            end_unix_ms: 10,
            samples,
            dropped: 0,
            pruned_stacks: 0,
            stacks: stacks
                .into_iter()
                .map(|(s, c)| (s.to_string(), c))
                .collect(),
            labeled: Vec::new(),
        }
    }

    #[test]
    fn validation_refuses_what_would_corrupt_the_store() {
        assert!(
            validate_windows(&resp(vec![w(1, vec![("a;b", 2)], 2), w(2, vec![], 0)]), 0).is_ok()
        );
        assert!(validate_windows(&resp(vec![w(2, vec![], 0), w(1, vec![], 0)]), 0).is_err());
        assert!(
            validate_windows(&resp(vec![w(1, vec![], 0)]), 1).is_err(),
            "already stored"
        );
        assert!(validate_windows(&resp(vec![w(1, vec![("a", 2)], 3)]), 0).is_err());
        assert!(validate_windows(&resp(vec![w(1, vec![("a;;b", 1)], 1)]), 0).is_err());
        assert!(
            validate_windows(&resp(vec![w(1, vec![("a", u64::MAX), ("b", 1)], 0)]), 0).is_err()
        );
        let mut v2 = resp(vec![]);
        v2.version = 2;
        assert!(validate_windows(&v2, 0).is_err());
        // `samples` counts the labeled samples too; their stacks are checked alike.
        let labeled = |stack: &str, samples: u64| {
            let mut win = w(1, vec![("a;b", 2)], samples);
            win.labeled = vec![stackwatch_profile::protocol::LabeledStacks {
                labels: [("table".to_string(), "orders".to_string())].into(),
                stacks: vec![(stack.to_string(), 3)],
            }];
            resp(vec![win])
        };
        assert!(validate_windows(&labeled("a;c", 5), 0).is_ok());
        assert!(validate_windows(&labeled("a;c", 2), 0).is_err());
        assert!(validate_windows(&labeled("a;;c", 5), 0).is_err());
    }

    #[test]
    fn windows_url_keeps_a_base_path() {
        assert_eq!(
            windows_url("http://h:1", 5).unwrap().as_str(),
            "http://h:1/windows?after=5&labels=1"
        );
        assert_eq!(
            windows_url("http://h:1/app/", 0).unwrap().as_str(),
            "http://h:1/app/windows?after=0&labels=1"
        );
    }
}
