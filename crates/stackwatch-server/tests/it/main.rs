//! The collector's integration tests: its HTTP API, push protocols, scopes and hostile peers, against a collector each test starts.
//!
//! One test binary for the crate's integration tests (each file below was its own):
//! one link instead of one per file, which is most of the suite's build time and disk.
//! A test that needs a process of its own (a global allocator, a signal handler) keeps
//! its own file beside this folder. Run one file's tests with `cargo test --test it
//! <file>::`.

mod api;
mod common;
mod decode_bombs;
mod fuzz_decoders;
mod hardening;
mod hostile_peers;
mod labels;
mod profile_types;
mod push_otlp;
mod push_pyroscope;
mod read_scopes;
mod reliability;
