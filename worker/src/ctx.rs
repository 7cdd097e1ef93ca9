//! The context every task of a worker shares (`Ctx`): the store, the upstreams, the limiter, the
//! slots, the in-flight set, shutdown, metrics; and what several roles do alike — take free slots,
//! write a dead letter (count it, log it), watch the queues' pause flags.
//!
//! Every worker module may use this one; it uses none of them but the plain parts it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_common::Store;
use sluice_common::config::ModelPrice;
use sluice_common::store::{DeadLetter, StoreError, Transition};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::completer::Completer;
use crate::hooks::Hooks;
use crate::inflight::Inflight;
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::outage;
use crate::retry::RetryPolicy;
use crate::scheduler::Wakeups;
use crate::shutdown::Shutdown;
use crate::upstream::Upstreams;

/// Everything the worker's tasks share.
pub struct Ctx {
    pub store: Store,
    pub upstreams: Upstreams,
    /// Webhook allowlists and secrets (the config's API keys) and their HTTP client.
    pub hooks: Hooks,
    /// Records completions in batches.
    pub completer: Completer,
    pub limiter: Limiter,
    pub policy: RetryPolicy,
    pub consumer: String,
    pub queues: Vec<String>,
    /// One permit per job this worker may run at once.
    pub slots: Arc<Semaphore>,
    pub inflight: Inflight,
    pub wakeups: Wakeups,
    pub shutdown: Shutdown,
    /// Processor tasks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    pub lease: Duration,
    /// How often this worker beats on each queue (three missed beats: taken for dead).
    pub heartbeat: Duration,
    pub poison_deliveries: u32,
    pub metrics: Arc<Metrics>,
    /// The configured upstreams' names.
    pub upstream_names: Vec<String>,
    /// `[prices]`: what each call's usage cost (stored with its completion, it corrects a
    /// budget in dollars) and what the response cache saved (a metric).
    pub prices: BTreeMap<String, ModelPrice>,
    /// Paused flags per queue, refreshed in the background.
    pub(crate) paused: HashMap<String, AtomicBool>,
}

impl Ctx {
    /// Takes `queue` as paused until the watcher's next look says otherwise (the library said so).
    pub fn mark_paused(&self, queue: &str) {
        if let Some(p) = self.paused.get(queue) {
            p.store(true, Ordering::Relaxed);
        }
    }

    pub fn is_paused(&self, queue: &str) -> bool {
        self.paused
            .get(queue)
            .is_some_and(|p| p.load(Ordering::Relaxed))
    }
}

/// How hard a dead letter is held through a Redis outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A finished call's outcome: kept until written (the call must not be made again), until
    /// shutdown abandons it.
    UntilWritten,
    /// An entry that names no runnable job, or a poison job: a short outage is ridden out, then
    /// the entry stays pending and comes back through reclaim.
    Briefly,
}

impl Ctx {
    /// Up to `max` free slots at once, without waiting (`first`, if given, is one of them).
    pub fn take_slots(
        &self,
        first: Option<OwnedSemaphorePermit>,
        max: usize,
    ) -> Vec<OwnedSemaphorePermit> {
        let mut slots: Vec<OwnedSemaphorePermit> = first.into_iter().collect();
        while slots.len() < max {
            match self.slots.clone().try_acquire_owned() {
                Ok(p) => slots.push(p),
                Err(_) => break,
            }
        }
        slots
    }

    /// Writes `letter` to `queue`'s dead-letter stream, counts it (`sluice_jobs_dead_total` by
    /// reason) and logs it; a refusal because the job moved on (`Transition::Refused`) is logged,
    /// not counted.
    pub async fn dead_letter(
        &self,
        queue: &str,
        letter: &DeadLetter<'_>,
        hold: Hold,
    ) -> Result<Transition, StoreError> {
        let write = || self.store.dead_letter(queue, letter);
        let r = match hold {
            Hold::UntilWritten => outage::until_written(&self.shutdown.abandon, write).await,
            Hold::Briefly => outage::ride_out(write).await,
        };
        let (id, entry, reason) = (letter.id, letter.entry, letter.reason);
        match &r {
            Ok(Transition::Done) => {
                self.metrics.dead.with_label_values(&[queue, reason]).inc();
                tracing::warn!(
                    queue,
                    id,
                    entry,
                    reason,
                    error = letter.error,
                    "dead-lettered"
                );
            }
            // A stale entry of a job that has moved on: acknowledged, the job left alone.
            Ok(Transition::Refused(state)) => {
                tracing::info!(queue, id, entry, %state, "not dead-lettered: the job has moved on")
            }
            Err(e) => {
                tracing::error!(queue, id, entry, reason, error = %e, "could not dead-letter; the entry stays pending")
            }
        }
        r
    }
}

/// Refreshes the paused flags of this worker's queues every half second.
pub async fn watch_paused(ctx: Arc<Ctx>) {
    let stop = ctx.shutdown.stop.clone();
    loop {
        for q in &ctx.queues {
            if let (Ok(p), Some(flag)) = (ctx.store.is_paused(q).await, ctx.paused.get(q)) {
                flag.store(p, Ordering::Relaxed);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => break,
        }
    }
}
