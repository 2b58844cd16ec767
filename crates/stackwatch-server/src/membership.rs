//! Which collector scrapes which target, when several share a store.
//!
//! Membership is kept in the store itself (no other service): every collector writes a
//! heartbeat every quarter of the scrape interval, and counts as live while its last
//! beat is younger than three quarters of one. Each target goes to the live collector
//! with the highest rendezvous score `xxh3(collector id, target key)`: every collector
//! computes the same owner from the same list, and a collector joining or leaving
//! moves only the targets it wins or held (about 1/N), not all of them.
//!
//! While the store cannot be read, the last known membership stands: a collector never
//! takes targets on the strength of an error. A collector that stops says so (a
//! `left` beat), so its targets move at once rather than after the timeout. During a
//! hand-off two collectors may scrape a target for a moment; the store counts every
//! window once whoever stores it (docs/protocol.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use stackwatch_store::{CollectorBeat, ProfileWriter};

/// The live collectors as this one last saw them.
pub struct Membership {
    me: String,
    addr: String,
    shared: bool,
    live: RwLock<Vec<CollectorBeat>>,
    /// Set while this collector does rollups and retention (it owns the maintenance
    /// key); shared with the writer.
    pub maintenance: Arc<AtomicBool>,
}

/// The pseudo-target whose owner runs rollups and retention.
const MAINTENANCE_KEY: &str = "stackwatch:maintenance";

impl Membership {
    /// This collector's view. `shared`: other collectors may use the store (otherwise
    /// this one owns everything and nothing is written).
    pub fn new(me: String, addr: String, shared: bool) -> Arc<Membership> {
        Arc::new(Membership {
            live: RwLock::new(vec![CollectorBeat {
                id: me.clone(),
                addr: addr.clone(),
                beat_unix_ms: 0,
                left: false,
            }]),
            me,
            addr,
            shared,
            maintenance: Arc::new(AtomicBool::new(true)),
        })
    }

    /// True when other collectors may share the store.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// This collector's id.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// The live collectors (this one included), sorted by id.
    pub fn live(&self) -> Vec<CollectorBeat> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The id of the collector that scrapes the target with `key`.
    pub fn owner(&self, key: &str) -> String {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        rendezvous(live.iter().map(|c| c.id.as_str()), key)
            .unwrap_or(&self.me)
            .to_string()
    }

    /// True when this collector scrapes the target with `key`.
    pub fn owns(&self, key: &str) -> bool {
        !self.shared || self.owner(key) == self.me
    }

    fn set_live(&self, mut live: Vec<CollectorBeat>, now_ms: u64) {
        if !live.iter().any(|c| c.id == self.me) {
            live.push(CollectorBeat {
                id: self.me.clone(),
                addr: self.addr.clone(),
                beat_unix_ms: now_ms,
                left: false,
            });
            live.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let ids: Vec<&str> = live.iter().map(|c| c.id.as_str()).collect();
        let leader = rendezvous(ids.iter().copied(), MAINTENANCE_KEY) == Some(self.me.as_str());
        {
            let old = self.live.read().unwrap_or_else(|e| e.into_inner());
            let old_ids: Vec<&str> = old.iter().map(|c| c.id.as_str()).collect();
            if old_ids != ids {
                tracing::info!(collectors = ?ids, "collector membership changed");
            }
        }
        self.maintenance.store(leader, Ordering::Relaxed);
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
    }
}

/// The id with the highest score for `key`.
pub fn rendezvous<'a>(ids: impl Iterator<Item = &'a str>, key: &str) -> Option<&'a str> {
    ids.max_by_key(|id| {
        let mut buf = Vec::with_capacity(id.len() + key.len() + 1);
        buf.extend_from_slice(id.as_bytes());
        buf.push(0);
        buf.extend_from_slice(key.as_bytes());
        (xxhash_rust::xxh3::xxh3_64(&buf), *id)
    })
}

/// How often a collector beats for a scrape `interval`, and how old a beat may be.
pub fn timing(interval: Duration) -> (Duration, Duration) {
    let beat = (interval / 4).max(Duration::from_millis(100));
    (beat, (interval * 3 / 4).max(beat * 2))
}

/// Beats and refreshes `m` until `stop` is set, then says it left. Runs on a thread of
/// its own (the store calls block).
pub fn run(
    m: Arc<Membership>,
    mut store: Box<dyn ProfileWriter + Send>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    let (every, ttl) = timing(interval);
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = stackwatch_profile::clock::unix_ms();
        let beat = CollectorBeat {
            id: m.me.clone(),
            addr: m.addr.clone(),
            beat_unix_ms: now,
            left: false,
        };
        let result = store
            .heartbeat(&beat)
            .and_then(|()| store.live_collectors(now.saturating_sub(ttl.as_millis() as u64)));
        match result {
            Ok(live) => {
                last_error = None;
                m.set_live(live, now);
            }
            Err(e) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "collector heartbeat failed; keeping the last known membership");
                }
                last_error = Some(e);
            }
        }
        std::thread::sleep(every);
    }
    let gone = CollectorBeat {
        id: m.me.clone(),
        addr: m.addr.clone(),
        beat_unix_ms: stackwatch_profile::clock::unix_ms(),
        left: true,
    };
    if let Err(e) = store.heartbeat(&gone) {
        tracing::warn!(error = %e, "could not record this collector's departure; its targets move after the heartbeat timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_collector_moves_about_one_in_n_targets() {
        let keys: Vec<String> = (0..10_000)
            .map(|i| format!("http://10.0.{}.{}/ {{}}", i / 250, i % 250))
            .collect();
        let three = ["a", "b", "c"];
        let four = ["a", "b", "c", "d"];
        let before: Vec<&str> = keys
            .iter()
            .map(|k| rendezvous(three.iter().copied(), k).unwrap())
            .collect();
        let after: Vec<&str> = keys
            .iter()
            .map(|k| rendezvous(four.iter().copied(), k).unwrap())
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Only targets the new collector wins move: ~1/4.
        assert!((2_200..2_800).contains(&moved), "{moved}");
        assert!(before.iter().zip(&after).all(|(a, b)| a == b || *b == "d"));
        // Each collector gets a fair share.
        for c in four {
            let n = after.iter().filter(|o| **o == c).count();
            assert!((2_200..2_800).contains(&n), "{c}: {n}");
        }
    }

    #[test]
    fn an_unshared_store_owns_everything() {
        let m = Membership::new("me".into(), "127.0.0.1:1".into(), false);
        m.set_live(
            vec![CollectorBeat {
                id: "zz".into(),
                addr: String::new(),
                beat_unix_ms: 1,
                left: false,
            }],
            1,
        );
        assert!(m.owns("anything"));
    }
}
