//! `binlog-streamer`: stream MySQL/MariaDB binlog row events to Redis, a file or stdout.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use binlog_streamer::encode::MessageFormat;
use binlog_streamer::metrics::WorkerMetrics;
use binlog_streamer::pipeline::{self, PipelineOptions};
use binlog_streamer::position::{BinlogPosition, CheckpointFile};
use binlog_streamer::sink::SinkSpec;
use binlog_streamer::source::{
    EventSource, FileSource, GeneratorSource, MysqlSource, ReplicaOptions, SourceSpec,
};
use clap::Parser;

/// Streams binlog row events (insert, update, delete) as messages, profiled by stackwatch.
#[derive(Debug, Parser)]
#[command(name = "binlog-streamer", version)]
struct Args {
    /// mysql://user:pass@host:port (as a replica), file:PATH (a binlog file), or generate.
    #[arg(long)]
    source: SourceSpec,
    /// redis://host:port/STREAM, file:PATH (JSON lines), stdout, or null.
    #[arg(long, default_value = "stdout")]
    sink: SinkSpec,
    /// Message encoding.
    #[arg(long, value_enum, default_value = "json")]
    format: MessageFormat,
    /// Publish once this many messages wait.
    #[arg(long, default_value_t = 3000)]
    batch_size: usize,
    /// Publish once the oldest waiting message has waited this long (ms).
    #[arg(long, default_value_t = 50)]
    linger_ms: u64,
    /// Checkpoint file: written atomically after each acknowledged batch, read at start.
    #[arg(long)]
    checkpoint: Option<std::path::PathBuf>,
    /// Binlog file to start from (when there is no checkpoint yet).
    #[arg(long)]
    start_file: Option<String>,
    /// Offset in --start-file.
    #[arg(long, default_value_t = 4)]
    start_pos: u64,
    /// Server id to register as a replica with (unique in the topology).
    #[arg(long, default_value_t = 4242)]
    server_id: u32,
    /// With file:PATH, wait for more bytes (and the next file) at the end.
    #[arg(long)]
    follow: bool,
    /// With generate: row changes per second (unlimited when omitted).
    #[arg(long)]
    rate: Option<u64>,
    /// With generate: stop after this many row changes.
    #[arg(long)]
    events: Option<u64>,
    /// With generate: seed of the synthetic data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip events of unknown or unsupported types (logged and counted) instead of stopping.
    #[arg(long)]
    skip_unknown: bool,
    /// Serve /metrics and the stackwatch profiling endpoints here.
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Profiling frequency (0 turns the profiler off).
    #[arg(long, default_value_t = 99)]
    profile_hz: u32,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(summary) => eprintln!("{summary}"),
        Err(e) => {
            eprintln!("binlog-streamer: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: Args) -> Result<pipeline::Summary> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let profiler = if args.profile_hz > 0 {
        Some(
            stackwatch::Profiler::builder()
                .frequency_hz(args.profile_hz)
                .start()
                .context("starting the profiler")?,
        )
    } else {
        None
    };
    let metrics = Arc::new(WorkerMetrics::default());
    let _http = match args.http_addr {
        Some(addr) => {
            let h = binlog_streamer::http::serve(addr, metrics.clone(), profiler.as_ref())
                .with_context(|| format!("serving HTTP on {addr}"))?;
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
