//! The `stackwatch` binary's integration tests: the demo, the dashboard in a browser,
//! fleets, crashes, third-party SDKs, and the house rules (module graph, README commands).
//!
//! One test binary for the crate's integration tests (each file below was its own):
//! one link instead of one per file, which is most of the suite's build time and disk.
//! A test that needs a process of its own (one that measures its process, a global
//! allocator) keeps its own file beside this folder. Run one file's tests with
//! `cargo test -p stackwatch-cli --test it <file>::`.

mod changes_verdict;
#[path = "../../../stackwatch-store/tests/it/common/clickhouse.rs"]
mod clickhouse;
mod clickhouse_fleet;
mod clickhouse_push;
mod collector_crash;
mod common;
mod dashboard_e2e;
mod demo_e2e;
mod go_pprof_target;
mod module_graph;
mod pyroscope_sdk;
mod readme_commands;
mod server_startup;
