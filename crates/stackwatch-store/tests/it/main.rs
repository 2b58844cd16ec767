//! The stores' integration tests: SQLite, and ClickHouse servers each test starts.
//!
//! One test binary for the crate's integration tests (each file below was its own):
//! one link instead of one per file, which is most of the suite's build time and disk.
//! A test that needs a process of its own (one that measures its process, a global
//! allocator) keeps its own file beside this folder. Run one file's tests with
//! `cargo test -p stackwatch-store --test it <file>::`.

mod cache_accounting;
#[path = "common/clickhouse.rs"]
mod clickhouse;
mod clickhouse_current_engine;
mod clickhouse_harness;
mod clickhouse_hostile_server;
mod clickhouse_store;
#[path = "common/labels.rs"]
mod sample_labels;
mod sqlite;
