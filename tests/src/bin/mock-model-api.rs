//! `mock-model-api`: the mock model API as a process (for the demo, the benchmark and tests that
//! need it outside their own runtime). Config as JSON (`--config-json`), changeable at run time
//! with `POST /control`; see `sluice_tests::mock` for the endpoints.

use std::net::SocketAddr;

use clap::Parser;
use sluice_tests::mock::{MockConfig, MockServer};

#[derive(Parser)]
#[command(
    name = "mock-model-api",
    about = "OpenAI-compatible mock with failure injection"
)]
struct Cli {
    /// Listen address (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// Behaviour as JSON, e.g. '{"latency_ms": 50, "fail_503": 0.1, "rpm": 3000}'.
    #[arg(long, default_value = "{}")]
    config_json: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: MockConfig = serde_json::from_str(&cli.config_json)
        .map_err(|e| anyhow::anyhow!("--config-json: {e}"))?;
    let server = MockServer::start_on(cli.listen, config).await?;
    println!("mock-model-api listening on {}", server.url());
    server.serve_forever().await;
    Ok(())
}
