//! The shared gauges: queue and upstream state read from Redis (at most once per `REFRESH` per
//! worker, when scraped, one pipelined round trip per queue), and the queue totals the counters
//! follow.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sluice_common::Store;
use sluice_common::config::ModelPrice;

use super::{Metrics, REFRESH, STATES, circuit_value, now_ms};

impl Metrics {
    /// Reads the shared gauges from Redis if the last read is older than `REFRESH` and no other
    /// scrape is reading them; a failure keeps the old values and counts an error. `prices`
    /// (`[prices]`) price the cache's estimated saving.
    pub async fn refresh(
        &self,
        store: &Store,
        queues: &[String],
        upstreams: &[String],
        prices: &BTreeMap<String, ModelPrice>,
    ) {
        let now = now_ms();
        let last = self.refreshed_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < REFRESH.as_millis() as u64 {
            return;
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let started = Instant::now();
        let mut ok = true;
        for q in queues {
            match store.stats(q).await {
                Ok(s) => self.set_queue(&s, prices),
                Err(e) => {
                    ok = false;
                    tracing::warn!(queue = %q, error = %e, "reading queue gauges failed");
                }
            }
            match store.tenant_gauges(q).await {
                Ok(g) => {
                    self.tenants.set_parked(q, &g.parked);
                    self.tenants.set_budget_use(q, &g.budgets);
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(queue = %q, error = %e, "reading tenants' gauges failed");
                }
            }
        }
        match store.upstream_states_of(upstreams).await {
            Ok(states) => {
                for s in states {
                    let u = [s.upstream.as_str()];
                    self.circuit
                        .with_label_values(&u)
                        .set(circuit_value(&s.circuit));
                    self.hold_seconds
                        .with_label_values(&u)
                        .set(s.hold_for_ms.unwrap_or(0) as f64 / 1000.0);
                    if let Some(rpm) = s.adaptive_rpm {
                        self.rpm_limit.with_label_values(&u).set(rpm);
                    }
                }
            }
            Err(e) => {
                ok = false;
                tracing::warn!(error = %e, "reading upstream states failed");
            }
        }
        if ok {
            self.refreshed_ms.store(now, Ordering::Relaxed);
        } else {
            self.refresh_errors.inc();
        }
        self.refreshing.store(false, Ordering::Release);
        tracing::trace!(
            ms = started.elapsed().as_millis() as u64,
            "queue gauges read"
        );
    }

    fn set_queue(
        &self,
        s: &sluice_common::store::QueueStats,
        prices: &BTreeMap<String, ModelPrice>,
    ) {
        let q = s.queue.as_str();
        for state in STATES {
            let n = s.counts.get(state).copied().unwrap_or(0).max(0);
            self.queue_jobs.with_label_values(&[q, state]).set(n);
        }
        self.queue_stream
            .with_label_values(&[q])
            .set(s.stream_len as i64);
        self.queue_lag
            .with_label_values(&[q])
            .set(s.lag.unwrap_or(0) as i64);
        self.queue_pending
            .with_label_values(&[q])
            .set(s.pending as i64);
        self.queue_delayed
            .with_label_values(&[q])
            .set(s.delayed as i64);
        self.queue_dead
            .with_label_values(&[q])
            .set(s.dead_len as i64);
        self.queue_consumers
            .with_label_values(&[q])
            .set(s.consumers as i64);
        self.queue_workers
            .with_label_values(&[q])
            .set(s.workers as i64);
        self.queue_paused
            .with_label_values(&[q])
            .set(i64::from(s.paused));
        // The cache's estimated cost saved: tokens per model (`saved_in:<model>`,
        // `saved_out:<model>`) at the configured prices.
        let mut cost = 0.0;
        for (field, n) in &s.counts {
            let n = (*n).max(0) as u64;
            let (model, tokens) = match (
                field.strip_prefix("saved_in:"),
                field.strip_prefix("saved_out:"),
            ) {
                (Some(m), _) => (m, (n, 0)),
                (_, Some(m)) => (m, (0, n)),
                _ => continue,
            };
            if let Some(price) = ModelPrice::of(prices, model) {
                cost += price.cost(tokens.0, tokens.1);
            }
        }
        self.cache_cost_saved.with_label_values(&[q]).set(cost);
        // Counters follow Redis's totals; a total that went down (a purge or a FLUSHDB) is a
        // reset, which Prometheus's rate() copes with only if the counter restarts too — so it
        // is left where it is and resumes once Redis passes it again.
        for (field, c) in &self.queue_totals {
            let want = s.counts.get(*field).copied().unwrap_or(0).max(0) as u64;
            let c = c.with_label_values(&[q]);
            let have = c.get();
            if want > have {
                c.inc_by(want - have);
            }
        }
    }
}
