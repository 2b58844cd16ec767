//! The ClickHouse schema: every table, why its key is what it is, and the migrations.
//!
//! One statement list serves a single node and a cluster: on a single node each table
//! is created as itself; with `cluster` set, each is created on every node as
//! `<name>_local` and, over those, a `Distributed` table `<name>` sharded by the key that
//! keeps what must be deduplicated together on one shard (a target's rows, a stack's
//! text). The collector and the queries only ever name `<name>`.
//!
//! - `samples_raw`: one row per (window, stack). `ReplacingMergeTree` keyed by
//!   `(hour, service, target, stack, ts, inst, seq)`: every column that identifies the
//!   window is in the key, so a window stored twice (an insert retried after a timeout,
//!   a collector killed before it recorded the checkpoint, two collectors during a
//!   hand-off) is the same key twice, and every query reads with `FINAL`, which counts
//!   one of them. The hour first and the service next make "one service over one hour" a
//!   contiguous range of the primary index; the stack before `ts` puts a stack's windows
//!   side by side, so the 8-byte stack hash compresses to almost nothing.
//!   Partitioned by day: retention drops whole partitions.
//!   The sample label set (`labels`, the xxh3-64 hash of its canonical text, 0 for the
//!   samples taken without labels) ends the sorting key: the same stack of one window
//!   under two label sets is two rows, never one replacing the other, and a window
//!   stored twice is still the same keys twice. The primary index stays the version 1
//!   key (`PRIMARY KEY`), which is what `ALTER ... MODIFY ORDER BY` leaves on a migrated
//!   table, so new and migrated tables are alike.
//! - `samples_1m`, `samples_1h`: the rollups, computed inside ClickHouse by
//!   `INSERT ... SELECT sum(count) ... FROM <finer> FINAL GROUP BY`. `ReplacingMergeTree`
//!   on `version` (the computation's time in ms): recomputing a bucket after a late
//!   window replaces it, and computing it twice is harmless.
//! - `stacks`: each distinct stack's text once per day it is used, under its xxh3-64
//!   hash; partitioned by that day, so retention drops stacks nothing stored names any
//!   more along with their day.
//! - `label_sets` (version 2): each sample label set's canonical text
//!   (`{op="insert",table="orders"}`) once per day it is used, under its hash, like
//!   `stacks`. Queries evaluate sample matchers over it and filter rows by
//!   `labels IN (...)`.
//! - `targets`: each label set under its hash, with its service and sampling period;
//!   partitioned by the day it was last written (rewritten once a day while in use).
//! - `series`: the checkpoint, `(target, inst) -> last_seq`, written only after the
//!   window's samples are stored: the checkpoint never runs ahead of the data.
//! - `rollup_state`: how far each rollup level has `started` and `completed`.
//! - `collectors`: heartbeats of the collectors sharing the store.
//! - `meta`: the schema version.
//!
//! A new database gets [`TABLES`]; one written by an older version gets the steps of
//! each later [`MIGRATIONS`] entry. Every step is idempotent (tables are created if
//! missing, a column is added only where it is missing), so an interrupted migration is
//! simply run again.

/// Current schema version (the `schema_version` row of `meta`).
pub const SCHEMA_VERSION: u64 = 2;

/// Oldest ClickHouse release the schema and queries run on (Debian's package).
pub const MIN_CLICKHOUSE: (u32, u32) = (18, 16);

/// A table of the schema: its name, columns and engine (without `ENGINE =`), and the
/// sharding key of its `Distributed` table in a cluster.
pub struct TableDef {
    /// Name as queries use it.
    pub name: &'static str,
    /// Column list.
    pub columns: &'static str,
    /// Engine clause for the stored (local) table; `{db}` and `{table}` are replaced.
    pub engine: &'static str,
    /// Sharding expression of the `Distributed` table.
    pub shard_by: &'static str,
}

const STACKS: TableDef = TableDef {
    name: "stacks",
    columns: "hash UInt64, stack String, seen Date",
    engine: "ReplacingMergeTree() PARTITION BY toYYYYMMDD(seen) ORDER BY hash",
    shard_by: "hash",
};
const TARGETS: TableDef = TableDef {
    name: "targets",
    columns:
        "id UInt64, service String, labels String, period_ns UInt64, seen Date, updated UInt64",
    engine: "ReplacingMergeTree(updated) PARTITION BY toYYYYMMDD(seen) ORDER BY id",
    shard_by: "id",
};
const SERIES: TableDef = TableDef {
    name: "series",
    columns: "target UInt64, inst String, last_seq UInt64, updated DateTime",
    engine: "ReplacingMergeTree(last_seq) PARTITION BY toYYYYMMDD(updated) ORDER BY (target, inst)",
    shard_by: "target",
};
const ROLLUP_STATE: TableDef = TableDef {
    name: "rollup_state",
    columns: "level String, value Int64",
    engine: "ReplacingMergeTree(value) ORDER BY level",
    shard_by: "rand()",
};
const COLLECTORS: TableDef = TableDef {
    name: "collectors",
    columns: "id String, addr String, beat_ms UInt64, left UInt8",
    engine: "ReplacingMergeTree(beat_ms) ORDER BY id",
    shard_by: "rand()",
};
const META: TableDef = TableDef {
    name: "meta",
    columns: "key String, value UInt64",
    engine: "ReplacingMergeTree(value) ORDER BY key",
    shard_by: "rand()",
};
const LABEL_SETS: TableDef = TableDef {
    name: "label_sets",
    columns: "hash UInt64, labels String, seen Date",
    engine: "ReplacingMergeTree() PARTITION BY toYYYYMMDD(seen) ORDER BY hash",
    shard_by: "hash",
};

/// Version 1 (kept to test the migration from it).
pub const TABLES_V1: &[TableDef] = &[
    TableDef {
        name: "samples_raw",
        columns: "ts DateTime, service String, target UInt64, stack UInt64, inst UInt64, seq UInt64, count UInt64",
        engine: "ReplacingMergeTree() PARTITION BY toYYYYMMDD(ts) ORDER BY (toStartOfHour(ts), service, target, stack, ts, inst, seq)",
        shard_by: "target",
    },
    TableDef {
        name: "samples_1m",
        columns: "ts DateTime, service String, target UInt64, stack UInt64, count UInt64, version UInt64",
        engine: "ReplacingMergeTree(version) PARTITION BY toYYYYMMDD(ts) ORDER BY (toStartOfHour(ts), service, target, stack, ts)",
        shard_by: "target",
    },
    TableDef {
        name: "samples_1h",
        columns: "ts DateTime, service String, target UInt64, stack UInt64, count UInt64, version UInt64",
        engine: "ReplacingMergeTree(version) PARTITION BY toYYYYMMDD(ts) ORDER BY (toStartOfDay(ts), service, target, stack, ts)",
        shard_by: "target",
    },
    STACKS,
    TARGETS,
    SERIES,
    ROLLUP_STATE,
    COLLECTORS,
    META,
];

/// The current version ([`SCHEMA_VERSION`]): what a new database is created with.
pub const TABLES: &[TableDef] = &[
    TableDef {
        name: "samples_raw",
        columns: "ts DateTime, service String, target UInt64, stack UInt64, labels UInt64, inst UInt64, seq UInt64, count UInt64",
        engine: "ReplacingMergeTree() PARTITION BY toYYYYMMDD(ts) PRIMARY KEY (toStartOfHour(ts), service, target, stack, ts, inst, seq) ORDER BY (toStartOfHour(ts), service, target, stack, ts, inst, seq, labels)",
        shard_by: "target",
    },
    TableDef {
        name: "samples_1m",
        columns: "ts DateTime, service String, target UInt64, stack UInt64, labels UInt64, count UInt64, version UInt64",
        engine: "ReplacingMergeTree(version) PARTITION BY toYYYYMMDD(ts) PRIMARY KEY (toStartOfHour(ts), service, target, stack, ts) ORDER BY (toStartOfHour(ts), service, target, stack, ts, labels)",
        shard_by: "target",
    },
    TableDef {
        name: "samples_1h",
        columns: "ts DateTime, service String, target UInt64, stack UInt64, labels UInt64, count UInt64, version UInt64",
        engine: "ReplacingMergeTree(version) PARTITION BY toYYYYMMDD(ts) PRIMARY KEY (toStartOfDay(ts), service, target, stack, ts) ORDER BY (toStartOfDay(ts), service, target, stack, ts, labels)",
        shard_by: "target",
    },
    STACKS,
    LABEL_SETS,
    TARGETS,
    SERIES,
    ROLLUP_STATE,
    COLLECTORS,
    META,
];

/// One step of a migration.
pub enum Step {
    /// Creates a table where it is missing (as [`create_statements`] does).
    Create(TableDef),
    /// Adds `column` to `table` where it is missing: `ALTER TABLE <stored table>
    /// {stored}` on every node, and in a cluster `ALTER TABLE <table> {distributed}` on
    /// the `Distributed` table of every node. ClickHouse 18.16 takes `ADD COLUMN` and
    /// `MODIFY ORDER BY` in one `ALTER` when the new column (without a `DEFAULT`
    /// expression: it refuses one in a sorting key) ends the new key; the rows already
    /// stored read the type's default, 0.
    AddColumn {
        /// The table's name as queries use it.
        table: &'static str,
        /// The column added.
        column: &'static str,
        /// The `ALTER` clauses for the table that stores the rows.
        stored: &'static str,
        /// The `ALTER` clause for the `Distributed` table over it (cluster only).
        distributed: &'static str,
    },
}

/// One migration: the version it reaches and its steps, in order.
pub struct Migration {
    /// The schema version once its steps are done.
    pub version: u64,
    /// What to do.
    pub steps: &'static [Step],
}

/// Migrations from older versions, in order. A new version appends an entry (and
/// updates [`TABLES`]); `open` runs every entry above the stored version.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 2,
    steps: &[
        Step::Create(LABEL_SETS),
        Step::AddColumn {
            table: "samples_raw",
            column: "labels",
            stored: "ADD COLUMN labels UInt64 AFTER stack, MODIFY ORDER BY (toStartOfHour(ts), service, target, stack, ts, inst, seq, labels)",
            distributed: "ADD COLUMN labels UInt64 AFTER stack",
        },
        Step::AddColumn {
            table: "samples_1m",
            column: "labels",
            stored: "ADD COLUMN labels UInt64 AFTER stack, MODIFY ORDER BY (toStartOfHour(ts), service, target, stack, ts, labels)",
            distributed: "ADD COLUMN labels UInt64 AFTER stack",
        },
        Step::AddColumn {
            table: "samples_1h",
            column: "labels",
            stored: "ADD COLUMN labels UInt64 AFTER stack, MODIFY ORDER BY (toStartOfDay(ts), service, target, stack, ts, labels)",
            distributed: "ADD COLUMN labels UInt64 AFTER stack",
        },
    ],
}];

/// Tables that hold samples, and how long each keeps them (see retention).
pub const SAMPLE_TABLES: &[&str] = &["samples_raw", "samples_1m", "samples_1h"];

/// The `CREATE TABLE` statements for `t` in database `db`: one for a single node;
/// with a cluster, the local table (run on every node) then the `Distributed` one.
pub fn create_statements(db: &str, t: &TableDef, cluster: Option<&str>) -> Vec<String> {
    match cluster {
        None => vec![format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ({cols}) ENGINE = {engine}",
            name = t.name,
            cols = t.columns,
            engine = t.engine
        )],
        Some(c) => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name}_local ({cols}) ENGINE = {engine}",
                name = t.name,
                cols = t.columns,
                engine = t.engine
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name} ({cols}) ENGINE = Distributed({c}, {db}, {name}_local, {shard})",
                name = t.name,
                cols = t.columns,
                shard = t.shard_by
            ),
        ],
    }
}

/// The name of the table that holds the data of `name` on one node.
pub fn stored_table(name: &str, cluster: Option<&str>) -> String {
    match cluster {
        None => name.to_string(),
        Some(_) => format!("{name}_local"),
    }
}
