//! The job model: what a producer asks for and what a worker runs.
//!
//! A producer builds a [`NewJob`]; [`NewJob::prepare`] validates it against the [`JobLimits`] and
//! turns it into a [`PreparedJob`], the only thing the store will enqueue. So a job that reached
//! Redis through Sluice's own code has always passed validation, and the spec a worker reads back
//! is the same JSON ([`JobSpec`]) that was checked.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::{self, InvalidJob};

/// The HTTP methods a job may use against its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Whether requests with this method carry a JSON body.
    pub fn has_body(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }
}

/// The HTTP request a job makes, relative to its upstream's base URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub method: Method,
    /// Path (and query) below the upstream's base URL, e.g. `/v1/chat/completions`.
    pub path: String,
    /// JSON body; required for POST, PUT and PATCH, absent for GET and DELETE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Extra, non-secret headers. Auth headers come from the worker's config, never from a job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// What a worker needs to run a job: stored as JSON in the job hash's `spec` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Name of an upstream in the worker's config (never a URL).
    pub upstream: String,
    pub request: Request,
    /// Attempt budget; the worker's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Per-call timeout in milliseconds; the upstream's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Unix time (ms) after which the job is not worth running any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The caller's estimate of the tokens the call will use (rate limiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    /// Free-form data for the caller; Sluice stores it and never reads it.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Call this webhook when the job ends (completed, dead or cancelled): the library then
    /// enqueues a delivery job in the same call that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// This job *is* such a delivery (its upstream is [`WEBHOOK_UPSTREAM`]); made by the library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<Delivery>,
    /// Serve this request from the queue's response cache, or from an identical job already
    /// under way; store its answer for the next ones. Filled in by [`NewJob::prepare`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// The fallback chain this job may take, by upstream name, in order. Each must be among its
    /// upstream's configured `fallbacks` (producers that know the config refuse others at
    /// enqueue; workers dead-letter them). Absent: the upstream's whole chain; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<String>>,
    /// Whose job this is, for fair shares and budgets (1 to 64 of `[A-Za-z0-9_.:@-]`); absent:
    /// the default tenant. Jobs enqueued through a sluice-api key carry the key's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Which lane the job waits in: `high` starts before `normal`, `normal` before `low`.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
}

/// A job's priority lane (docs/OPERATIONS.md, "Tenants and priorities").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Interactive work: starts before everything else.
    High,
    #[default]
    Normal,
    /// Batch work: starts when nothing else waits, or once it has waited the aging bound.
    Low,
}

impl JobSpec {
    /// The job's tenant: its `tenant`, else the `metadata.tenant` sluice-api wrote before the
    /// spec had the field; `None` for the default tenant.
    pub fn tenant_name(&self) -> Option<&str> {
        let legacy = self.metadata.get("tenant").and_then(|t| t.as_str());
        self.tenant.as_deref().or(legacy)
    }
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(format!("{s:?} is not a priority: high, normal or low")),
        }
    }
}

/// A job's place in the response cache (docs/OPERATIONS.md, "Response cache").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// SHA-256 (hex) of the upstream, method, path, canonical body and named headers
    /// ([`CacheSpec::key_of`]): identical requests share it.
    pub key: String,
    /// How long a successful answer is served from the cache.
    pub ttl_ms: u64,
    /// Answers larger than this many bytes are not stored (identical jobs under way still get them).
    pub max_bytes: u64,
    /// How long a job completed from the cache keeps its hash (the queue's retention).
    pub retention_ms: u64,
    /// Most bytes of cached answers the queue keeps (`queues.cache_max_bytes`).
    pub queue_max_bytes: u64,
}

/// What a producer asks of the cache for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    pub ttl: Duration,
    /// Request headers whose values change the answer (part of the key), by name.
    pub vary: Vec<String>,
    /// Largest answer stored.
    pub max_bytes: u64,
}

/// Whether a request asks for a repeatable answer: not `temperature` > 0, not `n` > 1 (what it
/// says; an absent field counts as asking nothing).
pub fn deterministic(body: Option<&serde_json::Value>) -> bool {
    let Some(body) = body else { return true };
    let temperature = body
        .get("temperature")
        .and_then(|t| t.as_f64())
        .unwrap_or(0.0);
    let n = body.get("n").and_then(|n| n.as_f64()).unwrap_or(1.0);
    temperature <= 0.0 && n <= 1.0
}

impl CacheSpec {
    /// The cache key of `request` to `upstream`: the body canonical (object keys sorted, no
    /// spaces), so field order does not matter; the `vary` headers' values (names compared
    /// without case) included.
    pub fn key_of(upstream: &str, request: &Request, vary: &[String]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(upstream.as_bytes());
        h.update(b"\n");
        h.update(request.method.as_str().as_bytes());
        h.update(b"\n");
        h.update(request.path.as_bytes());
        h.update(b"\n");
        // serde_json's maps are sorted (no `preserve_order`): this is the canonical form.
        if let Some(body) = &request.body {
            h.update(body.to_string().as_bytes());
        }
        let mut names: Vec<String> = vary.iter().map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let value = request
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                .map_or("", |(_, v)| v.as_str());
            h.update(b"\n");
            h.update(name.as_bytes());
            h.update(b":");
            h.update(value.as_bytes());
        }
        let digest = h.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The upstream name of webhook deliveries (reserved: no configured upstream may have it).
pub const WEBHOOK_UPSTREAM: &str = "sluice-webhook";

/// A job's webhook: the URL, and the API key whose host allowlist and signing secret apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    pub key: String,
}

/// A webhook delivery: the ended job it reports, where, and under which API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub job: String,
    pub url: String,
    pub key: String,
}

/// When a job may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    #[default]
    Now,
    /// This long after the enqueue (server clock).
    After(Duration),
    /// At this Unix time in milliseconds.
    At(u64),
}

/// A job as a producer asks for it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Client-chosen id (must be unique in the queue); a UUIDv7 is generated when absent.
    pub id: Option<String>,
    pub queue: String,
    /// Inside its window, a second job with this key returns the first job's id.
    pub dedupe_key: Option<String>,
    /// How long the dedupe key holds; the configured default when absent.
    pub dedupe_window: Option<Duration>,
    pub schedule: Schedule,
    pub spec: JobSpec,
    /// Use the response cache (and share identical jobs under way) for this job.
    pub cache: Option<CacheOptions>,
}

impl NewJob {
    /// A job for `queue` calling `upstream` with a POST of `body` to `path`.
    pub fn post(
        queue: impl Into<String>,
        upstream: impl Into<String>,
        path: impl Into<String>,
        body: serde_json::Value,
    ) -> Self {
        NewJob {
            id: None,
            queue: queue.into(),
            dedupe_key: None,
            dedupe_window: None,
            schedule: Schedule::Now,
            cache: None,
            spec: JobSpec {
                upstream: upstream.into(),
                request: Request {
                    method: Method::Post,
                    path: path.into(),
                    body: Some(body),
                    headers: BTreeMap::new(),
                },
                max_attempts: None,
                timeout_ms: None,
                deadline_ms: None,
                tokens: None,
                metadata: serde_json::Map::new(),
                webhook: None,
                deliver: None,
                cache: None,
                fallbacks: None,
                tenant: None,
                priority: Priority::Normal,
            },
        }
    }

    /// The job's tenant (fair shares and budgets).
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.spec.tenant = Some(tenant.into());
        self
    }

    /// The job's priority lane.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.spec.priority = priority;
        self
    }

    /// Limits the job's fallback chain to these upstreams, in this order (each must be in its
    /// upstream's configured `fallbacks`); an empty list: no fallback at all.
    pub fn with_fallbacks<S: Into<String>>(mut self, chain: impl IntoIterator<Item = S>) -> Self {
        self.spec.fallbacks = Some(chain.into_iter().map(Into::into).collect());
        self
    }

    /// Serves this job from the response cache when an identical request's answer is fresh
    /// (`ttl`), or from an identical job under way; stores its own answer for `ttl`.
    pub fn with_cache(mut self, ttl: Duration) -> Self {
        self.cache = Some(CacheOptions {
            ttl,
            vary: Vec::new(),
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
        });
        self
    }

    pub fn with_dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Validates the job and encodes its spec once; the result is what the store enqueues.
    pub fn prepare(&self, limits: &JobLimits) -> Result<PreparedJob, InvalidJob> {
        validate::job(self, limits)?;
        let mut cached;
        let spec = match &self.cache {
            Some(c) => {
                cached = self.spec.clone();
                cached.cache = Some(CacheSpec {
                    key: CacheSpec::key_of(&self.spec.upstream, &self.spec.request, &c.vary),
                    ttl_ms: c.ttl.as_millis().max(1) as u64,
                    max_bytes: c.max_bytes,
                    retention_ms: limits.retention.as_millis().max(1) as u64,
                    queue_max_bytes: limits.cache_queue_bytes.max(1),
                });
                &cached
            }
            None => &self.spec,
        };
        let spec_json = serde_json::to_string(spec).map_err(|e| InvalidJob::Field {
            field: "spec",
            reason: e.to_string(),
        })?;
        if spec_json.len() > limits.max_job_bytes {
            return Err(InvalidJob::TooLarge {
                size: spec_json.len(),
                limit: limits.max_job_bytes,
            });
        }
        let id = match &self.id {
            Some(id) => id.clone(),
            None => JobId::generate().0,
        };
        let window = self.dedupe_window.unwrap_or(limits.dedupe_window);
        Ok(PreparedJob {
            id: JobId(id),
            queue: self.queue.clone(),
            spec_json,
            dedupe: self
                .dedupe_key
                .clone()
                .map(|key| (key, window.as_millis().max(1) as u64)),
            schedule: self.schedule,
        })
    }
}

/// A validated job, ready to enqueue: its spec already encoded as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedJob {
    pub id: JobId,
    pub queue: String,
    pub spec_json: String,
    /// Dedupe key and its window in milliseconds.
    pub dedupe: Option<(String, u64)>,
    pub schedule: Schedule,
}

/// A job's id: unique within its queue, sortable by creation when generated (UUIDv7).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    pub fn generate() -> Self {
        JobId(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bounds on what a producer may enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLimits {
    /// Largest encoded spec accepted, in bytes.
    pub max_job_bytes: usize,
    /// Dedupe window used when a job gives none.
    pub dedupe_window: Duration,
    /// Furthest ahead a job may be scheduled.
    pub max_delay: Duration,
    /// How long an ended job's hash is kept (`queues.retention_secs`).
    pub retention: Duration,
    /// Most bytes of cached answers per queue (`queues.cache_max_bytes`).
    pub cache_queue_bytes: u64,
}

/// Largest answer the response cache stores unless a job says otherwise.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 * 1024;

impl Default for JobLimits {
    /// The built-in defaults (`config/default.toml`).
    fn default() -> Self {
        crate::Config::defaults().job_limits()
    }
}
