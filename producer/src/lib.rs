//! sluice-producer: enqueue model-API calls as durable jobs, and read their states back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_producer::ProducerError> {
//! use sluice_producer::{NewJob, Producer};
//! let producer = Producer::connect("redis://127.0.0.1:6379").await?;
//! let job = NewJob::post("reports", "openai", "/v1/chat/completions",
//!     serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
//!     .with_dedupe_key("upload-4711");
//! let enqueued = producer.enqueue(job).await?;        // same dedupe key again → same id
//! let status = producer.wait("reports", &enqueued.id, std::time::Duration::from_secs(60)).await?;
//! # Ok(()) }
//! ```
//!
//! Everything goes through `sluice_common::Store`, so a state change is one server-side call.

pub mod api;
mod coalesce;
pub mod input;

use std::time::Duration;

use futures::stream::{self, StreamExt};

use sluice_common::job::{CacheOptions, deterministic};
pub use sluice_common::store::{CancelOutcome, Enqueued, Waited};
pub use sluice_common::{Config, InvalidJob, JobState, JobStatus, NewJob, Schedule, Store};
use sluice_common::{JobLimits, StoreError};

/// Why a producer call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("invalid job: {0}")]
    Invalid(#[from] InvalidJob),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no job {id} in queue {queue}")]
    NotFound { queue: String, id: String },
    #[error("job {id} not finished after {timeout:?}")]
    Timeout { id: String, timeout: Duration },
}

/// Enqueues jobs and reads them back. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Producer {
    store: Store,
    limits: JobLimits,
    batch_size: usize,
    /// Batches of one `enqueue_batch` call in flight at once.
    batches_in_flight: usize,
    /// Dedicated connections for `wait`, which blocks.
    blocking: sluice_common::conn::BlockingPool,
    /// Shares server-side calls among concurrent single enqueues.
    coalescer: coalesce::Coalescer,
    /// The upstreams' response-cache settings (`[upstreams.NAME] cache_ttl_ms` > 0), applied to
    /// jobs that say nothing about the cache.
    cache_defaults: std::collections::HashMap<String, (CacheOptions, bool)>,
    /// Each configured upstream's fallback chain: a job's own chain must stay within it.
    chains: std::collections::HashMap<String, Vec<sluice_common::config::Fallback>>,
}

impl Producer {
    /// Connects with the built-in defaults (`config/default.toml`) and this URL.
    pub async fn connect(url: &str) -> Result<Producer, ProducerError> {
        let mut config = Config::defaults();
        config.redis.url = url.to_string();
        Self::from_config(&config).await
    }

    /// Connects as the configuration says.
    pub async fn from_config(config: &Config) -> Result<Producer, ProducerError> {
        let store = Store::connect(&config.redis.url, config.store_settings()).await?;
        let blocking = store.blocking_pool(16)?;
        let coalescer = coalesce::Coalescer::start(store.clone());
        let cache_defaults = config
            .upstreams
            .iter()
            .filter(|(_, u)| u.cache_ttl_ms > 0)
            .map(|(name, u)| {
                let options = CacheOptions {
                    ttl: Duration::from_millis(u.cache_ttl_ms),
                    vary: u.cache_vary.clone(),
                    max_bytes: u.cache_max_bytes,
                };
                (name.clone(), (options, u.cache_nondeterministic))
            })
            .collect();
        let chains = config
            .upstreams
            .iter()
            .map(|(name, u)| (name.clone(), u.fallbacks.clone()))
            .collect();
        Ok(Producer {
            cache_defaults,
            chains,
            store,
            limits: config.job_limits(),
            batch_size: config.producer.batch_size,
            batches_in_flight: 4,
            blocking,
            coalescer,
        })
    }

    /// Validates `job` as this producer's config sees it (a job's own fallback chain must be
    /// within its upstream's configured one) and encodes it.
    fn prepare(&self, job: NewJob) -> Result<sluice_common::PreparedJob, InvalidJob> {
        if let Some(chain) = job.spec.fallbacks.as_deref().filter(|c| !c.is_empty()) {
            let upstream = &job.spec.upstream;
            let Some(allowed) = self.chains.get(upstream) else {
                return Err(InvalidJob::Field {
                    field: "fallbacks",
                    reason: format!(
                        "upstream {upstream:?} is not in this producer's config, so its chain \
                         cannot be checked: give the producer the workers' [upstreams]"
                    ),
                });
            };
            sluice_common::config::confine(upstream, chain, allowed).map_err(|reason| {
                InvalidJob::Field {
                    field: "fallbacks",
                    reason,
                }
            })?;
        }
        self.with_upstream_cache(job).prepare(&self.limits)
    }

    /// `job` with its upstream's cache settings when it names none itself and its request asks
    /// for a repeatable answer (or the upstream caches everything).
    fn with_upstream_cache(&self, mut job: NewJob) -> NewJob {
        if job.cache.is_none()
            && let Some((options, everything)) = self.cache_defaults.get(&job.spec.upstream)
            && (*everything || deterministic(job.spec.request.body.as_ref()))
        {
            job.cache = Some(options.clone());
        }
        job
    }

    /// The store underneath, for operations beyond enqueue and status (the CLI's).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn limits(&self) -> &JobLimits {
        &self.limits
    }

    /// Enqueues one job. A duplicate (same dedupe key in its window, or same id) returns the
    /// existing job's id and state with `created == false`. Concurrent calls share server-side
    /// calls (one per queue for all jobs waiting), so many callers cost Redis what a batch does.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, ProducerError> {
        let prepared = self.prepare(job)?;
        Ok(self.coalescer.enqueue(prepared).await?)
    }

    /// Enqueues many jobs, pipelined `batch_size` to a round trip. Results are in input order;
    /// an invalid job is refused alone, without touching Redis or the other jobs.
    pub async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Vec<Result<Enqueued, ProducerError>> {
        let n = jobs.len();
        // Chunks of owned jobs with their input positions. Each chunk is prepared (checked and
        // serialised) inside its own future, so the producer prepares the next chunks while
        // Redis runs the ones already sent, instead of preparing everything first.
        let mut chunks: Vec<Vec<(usize, NewJob)>> = Vec::new();
        let mut all = jobs.into_iter().enumerate().peekable();
        while all.peek().is_some() {
            chunks.push(all.by_ref().take(self.batch_size.max(1)).collect());
        }
        let answers: Vec<_> = stream::iter(chunks)
            .map(|chunk| self.enqueue_chunk(chunk))
            .buffered(self.batches_in_flight)
            .collect()
            .await;
        let mut results: Vec<Option<Result<Enqueued, ProducerError>>> =
            (0..n).map(|_| None).collect();
        for (i, r) in answers.into_iter().flatten() {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ProducerError::Store(StoreError::Protocol("batch")))))
            .collect()
    }

    /// Prepares one chunk and enqueues its valid jobs in one round trip: each job's result with
    /// its input position. An invalid job is refused alone, without touching Redis.
    async fn enqueue_chunk(
        &self,
        chunk: Vec<(usize, NewJob)>,
    ) -> Vec<(usize, Result<Enqueued, ProducerError>)> {
        let mut out = Vec::with_capacity(chunk.len());
        let (mut at, mut prepared) = (Vec::new(), Vec::new());
        for (i, job) in chunk {
            match self.prepare(job) {
                Ok(p) => {
                    at.push(i);
                    prepared.push(p);
                }
                Err(e) => out.push((i, Err(e.into()))),
            }
        }
        if prepared.is_empty() {
            return out;
        }
        match self.store.enqueue_batch(&prepared).await {
            Ok(per_job) => out.extend(
                at.into_iter()
                    .zip(per_job.into_iter().map(|r| r.map_err(ProducerError::from))),
            ),
            Err(e) => out.extend(
                at.into_iter()
                    .map(|i| (i, Err(ProducerError::Store(e.clone())))),
            ),
        }
        out
    }

    /// The job's status, or `None` if there is no such job (never enqueued, or expired).
    pub async fn status(&self, queue: &str, id: &str) -> Result<Option<JobStatus>, ProducerError> {
        Ok(self.store.status(queue, id).await?)
    }

    /// Waits for the job to end (completed, dead or cancelled), blocking on the queue's events.
    pub async fn wait(
        &self,
        queue: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<JobStatus, ProducerError> {
        let mut conn = self
            .blocking
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        match self
            .store
            .wait_terminal(&mut *conn, queue, id, timeout)
            .await?
        {
            Waited::Done(status) => Ok(*status),
            Waited::TimedOut => Err(ProducerError::Timeout {
                id: id.to_string(),
                timeout,
            }),
            Waited::NotFound => Err(ProducerError::NotFound {
                queue: queue.to_string(),
                id: id.to_string(),
            }),
        }
    }

    /// Cancels a job that has not started yet (queued, scheduled or retrying).
    pub async fn cancel(&self, queue: &str, id: &str) -> Result<CancelOutcome, ProducerError> {
        Ok(self.store.cancel(queue, id).await?)
    }
}
