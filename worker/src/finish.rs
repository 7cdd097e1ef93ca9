//! How a job's run ends, besides completion: back to sleep in the delayed ZSET after a failed
//! call, or dead-lettered; and the end-to-end histogram every ending records. Shared by the
//! processor (upstream calls) and webhook deliveries.

use std::time::Duration;

use sluice_common::StoreError;
use sluice_common::store::{DeadLetter, Sleep, Spend, Transition};

use crate::ctx::{Ctx, Hold};
use crate::job::Job;
use crate::metrics::secs_since;
use crate::outage::until_written;
use crate::outcome::Outcome;

/// Puts the job back to sleep in the delayed ZSET for `delay` after a failed call (`spends_attempt`
/// or a rate-limit wait, which does not).
pub async fn retry_later(
    ctx: &Ctx,
    job: &Job,
    outcome: &Outcome,
    delay: Duration,
    spends_attempt: bool,
) -> Result<(), StoreError> {
    let detail = ctx.upstreams.redact(&outcome.detail);
    let spend = if spends_attempt {
        Spend::Attempt
    } else {
        Spend::Wait
    };
    let sleep = Sleep {
        id: &job.id,
        entry: &job.entry,
        delay,
        class: outcome.class.as_str(),
        error: &detail,
        http_status: outcome.status,
        spend,
    };
    let t = until_written(&ctx.shutdown.abandon, || {
        ctx.store.retry(&job.queue, &sleep)
    })
    .await?;
    if t == Transition::Done {
        ctx.metrics
            .retried
            .with_label_values(&[job.queue.as_str(), outcome.class.as_str()])
            .inc();
        ctx.wakeups.due_in(&job.queue, delay);
        tracing::info!(queue = %job.queue, id = %job.id, class = %outcome.class, delay_ms = delay.as_millis() as u64, "retrying");
    }
    Ok(())
}

pub fn record_end(ctx: &Ctx, job: &Job, outcome: &str) {
    if let Some(s) = secs_since(job.ready_ms) {
        ctx.metrics
            .job_time
            .with_label_values(&[job.queue.as_str(), outcome])
            .observe(s);
    }
}

pub async fn dead(
    ctx: &Ctx,
    job: &Job,
    reason: &str,
    error: &str,
    outcome: Option<&Outcome>,
) -> Result<(), StoreError> {
    let error = ctx.upstreams.redact(error);
    let letter = DeadLetter {
        id: &job.id,
        entry: &job.entry,
        reason,
        error: &error,
        http_status: outcome.and_then(|o| o.status),
        raw: "",
    };
    if ctx
        .dead_letter(&job.queue, &letter, Hold::UntilWritten)
        .await?
        == Transition::Done
    {
        record_end(ctx, job, "dead");
    }
    Ok(())
}
