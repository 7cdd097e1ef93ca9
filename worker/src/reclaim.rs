//! Leases: taking over a dead worker's entries, and keeping our own live ones.
//!
//! An entry stays in the group's pending list while a worker runs it. `heartbeat` resets the
//! idle time of this worker's in-flight entries every third of the lease, so a slow, live call
//! is never taken over. `reclaim` takes entries idle longer than the lease (XAUTOCLAIM) — their
//! worker died — as many as it has free slots for, and runs them again (from the queue's
//! intake loop in `fetch`, between reads); an entry delivered more
//! than `poison_deliveries` times is dead-lettered as `poison` instead.

use std::sync::Arc;
use std::time::Duration;

use crate::fetch;
use crate::processor;
use crate::worker::Ctx;

/// When the intake loop of one queue should next reclaim and tidy.
pub struct ReclaimClock {
    period: Duration,
    tidy_every: Duration,
    next: tokio::time::Instant,
    next_tidy: tokio::time::Instant,
}

impl ReclaimClock {
    pub fn new(lease: Duration) -> Self {
        let period = (lease / 4).max(Duration::from_millis(25));
        let tidy_every = (lease * 10).max(Duration::from_secs(600));
        let now = tokio::time::Instant::now();
        ReclaimClock {
            period,
            tidy_every,
            next: now,
            next_tidy: now + tidy_every,
        }
    }

    /// How often reclaim runs (a quarter of the lease).
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// Reclaims (and now and then tidies) one queue if it is time. Called by the queue's intake
/// loop between reads, so reclaim and fetch share the free slots without starving each other.
pub async fn maybe_reclaim(ctx: &Arc<Ctx>, queue: &str, clock: &mut ReclaimClock) {
    let now = tokio::time::Instant::now();
    if now < clock.next {
        return;
    }
    clock.next = now + clock.period;
    let free = ctx.slots.available_permits().min(100);
    if free > 0 {
        reclaim_once(ctx, queue, free).await;
    }
    if now >= clock.next_tidy {
        clock.next_tidy = now + clock.tidy_every;
        match ctx.store.tidy_consumers(queue, clock.tidy_every).await {
            Ok(n) if n > 0 => tracing::info!(queue, removed = n, "removed idle consumers"),
            Ok(_) => {}
            Err(e) => tracing::warn!(queue, error = %e, "tidying consumers failed"),
        }
    }
}

async fn reclaim_once(ctx: &Arc<Ctx>, queue: &str, free: usize) {
    let mut slots = Vec::with_capacity(free);
    while slots.len() < free {
        match ctx.slots.clone().try_acquire_owned() {
            Ok(p) => slots.push(p),
            Err(_) => break,
        }
    }
    if slots.is_empty() {
        return;
    }
    let claimed = match ctx
        .store
        .autoclaim(queue, &ctx.consumer, ctx.lease, slots.len())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(queue, error = %e, "reclaim failed");
            return;
        }
    };
    tracing::debug!(queue, claimed = claimed.len(), "reclaim pass");
    if claimed.is_empty() {
        return;
    }
    let mut runnable = Vec::with_capacity(claimed.len());
    for (delivered, deliveries) in claimed {
        if deliveries > u64::from(ctx.poison_deliveries) {
            let id = delivered.fields.get("id").cloned().unwrap_or_default();
            let why = format!("delivered {deliveries} times without finishing");
            let r = processor::with_retries(|| {
                ctx.store
                    .dead_letter(queue, &id, &delivered.entry, "poison", &why, None, "")
            })
            .await;
            match r {
                Ok(sluice_common::store::Transition::Done) => {
                    ctx.metrics.dead.with_label_values(&[queue, "poison"]).inc();
                    tracing::warn!(queue, %id, deliveries, "poison job dead-lettered")
                }
                // A stale entry of a job that has moved on: acknowledged, the job left alone.
                Ok(sluice_common::store::Transition::Refused(state)) => {
                    tracing::info!(queue, %id, %state, "stale pending entry dropped")
                }
                Err(e) => {
                    tracing::error!(queue, %id, error = %e, "could not dead-letter a poison job")
                }
            }
        } else {
            runnable.push(delivered);
        }
    }
    if !runnable.is_empty() {
        ctx.metrics
            .reclaimed
            .with_label_values(&[queue])
            .inc_by(runnable.len() as u64);
        tracing::info!(
            queue,
            count = runnable.len(),
            "reclaimed entries of a dead worker"
        );
        fetch::dispatch(ctx, queue, runnable, slots).await;
    }
}

/// Keeps this worker's in-flight entries leased, for every queue, until the end.
pub async fn heartbeat(ctx: Arc<Ctx>, until: tokio_util::sync::CancellationToken) {
    let period = (ctx.lease / 3).max(Duration::from_millis(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = until.cancelled() => break,
        }
        for queue in &ctx.queues {
            let entries = ctx.inflight.entries(queue);
            if entries.is_empty() {
                continue;
            }
            if let Err(e) = ctx.store.heartbeat(queue, &ctx.consumer, &entries).await {
                tracing::warn!(queue, error = %e, "heartbeat failed");
            }
        }
    }
}
