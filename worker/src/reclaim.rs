//! Leases: taking over a dead worker's entries, and keeping our own live ones.
//!
//! An entry stays in the group's pending list while a worker runs it. `heartbeat` beats on each
//! queue every `heartbeat_ms` (`sluice_beat`: the consumer's last beat, server clock) and resets
//! the idle time of this worker's in-flight entries every third of the lease, so a slow, live call
//! is never taken over. Two ways bring a dead worker's entries back, both from the queue's intake
//! loop in `fetch`, between reads, as many as there are free slots: every beat, `takeover` takes
//! the entries of consumers silent for three beats (`sluice_takeover`: a `kill -9`'d worker's jobs
//! run again within seconds); every quarter lease, `reclaim` takes entries idle longer than the
//! lease (XAUTOCLAIM), for consumers that never beat. An entry this worker itself still runs
//! (its own, idle after a Redis outage) is never run again. An entry delivered more than
//! `poison_deliveries` times is dead-lettered as `poison` instead.

use std::sync::Arc;
use std::time::Duration;

use sluice_common::store::DeadLetter;

use crate::ctx::{Ctx, Hold};
use crate::dispatch::dispatch;

/// When the intake loop of one queue should next reclaim and tidy.
pub struct ReclaimClock {
    period: Duration,
    beat: Duration,
    tidy_every: Duration,
    next: tokio::time::Instant,
    next_takeover: tokio::time::Instant,
    next_tidy: tokio::time::Instant,
}

impl ReclaimClock {
    pub fn new(lease: Duration, beat: Duration) -> Self {
        let period = (lease / 4).max(Duration::from_millis(25));
        let tidy_every = (lease * 10).max(Duration::from_secs(600));
        let now = tokio::time::Instant::now();
        ReclaimClock {
            period,
            beat,
            tidy_every,
            next: now,
            next_takeover: now + beat,
            next_tidy: now + tidy_every,
        }
    }

    /// How often reclaim or takeover runs (a quarter of the lease, or a beat if sooner).
    pub fn period(&self) -> Duration {
        self.period.min(self.beat)
    }

    /// What is due at `now` (and when each comes next): a takeover every beat, a lease reclaim
    /// every period (the first at once), tidying every ten leases (at least ten minutes).
    fn due(&mut self, now: tokio::time::Instant) -> Due {
        let mut due = Due::default();
        if now >= self.next_takeover {
            self.next_takeover = now + self.beat;
            due.takeover = true;
        }
        if now >= self.next {
            self.next = now + self.period;
            due.lease = true;
            if now >= self.next_tidy {
                self.next_tidy = now + self.tidy_every;
                due.tidy = true;
            }
        }
        due
    }
}

/// What the intake loop should do before its next read.
#[derive(Debug, Default, PartialEq, Eq)]
struct Due {
    takeover: bool,
    lease: bool,
    tidy: bool,
}

/// How entries of another worker are claimed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Entries idle longer than the lease (XAUTOCLAIM).
    Lease,
    /// Entries of consumers whose beats stopped (`sluice_takeover`).
    Takeover,
}

/// Silent this long, a consumer is taken for dead: three beats.
fn dead_after(beat: Duration) -> Duration {
    beat * 3
}

/// Reclaims (and now and then tidies) one queue if it is time. Called by the queue's intake
/// loop between reads, so reclaim and fetch share the free slots without starving each other.
pub async fn maybe_reclaim(ctx: &Arc<Ctx>, queue: &str, clock: &mut ReclaimClock) {
    let due = clock.due(tokio::time::Instant::now());
    let free = || ctx.slots.available_permits().min(100);
    if due.takeover && free() > 0 {
        reclaim_once(ctx, queue, free(), Claim::Takeover).await;
    }
    if due.lease && free() > 0 {
        reclaim_once(ctx, queue, free(), Claim::Lease).await;
    }
    if due.tidy {
        match ctx.store.tidy_consumers(queue, clock.tidy_every).await {
            Ok(n) if n > 0 => tracing::info!(queue, removed = n, "removed idle consumers"),
            Ok(_) => {}
            Err(e) => tracing::warn!(queue, error = %e, "tidying consumers failed"),
        }
    }
}

async fn reclaim_once(ctx: &Arc<Ctx>, queue: &str, free: usize, how: Claim) {
    let slots = ctx.take_slots(None, free);
    if slots.is_empty() {
        return;
    }
    let claimed = match how {
        Claim::Lease => {
            ctx.store
                .autoclaim(queue, &ctx.consumer, ctx.lease, slots.len())
                .await
        }
        Claim::Takeover => {
            ctx.store
                .takeover(queue, &ctx.consumer, dead_after(ctx.heartbeat), slots.len())
                .await
        }
    };
    let claimed = match claimed {
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
    let mut own = 0;
    for (delivered, deliveries) in claimed {
        // Our own entry, idle because Redis was out of reach for a while: its call is ours and
        // still running (or its outcome waits to be written). Claiming it reset its idle time;
        // running it again would call the upstream twice.
        if ctx.inflight.contains(queue, &delivered.entry) {
            own += 1;
            continue;
        }
        if deliveries > u64::from(ctx.poison_deliveries) {
            let id = delivered.fields.get("id").cloned().unwrap_or_default();
            let why = format!("delivered {deliveries} times without finishing");
            let letter = DeadLetter {
                id: &id,
                entry: &delivered.entry,
                reason: "poison",
                error: &why,
                http_status: None,
                raw: "",
            };
            // Logged and counted there; a stale entry (the job moved on) is acknowledged.
            let _ = ctx.dead_letter(queue, &letter, Hold::Briefly).await;
        } else {
            runnable.push(delivered);
        }
    }
    if own > 0 {
        tracing::info!(
            queue,
            count = own,
            "kept this worker's own in-flight entries (idle after a Redis outage), not run again"
        );
    }
    if !runnable.is_empty() {
        ctx.metrics
            .reclaimed
            .with_label_values(&[queue])
            .inc_by(runnable.len() as u64);
        match how {
            Claim::Takeover => tracing::info!(
                queue,
                count = runnable.len(),
                "took over the entries of a worker whose heartbeat stopped"
            ),
            Claim::Lease => tracing::info!(
                queue,
                count = runnable.len(),
                "reclaimed entries idle longer than the lease"
            ),
        }
        dispatch(ctx, queue, runnable, slots).await;
    }
}

/// Beats on every queue each `heartbeat`, and keeps this worker's in-flight entries leased, until
/// the end.
pub async fn heartbeat(ctx: Arc<Ctx>, until: tokio_util::sync::CancellationToken) {
    let period = (ctx.lease / 3).max(Duration::from_millis(30));
    let mut next_lease = tokio::time::Instant::now() + period;
    loop {
        for queue in &ctx.queues {
            if let Err(e) = ctx.store.beat(queue, &ctx.consumer).await {
                tracing::warn!(queue, error = %e, "heartbeat failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ctx.heartbeat) => {}
            _ = until.cancelled() => break,
        }
        if tokio::time::Instant::now() < next_lease {
            continue;
        }
        next_lease = tokio::time::Instant::now() + period;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_runs_takeover_each_beat_reclaim_each_quarter_lease_and_tidies_rarely() {
        let (lease, beat) = (Duration::from_secs(60), Duration::from_secs(1));
        let mut clock = ReclaimClock::new(lease, beat);
        assert_eq!(clock.period(), beat, "reads block at most a beat");
        assert_eq!(dead_after(beat), Duration::from_secs(3));
        let t0 = tokio::time::Instant::now();
        // The lease reclaim runs at once (entries left by a crash before this worker started).
        assert_eq!(
            clock.due(t0),
            Due {
                takeover: false,
                lease: true,
                tidy: false
            }
        );
        assert_eq!(clock.due(t0 + Duration::from_millis(500)), Due::default());
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            clock.due(at(1)),
            Due {
                takeover: true,
                lease: false,
                tidy: false
            }
        );
        assert_eq!(
            clock.due(at(2)),
            Due {
                takeover: true,
                lease: false,
                tidy: false
            }
        );
        assert_eq!(
            clock.due(at(15)),
            Due {
                takeover: true,
                lease: true,
                tidy: false
            }
        );
        assert_eq!(
            clock.due(at(16)),
            Due {
                takeover: true,
                lease: false,
                tidy: false
            }
        );
        // Tidying: ten leases (600 s) after the start, with a lease reclaim.
        assert!(clock.due(at(600)).tidy);
        assert!(!clock.due(at(615)).tidy);
    }

    #[test]
    fn a_short_lease_reclaims_every_quarter_of_it() {
        let clock = ReclaimClock::new(Duration::from_millis(400), Duration::from_secs(1));
        assert_eq!(clock.period(), Duration::from_millis(100));
    }
}
