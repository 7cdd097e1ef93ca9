//! Configuration: `config/default.toml` (built in), an optional file, then environment overrides
//! `SLUICE__SECTION__KEY`. A bad file, an unknown key or a value of the wrong type fails at
//! start-up with the key named.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::job::JobLimits;
use crate::store::{StoreSettings, TlsFiles};
use crate::validate;

mod api;
mod fallback;
mod prices;
mod upstream;

pub use api::{ApiConfig, ApiKeyConfig};
pub use fallback::{ApiFormat, Fallback, confine};
pub use prices::{ANY_MODEL, ModelPrice};
pub use upstream::{HttpVersion, LimitScope, ModelLimits, UpstreamConfig};

/// The built-in defaults: the one source of every setting's default value outside `[upstreams]`
/// (config.rs declares no serde defaults for them; `StoreSettings::default()` is built from it,
/// and a test holds the function library's `DEFAULT_*` constants to it). An upstream's own
/// defaults (auth header, timeout, circuit) are the `default_*` functions in `upstream.rs`,
/// listed in the file's commented example.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] config::ConfigError),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The whole configuration of a Sluice process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub redis: RedisConfig,
    pub queues: QueuesConfig,
    pub producer: ProducerConfig,
    pub worker: WorkerConfig,
    pub retry: RetryConfig,
    pub log: LogConfig,
    /// `sluice-api`, the HTTP API.
    pub api: ApiConfig,
    /// Upstreams by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Price per million tokens by model (the response cache's estimated cost saved).
    #[serde(default)]
    pub prices: BTreeMap<String, ModelPrice>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub command_timeout_ms: u64,
    /// PEM file of the CA that signed the server's certificate (`rediss://`); the system's
    /// trust store when absent.
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// PEM client certificate and key, for servers that ask for one (`tls-auth-clients yes`).
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    #[serde(default)]
    pub tls_key_file: Option<String>,
    /// Replicas that must confirm an enqueue (WAIT) before it is acknowledged; 0: none.
    #[serde(default)]
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
}

/// Settings that apply to every queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesConfig {
    pub max_job_bytes: usize,
    pub dedupe_window_secs: u64,
    /// Furthest ahead a job may be scheduled (at most the library's 366 days).
    pub max_delay_secs: u64,
    pub retention_secs: u64,
    pub dead_retention_secs: u64,
    /// Most bytes of cached answers per queue (response cache).
    pub cache_max_bytes: u64,
    pub events_maxlen: u64,
    pub dead_maxlen: u64,
    /// A normal or low job waiting this long starts before high ones (no lane starves).
    pub aging_ms: u64,
    /// Partition counts of partitioned queues, by queue name.
    #[serde(default)]
    pub partitions: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    pub default_queue: String,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub queues: Vec<String>,
    pub concurrency: usize,
    /// Jobs of this worker that may sleep at the rate limiter; beyond, it fetches no more (0: any).
    pub prefetch: usize,
    pub consumer: String,
    pub lease_ms: u64,
    /// How often a worker beats on each of its queues; a worker silent for three beats is taken
    /// for dead and its entries are taken over.
    pub heartbeat_ms: u64,
    pub grace_ms: u64,
    /// Address of /metrics, /healthz and /readyz; empty disables the server.
    pub http_listen: String,
    pub poison_deliveries: u32,
    pub result_max_bytes: usize,
}

/// How the binaries log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// RUST_LOG-style directives; the RUST_LOG variable, when set, wins.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// How failed calls are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub factor: f64,
    pub cap_ms: u64,
    pub max_waits: u32,
    pub max_server_wait_ms: u64,
    pub quota_wait_ms: u64,
    /// Spread added to a wait the server asked for, as a fraction of it (at most 250 ms), so
    /// a fleet told "retry after 1 s" does not come back in one instant. 0 honours it exactly.
    pub server_wait_spread: f64,
}

impl Config {
    /// Loads the defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("SLUICE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("worker.queues"),
        );
        let config: Config = builder.build()?.try_deserialize()?;
        config.check()?;
        Ok(config)
    }

    /// The built-in defaults alone (tests, libraries used without a file).
    pub fn defaults() -> Config {
        let config: Result<Config, config::ConfigError> = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize());
        match config {
            Ok(c) => c,
            // The defaults are compiled in and covered by a test: this cannot fail at run time.
            Err(e) => panic!("built-in config/default.toml is invalid: {e}"),
        }
    }

    /// Checks what types alone cannot.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        for key in self.api.keys.values() {
            let hex = key.sha256.len() == 64 && key.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(invalid(
                    "api.keys.*.sha256",
                    "must be the key's SHA-256 as 64 hex digits (sluice api-key makes one)",
                ));
            }
            for q in &key.queues {
                validate::queue_name(q)
                    .map_err(|e| invalid("api.keys.*.queues", &e.to_string()))?;
            }
            if !key.webhook_secret.is_empty() {
                crate::webhook::secret_bytes(&key.webhook_secret)
                    .map_err(|e| invalid("api.keys.*.webhook_secret", &e.to_string()))?;
            } else if !key.webhook_hosts.is_empty() {
                return Err(invalid(
                    "api.keys.*.webhook_secret",
                    "missing: webhook_hosts needs a signing secret (sluice api-key makes one)",
                ));
            }
        }
        let url = &self.redis.url;
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://")
            || url.starts_with("redis+cluster://")
            || url.starts_with("rediss+cluster://"))
        {
            return Err(invalid(
                "redis.url",
                "must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://",
            ));
        }
        if crate::conn::is_cluster_url(url)
            && let Err(e) = crate::conn::cluster_nodes(url)
        {
            return Err(ConfigError::Invalid {
                key: "redis.url",
                reason: e,
            });
        }
        for (model, price) in &self.prices {
            if !price.is_valid() || model.is_empty() || model.contains(' ') {
                return Err(ConfigError::Invalid {
                    key: "prices",
                    reason: format!(
                        "{model:?}: a model name without spaces, prices from 0 to 1e9 a million tokens"
                    ),
                });
            }
        }
        for (queue, &p) in &self.queues.partitions {
            if validate::queue_name(queue).is_err() || !(1..=1024).contains(&p) {
                return Err(ConfigError::Invalid {
                    key: "queues.partitions",
                    reason: format!(
                        "{queue:?} = {p}: a queue name of [A-Za-z0-9_.-] and 1 to 1024 partitions"
                    ),
                });
            }
        }
        if self.redis.command_timeout_ms == 0 {
            return Err(invalid("redis.command_timeout_ms", "must be positive"));
        }
        let tls_set = self.redis.tls_ca_file.is_some()
            || self.redis.tls_cert_file.is_some()
            || self.redis.tls_key_file.is_some();
        if tls_set && !url.starts_with("rediss") {
            return Err(invalid(
                "redis.tls_ca_file",
                "TLS files are set but redis.url is not rediss://",
            ));
        }
        if self.redis.tls_cert_file.is_some() != self.redis.tls_key_file.is_some() {
            return Err(invalid(
                "redis.tls_cert_file",
                "give both tls_cert_file and tls_key_file, or neither",
            ));
        }
        if self.queues.max_delay_secs == 0 || self.queues.max_delay_secs > 366 * 24 * 3600 {
            return Err(invalid(
                "queues.max_delay_secs",
                "must be between 1 and 31622400 (366 days, the function library's limit)",
            ));
        }
        if self.queues.max_job_bytes == 0 {
            return Err(invalid("queues.max_job_bytes", "must be positive"));
        }
        if self.queues.dedupe_window_secs == 0 {
            return Err(invalid("queues.dedupe_window_secs", "must be positive"));
        }
        if self.queues.retention_secs == 0 || self.queues.dead_retention_secs == 0 {
            return Err(invalid("queues.retention_secs", "must be positive"));
        }
        if validate::queue_name(&self.producer.default_queue).is_err() {
            return Err(invalid(
                "producer.default_queue",
                "is not 1 to 64 of [A-Za-z0-9_.-]",
            ));
        }
        if self.producer.batch_size == 0 {
            return Err(invalid("producer.batch_size", "must be positive"));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if self.retry.factor < 1.0 {
            return Err(invalid("retry.factor", "must be at least 1.0"));
        }
        if self.worker.lease_ms < 100 {
            return Err(invalid("worker.lease_ms", "must be at least 100"));
        }
        if self.worker.heartbeat_ms < 50 || self.worker.heartbeat_ms > 60_000 {
            return Err(invalid(
                "worker.heartbeat_ms",
                "must be between 50 and 60000",
            ));
        }
        for (name, up) in &self.upstreams {
            if name == crate::job::WEBHOOK_UPSTREAM {
                return Err(ConfigError::Invalid {
                    key: "upstreams",
                    reason: format!("{name:?} is reserved for webhook deliveries"),
                });
            }
            if validate::upstream_name(name).is_err() {
                return Err(ConfigError::Invalid {
                    key: "upstreams",
                    reason: format!("{name:?} is not an upstream name (1 to 64 of [A-Za-z0-9_-])"),
                });
            }
            if !(up.base_url.starts_with("http://") || up.base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key: "upstreams.*.base_url",
                    reason: format!("upstream {name}: {:?} is not an http(s) URL", up.base_url),
                });
            }
            if !(up.circuit_failure_rate > 0.0 && up.circuit_failure_rate <= 1.0) {
                return Err(ConfigError::Invalid {
                    key: "upstreams.*.circuit_failure_rate",
                    reason: format!(
                        "upstream {name}: {} is not a share above 0 and at most 1",
                        up.circuit_failure_rate
                    ),
                });
            }
            if !up.probe_path.is_empty()
                && let Err(e) = validate::path(&up.probe_path)
            {
                return Err(ConfigError::Invalid {
                    key: "upstreams.*.probe_path",
                    reason: format!("upstream {name}: {e}"),
                });
            }
            if up.circuit_window_ms == 0 || up.circuit_min_calls == 0 {
                return Err(ConfigError::Invalid {
                    key: "upstreams.*.circuit_window_ms",
                    reason: format!(
                        "upstream {name}: circuit_window_ms and circuit_min_calls must be positive"
                    ),
                });
            }
            fallback::check_chain(&self.upstreams, name, up)?;
            up.check(name)?;
        }
        if self.worker.concurrency == 0 {
            return Err(invalid("worker.concurrency", "must be positive"));
        }
        if self.worker.queues.is_empty()
            || self
                .worker
                .queues
                .iter()
                .any(|q| validate::queue_name(crate::keys::base_queue(q)).is_err())
        {
            return Err(invalid(
                "worker.queues",
                "must list queue names of [A-Za-z0-9_.-] (or partitions of one: name#3)",
            ));
        }
        Ok(())
    }

    /// The queues a worker consumes: `worker.queues`, each partitioned one as its partitions (a
    /// partition named outright, `hot#3`, is consumed alone: a fleet can split a queue's
    /// partitions among its workers).
    pub fn worker_queues(&self) -> Vec<String> {
        self.worker
            .queues
            .iter()
            .flat_map(|q| match self.queues.partitions.get(q) {
                Some(&p) if p > 1 => (0..p).map(|i| crate::keys::partition(q, i)).collect(),
                _ => vec![q.clone()],
            })
            .collect()
    }

    /// What a producer may enqueue.
    pub fn job_limits(&self) -> JobLimits {
        JobLimits {
            max_job_bytes: self.queues.max_job_bytes,
            dedupe_window: Duration::from_secs(self.queues.dedupe_window_secs),
            max_delay: Duration::from_secs(self.queues.max_delay_secs),
            retention: Duration::from_secs(self.queues.retention_secs),
            cache_queue_bytes: self.queues.cache_max_bytes,
        }
    }

    /// Retention and caps for the store.
    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            events_maxlen: self.queues.events_maxlen,
            dead_maxlen: self.queues.dead_maxlen,
            aging: Duration::from_millis(self.queues.aging_ms.max(1)),
            retention: Duration::from_secs(self.queues.retention_secs),
            dead_retention: Duration::from_secs(self.queues.dead_retention_secs),
            max_job_bytes: self.queues.max_job_bytes,
            command_timeout: Duration::from_millis(self.redis.command_timeout_ms),
            tls: TlsFiles {
                ca: self.redis.tls_ca_file.clone().map(Into::into),
                cert: self.redis.tls_cert_file.clone().map(Into::into),
                key: self.redis.tls_key_file.clone().map(Into::into),
            },
            partitions: self.queues.partitions.clone(),
            wait_replicas: self.redis.wait_replicas,
            wait_timeout: Duration::from_millis(self.redis.wait_timeout_ms),
            heartbeat: Duration::from_millis(self.worker.heartbeat_ms),
        }
    }
}

#[cfg(test)]
mod tests;
