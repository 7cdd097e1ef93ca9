//! Fetching: reads a queue's stream through the consumer group and starts what it read; while
//! the queue is busy, `sluice_fetch` reads and starts in one round trip, and only an empty queue
//! falls back to the blocking read.
//!
//! Slots (semaphore permits) are taken before each non-blocking fetch, which asks for no more
//! entries than slots held. An empty queue gives its slots back before it blocks: a worker
//! serving several queues must not let an idle one sit on slots that a busy one has work for.
//! The blocking read then asks for one entry, takes a slot for it once it arrives (leased by the
//! heartbeat meanwhile), and the next round fetches the rest with every free slot. The blocking
//! XREADGROUP runs on a dedicated connection, never the shared one (on a cluster, to the primary
//! that owns the queue; after a failover the read fails and the connection is made again to the
//! new owner).

use std::sync::Arc;
use std::time::Duration;

use sluice_common::store::{Delivered, Started};
use tokio::sync::OwnedSemaphorePermit;

use crate::processor::{self, Job};
use crate::worker::Ctx;
use crate::{metrics, outage, reclaim};
use sluice_common::store::DeadLetter;

/// Most entries one read asks for.
const MAX_BATCH: usize = 256;
/// Longest a blocking read waits for entries; also bounded by the reclaim period, since reclaim
/// runs between reads, and it is how long a stop may wait for a read in progress.
const MAX_BLOCK: Duration = Duration::from_millis(1000);
/// Bytes of a malformed entry's fields kept in its dead-letter entry.
const RAW_EXCERPT: usize = 512;

/// The intake of one queue until shutdown: reclaims a dead worker's entries when due, then reads
/// new ones. A read in progress is never cut off (an entry delivered to a dropped read would sit
/// in the pending list until the lease): stopping waits for it, at most `MAX_BLOCK`.
pub async fn run(ctx: Arc<Ctx>, queue: String) {
    let stop = ctx.shutdown.stop.clone();
    let mut clock = reclaim::ReclaimClock::new(ctx.lease, ctx.heartbeat);
    let block_ms = MAX_BLOCK.min(clock.period()).as_millis().max(1) as u64;
    let mut conn = None;
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        reclaim::maybe_reclaim(&ctx, &queue, &mut clock).await;
        if ctx.is_paused(&queue) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.cancelled() => break,
            }
            continue;
        }
        let first = tokio::select! {
            p = ctx.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let mut slots = vec![first];
        while slots.len() < MAX_BATCH {
            match ctx.slots.clone().try_acquire_owned() {
                Ok(p) => slots.push(p),
                Err(_) => break,
            }
        }
        // A busy queue: read and start in one round trip, without blocking.
        match ctx.store.fetch(&queue, &ctx.consumer, slots.len()).await {
            Ok(started) if !started.is_empty() => {
                failures = 0;
                run_started(&ctx, &queue, started, slots).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                tracing::warn!(queue, error = %e, "fetch failed");
                if e.to_string().contains("NOGROUP") {
                    let _ = ctx.store.create_group(&queue).await;
                }
                backoff(&stop, failures).await;
                continue;
            }
        }
        // Nothing new: give the slots back and wait, holding none, for an entry on a dedicated
        // connection.
        drop(slots);
        if conn.is_none() {
            match ctx.store.reader(&queue).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    failures += 1;
                    tracing::warn!(queue, error = %e, "no Redis connection for fetching");
                    backoff(&stop, failures).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let read = ctx
            .store
            .read_group(c, &queue, &ctx.consumer, 1, block_ms)
            .await;
        match read {
            Ok(entries) => {
                failures = 0;
                if let Some(slot) = slot_for(&ctx, &queue, &entries).await {
                    dispatch(&ctx, &queue, entries, vec![slot]).await;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(queue, error = %e, "XREADGROUP failed; reconnecting");
                conn = None;
                if e.to_string().contains("NOGROUP") {
                    let _ = ctx.store.create_group(&queue).await;
                }
                backoff(&stop, failures).await;
            }
        }
    }
}

/// A slot for the entry a blocking read delivered (none when it delivered nothing). While the
/// worker is busy with its other queues this waits for one to end; the entry is leased by the
/// heartbeat meanwhile, so no other worker takes it over. A stop while waiting leaves the entry
/// pending for the takeover of this worker's entries after it exits.
async fn slot_for(
    ctx: &Arc<Ctx>,
    queue: &str,
    entries: &[Delivered],
) -> Option<OwnedSemaphorePermit> {
    let d = entries.first()?;
    let id = d.fields.get("id").map(String::as_str).unwrap_or("");
    ctx.inflight.add(queue, &d.entry, id);
    let slot = tokio::select! {
        p = ctx.slots.clone().acquire_owned() => p.ok(),
        _ = ctx.shutdown.stop.cancelled() => None,
    };
    ctx.inflight.remove(queue, &d.entry);
    if slot.is_none() {
        tracing::info!(queue, entry = %d.entry, "stopping: a delivered entry left pending");
    }
    slot
}

async fn backoff(stop: &tokio_util::sync::CancellationToken, failures: u32) {
    let delay = Duration::from_millis(50u64 << failures.min(6));
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => {}
    }
}

/// Starts delivered entries (one server-side call for the batch) and spawns a processor for each
/// job to run, each with one of `slots`. Entries that are not jobs are dead-lettered as
/// `malformed`. Used for fresh reads and for reclaimed entries alike.
pub async fn dispatch(
    ctx: &Arc<Ctx>,
    queue: &str,
    entries: Vec<Delivered>,
    slots: Vec<OwnedSemaphorePermit>,
) {
    let mut pairs = Vec::with_capacity(entries.len());
    for d in entries {
        match d.fields.get("id") {
            // Only the job's current entry can start it (the start function checks), so extra
            // fields or a stale copy can never run a job twice.
            Some(id) if sluice_common::validate::job_id(id).is_ok() => {
                pairs.push((d.entry, id.clone()))
            }
            _ => malformed(ctx, queue, &d, "stream entry is not {id: <job id>}").await,
        }
    }
    if pairs.is_empty() {
        return;
    }
    let started = match outage::with_retries(|| ctx.store.start(queue, &ctx.consumer, &pairs)).await
    {
        Ok(s) => s,
        Err(e) => {
            // Left pending: the lease brings these entries back to a worker.
            tracing::error!(queue, error = %e, "start failed");
            return;
        }
    };
    run_started(ctx, queue, started, slots).await;
}

/// Spawns a processor, each with one of `slots`, for every job `start` or `fetch` said to run;
/// dead-letters what names no job.
async fn run_started(
    ctx: &Arc<Ctx>,
    queue: &str,
    started: Vec<Started>,
    mut slots: Vec<OwnedSemaphorePermit>,
) {
    for s in started {
        match s {
            Started::Run {
                entry,
                id,
                spec,
                attempt,
                waits,
                ready_ms,
            } => {
                let Some(slot) = slots.pop() else {
                    tracing::error!(queue, "more jobs than slots; leaving the rest to reclaim");
                    break;
                };
                ctx.metrics.started.with_label_values(&[queue]).inc();
                if attempt == 1
                    && waits == 0
                    && let Some(s) = metrics::secs_since(ready_ms)
                {
                    ctx.metrics
                        .queue_wait
                        .with_label_values(&[queue])
                        .observe(s);
                }
                let job = Job {
                    queue: queue.to_string(),
                    entry,
                    id,
                    spec,
                    attempt,
                    waits,
                    ready_ms,
                };
                ctx.tracker.spawn(processor::run(ctx.clone(), job, slot));
            }
            Started::Paused { entry, id } => {
                // Paused since the watcher last looked: stop reading now, not at its next look.
                ctx.mark_paused(queue);
                tracing::debug!(queue, %entry, %id, "not started: the queue is paused");
            }
            Started::Skip { entry, id } => {
                ctx.metrics.skipped.with_label_values(&[queue]).inc();
                tracing::debug!(queue, %entry, %id, "skipped: terminal, cancelled or stale");
            }
            Started::Missing { entry, id } => {
                let d = Delivered {
                    entry,
                    fields: [("id".to_string(), id)].into_iter().collect(),
                };
                malformed(ctx, queue, &d, "no job hash for this id").await;
            }
            Started::Malformed { entry, raw } => {
                let why = "stream entry is not {id: <job id>}";
                dead_letter_entry(ctx, queue, &entry, &raw, "malformed", why).await;
            }
            Started::Corrupt { entry, id, error } => {
                let raw = format!("id={id}");
                let why = format!("the job's key is not a job hash: {error}");
                dead_letter_entry(ctx, queue, &entry, &raw, "corrupt", &why).await;
            }
        }
    }
}

/// Dead-letters a stream entry that is not a runnable job, keeping an excerpt of what it held.
async fn malformed(ctx: &Ctx, queue: &str, d: &Delivered, why: &str) {
    let mut raw = String::new();
    let mut fields: Vec<_> = d.fields.iter().collect();
    fields.sort();
    for (k, v) in fields {
        if raw.len() >= RAW_EXCERPT {
            break;
        }
        raw.push_str(&format!("{k}={v} "));
    }
    dead_letter_entry(ctx, queue, &d.entry, &raw, "malformed", why).await;
}

/// Dead-letters stream entry `entry` as `reason`, keeping `raw`. No job id: an entry that is
/// not a runnable job must never touch the key its `id` may name. If Redis refuses, the entry
/// stays pending (never dropped) and comes back through reclaim.
async fn dead_letter_entry(
    ctx: &Ctx,
    queue: &str,
    entry: &str,
    raw: &str,
    reason: &str,
    why: &str,
) {
    let raw: String = raw.chars().take(RAW_EXCERPT).collect();
    let letter = DeadLetter {
        id: "",
        entry,
        reason,
        error: why,
        http_status: None,
        raw: &raw,
    };
    let r = outage::with_retries(|| ctx.store.dead_letter(queue, &letter)).await;
    match r {
        Ok(_) => {
            ctx.metrics.dead.with_label_values(&[queue, reason]).inc();
            tracing::warn!(queue, entry, reason, why, "stream entry dead-lettered")
        }
        Err(e) => {
            tracing::error!(queue, entry, reason, error = %e, "could not dead-letter a stream entry; it stays pending")
        }
    }
}
