//! sluice-tests: the harness the integration tests, the benchmark and the demo stand on.
//!
//! - [`rig`]: one test's Redis, mock and producer, its workers, and the shared helpers (`BOUND`);
//! - [`redis_server`]: a real `redis-server` per test on a free port with its own data dir
//!   (or testcontainers' Redis with `SLUICE_TEST_REDIS=docker`), torn down on drop;
//! - [`redis_cluster`]: a real three-master Redis Cluster (with replicas) per test;
//! - [`server_kind`]: Redis or Valkey (`SLUICE_TEST_SERVER`), and where their binaries are;
//! - [`mock`]: the mock model API (OpenAI-compatible, failure injection, call record);
//! - [`events`]: a test's view of a queue's events stream, to await states;
//! - [`python`]: Python scripts (the `openai` SDK, `standardwebhooks`, our client) in the tests' venv;
//! - [`proxy`]: a TCP proxy that resets, stalls and refuses connections (network faults);
//! - [`api_process`]: `sluice-api` as a real process (config file with keys, its address);
//! - [`worker_process`]: `sluice-worker` as a real process (config file, SIGTERM, SIGKILL);
//! - [`soak`]: the soak run (`sluice-soak`, tests/soak.sh), not in CI;
//! - [`bench`]: `sluice-bench`, the benchmark driver and the anchors harness's adapter;
//! - [`certs`]: TLS certificates (openssl) and the shipped ACL users, for security tests;
//! - [`fuzz`]: the fuzz targets' bodies, replayed on stable;
//! - [`bins`]: the workspace's binaries, built on demand, for tests that run real processes.

pub mod api_process;
pub mod bench;
pub mod bins;
pub mod certs;
pub mod events;
/// The fuzz targets' bodies (tests/fuzz/src/lib.rs, one source for both): `tests/fuzz_replay.rs` runs
/// them on stable over the seeds, every regression input and random bytes.
#[path = "../fuzz/src/lib.rs"]
pub mod fuzz;
pub mod mock;
pub mod proxy;
pub mod python;
pub mod redis_cluster;
pub mod redis_server;
pub mod rig;
pub mod scrape;
pub mod server_kind;
pub mod soak;
pub mod worker_process;

pub use redis_server::RedisServer;

/// A producer for `redis_url` with the events stream kept long enough for a test to read every
/// state change of thousands of jobs.
pub async fn test_producer(redis_url: &str) -> sluice_producer::Producer {
    let mut config = sluice_common::Config::defaults();
    config.redis.url = redis_url.to_string();
    config.queues.events_maxlen = 1_000_000;
    sluice_producer::Producer::from_config(&config)
        .await
        .expect("connect a producer to the test's redis")
}

/// A chat job for the mock on queue `q`: a short prompt and `max_tokens` 16.
pub fn chat_job(i: usize) -> sluice_common::NewJob {
    sluice_common::NewJob::post(
        "q",
        "mock",
        "/v1/chat/completions",
        serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("job {i}")}], "max_tokens": 16}),
    )
}

/// A job on queue `q` whose calls the mock answers in the order of `script` (HTTP statuses; 0
/// hangs, 1 resets the connection).
pub fn scripted_job(i: usize, script: &[u16]) -> sluice_common::NewJob {
    sluice_common::NewJob::post(
        "q",
        "mock",
        "/v1/chat/completions",
        serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("job {i}")}], "mock": {"script": script}}),
    )
}

/// Enqueues `jobs` in one batch and returns their ids (the test fails on any refusal).
pub async fn enqueue_all(
    producer: &sluice_producer::Producer,
    jobs: Vec<sluice_common::NewJob>,
) -> Vec<String> {
    producer
        .enqueue_batch(jobs)
        .await
        .into_iter()
        .map(|r| r.expect("enqueue").id)
        .collect()
}

/// Re-checks `cond` every 20 ms until it holds or `timeout` passes (for state only Redis or the
/// mock knows, with no event to await); whether it held.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
