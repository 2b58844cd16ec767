//! [`accept`]: the one way a decoded push is stored. Target labels checked, `tenant` and
//! the profile type added, the request admitted whole or refused whole by the
//! [`PushGate`], retries recognised by their content digest, and the series written
//! through the scrapers' writer. [`PushState`] is what the push routes share.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use stackwatch_profile::budget::BoundedStacks;
use stackwatch_profile::{LabelBudget, StackBudget};
use stackwatch_store::{IngestWindow, Labels};

use super::budget::SampleBudget;
use super::decode_slots;
use super::error::PushError;
use super::gate::{Admission, PushGate, SeriesClaim, SourceKey};
use super::series::{check_target_labels, Accepted, Protocol, PushedSeries};
use crate::profile_type::PROFILE_TYPE_LABEL;
use crate::writer::{WriteError, WriterHandle};

/// What the push routes share.
#[derive(Clone)]
pub struct PushState {
    /// Tokens, limits, de-duplication, source health.
    pub gate: Arc<PushGate>,
    /// Where windows go (the scrapers' writer).
    pub writer: WriterHandle,
    /// Budget of decoded stacks per request.
    pub stack_budget: StackBudget,
    /// Budget of sample label sets per request.
    pub label_budget: LabelBudget,
    /// What the profiles of one request other than CPU and wall may carry together
    /// (`push.max_amount_per_push`).
    pub max_amount_per_push: u64,
    /// How many requests inflate and decode at once (`push.max_concurrent_decodes`).
    pub decode_slots: Arc<decode_slots::DecodeSlots>,
}

impl PushState {
    /// A fresh budget for one request's profiles.
    pub(crate) fn request_budget(&self) -> SampleBudget {
        SampleBudget::new(self.stack_budget.max_samples, self.max_amount_per_push)
    }
}

/// The identity of a pushed series' content: a retry of the same push has the same
/// digest, a different push (another process of the same service, the next interval)
/// a different one.
fn digest(target_key: &str, s: &PushedSeries) -> u128 {
    use xxhash_rust::xxh3::Xxh3;
    let mut h = Xxh3::new();
    h.update(target_key.as_bytes());
    h.update(&s.start_unix_ns.to_le_bytes());
    h.update(&s.duration_ns.to_le_bytes());
    h.update(&s.period_ns.to_le_bytes());
    fn add(h: &mut Xxh3, stacks: &std::collections::HashMap<String, u64>) {
        let mut rows: Vec<(&String, &u64)> = stacks.iter().collect();
        rows.sort_unstable();
        for (stack, count) in rows {
            h.update(stack.as_bytes());
            h.update(&count.to_le_bytes());
        }
        h.update(b"\x00");
    }
    add(&mut h, &s.stacks.stacks);
    for (labels, stacks) in &s.stacks.labeled {
        h.update(stackwatch_profile::labels::format_labels(labels).as_bytes());
        add(&mut h, stacks);
    }
    h.digest128()
}

/// Bytes of profile data a series stores, what `push.max_bytes_per_second_per_tenant`
/// counts: its target labels, and per (label set, stack) row the stack text, the sample
/// labels and 8 bytes of count.
fn payload_bytes(target: &Labels, stacks: &BoundedStacks) -> u64 {
    // Target labels and sample label sets alike (both read as the map).
    fn label_bytes(l: &std::collections::BTreeMap<String, String>) -> u64 {
        l.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }
    fn rows(stacks: &std::collections::HashMap<String, u64>, labels: u64) -> u64 {
        stacks.keys().map(|s| s.len() as u64 + 8 + labels).sum()
    }
    let labeled: u64 = stacks
        .labeled
        .iter()
        .map(|(l, s)| rows(s, label_bytes(l)))
        .sum();
    label_bytes(target) + rows(&stacks.stacks, 0) + labeled
}

/// Stores the series of one request from `tenant` (empty: anonymous): target labels
/// checked, `tenant` and the profile type added, the request admitted whole or refused
/// whole by the gate ([`PushGate::admit_request`]: rates, sources, series), repeats of
/// a push stored within `push.dedup_window` acknowledged without storing. All series of
/// the request are written together.
///
/// A series whose repeat another request is writing waits for that write: acknowledged
/// once it committed, written by this request if it failed, never written twice. A
/// refused request records nothing (no source, no series slot, no digest); a write that
/// fails takes back what the request held, so its retry is stored.
pub async fn accept(
    state: &PushState,
    protocol: Protocol,
    tenant: &str,
    series: Vec<PushedSeries>,
) -> Result<Accepted, PushError> {
    let gate = &state.gate;
    let mut claims = Vec::with_capacity(series.len());
    let mut windows = Vec::with_capacity(series.len());
    for s in series {
        check_target_labels(&s.labels)?;
        let source = SourceKey {
            tenant: tenant.to_owned(),
            service: s.labels.get("service").cloned().unwrap_or_default(),
        };
        let mut target = s.labels.clone();
        if !tenant.is_empty() {
            target.insert("tenant".into(), tenant.to_owned());
        }
        if let Some(t) = s.profile_type.label_value() {
            target.insert(PROFILE_TYPE_LABEL.into(), t.to_owned());
        }
        let key = stackwatch_profile::labels::format_labels(&target);
        let d = digest(&key, &s);
        let payload_bytes = payload_bytes(&target, &s.stacks);
        let mut stacks = s.stacks;
        windows.push(IngestWindow {
            target: target.clone(),
            // The content digest: ClickHouse keeps one row per (window identity, stack),
            // so a repeat replaces instead of adding even after a restart.
            instance: format!("push-{d:032x}"),
            seq: 0,
            start_unix_s: (s.start_unix_ns / 1_000_000_000).min(i64::MAX as u64) as i64,
            stacks: std::mem::take(&mut stacks.stacks).into_iter().collect(),
            labeled: std::mem::take(&mut stacks.labeled)
                .into_iter()
                .map(|(l, s)| (l, s.into_iter().collect()))
                .collect(),
            period_ns: s.period_ns,
        });
        claims.push(SeriesClaim {
            source,
            key,
            labels: target,
            protocol,
            profile_type: s.profile_type.name(),
            digest: d,
            payload_bytes,
        });
    }
    if claims.is_empty() {
        return Ok(Accepted::default());
    }
    let mut waited = false;
    let ticket = loop {
        match gate.admit_request(&claims)? {
            Admission::Admitted(t) => break t,
            Admission::Wait(writes) => {
                if !waited {
                    waited = true;
                    gate.counters
                        .waited_for_original
                        .fetch_add(1, Ordering::Relaxed);
                }
                for mut w in writes {
                    // Ends (Err: its sender is gone) when that write has ended.
                    let _ = w.changed().await;
                }
            }
        }
    };
    let windows: Vec<IngestWindow> = windows
        .into_iter()
        .zip(&ticket.write)
        .filter_map(|(w, write)| write.then_some(w))
        .collect();
    if windows.is_empty() {
        return Ok(ticket.finish(Ok(())));
    }
    let rows: usize = windows
        .iter()
        .map(|w| w.stacks.len() + w.labeled.iter().map(|(_, s)| s.len()).sum::<usize>())
        .sum();
    // The write and the record of its outcome run to the end even when the client goes
    // away: a write that commits after its request was dropped must still count as
    // stored, or a retry would write it a second time.
    let writer = state.writer.clone();
    let written = tokio::spawn(async move {
        let result = writer.write(windows).await;
        let failed = result.as_ref().err().map(ToString::to_string);
        let outcome = ticket.finish(match &failed {
            None => Ok(()),
            Some(why) => Err(why.as_str()),
        });
        result.map(|()| outcome)
    })
    .await
    .map_err(|e| PushError::Unavailable(format!("the write stopped: {e}")))?;
    match written {
        Ok(accepted) => {
            gate.counters.rows.fetch_add(rows as u64, Ordering::Relaxed);
            Ok(accepted)
        }
        Err(e) => {
            let refusal = write_refusal(e);
            if matches!(refusal, PushError::Unavailable(_)) {
                gate.counters
                    .store_unavailable
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(refusal)
        }
    }
}

/// The refusal a failed write answers.
fn write_refusal(e: WriteError) -> PushError {
    // Transient (the backlog full, the writer stopping, the store unavailable or busy):
    // 503 with Retry-After, the client retries; otherwise the request itself is refused.
    if e.is_transient() {
        PushError::Unavailable(e.to_string())
    } else {
        PushError::Invalid(e.to_string())
    }
}
