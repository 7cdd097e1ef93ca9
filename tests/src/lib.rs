//! sluice-tests: the harness the integration tests, the benchmark and the demo stand on.
//!
//! - [`redis_server`]: a real `redis-server` per test on a free port with its own data dir
//!   (or testcontainers' Redis with `SLUICE_TEST_REDIS=docker`), torn down on drop;
//! - [`bins`]: the workspace's binaries, built on demand, for tests that run real processes.

pub mod bins;
pub mod redis_server;

pub use redis_server::RedisServer;
