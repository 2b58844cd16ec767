//! `binlog-streamer`: the reference worker of stackwatch.
//!
//! A change-data-capture worker in the spirit of Yelp's MySQLStreamer: it reads a MySQL or
//! MariaDB binlog (as a replica, from files, or from the built-in generator), decodes row
//! events, and publishes one message per changed row to Redis Streams, a file or stdout,
//! in batches, checkpointing only what the sink acknowledged. It links the stackwatch
//! profiler, so a collector can watch where it spends CPU.
//!
//! | module | owns |
//! |---|---|
//! | [`frame`] | cutting bytes into events, checksums |
//! | [`decode`] | table maps, rows events -> [`decode::RowChange`] |
//! | [`value`] | column values and how each type prints |
//! | [`encode`] | JSON and Avro messages |
//! | [`source`] | replication, files (`--follow`), generator |
//! | [`generate`] | the synthetic primary's binlog bytes |
//! | [`labels`] | sample labels: CPU by `table`, `db`, `op` and `sink` |
//! | [`sink`] | Redis Streams, file, stdout, null |
//! | [`pipeline`] | batching, acknowledgement, checkpoints |
//! | [`position`] | positions and the checkpoint file |
//! | [`metrics`] / [`http`] | `/metrics` and the profiling endpoints |
//! | [`cli`] | the command's flags and `run` |

pub mod cli;
pub mod decode;
pub mod encode;
pub mod frame;
pub mod generate;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod pipeline;
pub mod position;
pub mod sink;
pub mod source;
pub mod value;
