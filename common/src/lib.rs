//! sluice-common: what producers, workers and the CLI share.
//!
//! - [`job`]: the job model (`NewJob` → `PreparedJob`, `JobSpec`), and [`validate`] its rules;
//! - [`state`]: the job states and the status read back from Redis;
//! - [`keys`]: the Redis key layout (nothing else spells a key);
//! - [`store`]: the server-side function library and the one typed call per function;
//! - [`hints`]: what an upstream's rate-limit headers ask (how long to wait, whether to retry);
//! - [`config`]: configuration from `config/default.toml`, a file and the environment;
//! - [`view`]: a job as the HTTP API and webhooks show it (with `needs_attention`);
//! - [`webhook`]: Standard Webhooks signing and the host allowlist;
//! - [`oneline`]: an error and its causes as the one line the binaries print.

pub mod config;
pub mod conn;
pub mod hints;
pub mod job;
pub mod keys;
pub mod oneline;
pub mod reply;
pub mod state;
pub mod store;
pub mod validate;
pub mod view;
pub mod webhook;

pub use config::Config;
pub use job::{JobId, JobLimits, JobSpec, Method, NewJob, PreparedJob, Request, Schedule};
pub use state::{JobState, JobStatus};
pub use store::{Enqueued, Store, StoreError, StoreSettings};
pub use validate::InvalidJob;
