//! [`PushGate`]: everything a push passes before it is stored, whatever its protocol:
//! the token (and its tenant), the per-source request rate, the per-source series
//! cardinality, the de-duplication of retried pushes, and the per-source health the
//! Fleet page lists. All of it is bounded: `push.max_sources` sources, each with at most
//! `push.max_series_per_source` series, and a de-duplication memory of at most
//! [`MAX_DEDUP_ENTRIES`] digests.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde::Serialize;
use stackwatch_store::Labels;

use super::{Protocol, PushError};
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

/// Per source: rate bucket, series, last error.
struct SourceState {
    tokens: f64,
    refilled: Instant,
    last_seen: Instant,
    series: HashMap<String, PushedSeriesHealth>,
    rejected: u64,
    last_error: Option<String>,
}

/// What the Fleet page shows of one source.
#[derive(Debug, Clone, Serialize)]
pub struct PushSourceHealth {
    /// Tenant (empty: anonymous).
    pub tenant: String,
    /// Service.
    pub service: String,
    /// Pushes refused (limits, malformed bodies) since the source was first seen.
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
    /// Series refused for the cardinality limit.
    pub series_refused: AtomicU64,
    /// Profiles refused inside requests that stored others (OTLP partial success).
    pub profiles_refused: AtomicU64,
    /// Profiles acknowledged without storing (repeats).
    pub duplicates: AtomicU64,
    /// Bytes of bodies received (as sent).
    pub bytes: AtomicU64,
    /// (label set, stack) rows handed to the store.
    pub rows: AtomicU64,
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

/// The checks every push passes, and what they remember.
pub struct PushGate {
    cfg: PushConfig,
    tokens: Vec<(String, String)>,
    sources: Mutex<HashMap<SourceKey, SourceState>>,
    dedup: Mutex<Dedup>,
    /// Counters for `/metrics`.
    pub counters: PushCounters,
}

struct Dedup {
    seen: HashSet<u128>,
    order: VecDeque<(Instant, u128)>,
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
            sources: Mutex::new(HashMap::new()),
            dedup: Mutex::new(Dedup {
                seen: HashSet::new(),
                order: VecDeque::new(),
            }),
            counters: PushCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PushConfig {
        &self.cfg
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

    /// Counts one request of `source` against its rate; refuses past it. A new source
    /// past `push.max_sources` is refused too (after quiet sources are forgotten).
    pub fn admit(&self, source: &SourceKey) -> Result<(), PushError> {
        let now = Instant::now();
        let rate = f64::from(self.cfg.max_requests_per_second);
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if !sources.contains_key(source) {
            if sources.len() >= self.cfg.max_sources {
                let idle = self.cfg.source_idle;
                sources.retain(|_, s| now.duration_since(s.last_seen) < idle);
            }
            if sources.len() >= self.cfg.max_sources {
                self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                return Err(PushError::RateLimited {
                    why: format!(
                        "{} push sources are active (push.max_sources)",
                        self.cfg.max_sources
                    ),
                    retry_after: self.cfg.source_idle.min(Duration::from_secs(60)),
                });
            }
            sources.insert(
                source.clone(),
                SourceState {
                    tokens: 2.0 * rate,
                    refilled: now,
                    last_seen: now,
                    series: HashMap::new(),
                    rejected: 0,
                    last_error: None,
                },
            );
        }
        let s = sources.get_mut(source).expect("inserted above");
        s.tokens = (s.tokens + now.duration_since(s.refilled).as_secs_f64() * rate).min(2.0 * rate);
        s.refilled = now;
        s.last_seen = now;
        if s.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - s.tokens) / rate);
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let why = format!(
                "source {}/{} is over push.max_requests_per_second ({})",
                source.tenant, source.service, self.cfg.max_requests_per_second
            );
            s.rejected += 1;
            s.last_error = Some(why.clone());
            return Err(PushError::RateLimited {
                why,
                retry_after: wait.max(Duration::from_secs(1)),
            });
        }
        s.tokens -= 1.0;
        Ok(())
    }

    /// Admits series `labels` (its `labels_key`) of `source`, refusing a new one past
    /// `push.max_series_per_source`.
    pub fn admit_series(
        &self,
        source: &SourceKey,
        key: &str,
        labels: &Labels,
        protocol: Protocol,
        profile_type: &'static str,
    ) -> Result<(), PushError> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = sources.get_mut(source) else {
            return Ok(());
        };
        if !s.series.contains_key(key) {
            if s.series.len() >= self.cfg.max_series_per_source {
                self.counters.series_refused.fetch_add(1, Ordering::Relaxed);
                return Err(PushError::Invalid(format!(
                    "source {}/{} already has {} series (push.max_series_per_source)",
                    source.tenant, source.service, self.cfg.max_series_per_source
                )));
            }
            s.series.insert(
                key.to_owned(),
                PushedSeriesHealth {
                    labels: labels.clone(),
                    protocol: protocol.name(),
                    profile_type,
                    last_seen_unix_ms: 0,
                    pushes: 0,
                    duplicates: 0,
                },
            );
        }
        Ok(())
    }

    /// Records an accepted (or repeated) push of series `key`.
    pub fn seen_series(&self, source: &SourceKey, key: &str, duplicate: bool) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = sources.get_mut(source).and_then(|s| s.series.get_mut(key)) {
            h.last_seen_unix_ms = stackwatch_profile::clock::unix_ms();
            if duplicate {
                h.duplicates += 1;
            } else {
                h.pushes += 1;
            }
        }
    }

    /// Records a refused push of `source` and why.
    pub fn refused(&self, source: &SourceKey, why: &str) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sources.get_mut(source) {
            s.rejected += 1;
            s.last_error = Some(why.chars().take(300).collect());
        }
    }

    /// True the first time `digest` is seen within `push.dedup_window` (and remembers
    /// it); false for a repeat.
    pub fn first_time(&self, digest: u128) -> bool {
        let now = Instant::now();
        let mut d = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, old)) = d.order.front().copied() {
            if now.duration_since(at) < self.cfg.dedup_window && d.order.len() < MAX_DEDUP_ENTRIES {
                break;
            }
            d.order.pop_front();
            d.seen.remove(&old);
        }
        if !d.seen.insert(digest) {
            return false;
        }
        d.order.push_back((now, digest));
        true
    }

    /// Forgets a digest whose push then failed to store, so a retry is not mistaken for
    /// a repeat.
    pub fn forget(&self, digest: u128) {
        let mut d = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        d.seen.remove(&digest);
    }

    /// Every source and its series, for the Fleet page (sorted).
    pub fn sources(&self) -> Vec<PushSourceHealth> {
        let now = Instant::now();
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<PushSourceHealth> = sources
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_seen) < self.cfg.source_idle)
            .map(|(k, s)| {
                let mut series: Vec<PushedSeriesHealth> = s.series.values().cloned().collect();
                series.sort_by(|a, b| a.labels.cmp(&b.labels));
                PushSourceHealth {
                    tenant: k.tenant.clone(),
                    service: k.service.clone(),
                    rejected: s.rejected,
                    last_error: s.last_error.clone(),
                    series,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.service).cmp(&(&b.tenant, &b.service)));
        out
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

    #[test]
    fn rate_series_and_sources_are_bounded() {
        let g = gate(PushConfig {
            max_requests_per_second: 2,
            max_series_per_source: 2,
            max_sources: 1,
            ..PushConfig::default()
        });
        let a = SourceKey {
            tenant: "t".into(),
            service: "a".into(),
        };
        for _ in 0..4 {
            g.admit(&a).unwrap();
        }
        assert!(matches!(g.admit(&a), Err(PushError::RateLimited { .. })));
        let b = SourceKey {
            tenant: "t".into(),
            service: "b".into(),
        };
        assert!(matches!(g.admit(&b), Err(PushError::RateLimited { .. })));
        let l = Labels::new();
        g.admit_series(&a, "1", &l, Protocol::Otlp, "cpu").unwrap();
        g.admit_series(&a, "2", &l, Protocol::Otlp, "cpu").unwrap();
        g.admit_series(&a, "1", &l, Protocol::Otlp, "cpu").unwrap();
        assert!(g.admit_series(&a, "3", &l, Protocol::Otlp, "cpu").is_err());
        assert_eq!(g.sources()[0].series.len(), 2);
    }

    #[test]
    fn repeats_are_recognised_until_forgotten() {
        let g = gate(PushConfig::default());
        assert!(g.first_time(7));
        assert!(!g.first_time(7));
        g.forget(7);
        assert!(g.first_time(7));
    }
}
