//! The worker's sample labels: which table, which kind of change, which sink its CPU went
//! to, so a collector can answer "CPU by table".
//!
//! | key | value | set around |
//! |---|---|---|
//! | `table` | the MySQL table's name (`orders`), without its database | decoding and encoding a rows event (reader thread) |
//! | `db` | the table's database (`shop`) | the same |
//! | `op` | `insert`, `update` or `delete` | the same |
//! | `sink` | `redis`, `file`, `stdout` or `null` ([`Sink::kind`](crate::sink::Sink::kind)) | publishing a batch, retries included (publisher thread) |
//!
//! `table` is the bare name because that is what an operator asks about ("how much CPU
//! goes to `orders`"), and a fleet that shards one schema over many databases (a database
//! per tenant) then gets one line per table rather than one per shard; `db` tells them
//! apart when needed (`{table="orders", db="tenant_42"}`).
//!
//! Label sets are interned once per `(db, table)` and kind of change, and cached by the
//! table map's id, so labelling a rows event costs a hash lookup of that id and one
//! atomic store ([`stackwatch::LabelSet::enter`]): no lock, no allocation. Cardinality is
//! bounded: past [`MAX_LABELED_TABLES`] distinct tables, further tables share the value
//! [`OTHER`] (in both `table` and `db`).

use std::collections::HashMap;
use std::sync::Arc;

use stackwatch::LabelSet;

use crate::decode::{ChangeKind, TableSchema};

/// Distinct `(db, table)` pairs labeled by name; tables past it are labeled [`OTHER`].
pub const MAX_LABELED_TABLES: usize = 1000;

/// The `table` (and `db`) value of the tables past [`MAX_LABELED_TABLES`].
pub const OTHER: &str = "[other]";

/// Table ids remembered before the id cache starts afresh. Servers hand out new ids as
/// tables are reopened (after DDL, `FLUSH TABLES`, table cache evictions), so a long
/// stream sees ids without end; the names behind them stay bounded.
const MAX_CACHED_IDS: usize = 4 * MAX_LABELED_TABLES;

/// The sets of one table: by [`ChangeKind`] (insert, update, delete).
type KindSets = [LabelSet; 3];

fn kind_index(kind: ChangeKind) -> usize {
    match kind {
        ChangeKind::Insert => 0,
        ChangeKind::Update => 1,
        ChangeKind::Delete => 2,
    }
}

/// The label sets of rows events, interned once per table and kind of change.
#[derive(Default)]
pub struct TableLabels {
    /// By table id, with the schema the sets were made for (a table id whose table map
    /// changed is looked up again by name).
    by_id: HashMap<u64, (Arc<TableSchema>, KindSets)>,
    /// By `(database, table)`, at most [`MAX_LABELED_TABLES`].
    by_name: HashMap<(String, String), KindSets>,
    /// The sets of every table past the cap.
    other: Option<KindSets>,
}

impl TableLabels {
    /// No tables yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The label set (`table`, `db`, `op`) for a `kind` rows event on `table`, which
    /// the table map with id `table_id` describes. After the first event of a table
    /// id, a hash lookup and a pointer comparison.
    pub fn for_rows(
        &mut self,
        table_id: u64,
        table: &Arc<TableSchema>,
        kind: ChangeKind,
    ) -> LabelSet {
        if let Some((schema, sets)) = self.by_id.get(&table_id) {
            if Arc::ptr_eq(schema, table) {
                return sets[kind_index(kind)];
            }
        }
        let sets = self.by_name(table);
        if self.by_id.len() >= MAX_CACHED_IDS {
            self.by_id.clear();
        }
        self.by_id.insert(table_id, (table.clone(), sets));
        sets[kind_index(kind)]
    }

    /// Tables labeled by their own name so far (at most [`MAX_LABELED_TABLES`]).
    pub fn tables(&self) -> usize {
        self.by_name.len()
    }

    fn by_name(&mut self, table: &TableSchema) -> KindSets {
        // A borrowed lookup needs a key type of borrowed strings; tables are few, so the
        // miss path may allocate.
        let key = (table.database.clone(), table.table.clone());
        if let Some(sets) = self.by_name.get(&key) {
            return *sets;
        }
        if self.by_name.len() >= MAX_LABELED_TABLES {
            return *self.other.get_or_insert_with(|| kind_sets(OTHER, OTHER));
        }
        let sets = kind_sets(&table.database, &table.table);
        self.by_name.insert(key, sets);
        sets
    }
}

fn kind_sets(db: &str, table: &str) -> KindSets {
    [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete]
        .map(|k| LabelSet::new(&[("table", table), ("db", db), ("op", k.as_str())]))
}

/// The label set of a sink's publishing: `sink=<kind>`.
pub fn sink_set(kind: &str) -> LabelSet {
    LabelSet::new(&[("sink", kind)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(db: &str, table: &str) -> Arc<TableSchema> {
        Arc::new(TableSchema::new(db.into(), table.into(), Vec::new()))
    }

    fn value(set: LabelSet, key: &str) -> String {
        set.labels().get(key).cloned().unwrap_or_default()
    }

    #[test]
    fn sets_carry_table_db_and_op_and_are_reused_per_table_id() {
        let mut labels = TableLabels::new();
        let orders = schema("shop", "orders");
        let ins = labels.for_rows(70, &orders, ChangeKind::Insert);
        let del = labels.for_rows(70, &orders, ChangeKind::Delete);
        assert_eq!(
            (value(ins, "table"), value(ins, "db"), value(ins, "op")),
            ("orders".into(), "shop".into(), "insert".into())
        );
        assert_eq!(value(del, "op"), "delete");
        assert_eq!(labels.for_rows(70, &orders, ChangeKind::Insert), ins);
        // A new table id for the same table (reopened), or a new map for the same id:
        // the same sets, found by name.
        assert_eq!(labels.for_rows(99, &orders, ChangeKind::Insert), ins);
        let again = schema("shop", "orders");
        assert_eq!(labels.for_rows(70, &again, ChangeKind::Delete), del);
        // The same id now naming another table gets that table's sets.
        let users = labels.for_rows(70, &schema("shop", "users"), ChangeKind::Update);
        assert_eq!(value(users, "table"), "users");
        assert_eq!(value(users, "op"), "update");
        assert_eq!(labels.tables(), 2);
    }

    #[test]
    fn tables_past_the_cap_share_the_other_value() {
        let mut labels = TableLabels::new();
        for i in 0..MAX_LABELED_TABLES {
            let s = labels.for_rows(
                i as u64,
                &schema("db", &format!("t{i}")),
                ChangeKind::Insert,
            );
            assert_eq!(value(s, "table"), format!("t{i}"));
        }
        for i in 0..3 {
            let t = schema("db", &format!("late{i}"));
            let s = labels.for_rows(5000 + i, &t, ChangeKind::Update);
            assert_eq!(
                (value(s, "table"), value(s, "db")),
                (OTHER.into(), OTHER.into())
            );
            assert_eq!(value(s, "op"), "update");
        }
        assert_eq!(labels.tables(), MAX_LABELED_TABLES);
        // The id cache starts afresh past its bound; names still resolve.
        for i in 0..(MAX_CACHED_IDS as u64 + 10) {
            labels.for_rows(10_000 + i, &schema("db", "t1"), ChangeKind::Delete);
        }
        assert!(labels.by_id.len() <= MAX_CACHED_IDS);
        let s = labels.for_rows(1, &schema("db", "t1"), ChangeKind::Delete);
        assert_eq!(value(s, "table"), "t1");
    }
}
