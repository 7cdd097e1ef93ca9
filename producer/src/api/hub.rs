//! One reader per queue for everything that waits on jobs: the OpenAI-compatible endpoint's
//! waiting requests and the SSE streams. A follower task per queue (partition) reads its events
//! stream with one blocking connection of its own and hands each state change to the
//! subscribers of that job, so a thousand waiting requests cost one Redis connection and one
//! read per batch of changes — not a connection each (the producer's blocking pool holds 16).
//!
//! A follower starts at the stream's newest entry when its first subscriber arrives and stops
//! when it has none left. A subscriber must read the job's state *after* subscribing: a change
//! between that read and the subscription is then either in the state read or delivered (or
//! both; SSE drops what it has sent, by entry id).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_common::conn::BlockingPool;
use sluice_common::{JobState, Store, StoreError};
use tokio::sync::mpsc;

/// How long one read of an events stream blocks (the follower looks for leavers between reads).
const BLOCK: Duration = Duration::from_secs(2);
/// How long a follower waits after a failed read (Redis away) before the next.
const RETRY: Duration = Duration::from_millis(500);
/// Queues followed at once (one blocking connection each).
const MAX_FOLLOWED: usize = 64;

/// One state change of a job: its events-stream entry and the new state.
#[derive(Debug, Clone)]
pub struct Change {
    pub entry: String,
    pub state: JobState,
}

type Subscribers = HashMap<String, Vec<(u64, mpsc::UnboundedSender<Change>)>>;

/// The followers and their subscribers, by queue (partition) and job.
pub struct Hub {
    store: Store,
    pool: BlockingPool,
    queues: Mutex<HashMap<String, Subscribers>>,
    next_id: AtomicU64,
}

/// A job's changes from now on; unsubscribes when dropped.
pub struct Subscription {
    pub changes: mpsc::UnboundedReceiver<Change>,
    hub: Arc<Hub>,
    queue: String,
    job: String,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut queues = self.hub.lock();
        if let Some(subs) = queues.get_mut(&self.queue)
            && let Some(list) = subs.get_mut(&self.job)
        {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                subs.remove(&self.job);
            }
        }
    }
}

impl Hub {
    pub fn new(store: Store) -> Result<Arc<Hub>, StoreError> {
        let pool = store.blocking_pool(MAX_FOLLOWED)?;
        Ok(Arc::new(Hub {
            store,
            pool,
            queues: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subscribers>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to job `job` of queue `queue` (its partition on a partitioned queue), starting
    /// the queue's follower if it has none.
    pub async fn subscribe(
        self: &Arc<Self>,
        queue: &str,
        job: &str,
    ) -> Result<Subscription, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let start = loop {
            // A new follower starts at the stream's end as it is now, before this subscriber
            // reads the job's state: nothing after that read can be missed.
            let start = if self.lock().contains_key(queue) {
                None
            } else {
                Some(self.store.events_position(queue).await?)
            };
            let mut queues = self.lock();
            if let Some(subs) = queues.get_mut(queue) {
                subs.entry(job.to_string()).or_default().push((id, tx));
                break None;
            }
            if let Some(start) = start {
                let mut subs = Subscribers::new();
                subs.insert(job.to_string(), vec![(id, tx)]);
                queues.insert(queue.to_string(), subs);
                break Some(start);
            }
            // The follower left between the look and now: look again.
        };
        if let Some(start) = start {
            tokio::spawn(follow(self.clone(), queue.to_string(), start));
        }
        Ok(Subscription {
            changes: rx,
            hub: self.clone(),
            queue: queue.to_string(),
            job: job.to_string(),
            id,
        })
    }

    /// Hands `changes` to their jobs' subscribers; whether the queue still has any (else it is
    /// no longer followed).
    fn deliver(&self, queue: &str, changes: Vec<(String, String, JobState)>) -> bool {
        let mut queues = self.lock();
        let Some(subs) = queues.get_mut(queue) else {
            return false;
        };
        for (entry, job, state) in changes {
            if let Some(list) = subs.get_mut(&job) {
                list.retain(|(_, tx)| {
                    tx.send(Change {
                        entry: entry.clone(),
                        state,
                    })
                    .is_ok()
                });
                if list.is_empty() {
                    subs.remove(&job);
                }
            }
        }
        if subs.is_empty() {
            queues.remove(queue);
            return false;
        }
        true
    }
}

/// Reads queue `queue`'s events stream from `after` while it has subscribers.
async fn follow(hub: Arc<Hub>, queue: String, mut after: String) {
    let mut conn = None;
    loop {
        if conn.is_none() {
            match hub.pool.get().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(queue, error = %e, "events follower: no connection");
                    tokio::time::sleep(RETRY).await;
                    if !hub.deliver(&queue, Vec::new()) {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let changes = match hub
            .store
            .queue_events(&mut **c, &queue, &after, Some(BLOCK))
            .await
        {
            Ok((last, changes)) => {
                after = last;
                changes
            }
            Err(e) => {
                tracing::warn!(queue, error = %e, "events follower: read failed");
                conn = None;
                tokio::time::sleep(RETRY).await;
                Vec::new()
            }
        };
        if !hub.deliver(&queue, changes) {
            return;
        }
    }
}
