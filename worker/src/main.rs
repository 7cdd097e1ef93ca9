//! `sluice-worker`: loads the config, connects to Redis and (once the runtime lands) runs jobs.

use std::path::PathBuf;

use clap::Parser;
use sluice_common::{Config, Store};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    let store = Store::connect(&config.redis.url, config.store_settings()).await?;
    tracing::info!(redis = store.url(), queues = ?config.worker.queues, "connected; the worker runtime is not built yet");
    Ok(())
}
