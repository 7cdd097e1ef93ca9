//! How the mock serves: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port (hyper-util's
//! `auto` builder tells them apart by a connection's first bytes), with a stream limit per
//! HTTP/2 connection as a provider's front end has one. It counts connections and requests that
//! came over HTTP/2, for tests that check how a worker connects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Version;
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The default streams per HTTP/2 connection: high enough for 10,000 calls on one connection.
pub const DEFAULT_MAX_STREAMS: u32 = 65_536;

/// What the listener counts.
#[derive(Default)]
pub struct Wire {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests that arrived over HTTP/2.
    pub http2_requests: AtomicU64,
}

/// Counts a request that came over HTTP/2 (a middleware on every route).
pub async fn count_version(State(wire): State<Arc<Wire>>, req: Request, next: Next) -> Response {
    if req.version() == Version::HTTP_2 {
        wire.http2_requests.fetch_add(1, Ordering::Relaxed);
    }
    next.run(req).await
}

/// Accepts connections until the task is aborted, each served on its own task.
pub async fn serve(listener: TcpListener, app: Router, wire: Arc<Wire>, max_streams: u32) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, say: back off as axum::serve does, not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        wire.connections.fetch_add(1, Ordering::Relaxed);
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(max_streams);
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
