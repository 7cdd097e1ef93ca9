//! The HTTP clients a worker calls its upstreams with. Upstreams on the defaults (`http =
//! "auto"`, one connection set) share one pooled client. An upstream that asks for HTTP/1.1 only,
//! for HTTP/2 (h2c with prior knowledge on plain http) or for several HTTP/2 connections gets
//! clients of its own: one per connection, picked round robin per call, because hyper opens a
//! single HTTP/2 connection per host and queues calls beyond the server's stream limit on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Client;
use sluice_common::config::{HttpVersion, UpstreamConfig};

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

/// The clients of one upstream: the shared one unless its settings ask for others.
pub fn for_upstream(
    c: &UpstreamConfig,
    shared: &Client,
    concurrency: usize,
) -> reqwest::Result<Clients> {
    let n = c.http2_connections.max(1);
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
    Ok(Clients {
        list,
        next: AtomicUsize::new(0),
    })
}

fn builder(concurrency: usize) -> reqwest::ClientBuilder {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency.max(1))
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
}
