//! [`PushGate`]: everything a push passes before it is stored, whatever its protocol:
//! the token (and its tenant), the per-source request rate, the per-source and
//! per-tenant cardinality (sources, series), the per-tenant bytes per second, the
//! de-duplication of retried pushes, and the per-source health the Fleet page lists.
//! All of it is bounded: `push.max_sources` sources in all and
//! `push.max_sources_per_tenant` per tenant, each source with at most
//! `push.max_series_per_source` series and each tenant with at most
//! `push.max_series_per_tenant`, and a de-duplication memory of at most
//! [`MAX_DEDUP_ENTRIES`] digests. The global `push.max_sources` protects the process;
//! the per-tenant limits keep one tenant from locking the others out.
//!
//! A request is admitted whole or not at all ([`PushGate::admit_request`]): every series
//! is checked against every limit before anything is recorded, so a refused request
//! leaves no source, no series slot and no digest behind. What an admitted request
//! creates is held for it until its write ends ([`Ticket::finish`]): kept when the
//! write commits, taken back when it fails. A digest is *stored* only once its write has
//! committed; while it is being written a retry of the same push waits for the outcome
//! instead of being acknowledged (the original may still fail) or written a second time
//! (SQLite adds on conflict: a second write would double the counts).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde::Serialize;
use stackwatch_store::Labels;
use tokio::sync::watch;

use super::error::PushError;
use super::series::{Accepted, Protocol};
use crate::config::PushConfig;

/// Digests of recent pushes remembered for de-duplication, at most.
pub const MAX_DEDUP_ENTRIES: usize = 200_000;

/// A push source: the tenant (empty: anonymous) and the service it pushes for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    /// Tenant of the token (empty when anonymous).
    pub tenant: String,
    /// The `service` label.
    pub service: String,
}

/// What the Fleet page shows of one pushed series.
#[derive(Debug, Clone, Serialize)]
pub struct PushedSeriesHealth {
    /// Target labels of the series (service, tenant, tags, profile type).
    pub labels: Labels,
    /// How it arrives (`pyroscope`, `otlp`).
    pub protocol: &'static str,
    /// Its profile type.
    pub profile_type: &'static str,
    /// Last accepted push, Unix ms.
    pub last_seen_unix_ms: u64,
    /// Pushes accepted.
    pub pushes: u64,
    /// Pushes repeated within the de-duplication window (acknowledged, not stored).
    pub duplicates: u64,
}

/// One series of a series slot: its health, and whether a write of it has committed.
struct SeriesSlot {
    health: PushedSeriesHealth,
    /// Bytes of its target labels, charged to its tenant.
    label_bytes: usize,
    /// A write of it has committed (until then it is listed nowhere and only held).
    committed: bool,
    /// Admitted requests writing it whose write has not ended.
    pending: u32,
}

/// Per source: rate bucket, series, last error.
struct SourceState {
    tokens: f64,
    refilled: Instant,
    last_seen: Instant,
    series: BTreeMap<String, SeriesSlot>,
    rejected: u64,
    last_error: Option<String>,
    /// A write of one of its series has committed.
    committed: bool,
    /// Admitted requests writing to it whose write has not ended.
    pending: u32,
}

impl SourceState {
    /// The request tokens it has now (refilled at `rate` per second, up to a burst of
    /// twice that).
    fn tokens_at(&self, now: Instant, rate: f64) -> f64 {
        (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(2.0 * rate)
    }
}

/// What one tenant holds: its sources, series and their label bytes (committed or held
/// by a request being written), and the bytes it stored lately.
#[derive(Default)]
struct TenantState {
    sources: usize,
    series: usize,
    label_bytes: usize,
    /// Bytes charged and not yet paid back (at `push.max_bytes_per_second_per_tenant`)
    /// as of `debt_at`.
    bytes_debt: f64,
    debt_at: Option<Instant>,
}

impl TenantState {
    /// Bytes charged and not yet paid back at `now`, paid back at `rate` per second.
    fn debt(&self, now: Instant, rate: f64) -> f64 {
        match self.debt_at {
            Some(at) => (self.bytes_debt - now.duration_since(at).as_secs_f64() * rate).max(0.0),
            None => 0.0,
        }
    }

    /// Charges `bytes` (a refund when negative) at `now`.
    fn charge(&mut self, bytes: f64, now: Instant, rate: f64) {
        self.bytes_debt = (self.debt(now, rate) + bytes).max(0.0);
        self.debt_at = Some(now);
    }
}

/// Which limit refused a request, for `/metrics` (`stackwatch_push_limit_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `push.max_sources_per_tenant`.
    SourcesPerTenant,
    /// `push.max_series_per_tenant`.
    SeriesPerTenant,
    /// `push.max_bytes_per_second_per_tenant`.
    BytesPerSecondPerTenant,
    /// `push.max_label_bytes_per_series`.
    LabelBytesPerSeries,
    /// `push.max_label_bytes_per_tenant`.
    LabelBytesPerTenant,
}

impl Limit {
    /// Every limit, in the order of [`PushCounters::limit_refused`].
    pub const ALL: [Limit; 5] = [
        Limit::SourcesPerTenant,
        Limit::SeriesPerTenant,
        Limit::BytesPerSecondPerTenant,
        Limit::LabelBytesPerSeries,
        Limit::LabelBytesPerTenant,
    ];

    /// Its configuration key under `[push]`.
    pub fn key(self) -> &'static str {
        match self {
            Limit::SourcesPerTenant => "max_sources_per_tenant",
            Limit::SeriesPerTenant => "max_series_per_tenant",
            Limit::BytesPerSecondPerTenant => "max_bytes_per_second_per_tenant",
            Limit::LabelBytesPerSeries => "max_label_bytes_per_series",
            Limit::LabelBytesPerTenant => "max_label_bytes_per_tenant",
        }
    }
}

/// What the Fleet page shows of one source.
#[derive(Debug, Clone, Serialize)]
pub struct PushSourceHealth {
    /// Tenant (empty: anonymous).
    pub tenant: String,
    /// Service.
    pub service: String,
    /// Pushes refused (limits, malformed bodies, store errors) since the source was
    /// first stored.
    pub rejected: u64,
    /// The reason of the last refusal.
    pub last_error: Option<String>,
    /// Its series.
    pub series: Vec<PushedSeriesHealth>,
}

/// Counters of the push endpoints, for `/metrics`.
#[derive(Debug, Default)]
pub struct PushCounters {
    /// Requests accepted, by protocol.
    pub accepted: [AtomicU64; 2],
    /// Requests refused, by protocol.
    pub rejected: [AtomicU64; 2],
    /// Requests refused for the rate limit.
    pub rate_limited: AtomicU64,
    /// Requests answered `408`: their body did not arrive within `push.body_timeout`.
    pub body_timeouts: AtomicU64,
    /// Requests refused for the per-source series limit.
    pub series_refused: AtomicU64,
    /// Profiles refused inside requests that stored others (OTLP partial success).
    pub profiles_refused: AtomicU64,
    /// Series acknowledged without storing (repeats of a stored push).
    pub duplicates: AtomicU64,
    /// Bytes of bodies received (as sent).
    pub bytes: AtomicU64,
    /// (label set, stack) rows stored.
    pub rows: AtomicU64,
    /// Requests answered `503` because the store could not take them now.
    pub store_unavailable: AtomicU64,
    /// Requests that waited for the write of a repeat of one of their series (a retry
    /// arriving while its original was being written).
    pub waited_for_original: AtomicU64,
    /// Requests refused by each [`Limit`], in the order of [`Limit::ALL`].
    pub limit_refused: [AtomicU64; Limit::ALL.len()],
}

impl PushCounters {
    /// Counts a request refused by `limit`.
    fn refused_by(&self, limit: Limit) {
        let i = Limit::ALL
            .iter()
            .position(|l| *l == limit)
            .expect("every limit is in ALL");
        self.limit_refused[i].fetch_add(1, Ordering::Relaxed);
    }
}

impl PushCounters {
    /// The counter slot of a protocol.
    pub fn slot(p: Protocol) -> usize {
        match p {
            Protocol::Pyroscope => 0,
            Protocol::Otlp => 1,
        }
    }
}

/// One series of a request, as the gate admits it.
#[derive(Debug, Clone)]
pub(crate) struct SeriesClaim {
    /// Its source.
    pub(crate) source: SourceKey,
    /// Its target labels formatted (`labels_key`).
    pub(crate) key: String,
    /// Its target labels (`tenant` and the profile type included).
    pub(crate) labels: Labels,
    /// How it arrived.
    pub(crate) protocol: Protocol,
    /// Its profile type's name.
    pub(crate) profile_type: &'static str,
    /// The digest of its content (the same for a retry of the same push).
    pub(crate) digest: u128,
    /// Bytes of profile data it stores (stack text, labels, 8 per count), charged to its
    /// tenant when written.
    pub(crate) payload_bytes: u64,
}

impl SeriesClaim {
    /// Bytes of its target labels (names and values), what the label budgets count.
    pub(crate) fn label_bytes(&self) -> usize {
        self.labels.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// How the gate answered a request.
pub(crate) enum Admission {
    /// Some of its series are repeats of a push being written by another request: wait
    /// until each of these changes (the other write ended), then ask again. Nothing was
    /// recorded.
    Wait(Vec<watch::Receiver<()>>),
    /// Admitted: the ticket says which series to write and holds what they create.
    Admitted(Ticket),
}

/// An admitted request: which of its series to write (the others repeat a stored push),
/// and what it holds until its write ends. Dropped without [`Ticket::finish`] it is
/// taken back as a failed write.
pub(crate) struct Ticket {
    gate: Arc<PushGate>,
    /// Per series of the request: to be written (false: a repeat of a stored push, or
    /// of another series of the same request).
    pub(crate) write: Vec<bool>,
    /// (source, series key) written, each holding a `pending` mark.
    written: Vec<(SourceKey, String)>,
    /// Sources holding a `pending` mark.
    sources: Vec<SourceKey>,
    /// (source, series key) acknowledged as repeats.
    repeats: Vec<(SourceKey, String)>,
    /// Digests claimed as being written.
    digests: Vec<u128>,
    /// The tenant, and the bytes charged to it.
    tenant: String,
    bytes: f64,
    /// Dropped when the write ends: wakes the requests waiting for these digests.
    done: Option<watch::Sender<()>>,
}

impl Ticket {
    /// Records the end of the request's write: on success its digests are stored, its
    /// sources and series kept and counted; on failure (`Err(reason)`) everything it
    /// held is taken back and its sources record the reason. Either way the requests
    /// waiting for its digests wake up.
    pub(crate) fn finish(mut self, result: Result<(), &str>) -> Accepted {
        let outcome = self.gate.clone().end(&mut self, result);
        self.done = None;
        outcome
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.gate
                .clone()
                .end(self, Err("the request ended before its write did"));
            self.done = None;
        }
    }
}

/// De-duplication: digests stored (with when, for expiry) or being written.
#[derive(Default)]
struct Dedup {
    seen: HashMap<u128, DigestState>,
    /// Stored digests, oldest first.
    order: VecDeque<(Instant, u128)>,
}

enum DigestState {
    /// A request is writing it; the receiver changes when that write ends.
    Writing(watch::Receiver<()>),
    /// Its write committed.
    Stored,
}

/// Everything the gate remembers, under one lock: a request's checks and what it
/// records happen at once.
#[derive(Default)]
struct GateState {
    sources: BTreeMap<SourceKey, SourceState>,
    tenants: HashMap<String, TenantState>,
    dedup: Dedup,
}

/// The checks every push passes, and what they remember.
pub struct PushGate {
    cfg: PushConfig,
    tokens: Vec<(String, String)>,
    state: Mutex<GateState>,
    /// Counters for `/metrics`.
    pub counters: PushCounters,
}

/// Compares without stopping at the first difference, so response time says nothing of
/// how much of a guessed token was right.
fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

impl PushGate {
    /// A gate for `cfg` with its tokens resolved (`(token, tenant)`).
    pub fn new(cfg: PushConfig, tokens: Vec<(String, String)>) -> Self {
        PushGate {
            cfg,
            tokens,
            state: Mutex::new(GateState::default()),
            counters: PushCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PushConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant of the request's token: `Authorization: Bearer <token>` (or, as the
    /// Pyroscope SDKs send it, basic auth whose password is the token). `Ok("")` for an
    /// anonymous push when `push.allow_anonymous` is set.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, PushError> {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_of);
        match given {
            Some(token) => {
                let mut tenant = None;
                for (t, name) in &self.tokens {
                    if same_token(t, &token) {
                        tenant = Some(name.clone());
                    }
                }
                tenant.ok_or(PushError::Unauthorized("unknown token"))
            }
            None if self.cfg.allow_anonymous => Ok(String::new()),
            None => Err(PushError::Unauthorized("a bearer token is required")),
        }
    }

    /// Admits the series `claims` of one request (one tenant's), whole or not at all.
    ///
    /// Series whose digest another request is writing make the answer
    /// [`Admission::Wait`]; series whose digest is stored (or repeats another series of
    /// this request) are repeats, acknowledged and not written. The rest must pass, all
    /// of them, each source's request rate, the tenant's bytes per second, the label
    /// bytes of a series, `push.max_sources`, the tenant's sources, series and label
    /// bytes, and the per-source series limit; a refusal records nothing but the
    /// refusal on a known source. Once admitted, the rates are charged, the new sources
    /// and series are held for the request and its digests claimed as being written.
    pub(crate) fn admit_request(
        self: &Arc<Self>,
        claims: &[SeriesClaim],
    ) -> Result<Admission, PushError> {
        let now = Instant::now();
        let mut st = self.lock();
        st.dedup.expire(now, self.cfg.dedup_window);
        // Repeats, and the writes to wait for.
        let mut write = vec![true; claims.len()];
        let mut waits = Vec::new();
        let mut mine: std::collections::HashSet<u128> = std::collections::HashSet::new();
        for (i, c) in claims.iter().enumerate() {
            match st.dedup.seen.get(&c.digest) {
                Some(DigestState::Writing(rx)) => waits.push(rx.clone()),
                Some(DigestState::Stored) => write[i] = false,
                None => write[i] = mine.insert(c.digest),
            }
        }
        if !waits.is_empty() {
            return Ok(Admission::Wait(waits));
        }
        if let Err((source, e)) = self.check(&mut st, claims, &write, now) {
            if let Some(s) = st.sources.get_mut(&source) {
                s.rejected += 1;
                s.last_error = Some(e.to_string().chars().take(300).collect());
            }
            return Err(e);
        }
        // Admitted: record.
        let rate = f64::from(self.cfg.max_requests_per_second);
        let mut sources: Vec<&SourceKey> = claims.iter().map(|c| &c.source).collect();
        sources.sort_unstable();
        sources.dedup();
        let writing_sources: std::collections::HashSet<&SourceKey> = claims
            .iter()
            .zip(&write)
            .filter(|(_, w)| **w)
            .map(|(c, _)| &c.source)
            .collect();
        let mut held_sources = Vec::new();
        for k in sources {
            let writing = writing_sources.contains(k);
            if !st.sources.contains_key(k) {
                if !writing {
                    // Only repeats of a source forgotten since: nothing to hold.
                    continue;
                }
                st.sources.insert(
                    k.clone(),
                    SourceState {
                        tokens: 2.0 * rate,
                        refilled: now,
                        last_seen: now,
                        series: BTreeMap::new(),
                        rejected: 0,
                        last_error: None,
                        committed: false,
                        pending: 0,
                    },
                );
                st.tenants.entry(k.tenant.clone()).or_default().sources += 1;
            }
            let s = st.sources.get_mut(k).expect("present or inserted above");
            s.tokens = s.tokens_at(now, rate) - 1.0;
            s.refilled = now;
            s.last_seen = now;
            if writing {
                s.pending += 1;
                held_sources.push(k.clone());
            }
        }
        let bytes: f64 = claims
            .iter()
            .zip(&write)
            .filter(|(_, w)| **w)
            .map(|(c, _)| c.payload_bytes as f64)
            .sum();
        let tenant = claims[0].source.tenant.clone();
        if bytes > 0.0 {
            let rate = self.cfg.max_bytes_per_second_per_tenant as f64;
            st.tenants
                .entry(tenant.clone())
                .or_default()
                .charge(bytes, now, rate);
        }
        let (done, rx) = watch::channel(());
        let mut written = Vec::new();
        let mut repeats = Vec::new();
        let mut digests = Vec::new();
        for (c, w) in claims.iter().zip(&write) {
            if !*w {
                repeats.push((c.source.clone(), c.key.clone()));
                continue;
            }
            let GateState {
                sources, tenants, ..
            } = &mut *st;
            let s = sources.get_mut(&c.source).expect("held above");
            let slot = s.series.entry(c.key.clone()).or_insert_with(|| {
                let label_bytes = c.label_bytes();
                let t = tenants.entry(c.source.tenant.clone()).or_default();
                t.series += 1;
                t.label_bytes += label_bytes;
                SeriesSlot {
                    health: PushedSeriesHealth {
                        labels: c.labels.clone(),
                        protocol: c.protocol.name(),
                        profile_type: c.profile_type,
                        last_seen_unix_ms: 0,
                        pushes: 0,
                        duplicates: 0,
                    },
                    label_bytes,
                    committed: false,
                    pending: 0,
                }
            });
            slot.pending += 1;
            written.push((c.source.clone(), c.key.clone()));
            st.dedup
                .seen
                .insert(c.digest, DigestState::Writing(rx.clone()));
            digests.push(c.digest);
        }
        Ok(Admission::Admitted(Ticket {
            gate: self.clone(),
            write,
            written,
            sources: held_sources,
            repeats,
            digests,
            tenant,
            bytes,
            done: Some(done),
        }))
    }

    /// Every limit a request's series to be written (`write`) must pass, checked before
    /// anything is recorded. On a refusal, the source it concerns and the error.
    fn check(
        &self,
        st: &mut GateState,
        claims: &[SeriesClaim],
        write: &[bool],
        now: Instant,
    ) -> Result<(), (SourceKey, PushError)> {
        let rate = f64::from(self.cfg.max_requests_per_second);
        // The rate of every source of the request, repeats included (a request is a
        // request).
        for c in claims {
            if let Some(s) = st.sources.get(&c.source) {
                let tokens = s.tokens_at(now, rate);
                if tokens < 1.0 {
                    self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let wait = Duration::from_secs_f64((1.0 - tokens) / rate);
                    return Err((
                        c.source.clone(),
                        PushError::RateLimited {
                            why: format!(
                                "source {}/{} is over push.max_requests_per_second ({})",
                                c.source.tenant, c.source.service, self.cfg.max_requests_per_second
                            ),
                            retry_after: wait.max(Duration::from_secs(1)),
                        },
                    ));
                }
            }
        }
        // The tenant's bytes per second: admitted while it is within its burst.
        if let Some(c) = claims.iter().zip(write).find(|(_, w)| **w).map(|(c, _)| c) {
            let rate = self.cfg.max_bytes_per_second_per_tenant as f64;
            let debt = st
                .tenants
                .get(&c.source.tenant)
                .map_or(0.0, |t| t.debt(now, rate));
            if debt >= 2.0 * rate {
                self.counters.refused_by(Limit::BytesPerSecondPerTenant);
                let wait = Duration::from_secs_f64((debt - 2.0 * rate) / rate);
                return Err((
                    c.source.clone(),
                    PushError::RateLimited {
                        why: format!(
                            "tenant {:?} is over push.max_bytes_per_second_per_tenant ({})",
                            c.source.tenant, self.cfg.max_bytes_per_second_per_tenant
                        ),
                        retry_after: wait.max(Duration::from_secs(1)),
                    },
                ));
            }
        }
        // The label bytes of each series (stateless: a series past it never fits).
        for (c, _) in claims.iter().zip(write).filter(|(_, w)| **w) {
            let bytes = c.label_bytes();
            if bytes > self.cfg.max_label_bytes_per_series {
                self.counters.refused_by(Limit::LabelBytesPerSeries);
                return Err((
                    c.source.clone(),
                    PushError::Invalid(format!(
                        "series {} has {bytes} bytes of target labels, at most {} (push.max_label_bytes_per_series)",
                        c.key.chars().take(200).collect::<String>(),
                        self.cfg.max_label_bytes_per_series
                    )),
                ));
            }
        }
        // Capacity: new sources and series. Sources gone quiet are forgotten first when
        // a limit would refuse.
        match self.check_capacity(st, claims, write) {
            Ok(()) => Ok(()),
            Err(_) => {
                st.forget_idle(now, self.cfg.source_idle);
                self.check_capacity(st, claims, write)
                    .map_err(|(source, limit, e)| {
                        match limit {
                            Some(l) => self.counters.refused_by(l),
                            None if matches!(e, PushError::RateLimited { .. }) => {
                                self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                            }
                            None => {
                                self.counters.series_refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        (source, e)
                    })
            }
        }
    }

    /// The limits on what a request creates: sources and series, per source, per tenant
    /// and in all. A refusal names the source, the per-tenant limit (if it is one) and
    /// the error.
    fn check_capacity(
        &self,
        st: &GateState,
        claims: &[SeriesClaim],
        write: &[bool],
    ) -> Result<(), (SourceKey, Option<Limit>, PushError)> {
        // New series per source, in the order the request names them.
        let mut new_series: BTreeMap<&SourceKey, std::collections::BTreeSet<&str>> =
            BTreeMap::new();
        for (c, _) in claims.iter().zip(write).filter(|(_, w)| **w) {
            let known = st
                .sources
                .get(&c.source)
                .is_some_and(|s| s.series.contains_key(&c.key));
            let entry = new_series.entry(&c.source).or_default();
            if !known {
                entry.insert(&c.key);
            }
        }
        let new_sources = new_series
            .keys()
            .filter(|k| !st.sources.contains_key(**k))
            .count();
        if new_sources > 0 && st.sources.len() + new_sources > self.cfg.max_sources {
            let first = new_series
                .keys()
                .find(|k| !st.sources.contains_key(**k))
                .expect("counted above");
            return Err((
                (*first).clone(),
                None,
                PushError::RateLimited {
                    why: format!(
                        "{} push sources are active (push.max_sources)",
                        self.cfg.max_sources
                    ),
                    retry_after: self.cfg.source_idle.min(Duration::from_secs(60)),
                },
            ));
        }
        // Per tenant (a request is one tenant's).
        let tenant_name = &claims[0].source.tenant;
        let tenant = st.tenants.get(tenant_name);
        let have_sources = tenant.map_or(0, |t| t.sources);
        if new_sources > 0 && have_sources + new_sources > self.cfg.max_sources_per_tenant {
            let first = new_series
                .keys()
                .find(|k| !st.sources.contains_key(**k))
                .expect("counted above");
            return Err((
                (*first).clone(),
                Some(Limit::SourcesPerTenant),
                PushError::RateLimited {
                    why: format!(
                        "tenant {tenant_name:?} would have {} push sources, at most {} (push.max_sources_per_tenant)",
                        have_sources + new_sources,
                        self.cfg.max_sources_per_tenant
                    ),
                    retry_after: self.cfg.source_idle.min(Duration::from_secs(60)),
                },
            ));
        }
        let added: usize = new_series.values().map(|keys| keys.len()).sum();
        let added_label_bytes: usize = {
            let mut counted = std::collections::HashSet::new();
            claims
                .iter()
                .filter(|c| {
                    new_series
                        .get(&c.source)
                        .is_some_and(|keys| keys.contains(c.key.as_str()))
                        && counted.insert((&c.source, c.key.as_str()))
                })
                .map(SeriesClaim::label_bytes)
                .sum()
        };
        let have_label_bytes = tenant.map_or(0, |t| t.label_bytes);
        if added_label_bytes > 0
            && have_label_bytes + added_label_bytes > self.cfg.max_label_bytes_per_tenant
        {
            return Err((
                claims[0].source.clone(),
                Some(Limit::LabelBytesPerTenant),
                PushError::Invalid(format!(
                    "tenant {tenant_name:?} would have {} bytes of series labels, at most {} (push.max_label_bytes_per_tenant)",
                    have_label_bytes + added_label_bytes,
                    self.cfg.max_label_bytes_per_tenant
                )),
            ));
        }
        let have_series = tenant.map_or(0, |t| t.series);
        if added > 0 && have_series + added > self.cfg.max_series_per_tenant {
            let first = new_series
                .iter()
                .find(|(_, keys)| !keys.is_empty())
                .map(|(k, _)| *k)
                .expect("counted above");
            return Err((
                first.clone(),
                Some(Limit::SeriesPerTenant),
                PushError::Invalid(format!(
                    "tenant {tenant_name:?} would have {} series, at most {} (push.max_series_per_tenant)",
                    have_series + added,
                    self.cfg.max_series_per_tenant
                )),
            ));
        }
        for (k, keys) in &new_series {
            let have = st.sources.get(*k).map_or(0, |s| s.series.len());
            if have + keys.len() > self.cfg.max_series_per_source {
                return Err((
                    (*k).clone(),
                    None,
                    PushError::Invalid(format!(
                        "source {}/{} would have {} series, at most {} (push.max_series_per_source)",
                        k.tenant,
                        k.service,
                        have + keys.len(),
                        self.cfg.max_series_per_source
                    )),
                ));
            }
        }
        Ok(())
    }

    /// Records the end of `t`'s write (see [`Ticket::finish`]).
    fn end(&self, t: &mut Ticket, result: Result<(), &str>) -> Accepted {
        let now_ms = stackwatch_profile::clock::unix_ms();
        let now = Instant::now();
        let mut st = self.lock();
        let ok = result.is_ok();
        for d in t.digests.drain(..) {
            if ok {
                st.dedup.seen.insert(d, DigestState::Stored);
                st.dedup.order.push_back((now, d));
            } else {
                st.dedup.seen.remove(&d);
            }
        }
        let GateState {
            sources, tenants, ..
        } = &mut *st;
        if !ok && t.bytes > 0.0 {
            if let Some(tenant) = tenants.get_mut(&t.tenant) {
                let rate = self.cfg.max_bytes_per_second_per_tenant as f64;
                tenant.charge(-t.bytes, now, rate);
            }
            t.bytes = 0.0;
        }
        let mut outcome = Accepted::default();
        for (k, key) in t.written.drain(..) {
            let Some(s) = sources.get_mut(&k) else {
                continue;
            };
            let Some(slot) = s.series.get_mut(&key) else {
                continue;
            };
            slot.pending = slot.pending.saturating_sub(1);
            if ok {
                slot.committed = true;
                slot.health.pushes += 1;
                slot.health.last_seen_unix_ms = now_ms;
                outcome.stored += 1;
            } else if !slot.committed && slot.pending == 0 {
                let label_bytes = slot.label_bytes;
                s.series.remove(&key);
                if let Some(t) = tenants.get_mut(&k.tenant) {
                    t.series = t.series.saturating_sub(1);
                    t.label_bytes = t.label_bytes.saturating_sub(label_bytes);
                }
            }
        }
        if ok {
            for (k, key) in t.repeats.drain(..) {
                if let Some(h) = sources
                    .get_mut(&k)
                    .and_then(|s| s.series.get_mut(&key))
                    .filter(|slot| slot.committed)
                {
                    h.health.duplicates += 1;
                    h.health.last_seen_unix_ms = now_ms;
                }
                outcome.duplicates += 1;
            }
            self.counters
                .duplicates
                .fetch_add(outcome.duplicates as u64, Ordering::Relaxed);
        }
        for k in t.sources.drain(..) {
            let Some(s) = sources.get_mut(&k) else {
                continue;
            };
            s.pending = s.pending.saturating_sub(1);
            match result {
                Ok(()) => s.committed = true,
                Err(why) => {
                    s.rejected += 1;
                    s.last_error = Some(why.chars().take(300).collect());
                    if !s.committed && s.pending == 0 && s.series.is_empty() {
                        sources.remove(&k);
                        if let Some(t) = tenants.get_mut(&k.tenant) {
                            t.sources = t.sources.saturating_sub(1);
                        }
                    }
                }
            }
        }
        outcome
    }

    /// Records a refused push of `source` and why (a source not stored yet records
    /// nothing).
    pub fn refused(&self, source: &SourceKey, why: &str) {
        let mut st = self.lock();
        if let Some(s) = st.sources.get_mut(source) {
            s.rejected += 1;
            s.last_error = Some(why.chars().take(300).collect());
        }
    }

    /// One page of the sources with stored series, for the Fleet page: sorted by
    /// tenant, service and series, at most `limit` series from just after `after`
    /// (none: from the start). A source whose series do not fit in one page is listed
    /// again in the next with the rest. Returns the page and, when more follow, the
    /// cursor of the next; sources of tenants `visible` refuses are skipped (a read
    /// token's scope). Costs `limit` series and a lookup, however many there are.
    pub fn sources_page(
        &self,
        after: Option<&PageCursor>,
        limit: usize,
        visible: impl Fn(&str) -> bool,
    ) -> (Vec<PushSourceHealth>, Option<PageCursor>) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let now = Instant::now();
        let st = self.lock();
        let from = match after {
            Some(c) => Included(&c.source),
            None => Unbounded,
        };
        let mut page: Vec<PushSourceHealth> = Vec::new();
        let mut taken = 0usize;
        let mut last: Option<PageCursor> = None;
        for (k, s) in st.sources.range::<SourceKey, _>((from, Unbounded)) {
            if !s.committed
                || now.duration_since(s.last_seen) >= self.cfg.source_idle
                || !visible(&k.tenant)
            {
                continue;
            }
            let series_from = match after {
                Some(c) if c.source == *k => Excluded(c.key.as_str()),
                _ => Unbounded,
            };
            let mut series = s
                .series
                .range::<str, _>((series_from, Unbounded))
                .filter(|(_, slot)| slot.committed)
                .peekable();
            if series.peek().is_none() {
                continue;
            }
            if taken == limit {
                return (page, last);
            }
            let mut listed = Vec::new();
            for (key, slot) in series {
                if taken == limit {
                    page.push(health_of(k, s, listed));
                    return (page, last);
                }
                listed.push(slot.health.clone());
                taken += 1;
                last = Some(PageCursor {
                    source: k.clone(),
                    key: key.clone(),
                });
            }
            page.push(health_of(k, s, listed));
        }
        (page, None)
    }

    /// Every source with stored series and its series (sorted).
    #[cfg(test)]
    pub(crate) fn sources(&self) -> Vec<PushSourceHealth> {
        self.sources_page(None, usize::MAX, |_| true).0
    }

    /// Series slots held (stored or being written) across all sources: what the series
    /// limits count.
    pub fn series_held(&self) -> usize {
        self.lock().sources.values().map(|s| s.series.len()).sum()
    }
}

/// What the Fleet page lists of source `k` with `series`.
fn health_of(k: &SourceKey, s: &SourceState, series: Vec<PushedSeriesHealth>) -> PushSourceHealth {
    PushSourceHealth {
        tenant: k.tenant.clone(),
        service: k.service.clone(),
        rejected: s.rejected,
        last_error: s.last_error.clone(),
        series,
    }
}

/// Where a page of `/api/push-sources` ends: the last series listed. Sent to clients as
/// an opaque string ([`PageCursor::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// The source of the last series listed.
    pub source: SourceKey,
    /// Its series key.
    pub key: String,
}

impl PageCursor {
    /// The cursor as a URL-safe string.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let json = serde_json::json!([self.source.tenant, self.source.service, self.key]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// A cursor from [`PageCursor::encode`]'s string; `None` for anything else.
    pub fn decode(text: &str) -> Option<PageCursor> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let (tenant, service, key): (String, String, String) =
            serde_json::from_slice(&bytes).ok()?;
        Some(PageCursor {
            source: SourceKey { tenant, service },
            key,
        })
    }
}

impl GateState {
    /// Forgets sources silent for `idle` that no request is writing to.
    fn forget_idle(&mut self, now: Instant, idle: Duration) {
        let tenants = &mut self.tenants;
        self.sources.retain(|k, s| {
            let keep = s.pending > 0 || now.duration_since(s.last_seen) < idle;
            if !keep {
                if let Some(t) = tenants.get_mut(&k.tenant) {
                    t.sources = t.sources.saturating_sub(1);
                    t.series = t.series.saturating_sub(s.series.len());
                    t.label_bytes = t
                        .label_bytes
                        .saturating_sub(s.series.values().map(|x| x.label_bytes).sum());
                }
            }
            keep
        });
    }
}

impl Dedup {
    /// Forgets stored digests older than `window`, and the oldest past
    /// [`MAX_DEDUP_ENTRIES`].
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((at, old)) = self.order.front().copied() {
            if now.duration_since(at) < window && self.order.len() < MAX_DEDUP_ENTRIES {
                break;
            }
            self.order.pop_front();
            if matches!(self.seen.get(&old), Some(DigestState::Stored)) {
                self.seen.remove(&old);
            }
        }
    }
}

/// The token of an `Authorization` header: `Bearer <t>`, or `Basic base64(user:t)` (the
/// Pyroscope SDKs' `basic_auth_password`).
fn token_of(header: &str) -> Option<String> {
    let (scheme, rest) = header.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return (!password.is_empty()).then(|| password.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(cfg: PushConfig) -> PushGate {
        PushGate::new(cfg, vec![("s3cret".into(), "team-a".into())])
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn tokens_bearer_and_basic() {
        let g = gate(PushConfig::default());
        assert_eq!(g.authenticate(&headers("Bearer s3cret")).unwrap(), "team-a");
        // base64("pyroscope:s3cret")
        assert_eq!(
            g.authenticate(&headers("Basic cHlyb3Njb3BlOnMzY3JldA=="))
                .unwrap(),
            "team-a"
        );
        assert!(g.authenticate(&headers("Bearer s3cre")).is_err());
        assert!(g.authenticate(&headers("Basic !!!")).is_err());
        assert!(g.authenticate(&HeaderMap::new()).is_err());
        let anon = gate(PushConfig {
            allow_anonymous: true,
            ..PushConfig::default()
        });
        assert_eq!(anon.authenticate(&HeaderMap::new()).unwrap(), "");
    }

    fn claim(service: &str, key: &str, digest: u128) -> SeriesClaim {
        SeriesClaim {
            source: SourceKey {
                tenant: "t".into(),
                service: service.into(),
            },
            key: key.into(),
            labels: [("service".to_string(), service.to_string())].into(),
            protocol: Protocol::Otlp,
            profile_type: "cpu",
            digest,
            payload_bytes: 100,
        }
    }

    fn admitted(g: &Arc<PushGate>, claims: &[SeriesClaim]) -> Result<Ticket, PushError> {
        match g.admit_request(claims)? {
            Admission::Admitted(t) => Ok(t),
            Admission::Wait(_) => panic!("nothing is being written"),
        }
    }

    #[test]
    fn rate_series_and_sources_are_bounded() {
        let g = Arc::new(gate(PushConfig {
            max_requests_per_second: 2,
            max_series_per_source: 2,
            max_sources: 1,
            ..PushConfig::default()
        }));
        for i in 0..4 {
            admitted(&g, &[claim("a", "1", i)]).unwrap().finish(Ok(()));
        }
        assert!(matches!(
            g.admit_request(&[claim("a", "1", 9)]),
            Err(PushError::RateLimited { .. })
        ));
        assert!(matches!(
            g.admit_request(&[claim("b", "1", 10)]),
            Err(PushError::RateLimited { .. })
        ));
        let g = Arc::new(gate(PushConfig {
            max_series_per_source: 2,
            ..PushConfig::default()
        }));
        admitted(&g, &[claim("a", "1", 1), claim("a", "2", 2)])
            .unwrap()
            .finish(Ok(()));
        admitted(&g, &[claim("a", "1", 3)]).unwrap().finish(Ok(()));
        assert!(matches!(
            g.admit_request(&[claim("a", "3", 4)]),
            Err(PushError::Invalid(_))
        ));
        assert_eq!(g.sources()[0].series.len(), 2);
    }

    #[test]
    fn a_refused_request_holds_nothing_and_a_failed_write_gives_back_what_it_held() {
        let g = Arc::new(gate(PushConfig {
            max_series_per_source: 3,
            ..PushConfig::default()
        }));
        let four: Vec<SeriesClaim> = (0..4).map(|i| claim("a", &i.to_string(), i)).collect();
        assert!(g.admit_request(&four).is_err());
        assert_eq!(g.series_held(), 0);
        assert!(g.sources().is_empty());
        let t = admitted(&g, &four[..3]).unwrap();
        assert_eq!(g.series_held(), 3);
        // Held, not listed, until the write commits.
        assert!(g.sources().is_empty());
        assert_eq!(t.finish(Err("database is locked")), Accepted::default());
        assert_eq!(g.series_held(), 0);
        // The same digests are new again: the retry is written.
        let t = admitted(&g, &four[..3]).unwrap();
        assert_eq!(t.write, vec![true; 3]);
        assert_eq!(t.finish(Ok(())).stored, 3);
        assert_eq!(g.sources()[0].series.len(), 3);
    }

    #[test]
    fn a_repeat_waits_for_its_original_and_is_stored_once() {
        let g = Arc::new(gate(PushConfig::default()));
        let a = [claim("a", "1", 7)];
        let original = admitted(&g, &a).unwrap();
        let Ok(Admission::Wait(mut w)) = g.admit_request(&a) else {
            panic!("a repeat of a push being written waits");
        };
        // The original fails: the repeat is written by its own request.
        drop(original);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { w[0].changed().await }).unwrap_err();
        let retry = admitted(&g, &a).unwrap();
        assert_eq!(retry.write, vec![true]);
        let Ok(Admission::Wait(_)) = g.admit_request(&a) else {
            panic!("waits again");
        };
        assert_eq!(retry.finish(Ok(())).stored, 1);
        // Stored: the next repeat is acknowledged, not written.
        let again = admitted(&g, &a).unwrap();
        assert_eq!(again.write, vec![false]);
        assert_eq!(again.finish(Ok(())).duplicates, 1);
        // Two identical series in one request: written once.
        let twice = [claim("b", "1", 8), claim("b", "1", 8)];
        assert_eq!(admitted(&g, &twice).unwrap().write, vec![true, false]);
    }

    #[test]
    fn pages_list_every_stored_series_once_in_order() {
        let g = Arc::new(gate(PushConfig::default()));
        let mut d = 0;
        for (service, n) in [("a", 3), ("b", 1), ("c", 4)] {
            let claims: Vec<SeriesClaim> = (0..n)
                .map(|i| {
                    d += 1;
                    claim(service, &format!("{service}{i}"), d)
                })
                .collect();
            admitted(&g, &claims).unwrap().finish(Ok(()));
        }
        // Held but not stored: not listed.
        let _held = admitted(&g, &[claim("d", "d0", 100)]).unwrap();
        for limit in 1..=9 {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let (page, next) = g.sources_page(cursor.as_ref(), limit, |_| true);
                let n: usize = page.iter().map(|s| s.series.len()).sum();
                assert!(n <= limit && n > 0, "limit {limit}: {n}");
                for s in &page {
                    for x in &s.series {
                        seen.push(format!("{}/{}", s.service, x.labels["service"]));
                    }
                }
                match next {
                    Some(c) => cursor = Some(PageCursor::decode(&c.encode()).unwrap()),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 8, "limit {limit}: {seen:?}");
        }
        assert!(PageCursor::decode("not a cursor").is_none());
    }
}
