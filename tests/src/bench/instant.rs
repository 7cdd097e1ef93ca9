//! An upstream that answers at once, in the benchmark's own process: W2's and W4's "no-op"
//! handler is a real HTTP call to it, and W5's fail-once jobs get their 503 from it.
//!
//! Its CPU counts as the worker's in the harness's figures (it runs in the worker's process),
//! which makes Sluice's per-job worker CPU an over-estimate, never an under-estimate.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// The anchors' mock answer (258 bytes of chat completion).
const ANSWER: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#;

struct Upstream {
    /// `Some(ms)`: a job's first call answers 503 asking to retry after `ms`.
    fail_once_ms: Option<u64>,
    /// Jobs (idempotency keys) that have had their failure.
    failed: Mutex<HashSet<String>>,
}

/// Serves on a free loopback port until the process ends; returns its base URL.
pub async fn serve(fail_once_ms: Option<u64>) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Upstream {
        fail_once_ms,
        failed: Mutex::new(HashSet::new()),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(answer))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("instant upstream stopped: {e}");
        }
    });
    Ok(format!("http://{addr}"))
}

async fn answer(State(up): State<Arc<Upstream>>, headers: HeaderMap, _body: Bytes) -> Response {
    if let Some(ms) = up.fail_once_ms {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let first = match up.failed.lock() {
            Ok(mut seen) => seen.insert(key),
            Err(poisoned) => poisoned.into_inner().insert(key),
        };
        if first {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"error\":{\"message\":\"fail once\",\"type\":\"server_error\"}}",
            )
                .into_response();
            r.headers_mut()
                .insert("retry-after-ms", HeaderValue::from(ms));
            return r;
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        ANSWER,
    )
        .into_response()
}
