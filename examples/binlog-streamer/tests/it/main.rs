//! binlog-streamer's integration tests: real MariaDB and Redis servers each test starts,
//! bad input, labels.
//!
//! One test binary for the crate's integration tests (each file below was its own):
//! one link instead of one per file, which is most of the suite's build time and disk.
//! A test that needs a process of its own (one that measures its process, a global
//! allocator) keeps its own file beside this folder. Run one file's tests with
//! `cargo test -p binlog-streamer --test it <file>::`.

mod bad_input;
mod common;
mod fuzz_decoder;
mod labels;
mod mariadb;
mod redis_sink;
