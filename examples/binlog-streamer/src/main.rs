//! `binlog-streamer`: stream MySQL/MariaDB binlog row events to Redis, a file or stdout.
//! The whole command lives in [`binlog_streamer::cli`].

use binlog_streamer::cli::WorkerArgs;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "binlog-streamer", version)]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match binlog_streamer::cli::run(cli.args) {
        Ok(summary) => eprintln!("{summary}"),
        Err(e) => {
            eprintln!("binlog-streamer: error: {e}");
            std::process::exit(1);
        }
    }
}
