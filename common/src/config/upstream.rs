//! One upstream's configuration (`[upstreams.NAME]`): where it is, how to authenticate, its
//! limits and circuit settings — with the defaults of the fields an upstream may leave out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::fallback::{ApiFormat, Fallback, default_fallback_after_ms, default_transient_tries};

/// One upstream API. The secret is read from `auth_env` or `auth_file` by the worker at start-up;
/// it never appears in config dumps, jobs, Redis or logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub base_url: String,
    #[serde(default)]
    pub auth_env: Option<String>,
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    #[serde(default = "default_auth_scheme")]
    pub auth_scheme: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response headers stored with a result (besides `x-request-id` and the rate-limit family).
    #[serde(default)]
    pub keep_headers: Vec<String>,
    /// Requests per minute for the whole fleet (0: no limit).
    #[serde(default)]
    pub rpm: u64,
    /// Follow a quota nobody wrote down: `rpm` becomes the ceiling and the fleet's rate backs off
    /// on 429s and probes upward while answers are clean (AIMD).
    #[serde(default)]
    pub adaptive: bool,
    /// Tokens per minute for the whole fleet (0: no limit); a job's estimate is its `tokens`, else
    /// prompt characters ÷ 4 + `max_tokens`, corrected from the answer's `usage.total_tokens`.
    #[serde(default)]
    pub tpm: u64,
    /// Calls in flight to this upstream per worker process (0: only `worker.concurrency`).
    #[serde(default)]
    pub max_concurrency: usize,
    /// Burst window: no window of this many ms carries more than its share of the rate plus one
    /// window's worth; 50 ms keeps every second within 105% of rpm ÷ 60.
    #[serde(default = "default_burst_ms")]
    pub burst_ms: u64,
    /// Burst window of the token buckets: the provider's own window for tokens (the mock's and
    /// OpenAI's are about a second). Refunds of unused `max_tokens` are banked only within it,
    /// as the provider banks them; a window much smaller than the provider's lets unused-token
    /// refunds pile up that the provider has already thrown away, and 429s follow.
    #[serde(default = "default_token_burst_ms")]
    pub token_burst_ms: u64,
    /// Serve identical requests to this upstream from the queue's response cache for this long
    /// (0: off; a job may still ask for it itself). Only requests that ask for a deterministic
    /// answer are cached this way: not `temperature` > 0 or `n` > 1, unless
    /// `cache_nondeterministic` (docs/OPERATIONS.md, "Response cache").
    #[serde(default)]
    pub cache_ttl_ms: u64,
    /// Cache requests with `temperature` > 0 or `n` > 1 too.
    #[serde(default)]
    pub cache_nondeterministic: bool,
    /// Request headers whose values change the answer: part of the cache key.
    #[serde(default)]
    pub cache_vary: Vec<String>,
    /// Answers larger than this are not cached.
    #[serde(default = "default_cache_max_bytes")]
    pub cache_max_bytes: u64,
    /// Per-model limits (providers limit each model separately), by the body's `model`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelLimits>,
    /// How long the circuit stays open before a half-open probe.
    #[serde(default = "default_cooloff_ms")]
    pub circuit_cooloff_ms: u64,
    /// Calls the fleet must have made in the window before the failure rate can open the
    /// circuit (`circuit_failures` is the old name, still read).
    #[serde(default = "default_circuit_min_calls", alias = "circuit_failures")]
    pub circuit_min_calls: u64,
    /// Share of the window's calls (0 < rate <= 1) that failed transiently (5xx, timeouts,
    /// resets) at which the circuit opens.
    #[serde(default = "default_circuit_failure_rate")]
    pub circuit_failure_rate: f64,
    /// The window the failure rate is counted in.
    #[serde(default = "default_circuit_window_ms")]
    pub circuit_window_ms: u64,
    /// After a 401/403 opened the circuit, its probe is `GET {base_url}{probe_path}`, which
    /// spends no tokens; a job's own request follows only once it succeeded. Empty: probe with
    /// a job's request.
    #[serde(default = "default_probe_path")]
    pub probe_path: String,
    /// The format this upstream speaks: `openai` (chat completions) or `anthropic` (messages).
    /// A job moved here by a fallback is translated (the common subset only).
    #[serde(default)]
    pub format: ApiFormat,
    /// Where this upstream's jobs go when it is held, out of quota, refusing the credential or
    /// failing: tried in order (docs/OPERATIONS.md, "Fallback chains").
    #[serde(default)]
    pub fallbacks: Vec<Fallback>,
    /// A rate-limit hold longer than this sends the job to the next deployment now.
    #[serde(default = "default_fallback_after_ms")]
    pub fallback_after_ms: u64,
    /// Transient failures (5xx, timeouts) on one deployment before the job moves to the next.
    #[serde(default = "default_transient_tries")]
    pub fallback_transient_tries: u32,
    /// A larger-context model for requests over this one's context length (else they are dead
    /// with reason `context_length`).
    #[serde(default)]
    pub context_fallback: Option<Fallback>,
    /// The HTTP version of calls to this upstream (docs/OPERATIONS.md, "HTTP/2 to upstreams").
    #[serde(default)]
    pub http: HttpVersion,
    /// HTTP/2 connections each worker spreads this upstream's calls across, round robin. One
    /// HTTP/2 connection carries at most the server's `SETTINGS_MAX_CONCURRENT_STREAMS` calls at
    /// once (often 100–256) and the client queues the rest on it, so a worker with more calls in
    /// flight than that needs more connections. Only for `http2`, or `auto` over https.
    #[serde(default = "default_http2_connections")]
    pub http2_connections: usize,
    /// Who shares `rpm`, `tpm` and the models' limits: `fleet` (one quota for every worker,
    /// a GCRA in Redis) or `process` (each worker its own, in memory through `governor`: an
    /// upstream beside each worker, such as a model server in the same pod).
    #[serde(default)]
    pub scope: LimitScope,
    /// Share of `rpm` and `tpm` (0 to 0.99) that only `high` jobs may use, so interactive work
    /// never queues behind batch work; normal and low jobs then also reserve no further ahead
    /// than `HIGH_HEADROOM` (docs/OPERATIONS.md, "Tenants and priorities").
    #[serde(default)]
    pub high_reserve: f64,
}

/// Who shares an upstream's rate limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    /// The whole fleet: one quota in Redis (a provider's API key).
    #[default]
    Fleet,
    /// Each worker process on its own, with no Redis round trip (holds and the circuit too).
    Process,
}

/// Which HTTP a worker speaks to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    /// https: HTTP/2 or HTTP/1.1, as the server picks (ALPN); http: HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only: one connection per call in flight.
    Http1,
    /// HTTP/2 only: on http:// with prior knowledge (h2c), on https:// by ALPN (a server
    /// without h2 fails the call). Many calls share one connection.
    Http2,
}

/// Rate limits of one model of an upstream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimits {
    #[serde(default)]
    pub rpm: u64,
    #[serde(default)]
    pub tpm: u64,
}

impl UpstreamConfig {
    /// Checks what the field types cannot: `http` with `http2_connections`, `high_reserve`'s
    /// range, and `scope` with `adaptive`.
    pub(super) fn check(&self, name: &str) -> Result<(), super::ConfigError> {
        let invalid = |reason: String| super::ConfigError::Invalid {
            key: "upstreams.*.http2_connections",
            reason: format!("upstream {name}: {reason}"),
        };
        if self.http2_connections == 0 || self.http2_connections > 1024 {
            return Err(invalid(format!(
                "{} is not between 1 and 1024",
                self.http2_connections
            )));
        }
        if self.http2_connections > 1 && self.http == HttpVersion::Http1 {
            return Err(invalid(
                "http = \"http1\" opens no HTTP/2 connections".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.high_reserve) {
            return Err(super::ConfigError::Invalid {
                key: "upstreams.*.high_reserve",
                reason: format!(
                    "upstream {name}: {} is not a share from 0 to 0.99",
                    self.high_reserve
                ),
            });
        }
        if self.scope == LimitScope::Process && self.adaptive {
            return Err(super::ConfigError::Invalid {
                key: "upstreams.*.scope",
                reason: format!(
                    "upstream {name}: adaptive limits are learnt by the fleet in Redis; scope = \"process\" cannot have them"
                ),
            });
        }
        Ok(())
    }
}

fn default_http2_connections() -> usize {
    1
}

fn default_burst_ms() -> u64 {
    50
}

fn default_token_burst_ms() -> u64 {
    1000
}

fn default_cooloff_ms() -> u64 {
    30_000
}

fn default_probe_path() -> String {
    "/v1/models".into()
}

fn default_circuit_min_calls() -> u64 {
    20
}

fn default_circuit_failure_rate() -> f64 {
    0.5
}

fn default_circuit_window_ms() -> u64 {
    10_000
}

fn default_auth_header() -> String {
    "authorization".into()
}

fn default_auth_scheme() -> String {
    "Bearer".into()
}

fn default_timeout_ms() -> u64 {
    60_000
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

fn default_cache_max_bytes() -> u64 {
    crate::job::DEFAULT_CACHE_MAX_BYTES
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn load(upstream: &str) -> Result<Config, super::super::ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let text = format!("[upstreams.m]\nbase_url = \"http://127.0.0.1:1\"\n{upstream}\n");
        std::fs::write(&path, text).expect("write");
        Config::load(Some(&path))
    }

    #[test]
    fn http_settings_load_and_bad_ones_are_named() {
        let c = load("http = \"http2\"\nhttp2_connections = 4").expect("valid");
        assert_eq!(c.upstreams["m"].http, super::HttpVersion::Http2);
        assert_eq!(c.upstreams["m"].http2_connections, 4);
        let c = load("").expect("defaults");
        assert_eq!(c.upstreams["m"].http, super::HttpVersion::Auto);
        assert_eq!(c.upstreams["m"].http2_connections, 1);
        assert_eq!(c.upstreams["m"].scope, super::LimitScope::Fleet);
        let c = load("scope = \"process\"\nrpm = 600").expect("process scope");
        assert_eq!(c.upstreams["m"].scope, super::LimitScope::Process);
        for (bad, named) in [
            ("http = \"spdy\"", "spdy"),
            ("http2_connections = 0", "http2_connections"),
            ("scope = \"pod\"", "pod"),
            ("high_reserve = 1.5", "high_reserve"),
            ("scope = \"process\"\nadaptive = true", "scope"),
            (
                "http = \"http1\"\nhttp2_connections = 2",
                "http2_connections",
            ),
        ] {
            let err = load(bad).expect_err(bad).to_string();
            assert!(err.contains(named), "{bad}: {err}");
        }
    }
}
