//! Collector membership, kept in ClickHouse itself (no other service): each collector
//! inserts a heartbeat row now and then; the live ones are those with a recent beat that
//! have not said they left. The server splits targets among them by rendezvous hashing.

use super::client::{num, rows, tsv_field, tsv_unescape};
use super::ClickHouseStore;
use crate::{CollectorBeat, StoreError};

impl ClickHouseStore {
    pub(super) fn beat(&self, me: &CollectorBeat) -> Result<(), StoreError> {
        let mut row = String::new();
        tsv_field(&mut row, &me.id);
        row.push('\t');
        tsv_field(&mut row, &me.addr);
        row.push_str(&format!("\t{}\t{}\n", me.beat_unix_ms, u8::from(me.left)));
        self.client.insert(
            &format!("{} (id, addr, beat_ms, left)", self.t("collectors")),
            "TabSeparated",
            row.into_bytes(),
        )
    }

    pub(super) fn collectors_since(&self, since_ms: u64) -> Result<Vec<CollectorBeat>, StoreError> {
        let text = self.read(&format!(
            "SELECT id, argMax(addr, beat_ms), max(beat_ms) AS b, argMax(left, beat_ms) AS l FROM {} GROUP BY id HAVING b >= {since_ms} AND l = 0 ORDER BY id",
            self.t("collectors")
        ))?;
        rows(&text)
            .0
            .iter()
            .map(|r| {
                Ok(CollectorBeat {
                    id: tsv_unescape(r.first().copied().unwrap_or("")),
                    addr: tsv_unescape(r.get(1).copied().unwrap_or("")),
                    beat_unix_ms: num(r.get(2), "beat")?,
                    left: false,
                })
            })
            .collect()
    }
}
