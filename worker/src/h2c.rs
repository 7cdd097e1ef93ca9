//! HTTP/2 with prior knowledge (h2c) straight on hyper, for upstreams on plain `http://` with
//! `http = "http2"`: a local model server beside the workers, typically. reqwest over
//! hyper-util's pooled client keeps ~10 KB of boxed futures per call in flight (its request,
//! the pool's and the connection's: heaptrack, docs/BENCHMARKS.md "W6"); a call here is an
//! h2 stream and hyper's response future.
//!
//! Each of the upstream's `http2_connections` slots holds one connection, opened on first use
//! and opened again once it has closed (a reset, the server's GOAWAY); callers that arrive while
//! it is being opened share that attempt. Calls go round robin across the slots and queue on a
//! connection at the server's stream limit. No proxy is used (a proxy cannot carry h2c).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use reqwest::header::HeaderMap;
use sluice_common::oneline::one_line;

type Sender = SendRequest<Full<Bytes>>;
/// A connection being opened or open, shared by the callers of its slot.
type Connecting = Shared<BoxFuture<'static, Result<Sender, String>>>;

/// How long opening a connection may take (the pooled clients' `connect_timeout` too).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest interval between pings of a connection with calls open (see [`H2c::new`]).
const MAX_PING: Duration = Duration::from_secs(10);

/// Why an h2c call produced no answer.
#[derive(Debug)]
pub enum H2cError {
    /// The connection could not be opened.
    Connect(String),
    /// The request or its answer failed on an open connection.
    Request(String),
    /// The answer's body is larger than the limit.
    TooLarge,
}

/// An answer: status, headers and the whole body.
pub type Answer = (u16, HeaderMap, Vec<u8>);

/// The connections of one upstream.
pub struct H2c {
    /// `host:port` to connect to.
    addr: String,
    /// Ping interval, and how long a ping may go unanswered.
    ping: Duration,
    slots: Vec<Mutex<Option<Connecting>>>,
    next: AtomicUsize,
}

impl H2c {
    /// While calls are open on a connection it is pinged every half of `call_timeout` (at most
    /// 10 s) and closed when a ping goes unanswered as long: a peer that vanished without a
    /// reset (a killed pod whose address is gone) would otherwise hold the slot's calls until
    /// TCP gives up, many minutes on. The next call then opens a new connection.
    pub fn new(addr: String, connections: usize, call_timeout: Duration) -> H2c {
        H2c {
            addr,
            ping: (call_timeout / 2).clamp(Duration::from_millis(100), MAX_PING),
            slots: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next slot's connection: the open one, the one being opened, or a new one.
    async fn sender(&self) -> Result<Sender, H2cError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let connecting = {
            let mut slot = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(c) if usable(c) => c.clone(),
                _ => {
                    let c = connect(self.addr.clone(), self.ping).boxed().shared();
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        connecting.await.map_err(H2cError::Connect)
    }

    /// Sends `req` and reads its whole answer, refusing a body over `max_body` bytes.
    pub async fn call(
        &self,
        req: http::Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, H2cError> {
        let mut sender = self.sender().await?;
        let request_failed = |e: hyper::Error| H2cError::Request(one_line(&e));
        sender.ready().await.map_err(request_failed)?;
        let resp = sender.send_request(req).await.map_err(request_failed)?;
        let (parts, mut body) = resp.into_parts();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(request_failed)?.into_data() {
                if out.len() + data.len() > max_body {
                    return Err(H2cError::TooLarge);
                }
                out.extend_from_slice(&data);
            }
        }
        Ok((parts.status.as_u16(), parts.headers, out))
    }
}

/// Whether a slot's connection can take calls: still opening, or open.
fn usable(c: &Connecting) -> bool {
    match c.peek() {
        None => true,
        Some(Ok(sender)) => !sender.is_closed(),
        Some(Err(_)) => false,
    }
}

async fn connect(addr: String, ping: Duration) -> Result<Sender, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| format!("{addr}: connect timed out after {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping)
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("{addr}: HTTP/2 handshake: {}", one_line(&e)))?;
    // The connection runs until it closes; its sender then reports `is_closed`.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "h2c connection ended");
        }
    });
    Ok(sender)
}
