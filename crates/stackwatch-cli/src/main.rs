//! `stackwatch`: the collector and dashboard server, and the demo.

mod demo;
mod signal;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stackwatch",
    version,
    about = "Always-on CPU profiling for a fleet: collector, store and dashboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scrape the configured targets into the store and serve the API.
    Server {
        /// The configuration file (TOML; see docs/configuration.md).
        #[arg(long, short)]
        config: PathBuf,
        /// Override `listen` from the config.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override `data_dir` from the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Start three profiled binlog-streamer workers (two main, one canary), the collector
    /// and the dashboard: see it all with nothing to set up.
    Demo(demo::DemoArgs),
    /// Copy a SQLite store's history into ClickHouse (idempotent: running it twice
    /// doubles nothing).
    Migrate {
        /// The data directory of the SQLite store (holding stackwatch.db).
        #[arg(long)]
        from: PathBuf,
        /// The ClickHouse store: clickhouse://user:password@host:port/database (the
        /// port of ClickHouse's HTTP interface).
        #[arg(long)]
        to: String,
        /// ClickHouse cluster (remote_servers), as `[store] cluster`.
        #[arg(long)]
        cluster: Option<String>,
        /// With --cluster: each shard's HTTP URL, as `[store] shard_urls` (repeat).
        #[arg(long = "shard-url")]
        shard_urls: Vec<String>,
    },
    /// Run a binlog-streamer worker (what the demo starts; see `binlog-streamer --help`).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    Worker(binlog_streamer::cli::WorkerArgs),
}

/// Runs the command; an error is printed as one line with its causes (never a
/// backtrace, whatever `RUST_BACKTRACE` says: these are the user's errors, not bugs).
fn main() -> std::process::ExitCode {
    return_large_buffers_to_the_os();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stackwatch: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Fixes glibc's mmap threshold at 1 MiB, so every buffer of 1 MiB or more (a push body
/// inflating towards its 64 MiB bound, a query's answer) is its own mapping, returned to
/// the kernel when freed. By default glibc raises the threshold to the size of the last
/// such buffer freed (up to 32 MiB), after which those buffers come from the heap and
/// leave it fragmented: the collector's RSS floor then creeps up with every burst of
/// large requests instead of returning to what it holds.
fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc malloc parameter; it is called first thing in
    // main, before any other thread exists, and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn run() -> anyhow::Result<()> {
    // Colours only for a person at a terminal: a log file or a pipe gets plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args)?,
        #[cfg(feature = "demo")]
        Command::Worker(args) => match binlog_streamer::cli::run(args) {
            Ok(summary) => eprintln!("{summary}"),
            Err(e) => {
                eprintln!("binlog-streamer: error: {e}");
                std::process::exit(1);
            }
        },
        Command::Migrate {
            from,
            to,
            cluster,
            shard_urls,
        } => {
            let db = stackwatch_server::db_path(&from);
            let mut opts = stackwatch_store::ClickHouseOptions::from_url(&to)
                .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
            opts.cluster = cluster;
            opts.shard_urls = shard_urls;
            let dest = stackwatch_store::ClickHouseStore::open(opts).context("--to")?;
            let started = std::time::Instant::now();
            let stats = stackwatch_store::migrate_sqlite(&db, &dest, |table, rows| {
                eprintln!("stackwatch migrate: {table}: {rows} rows copied");
            })
            .with_context(|| format!("copying {}", db.display()))?;
            println!(
                "stackwatch migrate: copied {} targets, {} stacks, {} sample rows and {} checkpoints from {} in {:.1?} (run it again any time: nothing is doubled)",
                stats.targets,
                stats.stacks,
                stats.sample_rows,
                stats.checkpoints,
                db.display(),
                started.elapsed()
            );
        }
        Command::Server {
            config,
            listen,
            data_dir,
        } => {
            let mut cfg = stackwatch_server::Config::load(&config)?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(async move {
                let server = stackwatch_server::Server::bind(cfg).await?;
                println!(
                    "stackwatch server listening on http://{}",
                    server.local_addr()
                );
                server.run(signal::shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}
