//! The worker as a command: its flags ([`WorkerArgs`]) and [`run`]. The
//! `binlog-streamer` binary is a thin wrapper, and `stackwatch demo` starts workers by
//! running the same code in child processes of its own binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::encode::MessageFormat;
use crate::metrics::WorkerMetrics;
use crate::pipeline::{self, PipelineError, PipelineOptions};
use crate::position::{BinlogPosition, CheckpointError, CheckpointFile};
use crate::sink::{SinkError, SinkSpec};
use crate::source::{
    EventSource, FileSource, GeneratorSource, MysqlSource, ReplicaOptions, SourceError, SourceSpec,
};

/// Streams binlog row events (insert, update, delete) as messages, profiled by stackwatch.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// mysql://user:pass@host:port (as a replica), file:PATH (a binlog file), or generate.
    #[arg(long)]
    pub source: SourceSpec,
    /// redis://host:port/STREAM, file:PATH (JSON lines), stdout, or null.
    #[arg(long, default_value = "stdout")]
    pub sink: SinkSpec,
    /// Message encoding.
    #[arg(long, value_enum, default_value = "json")]
    pub format: MessageFormat,
    /// Publish once this many messages wait.
    #[arg(long, default_value_t = 3000)]
    pub batch_size: usize,
    /// Publish once the oldest waiting message has waited this long (ms).
    #[arg(long, default_value_t = 50)]
    pub linger_ms: u64,
    /// Checkpoint file: written atomically after each acknowledged batch, read at start.
    #[arg(long)]
    pub checkpoint: Option<std::path::PathBuf>,
    /// Binlog file to start from (when there is no checkpoint yet).
    #[arg(long)]
    pub start_file: Option<String>,
    /// Offset in --start-file.
    #[arg(long, default_value_t = 4)]
    pub start_pos: u64,
    /// Server id to register as a replica with (unique in the topology).
    #[arg(long, default_value_t = 4242)]
    pub server_id: u32,
    /// With file:PATH, wait for more bytes (and the next file) at the end.
    #[arg(long)]
    pub follow: bool,
    /// With generate: row changes per second (unlimited when omitted).
    #[arg(long)]
    pub rate: Option<u64>,
    /// With generate: stop after this many row changes.
    #[arg(long)]
    pub events: Option<u64>,
    /// With generate: seed of the synthetic data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip events of unknown or unsupported types (logged and counted) instead of stopping.
    #[arg(long)]
    pub skip_unknown: bool,
    /// Serve /metrics and the stackwatch profiling endpoints here.
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` on every endpoint, the token read from
    /// this file (trailing whitespace ignored; a file keeps it out of `ps`). Collectors
    /// send it with `bearer_token_file` in their `[[targets]]`.
    #[arg(long)]
    pub http_token_file: Option<PathBuf>,
    /// Profiling frequency (0 turns the profiler off).
    #[arg(long, default_value_t = 99)]
    pub profile_hz: u32,
    /// Length of the profiler's windows (what a collector scrapes), in seconds.
    #[arg(long, default_value_t = 10)]
    pub profile_window_secs: u64,
    /// Closed windows the profiler keeps for collectors that fall behind.
    #[arg(long, default_value_t = 60)]
    pub profile_retain_windows: usize,
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A flag combination that cannot work.
    #[error("{0}")]
    Usage(String),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The profiler did not start.
    #[error("starting the profiler: {0}")]
    Profiler(stackwatch::Error),
    /// The HTTP endpoints could not be served.
    #[error("serving HTTP on {addr}: {source}")]
    Http {
        /// The address asked for.
        addr: SocketAddr,
        /// Cause.
        source: stackwatch::Error,
    },
    /// The HTTP token file could not be read.
    #[error("--http-token-file {path}: {source}")]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The sink could not be opened.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The source could not be opened.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The pipeline stopped on an error.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Runs the worker until its source ends, SIGTERM/SIGINT, or an error.
pub fn run(args: WorkerArgs) -> Result<pipeline::Summary, WorkerError> {
    if args.batch_size == 0 {
        return Err(WorkerError::Usage("--batch-size must be at least 1".into()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(WorkerError::Signals)?;
    }
    let profiler = if args.profile_hz > 0 {
        Some(
            stackwatch::Profiler::builder()
                .frequency_hz(args.profile_hz)
                .window(Duration::from_secs(args.profile_window_secs.max(1)))
                .retain_windows(args.profile_retain_windows.max(1))
                .start()
                .map_err(WorkerError::Profiler)?,
        )
    } else {
        None
    };
    let metrics = Arc::new(WorkerMetrics::default());
    let _http = match args.http_addr {
        Some(addr) => {
            let token = match &args.http_token_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|source| WorkerError::TokenFile {
                            path: path.clone(),
                            source,
                        })?
                        .trim_end()
                        .to_owned(),
                ),
                None => None,
            };
            if token.as_deref() == Some("") {
                return Err(WorkerError::TokenFile {
                    path: args.http_token_file.clone().unwrap_or_default(),
                    source: std::io::Error::other("the token file is empty"),
                });
            }
            let h = crate::http::serve(addr, metrics.clone(), profiler.as_ref(), token)
                .map_err(|source| WorkerError::Http { addr, source })?;
            eprintln!("binlog-streamer: listening on http://{}", h.local_addr());
            Some(h)
        }
        None => None,
    };
    let checkpoint = args.checkpoint.as_ref().map(CheckpointFile::new);
    let resume = match &checkpoint {
        Some(f) => f.load()?,
        None => None,
    };
    let start = match (&resume, &args.start_file) {
        (Some(cp), _) => Some(cp.position.clone()),
        (None, Some(file)) => Some(BinlogPosition::new(file.clone(), args.start_pos)),
        (None, None) => None,
    };
    let sink = args.sink.open(args.format)?;
    let source: Box<dyn EventSource> = match &args.source {
        SourceSpec::Generate => {
            pipeline::log_start("generate", None);
            Box::new(GeneratorSource::new(args.seed, args.rate, args.events))
        }
        SourceSpec::File(path) => {
            // A checkpoint names a file in the same directory as the one given.
            let (path, offset) = match &start {
                Some(p) => {
                    let dir = path.parent().unwrap_or(std::path::Path::new(""));
                    (dir.join(&p.file), Some(p.pos))
                }
                None => (path.clone(), None),
            };
            pipeline::log_start(&path.display().to_string(), start.as_ref());
            Box::new(FileSource::open(&path, offset, args.follow, stop.clone())?)
        }
        SourceSpec::Mysql(url) => {
            pipeline::log_start("replication", start.as_ref());
            Box::new(MysqlSource::connect(
                ReplicaOptions {
                    url: url.clone(),
                    server_id: args.server_id,
                    start,
                },
                stop.clone(),
            )?)
        }
    };
    let opts = PipelineOptions {
        batch_size: args.batch_size,
        linger: Duration::from_millis(args.linger_ms),
        format: args.format,
        skip_unknown: args.skip_unknown,
        checkpoint,
    };
    let summary = pipeline::run(source, sink, opts, metrics, stop)?;
    if let Some(p) = &profiler {
        p.stop();
    }
    Ok(summary)
}
