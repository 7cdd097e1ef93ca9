//! sluice-worker: runs Sluice jobs from Redis Streams against configured upstreams.
//!
//! One job's path: [`fetch`] (XREADGROUP, never more than free slots) → [`processor`] (run one
//! started [`job`]) → [`upstream`] (the HTTP call, through [`clients`] or [`h2c`]) → [`outcome`] (classify, reading [`hints`]) → [`retry`]
//! (the policy: complete — batched by [`completer`] —, or [`finish`]: sleep in the delayed ZSET,
//! or dead-letter), with [`limiter`] (fleet-wide
//! rate limits, holds and the circuit) before each call. Beside them: [`scheduler`]
//! (promote due jobs), [`reclaim`] (take over a dead worker's entries, heartbeat our own),
//! [`outage`] (riding out Redis being away) and [`shutdown`], and [`http`] serving [`metrics`]
//! and health probes; [`webhook`] runs webhook deliveries (signed with [`hooks`]' secrets, to
//! allowlisted hosts only). [`worker`] wires them together.

pub mod clients;
pub mod completer;
pub mod ctx;
pub mod dispatch;
pub mod fetch;
pub mod finish;
pub mod h2c;
/// The header parsers live in sluice-common (so the fuzz targets build without this crate).
pub use sluice_common::hints;
pub mod hooks;
pub mod http;
pub mod inflight;
pub mod job;
pub mod limiter;
pub mod metrics;
pub mod outage;
pub mod outcome;
pub mod prefetch;
pub mod processor;
pub mod reclaim;
pub mod retry;
pub mod route;
pub mod scheduler;
pub mod shutdown;
pub mod translate;
pub mod upstream;
pub mod usage;
pub mod webhook;
pub mod worker;
