//! The collector's integration tests: its HTTP API, push protocols, scopes and hostile
//! peers, against a collector each test starts.
//!
//! One test binary for the crate's integration tests (each file below was its own):
//! one link instead of one per file, which is most of the suite's build time and disk.
//! A test that needs a process of its own keeps its own file beside this folder
//! (`hardening.rs` and `decode_bombs.rs` measure their process's peak RSS). Run one
//! file's tests with `cargo test -p stackwatch-server --test it <file>::`.

mod api;
mod common;
mod fuzz_decoders;
mod hostile_peers;
mod labels;
mod profile_types;
mod push_otlp;
mod push_pyroscope;
mod read_scopes;
mod reliability;
