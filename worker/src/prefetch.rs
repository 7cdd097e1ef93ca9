//! The prefetch bound (`worker.prefetch`): how many of this worker's jobs may sleep at the rate
//! limiter for their reserved slots. The fetch loop takes no more jobs than the room left, so
//! under a saturated limiter the backlog stays in Redis, where the tenants' fair order and the
//! priority lanes decide what goes next, instead of in this worker's memory ahead of everything
//! that arrives later (docs/OPERATIONS.md, "Tenants"). Jobs that pass the limiter at once are
//! never counted: an unsaturated worker fetches full batches. 0 (the default) bounds nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

pub struct Prefetch {
    held: AtomicUsize,
    max: usize,
    freed: Notify,
}

impl Prefetch {
    /// At most `max` jobs; 0: no bound.
    pub fn new(max: usize) -> Arc<Prefetch> {
        Arc::new(Prefetch {
            held: AtomicUsize::new(0),
            max: if max == 0 { usize::MAX } else { max },
            freed: Notify::new(),
        })
    }

    /// How many more jobs this worker may take now.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.held.load(Ordering::Relaxed))
    }

    /// Returns once there is room for a job.
    pub async fn until_room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.room() > 0 {
                return;
            }
            freed.await;
        }
    }

    /// Counts one job held until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>) -> Held {
        self.held.fetch_add(1, Ordering::Relaxed);
        Held(self.clone())
    }
}

/// A job counted against the prefetch bound while it sleeps for its slot (until dropped).
pub struct Held(Arc<Prefetch>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bounds_nothing() {
        let p = Prefetch::new(0);
        let _held: Vec<Held> = (0..1000).map(|_| p.hold()).collect();
        assert!(p.room() > 1_000_000);
    }

    #[tokio::test]
    async fn room_comes_back_when_a_held_job_is_released() {
        let p = Prefetch::new(2);
        let a = p.hold();
        let _b = p.hold();
        assert_eq!(p.room(), 0);
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.until_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter
            .await
            .expect("the waiter returns once a job is released");
        assert_eq!(p.room(), 1);
    }
}
