//! The worker's HTTP server (axum): `/metrics` for Prometheus, `/healthz` (the process is alive)
//! and `/readyz` (Redis answers, it holds this build's library, and the worker is not shutting
//! down). Kubernetes points its liveness and readiness probes here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::worker::Ctx;

/// Longest a readiness check waits for Redis.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr`, logs the address it got (port 0 picks a free one) and serves until the worker
/// has stopped. A bind failure is an error the worker starts with, not a silent absence.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("worker.http_listen = {addr:?}: cannot listen: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "http server listening");
    Ok(listener)
}

/// Serves until `done` is cancelled (after the worker's jobs have ended, so probes keep
/// answering — not ready — through the grace period).
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, done: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ctx);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    ctx.metrics
        .refresh(&ctx.store, &ctx.queues, &ctx.upstream_names)
        .await;
    ctx.metrics.in_flight.set(ctx.inflight.len() as i64);
    match ctx.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> (StatusCode, String) {
    if ctx.shutdown.stop.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match tokio::time::timeout(READY_TIMEOUT, ctx.store.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis: no answer within 2 s\n".into(),
        ),
    }
}
