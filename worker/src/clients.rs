//! How a worker reaches each upstream. Upstreams on the defaults (`http = "auto"`, one
//! connection set) share one pooled reqwest client. An upstream that asks for HTTP/1.1 only, or
//! for HTTP/2 or several HTTP/2 connections over https, gets reqwest clients of its own: one per
//! connection, picked round robin per call, because hyper opens a single HTTP/2 connection per
//! host and queues calls beyond the server's stream limit on it. HTTP/2 on plain http (h2c) goes
//! straight through hyper ([`crate::h2c`]), which keeps far less per call in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Client, Url};
use sluice_common::config::{HttpVersion, UpstreamConfig};

use crate::h2c::{CONNECT_TIMEOUT, H2c};

/// One upstream's transport.
pub enum Transport {
    /// reqwest: HTTP/1.1, or HTTP/2 over https.
    Pooled(Clients),
    /// h2c straight on hyper.
    H2c(H2c),
}

/// The client or clients one upstream's calls go through.
pub struct Clients {
    list: Vec<Client>,
    next: AtomicUsize,
}

impl Clients {
    /// The client for the next call.
    pub fn pick(&self) -> &Client {
        let i = match self.list.len() {
            1 => 0,
            n => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        &self.list[i]
    }
}

/// The shared client: HTTP/1.1 on http://, HTTP/2 or HTTP/1.1 by ALPN on https://.
pub fn shared(concurrency: usize) -> reqwest::Result<Client> {
    builder(concurrency).build()
}

/// The transport of the upstream at `base`: h2c for `http2` on http://, else reqwest clients.
pub fn for_upstream(
    c: &UpstreamConfig,
    base: &Url,
    shared: &Client,
    concurrency: usize,
) -> reqwest::Result<Transport> {
    let n = c.http2_connections.max(1);
    if c.http == HttpVersion::Http2
        && base.scheme() == "http"
        && let (Some(host), Some(port)) = (base.host(), base.port_or_known_default())
    {
        let timeout = Duration::from_millis(c.timeout_ms);
        return Ok(Transport::H2c(H2c::new(
            format!("{host}:{port}"),
            n,
            timeout,
        )));
    }
    let list = if c.http == HttpVersion::Auto && n == 1 {
        vec![shared.clone()]
    } else {
        (0..n)
            .map(|_| {
                let b = builder(concurrency);
                match c.http {
                    HttpVersion::Auto => b,
                    HttpVersion::Http1 => b.http1_only(),
                    HttpVersion::Http2 => b.http2_prior_knowledge(),
                }
                .build()
            })
            .collect::<reqwest::Result<_>>()?
    };
    Ok(Transport::Pooled(Clients {
        list,
        next: AtomicUsize::new(0),
    }))
}

fn builder(concurrency: usize) -> reqwest::ClientBuilder {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency.max(1))
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
}
