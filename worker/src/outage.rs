//! Redis out of reach: how the worker's writes ride it out.
//!
//! `with_retries` carries a call through a short outage (a restart, a failover: about 11 s, 50 ms
//! doubling to 5 s) and then gives up: what it guarded comes back another way (the lease, the next
//! round). `until_written` is for an outcome this worker holds — a finished call's result, its
//! retry or its dead letter: it keeps trying for as long as the worker runs, since the call must
//! not be made again, and gives up only when shutdown abandons the job (its entry is then handed
//! back, or left pending). Only transient errors are retried; a refusal or a permanent error
//! (WRONGTYPE) is returned at once.

use std::time::{Duration, Instant};

use sluice_common::StoreError;
use tokio_util::sync::CancellationToken;

/// Retries a state write through a short Redis outage (a finished call is worth recording),
/// then gives up and lets the lease bring the job back. A permanent error (a refusal, WRONGTYPE)
/// is returned at once: trying again cannot help, and would stall the caller for seconds.
pub async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tries < 8 => {
                tracing::warn!(error = %e, "Redis write failed; retrying");
                tries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Retries a write of an outcome this worker holds until Redis takes it, however long Redis is
/// away, or until `abandon` (shutdown's end) is cancelled. A warning is logged at the first
/// failure and then every 30 s.
pub async fn until_written<T, F, Fut>(
    abandon: &CancellationToken,
    mut f: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(50);
    let mut warned: Option<Instant> = None;
    loop {
        let e = match f().await {
            Ok(v) => {
                if warned.is_some() {
                    tracing::info!("Redis is back: a held outcome was written");
                }
                return Ok(v);
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            tracing::warn!(error = %e, "Redis out of reach; holding the outcome until it is back");
            warned = Some(Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = abandon.cancelled() => return Err(e),
        }
        // At most a second between tries: the outcome is written soon after Redis is back.
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
