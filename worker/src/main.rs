//! `sluice-worker`: runs jobs from the configured queues until SIGTERM/SIGINT, then exits 0
//! after in-flight calls finish (or are handed back when the grace period ends, or at a second
//! signal). An error it cannot start with (a bad config file, a bad Redis URL) is printed once,
//! on one line, and the exit code is 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice_common::Config;
use sluice_common::config::LogFormat;
use sluice_worker::shutdown::Shutdown;

#[derive(Parser)]
#[command(
    name = "sluice-worker",
    version,
    about = "Runs Sluice jobs from Redis Streams"
)]
struct Cli {
    /// Config file (TOML); environment SLUICE__SECTION__KEY overrides it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Redis URL (overrides redis.url).
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis: Option<String>,
    /// Queues to consume, comma-separated (overrides worker.queues).
    #[arg(long, value_delimiter = ',')]
    queues: Option<Vec<String>>,
    /// Jobs run at once (overrides worker.concurrency).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Consumer name in the group (overrides worker.consumer; default <hostname>-<pid>).
    #[arg(long)]
    consumer: Option<String>,
    /// Log as JSON lines (same as log.format = "json").
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = sluice_common::oneline::one_line(e.as_ref());
            eprintln!("sluice-worker: {line}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if cli.json_logs {
        config.log.format = LogFormat::Json;
    }
    init_logging(&config)?;
    if let Some(url) = cli.redis {
        config.redis.url = url;
    }
    if let Some(q) = cli.queues {
        config.worker.queues = q;
    }
    if let Some(c) = cli.concurrency {
        config.worker.concurrency = c;
    }
    if let Some(c) = cli.consumer {
        config.worker.consumer = c;
    }
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    sluice_worker::worker::run(config, shutdown).await
}

/// Logs to stdout in the configured format; RUST_LOG, when set, replaces `log.filter`.
fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => tracing_subscriber::EnvFilter::try_new(&f)
            .map_err(|e| anyhow::anyhow!("RUST_LOG = {f:?}: {e}"))?,
        _ => tracing_subscriber::EnvFilter::try_new(&config.log.filter)
            .map_err(|e| anyhow::anyhow!("log.filter = {:?}: {e}", config.log.filter))?,
    };
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Human => builder.init(),
    }
    Ok(())
}
