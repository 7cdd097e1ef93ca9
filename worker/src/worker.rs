//! Wiring: builds the shared context and runs, per queue, a fetch loop, a scheduler and a
//! reclaimer, plus one heartbeat; then shuts down in order (stop fetching, let in-flight calls
//! finish within the grace period, hand back what is left).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sluice_common::{Config, Store};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::completer::Completer;
use crate::ctx::{Ctx, watch_paused};
use crate::hooks::Hooks;
use crate::inflight::Inflight;
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::scheduler::{self, Wakeups};
use crate::shutdown::Shutdown;
use crate::upstream::Upstreams;
use crate::{fetch, http, outage, reclaim};

/// The default consumer name: `<hostname>-<pid>`.
pub fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

/// Runs a worker until SIGTERM/SIGINT (or until `shutdown.stop` is cancelled by the caller).
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let metrics = Metrics::new(config.worker.concurrency);
    run_with_metrics(config, shutdown, metrics).await
}

/// [`run`] with metrics the caller made, so an embedding process (the benchmark) can read the
/// counters while the worker runs (prometheus vectors are shared handles: keep a clone).
pub async fn run_with_metrics(
    config: Config,
    shutdown: Shutdown,
    metrics: Metrics,
) -> anyhow::Result<()> {
    let upstreams = Upstreams::from_config(&config)?;
    let queues = config.worker_queues();
    let consumer = if config.worker.consumer.is_empty() {
        default_consumer()
    } else {
        config.worker.consumer.clone()
    };
    let concurrency = config.worker.concurrency;
    let upstream_names: Vec<String> = config.upstreams.keys().cloned().collect();
    let metrics = Arc::new(metrics);
    // The HTTP server starts first: a worker waiting for its Redis is alive and says why it is
    // not ready.
    let served = http::Served::new(metrics.clone(), shutdown.stop.clone());
    let loops = TaskTracker::new();
    let http_done = tokio_util::sync::CancellationToken::new();
    if !config.worker.http_listen.is_empty() {
        let listener = http::bind(&config.worker.http_listen).await?;
        loops.spawn(http::serve(served.clone(), listener, http_done.clone()));
    }
    let Some(store) = start_up(&config, &queues, &upstream_names, &served, &shutdown).await? else {
        tracing::info!("stopped before Redis was reached");
        http_done.cancel();
        loops.close();
        loops.wait().await;
        return Ok(());
    };
    let rpms: Vec<(String, u64)> = config
        .upstreams
        .iter()
        .map(|(name, u)| (name.clone(), u.rpm))
        .collect();
    let chains: Vec<(String, String)> = config
        .upstreams
        .iter()
        .flat_map(|(name, u)| {
            u.fallbacks
                .iter()
                .map(move |f| (name.clone(), f.upstream.clone()))
        })
        .collect();
    metrics.prime(&queues, &rpms, &chains);
    let ctx = Arc::new(Ctx {
        limiter: Limiter::from_config(store.clone(), &config),
        completer: Completer::start(store.clone(), shutdown.abandon.clone()),
        store,
        upstreams,
        hooks: Hooks::from_config(&config.api)?,
        policy: RetryPolicy::from_config(&config.retry),
        consumer,
        slots: Arc::new(Semaphore::new(concurrency)),
        inflight: Inflight::default(),
        wakeups: Wakeups::default(),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        lease: Duration::from_millis(config.worker.lease_ms),
        heartbeat: Duration::from_millis(config.worker.heartbeat_ms),
        poison_deliveries: config.worker.poison_deliveries,
        metrics,
        upstream_names,
        prices: config.prices.clone(),
        paused: queues
            .iter()
            .map(|q| (q.clone(), AtomicBool::new(false)))
            .collect(),
        queues: queues.clone(),
    });
    tracing::info!(
        consumer = %ctx.consumer,
        queues = ?queues,
        concurrency,
        redis = ctx.store.url(),
        "worker started"
    );
    served.started(ctx.clone());

    // Intake loops (fetch + reclaim) start jobs; the other loops only keep things moving.
    let intake = TaskTracker::new();
    let heartbeat_stop = tokio_util::sync::CancellationToken::new();
    loops.spawn(reclaim::heartbeat(ctx.clone(), heartbeat_stop.clone()));
    loops.spawn(watch_paused(ctx.clone()));
    for q in &queues {
        intake.spawn(fetch::run(ctx.clone(), q.clone()));
        loops.spawn(scheduler::run(
            ctx.store.clone(),
            q.clone(),
            ctx.wakeups.clone(),
            shutdown.stop.clone(),
        ));
    }

    shutdown.stop.cancelled().await;
    // No new jobs once the intake loops have ended (a read in progress finishes and its jobs
    // start); then in-flight calls get the grace period.
    intake.close();
    intake.wait().await;
    ctx.tracker.close();
    let grace = Duration::from_millis(config.worker.grace_ms);
    if tokio::time::timeout(grace, ctx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = ctx.inflight.len(),
            "grace period over; handing unfinished jobs back"
        );
        shutdown.abandon.cancel();
        ctx.tracker.wait().await;
    }
    for (queue, entries) in ctx.inflight.all() {
        match ctx.store.release(&queue, &entries).await {
            Ok(n) => tracing::info!(queue, released = n, "unfinished jobs handed back"),
            Err(e) => {
                tracing::error!(queue, error = %e, "hand-back failed; the lease will bring them back")
            }
        }
    }
    heartbeat_stop.cancel();
    // Gone from `sluice stats` at once, not after three missed beats.
    for q in &ctx.queues {
        if let Err(e) = ctx.store.leave(q, &ctx.consumer).await {
            tracing::warn!(queue = %q, error = %e, "could not leave the consumer group");
        }
    }
    http_done.cancel();
    loops.close();
    loops.wait().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Connects and prepares the queues (consumer groups, upstream and partition records), waiting
/// for Redis while it is unreachable. `None`: stopped before Redis was reached. A permanent
/// error (a bad URL, a refused TLS file, a Redis user without rights) ends the worker at once.
async fn start_up(
    config: &Config,
    queues: &[String],
    upstreams: &[String],
    served: &http::Served,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Store>> {
    let prepare = || async {
        let r = prepare(config, queues, upstreams).await;
        if let Err(e) = &r {
            served.waiting_for(format!("Redis: {e}"));
        }
        r
    };
    match outage::until_reached(&shutdown.stop, prepare).await {
        Ok(store) => Ok(Some(store)),
        Err(e) if e.is_transient() && shutdown.stop.is_cancelled() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn prepare(
    config: &Config,
    queues: &[String],
    upstreams: &[String],
) -> Result<Store, sluice_common::StoreError> {
    let store = Store::connect(&config.redis.url, config.store_settings()).await?;
    for q in queues {
        store.create_group(q).await?;
        // Budgets in dollars reserve at these; a worker without prices leaves the queue's be.
        if !config.prices.is_empty() {
            store.publish_prices(q, &config.prices).await?;
        }
    }
    store.register_upstreams(upstreams).await?;
    for (queue, before) in store.record_partitions(&config.worker.queues).await? {
        tracing::warn!(
            queue,
            before,
            now = config.queues.partitions.get(&queue).copied().unwrap_or(1),
            "another worker had recorded this queue with another partition count; producers now \
             follow this worker's (give the whole fleet one queues.partitions)"
        );
    }
    Ok(store)
}
