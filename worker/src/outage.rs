//! Redis out of reach: how the worker's writes ride it out.
//!
//! One loop, [`persist`], tries a call again while its error is transient (Redis unreachable,
//! loading, failing over), with a doubling delay, a warning at the first failure and then every
//! 30 s; a refusal or a permanent error (WRONGTYPE) is returned at once. Three patience levels
//! use it:
//! - [`ride_out`] carries a call through a short outage (a restart, a failover: about 11 s,
//!   50 ms doubling to 5 s) and then gives up: what it guarded comes back another way (the lease,
//!   the next round);
//! - [`until_written`] is for an outcome this worker holds — a finished call's result, its retry
//!   or its dead letter: it keeps trying for as long as the worker runs, since the call must not be
//!   made again, and gives up only when shutdown abandons the job;
//! - [`until_reached`] is the worker's start-up: Redis not there yet (a fleet starting before its
//!   Redis, a restart) is waited for, with backoff up to 10 s, until the worker is stopped.

use std::time::{Duration, Instant};

use sluice_common::StoreError;
use tokio_util::sync::CancellationToken;

/// How patiently [`persist`] tries again.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Retries before giving up; `None`: until cancelled.
    pub max_retries: Option<u32>,
    /// What the warning says is happening (`"holding the outcome until it is back"`).
    pub doing: &'static str,
}

/// Tries `f` again while it fails transiently, as `patience` says, until `cancel` is cancelled (then
/// the last error is returned).
pub async fn persist<T, F, Fut>(
    patience: Patience,
    cancel: &CancellationToken,
    mut f: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = patience.first_delay;
    let mut warned: Option<Instant> = None;
    let mut retries = 0u32;
    loop {
        let e = match f().await {
            Ok(v) => {
                if warned.is_some() {
                    tracing::info!(retries, "Redis is back");
                }
                return Ok(v);
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        if patience.max_retries.is_some_and(|max| retries >= max) {
            return Err(e);
        }
        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis out of reach; {}", patience.doing);
            warned = Some(Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Err(e),
        }
        retries += 1;
        delay = (delay * 2).min(patience.max_delay);
    }
}

/// A short outage (a restart, a failover): about 11 s, 50 ms doubling to 5 s, then give up.
const RIDE_OUT: Patience = Patience {
    first_delay: Duration::from_millis(50),
    max_delay: Duration::from_secs(5),
    max_retries: Some(8),
    doing: "retrying the write",
};

/// An outcome this worker holds: as long as it runs, at most a second between tries.
const UNTIL_WRITTEN: Patience = Patience {
    first_delay: Duration::from_millis(50),
    max_delay: Duration::from_secs(1),
    max_retries: None,
    doing: "holding the outcome until it is back",
};

/// Start-up: half a second doubling to 10 s between tries, until stopped.
const UNTIL_REACHED: Patience = Patience {
    first_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(10),
    max_retries: None,
    doing: "the worker starts once it answers",
};

/// Retries a state write through a short Redis outage (a finished call is worth recording),
/// then gives up and lets the lease bring the job back.
pub async fn ride_out<T, F, Fut>(f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    persist(RIDE_OUT, &CancellationToken::new(), f).await
}

/// Retries a write of an outcome this worker holds until Redis takes it, however long Redis is
/// away, or until `abandon` (shutdown's end) is cancelled.
pub async fn until_written<T, F, Fut>(abandon: &CancellationToken, f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    persist(UNTIL_WRITTEN, abandon, f).await
}

/// The worker's start-up calls: retried while Redis is unreachable, until `stop` is cancelled.
pub async fn until_reached<T, F, Fut>(stop: &CancellationToken, f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    persist(UNTIL_REACHED, stop, f).await
}
