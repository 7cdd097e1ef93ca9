//! Dispatch: turns delivered stream entries into running jobs. One `sluice_start` call starts a
//! batch (only a job's current entry can start it, so a stale copy never runs a job twice); each
//! job to run gets one of the slots its caller took and a processor task. Entries that name no
//! runnable job are dead-lettered (`malformed`, `corrupt`) with an excerpt of what they held.
//!
//! Used by fetch (fresh reads, and `sluice_fetch`'s read-and-start) and by reclaim (entries taken
//! over from a dead worker or idle past the lease).

use std::sync::Arc;

use sluice_common::store::{DeadLetter, Delivered, Started};
use tokio::sync::OwnedSemaphorePermit;

use crate::ctx::{Ctx, Hold};
use crate::job::Job;
use crate::processor;
use crate::{metrics, outage};

/// Bytes of a malformed entry's fields kept in its dead-letter entry.
const RAW_EXCERPT: usize = 512;

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
    let started = match outage::ride_out(|| ctx.store.start(queue, &ctx.consumer, &pairs)).await {
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
pub async fn run_started(
    ctx: &Arc<Ctx>,
    queue: &str,
    started: Vec<Started>,
    mut slots: Vec<OwnedSemaphorePermit>,
) {
    for s in started {
        let s = match Job::started(queue, s) {
            Ok(job) => {
                let Some(slot) = slots.pop() else {
                    tracing::error!(queue, "more jobs than slots; leaving the rest to reclaim");
                    break;
                };
                ctx.metrics.started.with_label_values(&[queue]).inc();
                if job.attempt == 1
                    && job.waits == 0
                    && let Some(s) = metrics::secs_since(job.ready_ms)
                {
                    ctx.metrics
                        .queue_wait
                        .with_label_values(&[queue])
                        .observe(s);
                }
                ctx.tracker.spawn(processor::run(ctx.clone(), job, slot));
                continue;
            }
            Err(other) => other,
        };
        match s {
            Started::Run { .. } => {}
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
    let raw = raw_excerpt(&d.fields);
    dead_letter_entry(ctx, queue, &d.entry, &raw, "malformed", why).await;
}

/// `k=v k=v …` of an entry's fields in key order, cut at about `RAW_EXCERPT` bytes (a field
/// begun is kept whole; `dead_letter_entry` cuts the rest).
fn raw_excerpt(fields: &std::collections::HashMap<String, String>) -> String {
    let mut raw = String::new();
    let mut fields: Vec<_> = fields.iter().collect();
    fields.sort();
    for (k, v) in fields {
        if raw.len() >= RAW_EXCERPT {
            break;
        }
        raw.push_str(&format!("{k}={v} "));
    }
    raw
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
    // Logged and counted by `dead_letter`; an error leaves the entry pending.
    let _ = ctx.dead_letter(queue, &letter, Hold::Briefly).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_entry_keeps_a_sorted_bounded_excerpt_of_its_fields() {
        let fields = [("b", "2"), ("a", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(raw_excerpt(&fields), "a=1 b=2 ");
        let big = (0..100)
            .map(|i| (format!("k{i:03}"), "x".repeat(20)))
            .collect();
        let raw = raw_excerpt(&big);
        assert!(raw.starts_with("k000="), "{raw}");
        assert!(
            raw.len() >= RAW_EXCERPT && raw.len() < RAW_EXCERPT + 40,
            "{}",
            raw.len()
        );
    }
}
