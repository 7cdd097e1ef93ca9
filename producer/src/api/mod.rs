//! `sluice-api`: the HTTP face of Sluice for product backends (docs/API.md).
//!
//! - [`auth`]: API keys (stored as SHA-256, compared in constant time) and what each may use;
//! - [`jobs`]: submit with an `Idempotency-Key`, read, cancel, queue stats;
//! - [`follow`]: a job's state changes as Server-Sent Events, resumable with `Last-Event-ID`;
//! - [`hub`]: one events reader per queue for every waiting request and SSE stream;
//! - [`relay`]: the OpenAI-compatible endpoint (`/v1/chat/completions` and kin): a request is a
//!   job, answered with the upstream's own status and body once it ends;
//! - [`streams`]: the cap on open event streams per key;
//! - [`openapi`]: the OpenAPI document, generated from the handlers' annotations (`/openapi.json`);
//! - [`errors`]: one JSON error shape, with the HTTP status each problem gets.
//!
//! Everything goes through the `Producer`, so a submit is the same one server-side call as any
//! other enqueue, and duplicates and conflicts come from the library, not from this process.

pub mod auth;
pub mod errors;
pub mod follow;
pub mod hub;
pub mod jobs;
pub mod openapi;
pub mod relay;
pub mod streams;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sluice_common::Config;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Producer;

/// Why the API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("redis: {0}")]
    Store(#[from] sluice_common::StoreError),
}

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
    /// Open event streams per key.
    pub streams: streams::Streams,
    /// The queues' events followers (waiting requests and SSE streams subscribe here).
    pub hub: Arc<hub::Hub>,
    /// `api.max_header_bytes`.
    pub max_header_bytes: usize,
}

impl Api {
    pub fn new(producer: Producer, config: &Config) -> Result<Arc<Api>, StartError> {
        let metrics = prometheus::Registry::new();
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "sluice_api_requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["route", "status"],
        )?;
        metrics.register(Box::new(requests.clone()))?;
        let hub = hub::Hub::new(producer.store().clone())?;
        Ok(Arc::new(Api {
            hub,
            producer,
            keys: auth::Keys::from_config(&config.api),
            metrics,
            requests,
            max_body_bytes: config.api.max_body_bytes,
            relay_wait_ms: config.api.relay_wait_ms,
            streams: streams::Streams::new(config.api.max_streams_per_key),
            max_header_bytes: config.api.max_header_bytes,
        }))
    }

    /// Counts an answer of `route`.
    pub fn count(&self, route: &str, status: StatusCode) {
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
    }
}

/// The routes (each documented in `/openapi.json` from its annotation), with the body cap of
/// `config.api.max_body_bytes` (413 beyond it) and the header cap (431 beyond it).
pub fn router(api: Arc<Api>, max_body_bytes: usize) -> Router {
    let (routes, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(jobs::submit))
        .routes(routes!(jobs::read))
        .routes(routes!(jobs::cancel))
        .routes(routes!(follow::events))
        .routes(routes!(jobs::queue))
        .routes(routes!(relay::chat_completions))
        .routes(routes!(relay::embeddings))
        .routes(routes!(relay::responses))
        .split_for_parts();
    let doc = Arc::new(doc);
    routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(api.clone(), header_cap))
        .with_state(api)
}

/// 431 when a request's header names and values add up to more than `api.max_header_bytes`.
async fn header_cap(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if size > api.max_header_bytes {
        let e = errors::ApiError::HeadersTooLarge(format!(
            "headers: {size} bytes, over api.max_header_bytes ({})",
            api.max_header_bytes
        ));
        api.count("headers", e.status());
        return e.into_response();
    }
    next.run(request).await
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
