//! Webhook deliveries: a job that ended with a webhook gets a delivery job from the library (in
//! the call that ended it); a worker runs it here. The URL's host must be in the named API key's
//! `webhook_hosts` (this worker's config, `[api.keys.NAME]`) and the key must have a
//! `webhook_secret`: nothing else is ever called. The body is the ended job as the API shows it,
//! `{"type": "job.<state>", "timestamp", "data"}`, signed per Standard Webhooks with the
//! delivery's id as `webhook-id` (the same on every retry, so receivers can drop repeats).
//!
//! A 2xx completes the delivery; 410 Gone dead-letters it; anything else (another status, a
//! connection failure, a timeout) is retried with the worker's backoff like a transient failure,
//! up to the attempt budget, then dead-lettered `exhausted`.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_common::job::Delivery;
use sluice_common::store::{Completion, Transition};
use sluice_common::view::JobView;
use sluice_common::{JobSpec, StoreError, webhook};

use crate::ctx::Ctx;
use crate::finish::{dead, record_end, retry_later};
use crate::job::Job;
use crate::metrics::now_ms;
use crate::outcome;
use crate::retry::{Budget, Decision};

/// Bytes of a receiver's answer kept as the delivery's result.
const KEPT: usize = 1024;

/// Runs delivery job `job` (its spec `spec`, delivering `d`) to its next state.
pub async fn deliver(ctx: &Ctx, job: &Job, spec: &JobSpec, d: &Delivery) -> Result<(), StoreError> {
    let secret = match ctx.hooks.secret(d) {
        Ok(s) => s,
        Err(why) => return dead(ctx, job, "webhook_refused", &why, None).await,
    };
    let Some(status) = ctx.store.status(&job.queue, &d.job).await? else {
        let why = format!("job {} expired before its webhook was delivered", d.job);
        return dead(ctx, job, "job_expired", &why, None).await;
    };
    let now = SystemTime::now();
    let body = serde_json::json!({
        "type": format!("job.{}", status.state),
        "timestamp": humantime::format_rfc3339_millis(now).to_string(),
        "data": JobView::from(status),
    })
    .to_string();
    let ts = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signature = webhook::sign(secret, &job.id, ts, body.as_bytes());
    let sent = ctx
        .hooks
        .client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &job.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send();
    let answer = tokio::select! {
        r = sent => r,
        // Abandoned at shutdown: the entry is handed back and the delivery runs again.
        _ = ctx.shutdown.abandon.cancelled() => return Ok(()),
    };
    let failure = match answer {
        Ok(r) if r.status().is_success() => {
            let code = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            return completed(ctx, job, code, &text).await;
        }
        Ok(r) if r.status() == reqwest::StatusCode::GONE => {
            let why = format!("{} answered 410 Gone: the receiver wants no more", d.url);
            return dead(ctx, job, "webhook_gone", &why, None).await;
        }
        Ok(r) => format!("the webhook answered {}", r.status()),
        Err(e) => format!("the webhook could not be reached: {e}"),
    };
    let outcome = outcome::transport_failure(&failure);
    let budget = Budget {
        attempt: job.attempt,
        waits: job.waits,
        max_attempts: spec.max_attempts,
        until_deadline: None,
    };
    match ctx.policy.decide(&outcome, budget) {
        Decision::Retry {
            delay,
            spends_attempt,
        } => retry_later(ctx, job, &outcome, delay, spends_attempt).await,
        Decision::Dead { reason } => dead(ctx, job, reason, &outcome.detail, Some(&outcome)).await,
        Decision::Complete => Ok(()),
    }
}

async fn completed(ctx: &Ctx, job: &Job, code: u16, text: &str) -> Result<(), StoreError> {
    let mut kept: String = text.chars().take(KEPT).collect();
    if serde_json::from_str::<serde_json::Value>(&kept).is_err() {
        kept = serde_json::Value::String(kept).to_string();
    }
    let completion = Completion {
        id: job.id.clone(),
        entry: job.entry.clone(),
        result: kept,
        http_status: code,
        fields: vec![("called_ms".into(), now_ms().to_string())],
    };
    if ctx.completer.complete(&job.queue, completion).await? == Transition::Done {
        ctx.metrics
            .completed
            .with_label_values(&[job.queue.as_str()])
            .inc();
        record_end(ctx, job, "completed");
        tracing::info!(queue = %job.queue, id = %job.id, status = code, "webhook delivered");
    }
    Ok(())
}
