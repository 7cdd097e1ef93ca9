//! Fetching: reads a queue's stream through the consumer group and starts what it read; while
//! the queue is busy, `sluice_fetch` reads and starts in one round trip, and only an empty queue
//! falls back to the blocking read.
//!
//! Slots (semaphore permits) are taken before each non-blocking fetch, which asks for no more
//! entries than slots held. An empty queue gives its slots back before it blocks: a worker
//! serving several queues must not let an idle one sit on slots that a busy one has work for.
//! The blocking read then asks for one entry of each lane, takes a slot for each once they
//! arrive (leased by the heartbeat meanwhile), and the next round fetches the rest with every
//! free slot. The blocking
//! XREADGROUP runs on a dedicated connection, never the shared one (on a cluster, to the primary
//! that owns the queue; after a failover the read fails and the connection is made again to the
//! new owner).

use std::sync::Arc;
use std::time::Duration;

use sluice_common::store::{Delivered, StoreError};
use tokio::sync::OwnedSemaphorePermit;

use crate::ctx::Ctx;
use crate::dispatch::{dispatch, run_started};
use crate::reclaim;

/// Most entries one read asks for.
const MAX_BATCH: usize = 256;
/// Longest a blocking read waits for entries; also bounded by the reclaim period, since reclaim
/// runs between reads, and it is how long a stop may wait for a read in progress.
const READ_BLOCK: Duration = Duration::from_millis(1000);

/// The intake of one queue until shutdown: reclaims a dead worker's entries when due, then reads
/// new ones. A read in progress is never cut off (an entry delivered to a dropped read would sit
/// in the pending list until the lease): stopping waits for it, at most `READ_BLOCK`.
pub async fn run(ctx: Arc<Ctx>, queue: String) {
    let stop = ctx.shutdown.stop.clone();
    let mut clock = reclaim::ReclaimClock::new(ctx.lease, ctx.heartbeat);
    let block_ms = READ_BLOCK.min(clock.period()).as_millis().max(1) as u64;
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
        // No more jobs than the prefetch bound has room for: while `worker.prefetch` jobs sleep
        // for their slots at the limiter, the rest wait in Redis (see prefetch.rs).
        let sleeping = &ctx.limiter.sleeping;
        tokio::select! {
            _ = sleeping.until_room() => {}
            _ = stop.cancelled() => break,
        }
        let slots = ctx.take_slots(Some(first), MAX_BATCH.min(sleeping.room().max(1)));
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
                if matches!(e, StoreError::NoGroup(_)) {
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
                let slots = slots_for(&ctx, &queue, &entries).await;
                if !slots.is_empty() {
                    dispatch(&ctx, &queue, entries, slots).await;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(queue, error = %e, "XREADGROUP failed; reconnecting");
                conn = None;
                if matches!(e, StoreError::NoGroup(_)) {
                    let _ = ctx.store.create_group(&queue).await;
                }
                backoff(&stop, failures).await;
            }
        }
    }
}

/// A slot for each entry a blocking read delivered (one per lane at most). While the worker is
/// busy with its other queues this waits for them to end; the entries are leased by the
/// heartbeat meanwhile, so no other worker takes them over. A stop while waiting leaves them
/// pending for the takeover of this worker's entries after it exits (none is started then).
async fn slots_for(
    ctx: &Arc<Ctx>,
    queue: &str,
    entries: &[Delivered],
) -> Vec<OwnedSemaphorePermit> {
    for d in entries {
        let id = d.fields.get("id").map(String::as_str).unwrap_or("");
        ctx.inflight.add(queue, &d.entry, id);
    }
    let mut slots = Vec::with_capacity(entries.len());
    for _ in entries {
        let slot = tokio::select! {
            p = ctx.slots.clone().acquire_owned() => p.ok(),
            _ = ctx.shutdown.stop.cancelled() => None,
        };
        match slot {
            Some(s) => slots.push(s),
            None => {
                slots.clear();
                break;
            }
        }
    }
    for d in entries {
        ctx.inflight.remove(queue, &d.entry);
    }
    if slots.is_empty() && !entries.is_empty() {
        tracing::info!(
            queue,
            entries = entries.len(),
            "stopping: delivered entries left pending"
        );
    }
    slots
}

/// The pause after `failures` failed reads in a row: 100 ms doubling to 3.2 s.
fn backoff_delay(failures: u32) -> Duration {
    Duration::from_millis(50u64 << failures.min(6))
}

async fn backoff(stop: &tokio_util::sync::CancellationToken, failures: u32) {
    let delay = backoff_delay(failures);
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_reads_back_off_from_100_ms_doubling_to_3_2_s() {
        let ms = |f| backoff_delay(f).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(6)], [100, 200, 400, 3200]);
        assert_eq!(ms(7), 3200);
        assert_eq!(ms(u32::MAX), 3200);
        assert!(
            READ_BLOCK <= Duration::from_secs(1),
            "a stop waits at most this for a read"
        );
    }
}
