//! The scheduler: promotes due jobs (backoff sleeps and scheduled jobs) from the delayed ZSET to
//! the stream, one atomic call per batch. It sleeps until the earliest due time that Redis
//! reports (bounded by `MAX_SLEEP`, for jobs other processes add), and is woken early when this
//! worker schedules a retry sooner than that. Safe with many workers: each job is promoted once.
//! About once a second the same call also trims acknowledged entries from the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_common::Store;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest sleep between promotions when nothing is known to be due sooner.
const MAX_SLEEP: Duration = Duration::from_millis(1000);
/// Jobs promoted per call.
const BATCH: u32 = 1000;
/// How often the stream is trimmed of acknowledged entries.
const TRIM_EVERY: Duration = Duration::from_millis(1000);

/// Per-queue wake-up: when the scheduler plans to wake, and a way to wake it sooner.
#[derive(Default)]
struct Wake {
    planned: Mutex<Option<Instant>>,
    notify: Notify,
}

/// Lets processors tell the schedulers about retries they just scheduled.
#[derive(Clone, Default)]
pub struct Wakeups {
    queues: Arc<Mutex<HashMap<String, Arc<Wake>>>>,
}

impl Wakeups {
    fn wake(&self, queue: &str) -> Arc<Wake> {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_string())
            .or_default()
            .clone()
    }

    /// A job of `queue` falls due after `delay`: wake the scheduler if it would sleep past it.
    pub fn due_in(&self, queue: &str, delay: Duration) {
        let wake = self.wake(queue);
        let due = Instant::now() + delay;
        let sooner = {
            let planned = wake.planned.lock().unwrap_or_else(|p| p.into_inner());
            planned.is_none_or(|p| due < p)
        };
        if sooner {
            wake.notify.notify_one();
        }
    }
}

/// How long to sleep after a promotion: not at all when the batch was full (more may be due),
/// else until the next due time Redis reported (server clock), at most `MAX_SLEEP`.
fn until_next(promoted: u64, next_due_ms: Option<u64>, now_ms: u64) -> Duration {
    if promoted >= u64::from(BATCH) {
        return Duration::ZERO;
    }
    match next_due_ms {
        Some(due) => Duration::from_millis(due.saturating_sub(now_ms)).min(MAX_SLEEP),
        None => MAX_SLEEP,
    }
}

/// Promotes due jobs of one queue until `stop`.
pub async fn run(store: Store, queue: String, wakeups: Wakeups, stop: CancellationToken) {
    let wake = wakeups.wake(&queue);
    let mut failures = 0u32;
    let mut trimmed: Option<Instant> = None;
    while !stop.is_cancelled() {
        // Acknowledged entries are trimmed from the stream about once a second, not on every
        // promotion (retries falling due close together make promotions frequent).
        let trim = trimmed.is_none_or(|t| t.elapsed() >= TRIM_EVERY);
        if trim {
            trimmed = Some(Instant::now());
        }
        let sleep = match store.promote_timed(&queue, BATCH, trim).await {
            Ok(p) => {
                failures = 0;
                if p.promoted > 0 {
                    tracing::debug!(queue, promoted = p.promoted, "promoted due jobs");
                }
                until_next(p.promoted, p.next_due_ms, p.now_ms)
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(queue, error = %e, "promote failed");
                Duration::from_millis(100 * u64::from(failures.min(20)))
            }
        };
        if sleep.is_zero() {
            continue;
        }
        let until = Instant::now() + sleep;
        *wake.planned.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = wake.notify.notified() => {}
            _ = stop.cancelled() => {}
        }
        *wake.planned.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_sleeps_until_the_next_due_job_but_not_after_a_full_batch() {
        let now = 1_000_000;
        assert_eq!(
            until_next(u64::from(BATCH), Some(now + 500), now),
            Duration::ZERO
        );
        assert_eq!(
            until_next(3, Some(now + 300), now),
            Duration::from_millis(300)
        );
        assert_eq!(
            until_next(0, Some(now - 5), now),
            Duration::ZERO,
            "already due"
        );
        assert_eq!(until_next(0, Some(now + 3_600_000), now), MAX_SLEEP);
        assert_eq!(until_next(0, None, now), MAX_SLEEP);
    }

    #[tokio::test]
    async fn a_retry_due_sooner_than_the_planned_wake_wakes_the_scheduler() {
        let wakeups = Wakeups::default();
        let wake = wakeups.wake("q");
        let woken = |wake: &Arc<Wake>| {
            let notified = wake.notify.notified();
            futures::FutureExt::now_or_never(notified).is_some()
        };
        *wake.planned.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + Duration::from_secs(10));
        wakeups.due_in("q", Duration::from_secs(30));
        assert!(!woken(&wake), "due after the planned wake: no need to wake");
        wakeups.due_in("q", Duration::from_millis(200));
        assert!(woken(&wake), "due before the planned wake");
        wakeups.due_in("other", Duration::ZERO);
        assert!(!woken(&wake), "another queue's retry");
    }
}
