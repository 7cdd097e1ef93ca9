//! Prometheus metrics of one worker, prefix `sluice_`, labelled by queue, upstream, class or
//! reason — never by job id (unbounded label values would swamp Prometheus).
//!
//! Two kinds live here. Counters and histograms of what *this* worker did (jobs started,
//! completed, retried, calls and their latency) are updated as it works; sum them over workers.
//! Queue and upstream gauges describe *shared* state in Redis (depth, lag, pending, delayed, dead,
//! circuit); they are read from Redis at most once per `REFRESH` per worker, when scraped, with
//! one pipelined round trip per queue — so a fleet costs Redis (workers ÷ scrape interval) round
//! trips per queue, and nothing when nobody scrapes. Every worker reports the same values for
//! them: aggregate with `max by (queue)`, never `sum`. Reading them is `shared.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

mod shared;
mod tenants;

/// Shortest time between two reads of the queue gauges from Redis.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Job states whose counts are exported (`sluice_queue_jobs{state}`).
const STATES: [&str; 7] = [
    "scheduled",
    "queued",
    "running",
    "retrying",
    "completed",
    "dead",
    "cancelled",
];

/// Fleet-wide totals kept in each queue's counts hash, exported as counters.
const TOTALS: [(&str, &str); 9] = [
    ("enqueued", "sluice_queue_enqueued_total"),
    ("cache_hits", "sluice_cache_hits_total"),
    ("cache_misses", "sluice_cache_misses_total"),
    ("cache_followers", "sluice_cache_followers_total"),
    ("cache_evictions", "sluice_cache_evictions_total"),
    ("cache_tokens_saved", "sluice_cache_tokens_saved_total"),
    ("deduplicated", "sluice_queue_deduplicated_total"),
    (
        "refused_completions",
        "sluice_queue_refused_completions_total",
    ),
    ("redriven", "sluice_queue_redriven_total"),
];

/// Seconds buckets for latencies from milliseconds (a fast mock) to minutes (a slow model).
const LATENCY: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// A closed upstream reads 0, half-open 1, open 2.
fn circuit_value(state: &str) -> i64 {
    match state {
        "open" => 2,
        "half_open" => 1,
        _ => 0,
    }
}

/// The status class of an upstream answer: `2xx`, `429`, `4xx`, `5xx`, … or `error` when no
/// answer came (connection, timeout).
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(429) => "429",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds from `since_ms` (Unix ms) to now; `None` when unknown or in the future.
pub fn secs_since(since_ms: u64) -> Option<f64> {
    let now = now_ms();
    (since_ms > 0 && now >= since_ms).then(|| (now - since_ms) as f64 / 1000.0)
}

pub struct Metrics {
    registry: Registry,
    pub started: IntCounterVec,
    pub completed: IntCounterVec,
    pub retried: IntCounterVec,
    pub deferred: IntCounterVec,
    pub dead: IntCounterVec,
    pub skipped: IntCounterVec,
    pub refused: IntCounterVec,
    pub reclaimed: IntCounterVec,
    pub responses: IntCounterVec,
    pub holds: IntCounterVec,
    pub circuit_changes: IntCounterVec,
    /// Jobs moved from one deployment to the next of their fallback chain, and why.
    pub fallbacks: IntCounterVec,
    pub tokens: IntCounterVec,
    /// Tokens and cost by tenant (bounded labels: `tenants.rs`).
    tenants: tenants::TenantMetrics,
    pub queue_wait: HistogramVec,
    pub call_time: HistogramVec,
    pub job_time: HistogramVec,
    pub limiter_wait: HistogramVec,
    pub in_flight: IntGauge,
    pub concurrency: IntGauge,
    queue_jobs: IntGaugeVec,
    queue_stream: IntGaugeVec,
    queue_lag: IntGaugeVec,
    queue_pending: IntGaugeVec,
    queue_delayed: IntGaugeVec,
    queue_dead: IntGaugeVec,
    queue_consumers: IntGaugeVec,
    queue_workers: IntGaugeVec,
    queue_paused: IntGaugeVec,
    queue_totals: Vec<(&'static str, IntCounterVec)>,
    circuit: IntGaugeVec,
    hold_seconds: prometheus::GaugeVec,
    rpm_limit: prometheus::GaugeVec,
    /// The response cache's estimated cost saved per queue, from `[prices]`.
    cache_cost_saved: prometheus::GaugeVec,
    refresh_errors: prometheus::IntCounter,
    /// Unix ms of the last refresh from Redis, and whether one is running.
    refreshed_ms: AtomicU64,
    refreshing: AtomicBool,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
    r.register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

fn float_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    let g = prometheus::GaugeVec::new(Opts::new(name, help), labels)
        .expect("a valid metric definition");
    r.register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY.to_vec()),
        labels,
    )
    .expect("a valid metric definition");
    r.register(Box::new(h.clone()))
        .expect("each metric is registered once");
    h
}

impl Metrics {
    pub fn new(concurrency: usize) -> Metrics {
        let r = Registry::new();
        let q = &["queue"];
        let u = &["upstream"];
        let in_flight = IntGauge::new("sluice_jobs_in_flight", "Jobs this worker is running now")
            .expect("a valid metric definition");
        let concurrency_gauge = IntGauge::new(
            "sluice_worker_concurrency",
            "Jobs this worker may run at once (worker.concurrency)",
        )
        .expect("a valid metric definition");
        concurrency_gauge.set(concurrency as i64);
        for g in [&in_flight, &concurrency_gauge] {
            r.register(Box::new(g.clone()))
                .expect("each metric is registered once");
        }
        let refresh_errors = prometheus::IntCounter::new(
            "sluice_metrics_refresh_errors_total",
            "Failed reads of the queue gauges from Redis",
        )
        .expect("a valid metric definition");
        r.register(Box::new(refresh_errors.clone()))
            .expect("each metric is registered once");
        Metrics {
            started: counter(
                &r,
                "sluice_jobs_started_total",
                "Job runs started by this worker",
                q,
            ),
            completed: counter(
                &r,
                "sluice_jobs_completed_total",
                "Jobs this worker completed",
                q,
            ),
            retried: counter(
                &r,
                "sluice_jobs_retried_total",
                "Jobs this worker put back to sleep after a failed call, by failure class",
                &["queue", "class"],
            ),
            deferred: counter(
                &r,
                "sluice_jobs_deferred_total",
                "Jobs put back to sleep before their call (provider hold, open circuit, throttled)",
                &["queue", "reason"],
            ),
            dead: counter(
                &r,
                "sluice_jobs_dead_total",
                "Jobs this worker dead-lettered, by reason",
                &["queue", "reason"],
            ),
            skipped: counter(
                &r,
                "sluice_jobs_skipped_total",
                "Delivered entries not run: the job was cancelled, finished or had moved on",
                q,
            ),
            refused: counter(
                &r,
                "sluice_completions_refused_total",
                "Completions refused because the job was no longer running (a duplicate run)",
                q,
            ),
            reclaimed: counter(
                &r,
                "sluice_jobs_reclaimed_total",
                "Entries this worker reclaimed from a dead worker's pending list",
                q,
            ),
            responses: counter(
                &r,
                "sluice_upstream_responses_total",
                "Upstream answers by status class (2xx, 429, 4xx, 5xx; error: no answer)",
                &["upstream", "status"],
            ),
            holds: counter(
                &r,
                "sluice_rate_limit_holds_total",
                "Fleet-wide holds this worker set after a 429 or an exhausted rate limit",
                u,
            ),
            circuit_changes: counter(
                &r,
                "sluice_circuit_changes_total",
                "Circuit breaker changes this worker caused, by the state entered",
                &["upstream", "to"],
            ),
            fallbacks: counter(
                &r,
                "sluice_fallbacks_total",
                "Jobs moved to the next deployment of their fallback chain, by the class that moved them (held, circuit_open, rate_limited, quota, auth, context_length, unusable)",
                &["from", "to", "class"],
            ),
            tokens: counter(
                &r,
                "sluice_tokens_total",
                "Tokens the upstream reported in usage, by kind (prompt, completion)",
                &["upstream", "kind"],
            ),
            queue_wait: histogram(
                &r,
                "sluice_queue_wait_seconds",
                "From a job becoming runnable (enqueued or its scheduled time) to its first start",
                q,
            ),
            call_time: histogram(
                &r,
                "sluice_upstream_call_seconds",
                "Time of one upstream call, to the end of its answer",
                u,
            ),
            job_time: histogram(
                &r,
                "sluice_job_duration_seconds",
                "From a job becoming runnable to its end, by outcome (completed, dead)",
                &["queue", "outcome"],
            ),
            limiter_wait: histogram(
                &r,
                "sluice_limiter_wait_seconds",
                "Time a call waited for the fleet-wide rate limiter",
                u,
            ),
            in_flight,
            concurrency: concurrency_gauge,
            queue_jobs: gauge(
                &r,
                "sluice_queue_jobs",
                "Jobs per state, fleet-wide, from Redis (terminal states count every job ever ended so)",
                &["queue", "state"],
            ),
            queue_stream: gauge(
                &r,
                "sluice_queue_stream_length",
                "Entries in the queue's ready stream, from Redis",
                q,
            ),
            queue_lag: gauge(
                &r,
                "sluice_queue_lag",
                "Entries not yet delivered to any worker (XINFO GROUPS lag), from Redis",
                q,
            ),
            queue_pending: gauge(
                &r,
                "sluice_queue_pending",
                "Entries delivered and not yet acknowledged, from Redis",
                q,
            ),
            queue_delayed: gauge(
                &r,
                "sluice_queue_delayed",
                "Jobs sleeping in the delayed ZSET (scheduled or backing off), from Redis",
                q,
            ),
            queue_dead: gauge(
                &r,
                "sluice_queue_dead_letters",
                "Entries in the dead-letter stream, from Redis",
                q,
            ),
            queue_consumers: gauge(
                &r,
                "sluice_queue_consumers",
                "Consumers in the queue's group, live or not, from Redis",
                q,
            ),
            queue_workers: gauge(
                &r,
                "sluice_queue_workers",
                "Workers with a recent heartbeat on the queue (within three beats), from Redis",
                q,
            ),
            queue_paused: gauge(
                &r,
                "sluice_queue_paused",
                "1 when the queue is paused, from Redis",
                q,
            ),
            queue_totals: TOTALS
                .iter()
                .map(|(field, name)| {
                    let help = format!("Fleet-wide count of {field} jobs, from Redis");
                    (*field, counter(&r, name, &help, q))
                })
                .collect(),
            circuit: gauge(
                &r,
                "sluice_circuit_state",
                "Circuit breaker of an upstream, fleet-wide: 0 closed, 1 half-open, 2 open",
                u,
            ),
            hold_seconds: float_gauge(
                &r,
                "sluice_rate_limit_hold_seconds",
                "Seconds left of the provider's fleet-wide hold on an upstream (0: none)",
                u,
            ),
            rpm_limit: float_gauge(
                &r,
                "sluice_upstream_rpm_limit",
                "Requests per minute the fleet holds an upstream to: its adaptive rate, else its rpm (0: none)",
                u,
            ),
            cache_cost_saved: float_gauge(
                &r,
                "sluice_cache_cost_saved_dollars",
                "Estimated cost of the calls the response cache saved, fleet-wide, from Redis: tokens saved per model times [prices] (models without a price count 0)",
                q,
            ),
            tenants: tenants::TenantMetrics::new(&r),
            refresh_errors,
            registry: r,
            refreshed_ms: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
        }
    }

    /// Counts one answer's usage and cost (`usage.cost`) for its job's tenant.
    pub fn tenant_usage(&self, queue: &str, tenant: Option<&str>, usage: &crate::usage::Usage) {
        self.tenants.record(queue, tenant, usage);
    }

    /// Creates the series that should read 0 before anything happens, so dashboards and alerts
    /// see them from the first scrape.
    /// `upstreams` are (name, configured rpm); `chains` the (from, to) pairs of the configured
    /// fallback chains.
    pub fn prime(
        &self,
        queues: &[String],
        upstreams: &[(String, u64)],
        chains: &[(String, String)],
    ) {
        for (from, to) in chains {
            for class in ["held", "circuit_open", "rate_limited", "quota", "auth"] {
                self.fallbacks
                    .with_label_values(&[from.as_str(), to.as_str(), class]);
            }
        }
        for q in queues {
            let q = q.as_str();
            for reason in ["held", "circuit_open", "throttled"] {
                self.deferred.with_label_values(&[q, reason]);
            }
            self.started.with_label_values(&[q]);
            self.completed.with_label_values(&[q]);
            self.skipped.with_label_values(&[q]);
            self.refused.with_label_values(&[q]);
            self.reclaimed.with_label_values(&[q]);
            self.queue_wait.with_label_values(&[q]);
        }
        for (u, rpm) in upstreams {
            let u = u.as_str();
            self.rpm_limit.with_label_values(&[u]).set(*rpm as f64);
            for to in ["opened", "closed"] {
                self.circuit_changes.with_label_values(&[u, to]);
            }
            for kind in ["prompt", "completion"] {
                self.tokens.with_label_values(&[u, kind]);
            }
            self.holds.with_label_values(&[u]);
            self.call_time.with_label_values(&[u]);
            self.limiter_wait.with_label_values(&[u]);
            self.circuit.with_label_values(&[u]);
            for s in ["2xx", "429", "4xx", "5xx", "error"] {
                self.responses.with_label_values(&[u, s]);
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(200)), "2xx");
        assert_eq!(status_class(Some(429)), "429");
        assert_eq!(status_class(Some(404)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
    }

    #[test]
    fn renders_primed_series_without_job_ids() {
        let m = Metrics::new(8);
        m.prime(&["q1".to_string()], &[("mock".to_string(), 600)], &[]);
        m.started.with_label_values(&["q1"]).inc();
        let text = m.render().expect("render");
        assert!(text.contains("sluice_jobs_started_total{queue=\"q1\"} 1"));
        assert!(text.contains("sluice_worker_concurrency 8"));
        assert!(text.contains("sluice_upstream_rpm_limit{upstream=\"mock\"} 600"));
        assert!(
            text.contains("sluice_upstream_responses_total{status=\"429\",upstream=\"mock\"} 0")
        );
    }
}
