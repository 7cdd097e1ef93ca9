//! `sluice-api`: the HTTP face of Sluice for product backends (docs/API.md).
//!
//! - [`auth`]: API keys (stored as SHA-256, compared in constant time) and what each may use;
//! - [`jobs`]: submit with an `Idempotency-Key`, read, cancel, queue stats;
//! - [`follow`]: a job's state changes as Server-Sent Events, resumable with `Last-Event-ID`;
//! - [`relay`]: the OpenAI-compatible endpoint (`/v1/chat/completions` and kin): a request is a
//!   job, answered with the upstream's own status and body once it ends;
//! - [`errors`]: one JSON error shape, with the HTTP status each problem gets.
//!
//! Everything goes through the `Producer`, so a submit is the same one server-side call as any
//! other enqueue, and duplicates and conflicts come from the library, not from this process.

pub mod auth;
pub mod errors;
pub mod follow;
pub mod jobs;
pub mod relay;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use sluice_common::Config;

use crate::Producer;

/// What every handler shares.
pub struct Api {
    pub producer: Producer,
    pub keys: auth::Keys,
    pub metrics: prometheus::Registry,
    pub requests: prometheus::IntCounterVec,
    /// `api.max_body_bytes` (a key may have less).
    pub max_body_bytes: usize,
    /// `api.relay_wait_ms`.
    pub relay_wait_ms: u64,
}

impl Api {
    pub fn new(producer: Producer, config: &Config) -> Result<Arc<Api>, prometheus::Error> {
        let metrics = prometheus::Registry::new();
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "sluice_api_requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["route", "status"],
        )?;
        metrics.register(Box::new(requests.clone()))?;
        Ok(Arc::new(Api {
            producer,
            keys: auth::Keys::from_config(&config.api),
            metrics,
            requests,
            max_body_bytes: config.api.max_body_bytes,
            relay_wait_ms: config.api.relay_wait_ms,
        }))
    }

    /// Counts an answer of `route`.
    pub fn count(&self, route: &str, status: StatusCode) {
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
    }
}

/// The routes, with the body cap of `config.api.max_body_bytes` (413 beyond it).
pub fn router(api: Arc<Api>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/queues/{queue}/jobs", post(jobs::submit))
        .route("/v1/queues/{queue}/jobs/{id}", get(jobs::read))
        .route("/v1/queues/{queue}/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/queues/{queue}/jobs/{id}/events", get(follow::events))
        .route("/v1/queues/{queue}", get(jobs::queue))
        .route("/v1/chat/completions", post(relay::chat_completions))
        .route("/v1/embeddings", post(relay::embeddings))
        .route("/v1/responses", post(relay::responses))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api)
}

async fn readyz(State(api): State<Arc<Api>>) -> (StatusCode, String) {
    match api.producer.store().ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}\n")),
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> (StatusCode, String) {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    match prometheus::TextEncoder::new().encode(&api.metrics.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
