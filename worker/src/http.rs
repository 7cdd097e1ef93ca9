//! The worker's HTTP server (axum): `/metrics` for Prometheus, `/healthz` (the process is alive)
//! and `/readyz` (the worker has started — Redis was reached —, Redis answers, it holds this
//! build's library, and the worker is not shutting down). Kubernetes points its liveness and
//! readiness probes here. The server starts before Redis is reached, so a worker waiting for its
//! Redis is alive (200) and not ready (503, saying why).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::metrics::Metrics;

/// What the server answers from. The worker's context is there once it has started.
pub struct Served {
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    ctx: OnceLock<Arc<Ctx>>,
    /// Why the worker has not started yet.
    waiting: Mutex<String>,
}

impl Served {
    pub fn new(metrics: Arc<Metrics>, stop: CancellationToken) -> Arc<Served> {
        Arc::new(Served {
            metrics,
            stop,
            ctx: OnceLock::new(),
            waiting: Mutex::new("connecting to Redis".into()),
        })
    }

    /// The worker has started: readiness now asks Redis.
    pub fn started(&self, ctx: Arc<Ctx>) {
        let _ = self.ctx.set(ctx);
    }

    /// What `/readyz` says while the worker waits for Redis.
    pub fn waiting_for(&self, why: String) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = why;
        }
    }
}

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
pub async fn serve(served: Arc<Served>, listener: TcpListener, done: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(served);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn metrics(State(served): State<Arc<Served>>) -> Response {
    if let Some(ctx) = served.ctx.get() {
        ctx.metrics
            .refresh(&ctx.store, &ctx.queues, &ctx.upstream_names, &ctx.prices)
            .await;
        ctx.metrics.in_flight.set(ctx.inflight.len() as i64);
    }
    match served.metrics.render() {
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

async fn readyz(State(served): State<Arc<Served>>) -> (StatusCode, String) {
    if served.stop.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    let Some(ctx) = served.ctx.get() else {
        let why = served.waiting.lock().map(|w| w.clone()).unwrap_or_default();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not started: {why}\n"),
        );
    };
    match tokio::time::timeout(READY_TIMEOUT, ctx.store.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis: no answer within 2 s\n".into(),
        ),
    }
}
