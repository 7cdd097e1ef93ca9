//! The processor: runs one started job to its next state.
//!
//! Decode and re-validate the spec (a foreign producer may have skipped validation), find the
//! upstream, make the call, classify the answer, and apply the retry policy's decision with one
//! server-side call: complete, retry (sleep in the delayed ZSET) or dead-letter.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice_common::store::{Completion, Sleep, Spend, Transition};
use sluice_common::{JobSpec, StoreError, validate};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::ctx::Ctx;
use crate::finish::{dead, record_end, retry_later};
use crate::job::Job;
use crate::limiter::{Gate, Ticket};
use crate::metrics::{now_ms, status_class};
use crate::outage::ride_out;
use crate::outcome;
use crate::outcome::Class;
use crate::retry::{Budget, Decision};
use crate::route::{self, Plan, Step, Target};
use crate::translate;
use crate::upstream::{CallError, Upstream, Upstreams};
use crate::usage::Usage;

/// Runs the job. Its concurrency slot is held until the upstream has answered (the slots bound
/// calls in flight); writing the outcome, batched with other jobs', happens after.
pub async fn run(ctx: Arc<Ctx>, job: Job, slot: OwnedSemaphorePermit) {
    ctx.inflight.add(&job.queue, &job.entry, &job.id);
    let span = tracing::info_span!(
        "job",
        queue = %job.queue,
        id = %job.id,
        // Attempts spend the job's budget; waits (rate limited, quota) do not: logged apart.
        attempt = job.attempt,
        waits = job.waits,
        upstream = tracing::field::Empty,
    );
    match process(&ctx, &job, slot).instrument(span).await {
        Ok(Some(())) => ctx.inflight.remove(&job.queue, &job.entry),
        // Abandoned at shutdown: the entry stays in `inflight` to be handed back.
        Ok(None) => {}
        Err(e) => {
            // The state could not be written; the entry stays pending and is reclaimed after
            // the lease, so the job runs again rather than being lost.
            tracing::error!(queue = %job.queue, id = %job.id, error = %e, "could not record the job's outcome");
            ctx.inflight.remove(&job.queue, &job.entry);
        }
    }
}

/// `Ok(None)` when the call was abandoned for shutdown.
///
/// Every await but the call's own is boxed (`Box::pin`): a job spends almost all its life
/// waiting on the call, and an unboxed future is as large as its largest await, so the limiter,
/// completion and dead-letter paths would otherwise be carried by every job in flight (4.5 KB
/// per job before, 3.5 KB after: ~10 MB at 10,000 calls in flight).
async fn process(
    ctx: &Ctx,
    job: &Job,
    slot: OwnedSemaphorePermit,
) -> Result<Option<()>, StoreError> {
    tracing::debug!("started");
    // The worker's own size limit, whatever `max_bytes` the producer sent to the library: a
    // protocol client can raise that, never what this worker will send upstream.
    let limit = ctx.store.settings().max_job_bytes;
    if job.spec.len() > limit {
        let why = format!(
            "job spec is {} bytes, over this worker's limit of {limit} bytes (queues.max_job_bytes)",
            job.spec.len()
        );
        return Box::pin(dead(ctx, job, "invalid", &why, None))
            .await
            .map(Some);
    }
    let spec: JobSpec = match serde_json::from_str(&job.spec) {
        Ok(spec) => spec,
        Err(e) => {
            let why = format!("spec is not a job: {e}");
            return Box::pin(dead(ctx, job, "malformed", &why, None))
                .await
                .map(Some);
        }
    };
    if let Err(e) = validate::spec(&spec) {
        return Box::pin(dead(ctx, job, "invalid", &e.to_string(), None))
            .await
            .map(Some);
    }
    if let Some(delivery) = &spec.deliver {
        return Box::pin(crate::webhook::deliver(ctx, job, &spec, delivery))
            .await
            .map(Some);
    }
    tracing::Span::current().record("upstream", spec.upstream.as_str());
    let Some(primary) = ctx.upstreams.get(&spec.upstream).cloned() else {
        let why = format!(
            "no upstream named {:?} in this worker's config",
            spec.upstream
        );
        return Box::pin(dead(ctx, job, "unknown_upstream", &why, None))
            .await
            .map(Some);
    };
    let plan = match Plan::new(primary, &spec) {
        Ok(plan) => plan,
        Err(why) => {
            return Box::pin(dead(ctx, job, "invalid", &why, None))
                .await
                .map(Some);
        }
    };
    let until_deadline = match spec.deadline_ms {
        Some(deadline) if deadline <= now_ms() => {
            return dead(
                ctx,
                job,
                "deadline",
                "the job's deadline passed before its call",
                None,
            )
            .await
            .map(Some);
        }
        Some(deadline) => Some(Duration::from_millis(deadline - now_ms())),
        None => None,
    };
    let fallback_after = plan.primary().chain.fallback_after;
    // The concurrency slot bounds calls in flight: freed as soon as a call is answered, taken
    // again for the next deployment's call when the job moves on after an answer.
    let mut slot = Some(slot);
    let mut target = Target::Chain(plan.start(job.attempt));
    let mut unusable: Vec<String> = Vec::new();
    'chain: loop {
        let built = match target {
            Target::Chain(i) => plan.step(&ctx.upstreams, i),
            Target::Context => plan.context_step(&ctx.upstreams),
        };
        let step = match built {
            Ok(step) => step,
            Err(why) => {
                tracing::warn!(queue = %job.queue, id = %job.id, why = %why, "a deployment of the chain cannot take the job");
                unusable.push(why);
                match target.next(&plan) {
                    Some(next) => {
                        target = next;
                        continue 'chain;
                    }
                    None => {
                        let why = format!(
                            "no deployment of the chain can take it: {}",
                            unusable.join("; ")
                        );
                        return Box::pin(dead(ctx, job, "untranslatable", &why, None))
                            .await
                            .map(Some);
                    }
                }
            }
        };
        let upstream = step.upstream.clone();
        let u = upstream.name.as_str();
        if u != spec.upstream {
            tracing::Span::current().record("upstream", u);
        }
        let moved = |to: Target, class: &str| {
            let to_name = match to {
                Target::Chain(i) => plan.name_of(i),
                Target::Context => plan.context_name(),
            };
            ctx.metrics
                .fallbacks
                .with_label_values(&[u, to_name, class])
                .inc();
            tracing::info!(queue = %job.queue, id = %job.id, from = u, to = to_name, class, "moved to the next deployment");
        };

        let admitting = Instant::now();
        let ticket = loop {
            let gate = Box::pin(ctx.limiter.admit(u, &step.spec, &ctx.shutdown.abandon)).await?;
            match gate {
                None => return Ok(None),
                Some(Gate::Go(ticket)) => break ticket,
                // No cheap request configured (probe_path = ""): the job's call is the probe.
                Some(Gate::ProbeFirst(ticket)) if !upstream.has_probe() => break ticket,
                Some(Gate::ProbeFirst(ticket)) => {
                    // The circuit was opened by a 401/403: probe with the upstream's cheap request;
                    // whatever it says (closed, or open again), ask again.
                    if !cheap_probe(ctx, &upstream, ticket).await {
                        return Ok(None);
                    }
                }
                Some(Gate::Refuse(why)) => {
                    return Box::pin(dead(ctx, job, "over_limit", &why, None))
                        .await
                        .map(Some);
                }
                Some(Gate::Defer { wait, class }) => {
                    // Held longer than the chain allows, or its circuit open: the next
                    // deployment now, without a call here.
                    if route::moves_on_deferral(class, wait, fallback_after)
                        && let Some(next) = target.next(&plan)
                    {
                        moved(next, class);
                        target = next;
                        continue 'chain;
                    }
                    return Box::pin(defer(ctx, job, wait, class)).await.map(Some);
                }
            }
        };
        ctx.metrics
            .limiter_wait
            .with_label_values(&[u])
            .observe(admitting.elapsed().as_secs_f64());

        let started = Instant::now();
        let called_ms = now_ms();
        let reply = tokio::select! {
            r = ctx.upstreams.call(&upstream, &step.spec, &job.id) => r,
            _ = ctx.shutdown.abandon.cancelled() => return Ok(None),
        };
        let elapsed = started.elapsed();
        drop(slot.take());
        ctx.metrics
            .call_time
            .with_label_values(&[u])
            .observe(elapsed.as_secs_f64());
        let status = reply.as_ref().ok().map(|r| r.status);
        ctx.metrics
            .responses
            .with_label_values(&[u, status_class(status)])
            .inc();
        let outcome = match &reply {
            Ok(r) => outcome::classify(r.status, &r.headers, &r.body, SystemTime::now()),
            Err(CallError::TooLarge(limit)) => {
                let why = format!("the answer was larger than worker.result_max_bytes ({limit})");
                return Box::pin(dead(ctx, job, "result_too_large", &why, None))
                    .await
                    .map(Some);
            }
            Err(e) => outcome::transport_failure(&e.to_string()),
        };
        let mut usage = match &reply {
            Ok(r) => Usage::of(&r.body),
            Err(_) => Usage::default(),
        };
        for (kind, n) in [("prompt", usage.prompt), ("completion", usage.completion)] {
            if n > 0 {
                ctx.metrics.tokens.with_label_values(&[u, kind]).inc_by(n);
            }
        }
        let model = route::model_of(&step.spec).unwrap_or("");
        usage.price(&ctx.prices, model);
        ctx.metrics
            .tenant_usage(&job.queue, spec.tenant_name(), &usage);
        let headers = reply.as_ref().ok().map(|r| &r.headers);
        match Box::pin(
            ctx.limiter
                .report(u, &ticket, &outcome, headers, usage.total),
        )
        .await
        {
            Ok(r) => {
                if r.held {
                    ctx.metrics.holds.with_label_values(&[u]).inc();
                }
                if let Some(change) = r.circuit {
                    ctx.metrics
                        .circuit_changes
                        .with_label_values(&[u, change.as_str()])
                        .inc();
                    tracing::warn!(upstream = %u, circuit = %change, class = %outcome.class, "circuit changed")
                }
            }
            Err(e) => tracing::warn!(upstream = %u, error = %e, "limiter report failed"),
        }
        drop(ticket);
        // Too long for this model: the larger-context deployment, once. Held long, out of
        // quota, refused: the next deployment, now. Either way another call, in a slot again.
        let move_on = if outcome.class == Class::ContextLength
            && target != Target::Context
            && plan.primary().chain.context_fallback.is_some()
        {
            Some(Target::Context)
        } else if route::moves_on_answer(&outcome, fallback_after) {
            target.next(&plan)
        } else {
            None
        };
        if let Some(next) = move_on {
            moved(next, outcome.class.as_str());
            target = next;
            match slot_again(ctx).await {
                Some(s) => slot = Some(s),
                None => return Ok(None),
            }
            continue 'chain;
        }
        let budget = Budget {
            attempt: job.attempt,
            waits: job.waits,
            max_attempts: spec.max_attempts,
            until_deadline,
        };
        let decision = ctx.policy.decide(&outcome, budget);
        tracing::debug!(queue = %job.queue, id = %job.id, class = %outcome.class, ms = elapsed.as_millis() as u64, ?decision, "call answered");
        match decision {
            Decision::Complete => {
                let Ok(reply) = reply else {
                    return Err(StoreError::Protocol("success without a reply"));
                };
                let answered_by = step.answered_by(route::model_of(&spec));
                Box::pin(complete(
                    ctx,
                    job,
                    &step,
                    reply,
                    &usage,
                    called_ms,
                    answered_by,
                ))
                .await?;
            }
            Decision::Retry {
                delay,
                spends_attempt,
            } => {
                // A transient failure that moves the next run to another deployment need not
                // wait out a backoff meant for this one.
                let delay = match target {
                    Target::Chain(i) if spends_attempt && plan.start(job.attempt + 1) > i => {
                        Duration::ZERO
                    }
                    _ => delay,
                };
                Box::pin(retry_later(ctx, job, &outcome, delay, spends_attempt)).await?
            }
            Decision::Dead { reason } => {
                Box::pin(dead(ctx, job, reason, &outcome.detail, Some(&outcome))).await?;
            }
        }
        return Ok(Some(()));
    }
}

/// Not called: back to the delayed ZSET for `wait`, spending neither an attempt nor a wait.
async fn defer(
    ctx: &Ctx,
    job: &Job,
    wait: Duration,
    class: &'static str,
) -> Result<(), StoreError> {
    let why = format!("deferred before the call: {class}");
    let sleep = Sleep {
        id: &job.id,
        entry: &job.entry,
        delay: wait,
        class,
        error: &why,
        http_status: None,
        spend: Spend::Neither,
    };
    let t = ride_out(|| ctx.store.retry(&job.queue, &sleep)).await?;
    if t == Transition::Done {
        ctx.metrics
            .deferred
            .with_label_values(&[job.queue.as_str(), class])
            .inc();
        ctx.wakeups.due_in(&job.queue, wait);
        tracing::debug!(queue = %job.queue, id = %job.id, class, wait_ms = wait.as_millis() as u64, "deferred");
    }
    Ok(())
}

/// A concurrency slot for one more call of a job that moves on (None: abandoned for shutdown).
async fn slot_again(ctx: &Ctx) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        permit = ctx.slots.clone().acquire_owned() => permit.ok(),
        _ = ctx.shutdown.abandon.cancelled() => None,
    }
}

async fn complete(
    ctx: &Ctx,
    job: &Job,
    step: &Step<'_>,
    reply: crate::upstream::Reply,
    usage: &Usage,
    called_ms: u64,
    answered_by: Option<String>,
) -> Result<(), StoreError> {
    // A fallback that speaks another format: the answer in the shape the job asked for.
    let translated = if step.translates() {
        let parsed = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .map_err(|e| e.to_string())
            .and_then(|answer| {
                let created = now_ms() / 1000;
                translate::answer(&answer, step.upstream.chain.format, step.asked, created)
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(v) => Some(v.to_string()),
            Err(e) => {
                let why = format!(
                    "{}'s answer could not be translated: {e}",
                    step.upstream.name
                );
                return Box::pin(dead(ctx, job, "untranslatable", &why, None)).await;
            }
        }
    } else {
        None
    };
    // An answer that echoes the credential (some gateways do) never stores it.
    let body = match translated {
        Some(text) => ctx.upstreams.redact(&text),
        None => ctx.upstreams.redact(&String::from_utf8_lossy(&reply.body)),
    };
    let headers =
        serde_json::Value::Object(Upstreams::kept_headers(&step.upstream, &reply.headers))
            .to_string();
    let mut completion = Completion {
        id: job.id.clone(),
        entry: job.entry.clone(),
        result: body,
        http_status: reply.status,
        fields: vec![
            ("usage".into(), usage.text.clone()),
            ("headers".into(), headers),
            ("called_ms".into(), called_ms.to_string()),
        ],
    };
    // What the call cost at this worker's [prices]: it corrects a budget in dollars.
    if let Some(cost) = usage.cost {
        completion.fields.push(("cost".into(), cost.to_string()));
    }
    // Only a fallback's answer is marked: the job's own upstream is the status's default.
    if let Some(by) = answered_by {
        completion.fields.push(("answered_by".into(), by));
    }
    let t = ctx.completer.complete(&job.queue, completion).await?;
    match t {
        Transition::Done => {
            ctx.metrics
                .completed
                .with_label_values(&[job.queue.as_str()])
                .inc();
            record_end(ctx, job, "completed");
            tracing::info!(queue = %job.queue, id = %job.id, status = reply.status, "completed")
        }
        Transition::Refused(state) => {
            ctx.metrics
                .refused
                .with_label_values(&[job.queue.as_str()])
                .inc();
            tracing::warn!(queue = %job.queue, id = %job.id, %state, "completion refused: the job was no longer running")
        }
    }
    Ok(())
}

/// Sends `upstream`'s cheap probe as the circuit's half-open probe and reports it (success closes
/// the circuit, anything else opens it again). `false` when abandoned for shutdown.
async fn cheap_probe(ctx: &Ctx, upstream: &Upstream, ticket: Ticket) -> bool {
    let reply = tokio::select! {
        r = ctx.upstreams.probe(upstream) => r,
        _ = ctx.shutdown.abandon.cancelled() => return false,
    };
    let outcome = match &reply {
        Some(Ok(r)) => outcome::classify(r.status, &r.headers, &r.body, SystemTime::now()),
        Some(Err(e)) => outcome::transport_failure(&e.to_string()),
        // No cheap request configured: the admission gave a plain probe's ticket instead.
        None => outcome::transport_failure("no probe_path"),
    };
    let headers = reply
        .as_ref()
        .and_then(|r| r.as_ref().ok())
        .map(|r| &r.headers);
    match ctx
        .limiter
        .report(&upstream.name, &ticket, &outcome, headers, None)
        .await
    {
        Ok(r) => {
            if let Some(change) = r.circuit {
                ctx.metrics
                    .circuit_changes
                    .with_label_values(&[upstream.name.as_str(), change.as_str()])
                    .inc();
                tracing::warn!(upstream = %upstream.name, circuit = %change, class = %outcome.class, "circuit changed by a probe");
            }
        }
        Err(e) => tracing::warn!(upstream = %upstream.name, error = %e, "limiter report failed"),
    }
    true
}
