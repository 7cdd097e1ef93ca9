//! The `[api]` section: `sluice-api`'s address and caps, and its keys (what each may use, its
//! webhook allowlist and signing secret; workers read the keys too, to sign deliveries).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `sluice-api`: where it listens, its body cap, its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: String,
    pub max_body_bytes: usize,
    /// Largest total of a request's header names and values (431 beyond it).
    pub max_header_bytes: usize,
    /// Open event streams (SSE) one key may hold at once (429 beyond it).
    pub max_streams_per_key: usize,
    /// How long the OpenAI-compatible endpoint waits for a job before answering 504 with the
    /// job's id (the same `Idempotency-Key` later returns its result).
    pub relay_wait_ms: u64,
    /// API keys by name.
    #[serde(default)]
    pub keys: BTreeMap<String, ApiKeyConfig>,
}

/// One API key: its SHA-256 (hex; the key itself is never stored) and what it may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub sha256: String,
    pub queues: Vec<String>,
    pub upstreams: Vec<String>,
    /// The tenant its jobs carry; another key's jobs of the same queue answer 404.
    #[serde(default)]
    pub tenant: String,
    /// Hosts its jobs' webhooks may call (exact host names); nothing else is ever called.
    #[serde(default)]
    pub webhook_hosts: Vec<String>,
    /// The Standard Webhooks secret its callbacks are signed with (`whsec_` + base64).
    #[serde(default)]
    pub webhook_secret: String,
    /// This key's body cap, below `api.max_body_bytes` (that one when absent).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}
