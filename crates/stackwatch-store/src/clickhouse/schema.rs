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
//! - `samples_1m`, `samples_1h`: the rollups, computed inside ClickHouse by
//!   `INSERT ... SELECT sum(count) ... FROM <finer> FINAL GROUP BY`. `ReplacingMergeTree`
//!   on `version` (the computation's time in ms): recomputing a bucket after a late
//!   window replaces it, and computing it twice is harmless.
//! - `stacks`: each distinct stack's text once per day it is used, under its xxh3-64
//!   hash; partitioned by that day, so retention drops stacks nothing stored names any
//!   more along with their day.
//! - `targets`: each label set under its hash, with its service and sampling period;
//!   partitioned by the day it was last written (rewritten once a day while in use).
//! - `series`: the checkpoint, `(target, inst) -> last_seq`, written only after the
//!   window's samples are stored: the checkpoint never runs ahead of the data.
//! - `rollup_state`: how far each rollup level has `started` and `completed`.
//! - `collectors`: heartbeats of the collectors sharing the store.
//! - `meta`: the schema version.

/// Current schema version (the `schema_version` row of `meta`).
pub const SCHEMA_VERSION: u64 = 1;

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

/// Version 1.
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
    TableDef {
        name: "stacks",
        columns: "hash UInt64, stack String, seen Date",
        engine: "ReplacingMergeTree() PARTITION BY toYYYYMMDD(seen) ORDER BY hash",
        shard_by: "hash",
    },
    TableDef {
        name: "targets",
        columns: "id UInt64, service String, labels String, period_ns UInt64, seen Date, updated UInt64",
        engine: "ReplacingMergeTree(updated) PARTITION BY toYYYYMMDD(seen) ORDER BY id",
        shard_by: "id",
    },
    TableDef {
        name: "series",
        columns: "target UInt64, inst String, last_seq UInt64, updated DateTime",
        engine: "ReplacingMergeTree(last_seq) PARTITION BY toYYYYMMDD(updated) ORDER BY (target, inst)",
        shard_by: "target",
    },
    TableDef {
        name: "rollup_state",
        columns: "level String, value Int64",
        engine: "ReplacingMergeTree(value) ORDER BY level",
        shard_by: "rand()",
    },
    TableDef {
        name: "collectors",
        columns: "id String, addr String, beat_ms UInt64, left UInt8",
        engine: "ReplacingMergeTree(beat_ms) ORDER BY id",
        shard_by: "rand()",
    },
    TableDef {
        name: "meta",
        columns: "key String, value UInt64",
        engine: "ReplacingMergeTree(value) ORDER BY key",
        shard_by: "rand()",
    },
];

/// Migrations: `(version reached, tables created or statements run)`. A new version
/// appends an entry; `open` runs every entry above the stored version, in order.
pub const MIGRATIONS: &[(u64, &[TableDef])] = &[(1, TABLES_V1)];

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
