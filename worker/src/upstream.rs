//! Upstreams from config, and the HTTP call of one job.
//!
//! A job names an upstream; the URL is that upstream's base URL joined with the job's path, and
//! the result is checked to still lie below the base (the path was validated at enqueue and again
//! here). Auth comes only from the worker's config (an env var or a file), is marked sensitive so
//! it never prints, and cannot be overridden by a job. Redirects are not followed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Url};
use sluice_common::config::{Config, UpstreamConfig};
use sluice_common::{JobSpec, Method};

use crate::clients::{self, Transport};
use crate::h2c::H2cError;

/// A problem with the upstreams' configuration, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("upstreams.{name}.{key}: {reason}")]
    Invalid {
        name: String,
        key: &'static str,
        reason: String,
    },
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A call that produced no complete answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
}

/// An upstream's answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// One configured upstream.
pub struct Upstream {
    pub name: String,
    base: Url,
    auth: Option<(HeaderName, HeaderValue)>,
    headers: HeaderMap,
    pub timeout: Duration,
    idempotency_header: HeaderName,
    /// Response headers stored with a result.
    keep_headers: Vec<HeaderName>,
    /// The secret itself, only to redact it from error texts.
    secret: Option<String>,
    /// The cheap request that probes a circuit opened by a 401/403 (`probe_path`), if any.
    probe: Option<JobSpec>,
    /// Checked URLs of the paths jobs have asked for (a handful per upstream), so a call does
    /// not parse one again (URL parsing was 4% of a worker's CPU under load).
    urls: Mutex<HashMap<String, Url>>,
    /// Where its jobs may go when it cannot serve them (the fallback chain, route.rs).
    pub chain: Chain,
    /// How its calls are sent (clients.rs).
    transport: Transport,
}

/// An upstream's fallback settings (`[upstreams.NAME]`: format, fallbacks, fallback_after_ms,
/// fallback_transient_tries, context_fallback).
#[derive(Debug, Clone)]
pub struct Chain {
    pub format: sluice_common::config::ApiFormat,
    pub fallbacks: Vec<sluice_common::config::Fallback>,
    pub fallback_after: Duration,
    pub transient_tries: u32,
    pub context_fallback: Option<sluice_common::config::Fallback>,
}

/// Most paths remembered per upstream; past it, URLs are parsed per call.
const URL_CACHE: usize = 256;

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .field("auth", &self.auth.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Upstream {
    /// Whether a circuit opened by a 401/403 is probed with a cheap request (`probe_path`).
    pub fn has_probe(&self) -> bool {
        self.probe.is_some()
    }
}

/// All upstreams of this worker (each with its HTTP clients, clients.rs).
#[derive(Clone)]
pub struct Upstreams {
    map: Arc<HashMap<String, Arc<Upstream>>>,
    max_body: usize,
}

fn invalid(name: &str, key: &'static str, reason: impl Into<String>) -> UpstreamConfigError {
    UpstreamConfigError::Invalid {
        name: name.to_string(),
        key,
        reason: reason.into(),
    }
}

fn build_upstream(
    name: &str,
    c: &UpstreamConfig,
    shared: &Client,
    concurrency: usize,
) -> Result<Upstream, UpstreamConfigError> {
    let mut base = Url::parse(&c.base_url).map_err(|e| invalid(name, "base_url", e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
        return Err(invalid(
            name,
            "base_url",
            "must be an http(s) URL with a host",
        ));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let secret = match (&c.auth_env, &c.auth_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                name,
                "auth_env",
                "give auth_env or auth_file, not both",
            ));
        }
        (Some(var), None) => Some(std::env::var(var).map_err(|_| {
            invalid(
                name,
                "auth_env",
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| invalid(name, "auth_file", format!("{}: {e}", path.display())))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let auth = match &secret {
        Some(secret) => {
            let header = HeaderName::from_bytes(c.auth_header.as_bytes())
                .map_err(|_| invalid(name, "auth_header", "not a header name"))?;
            let text = if c.auth_scheme.is_empty() {
                secret.clone()
            } else {
                format!("{} {secret}", c.auth_scheme)
            };
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| invalid(name, "auth_env", "the secret is not a valid header value"))?;
            value.set_sensitive(true);
            Some((header, value))
        }
        None => None,
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &c.headers {
        let k = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| invalid(name, "headers", format!("{k:?} is not a header name")))?;
        let v = HeaderValue::from_str(v).map_err(|_| {
            invalid(
                name,
                "headers",
                format!("value of {k} is not a header value"),
            )
        })?;
        headers.insert(k, v);
    }
    let idempotency_header = HeaderName::from_bytes(c.idempotency_header.as_bytes())
        .map_err(|_| invalid(name, "idempotency_header", "not a header name"))?;
    let mut keep_headers = vec![
        HeaderName::from_static("x-request-id"),
        HeaderName::from_static("request-id"),
    ];
    for k in &c.keep_headers {
        keep_headers.push(
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                invalid(name, "keep_headers", format!("{k:?} is not a header name"))
            })?,
        );
    }
    let transport = clients::for_upstream(c, &base, shared, concurrency)?;
    Ok(Upstream {
        name: name.to_string(),
        base,
        auth,
        headers,
        timeout: Duration::from_millis(c.timeout_ms),
        idempotency_header,
        keep_headers,
        secret: secret.filter(|s| !s.is_empty()),
        probe: (!c.probe_path.is_empty()).then(|| JobSpec {
            upstream: name.to_string(),
            request: sluice_common::job::Request {
                method: Method::Get,
                path: c.probe_path.clone(),
                body: None,
                headers: Default::default(),
            },
            max_attempts: None,
            timeout_ms: None,
            deadline_ms: None,
            tokens: None,
            metadata: Default::default(),
            webhook: None,
            deliver: None,
            cache: None,
            fallbacks: None,
            tenant: None,
            priority: Default::default(),
        }),
        urls: Mutex::new(HashMap::new()),
        chain: Chain {
            format: c.format,
            fallbacks: c.fallbacks.clone(),
            fallback_after: Duration::from_millis(c.fallback_after_ms),
            transient_tries: c.fallback_transient_tries.max(1),
            context_fallback: c.context_fallback.clone(),
        },
        transport,
    })
}

impl Upstreams {
    /// Builds every configured upstream, reading secrets; fails naming the bad key.
    pub fn from_config(config: &Config) -> Result<Upstreams, UpstreamConfigError> {
        let concurrency = config.worker.concurrency;
        let shared = clients::shared(concurrency)?;
        let mut map = HashMap::new();
        for (name, c) in &config.upstreams {
            let up = build_upstream(name, c, &shared, concurrency)?;
            map.insert(name.clone(), Arc::new(up));
        }
        Ok(Upstreams {
            map: Arc::new(map),
            max_body: config.worker.result_max_bytes,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.map.get(name)
    }

    /// Hides every configured secret in a text (error messages echo requests sometimes).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for up in self.map.values() {
            if let Some(s) = &up.secret
                && s.len() >= 4
            {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// The URL of a job's request: below the upstream's base, or `None`.
    pub fn url(up: &Upstream, path: &str) -> Option<Url> {
        let cached = up
            .urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned();
        if cached.is_some() {
            return cached;
        }
        let url = up.base.join(path.trim_start_matches('/')).ok()?;
        let same_origin = url.origin() == up.base.origin();
        let url = (same_origin && url.path().starts_with(up.base.path())).then_some(url)?;
        let mut urls = up.urls.lock().unwrap_or_else(|p| p.into_inner());
        if urls.len() < URL_CACHE {
            urls.insert(path.to_string(), url.clone());
        }
        Some(url)
    }

    /// Makes the job's call. A job's headers never replace auth or the idempotency key.
    pub async fn call(
        &self,
        up: &Upstream,
        spec: &JobSpec,
        job_id: &str,
    ) -> Result<Reply, CallError> {
        let url = Self::url(up, &spec.request.path)
            .ok_or_else(|| CallError::Request("path leaves the upstream".into()))?;
        let method = match spec.request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let timeout = spec
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(up.timeout);
        let mut headers = up.headers.clone();
        for (k, v) in &spec.request.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                let reserved =
                    Some(&k) == up.auth.as_ref().map(|(h, _)| h) || k == up.idempotency_header;
                if !reserved {
                    headers.insert(k, v);
                }
            }
        }
        if let Ok(v) = HeaderValue::from_str(job_id) {
            headers.insert(up.idempotency_header.clone(), v);
        }
        if let Some((k, v)) = &up.auth {
            headers.insert(k.clone(), v.clone());
        }
        let body = match &spec.request.body {
            Some(body) => {
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Some(serde_json::to_vec(body).map_err(|e| CallError::Request(e.to_string()))?)
            }
            None => None,
        };
        let clients = match &up.transport {
            Transport::Pooled(clients) => clients,
            Transport::H2c(h2c) => {
                return self
                    .call_h2c(h2c, method, url, headers, body, timeout)
                    .await;
            }
        };
        let mut req = clients
            .pick()
            .request(method, url)
            .headers(headers)
            .timeout(timeout);
        if let Some(bytes) = body {
            req = req.body(bytes);
        }
        let map_err = |e: reqwest::Error| {
            if e.is_timeout() {
                CallError::Timeout(timeout)
            } else if e.is_connect() {
                CallError::Connect(self.redact(&e.to_string()))
            } else {
                CallError::Request(self.redact(&error_chain(&e)))
            }
        };
        let mut resp = req.send().await.map_err(map_err)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map_err)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(CallError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// The call over h2c (h2c.rs), within `timeout` from start to the answer's last byte.
    async fn call_h2c(
        &self,
        h2c: &crate::h2c::H2c,
        method: reqwest::Method,
        url: Url,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let uri = http::Uri::try_from(url.as_str())
            .map_err(|e| CallError::Request(format!("{url}: {e}")))?;
        let mut req = http::Request::new(http_body_util::Full::new(bytes::Bytes::from(
            body.unwrap_or_default(),
        )));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let answer = tokio::time::timeout(timeout, h2c.call(req, self.max_body))
            .await
            .map_err(|_| CallError::Timeout(timeout))?;
        match answer {
            Ok((status, headers, body)) => Ok(Reply {
                status,
                headers,
                body,
            }),
            Err(H2cError::Connect(e)) => Err(CallError::Connect(self.redact(&e))),
            Err(H2cError::Request(e)) => Err(CallError::Request(self.redact(&e))),
            Err(H2cError::TooLarge) => Err(CallError::TooLarge(self.max_body)),
        }
    }

    /// Sends the upstream's cheap probe (`GET {base}{probe_path}`, no tokens spent); `None` when
    /// it has none configured.
    pub async fn probe(&self, up: &Upstream) -> Option<Result<Reply, CallError>> {
        let spec = up.probe.as_ref()?;
        Some(self.call(up, spec, "sluice-probe").await)
    }

    /// The response headers worth keeping with a result: request ids and the rate-limit family.
    pub fn kept_headers(
        up: &Upstream,
        headers: &HeaderMap,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in headers {
            let n = k.as_str();
            let keep = up.keep_headers.contains(k)
                || n.starts_with("x-ratelimit-")
                || n.starts_with("anthropic-ratelimit-");
            if keep && let Ok(v) = v.to_str() {
                out.insert(n.to_string(), serde_json::Value::String(v.to_string()));
            }
        }
        out
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
