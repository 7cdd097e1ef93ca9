//! `sluice-api`: serves the HTTP API (docs/API.md) on `api.listen` until SIGTERM/SIGINT, then
//! finishes the requests in progress and exits 0. An error it cannot start with (a bad config
//! file, an unreachable Redis, a port in use) is printed once, on one line, with exit code 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice_common::Config;
use sluice_producer::Producer;
use sluice_producer::api;

#[derive(Parser)]
#[command(name = "sluice-api", version, about = "The Sluice HTTP API")]
struct Cli {
    /// Config file (TOML); environment SLUICE__SECTION__KEY overrides it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Redis URL (overrides redis.url).
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis: Option<String>,
    /// Listen address (overrides api.listen; port 0 picks a free one).
    #[arg(long)]
    listen: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "sluice-api: {}",
                sluice_common::oneline::one_line(e.as_ref())
            );
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(url) = cli.redis {
        config.redis.url = url;
    }
    if let Some(listen) = cli.listen {
        config.api.listen = listen;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log.filter)
                .map_err(|e| anyhow::anyhow!("log.filter: {e}"))?,
        )
        .with_ansi(false)
        .init();
    let producer = Producer::from_config(&config).await?;
    let state = api::Api::new(producer, &config)?;
    let listener = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .map_err(|e| anyhow::anyhow!("api.listen = {:?}: cannot listen: {e}", config.api.listen))?;
    let addr = listener.local_addr()?;
    println!("sluice-api listening on {addr}");
    tracing::info!(%addr, keys = config.api.keys.len(), "sluice-api listening");
    let app = api::router(state, config.api.max_body_bytes);
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .await?;
    Ok(())
}

/// SIGTERM or SIGINT.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
