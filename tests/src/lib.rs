//! sluice-tests: the harness the integration tests, the benchmark and the demo stand on.
//!
//! - [`redis_server`]: a real `redis-server` per test on a free port with its own data dir
//!   (or testcontainers' Redis with `SLUICE_TEST_REDIS=docker`), torn down on drop;
//! - [`mock`]: the mock model API (OpenAI-compatible, failure injection, call record);
//! - [`events`]: a test's view of a queue's events stream, to await states;
//! - [`worker_process`]: `sluice-worker` as a real process (config file, SIGTERM, SIGKILL);
//! - [`bins`]: the workspace's binaries, built on demand, for tests that run real processes.

pub mod bins;
pub mod events;
pub mod mock;
pub mod redis_server;
pub mod scrape;
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
