//! Tokens and estimated cost per tenant (`sluice_tenant_tokens_total`,
//! `sluice_tenant_cost_dollars_total`), with bounded label cardinality: the first `TENANT_LABELS`
//! tenants this worker sees get a label of their own; every later one is counted as `other`,
//! and jobs without a tenant as `default`. A fleet's series per queue are thus at most
//! workers × (`TENANT_LABELS` + 2), however many tenants there are. Jobs held by tenants over
//! their budgets (`sluice_tenant_parked_jobs`, read from Redis with the queue gauges): the
//! `TENANT_LABELS` tenants holding most by name, the rest summed as `other`. How much of its
//! budget each tenant has spent this period (`sluice_tenant_budget_used_ratio`, by unit, tokens
//! or dollars): the `TENANT_LABELS` nearest their limits by name, the highest of the rest as
//! `other` (so an alert on the ratio misses nobody).

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{CounterVec, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use sluice_common::store::BudgetUse;

use crate::usage::Usage;

/// Tenants a worker labels by name; later ones are `other`.
pub const TENANT_LABELS: usize = 50;

pub struct TenantMetrics {
    tokens: IntCounterVec,
    cost: CounterVec,
    parked: IntGaugeVec,
    budget_used: GaugeVec,
    named: Mutex<HashSet<String>>,
}

impl TenantMetrics {
    pub fn new(r: &Registry) -> TenantMetrics {
        let tokens = IntCounterVec::new(
            Opts::new(
                "sluice_tenant_tokens_total",
                "Tokens the upstream reported in usage, by queue, tenant (the first 50 a worker sees; later ones `other`, none `default`) and kind (prompt, completion)",
            ),
            &["queue", "tenant", "kind"],
        )
        .expect("valid metric");
        let cost = CounterVec::new(
            Opts::new(
                "sluice_tenant_cost_dollars_total",
                "Estimated cost of the calls' usage by queue and tenant, from [prices] (models without a price count 0)",
            ),
            &["queue", "tenant"],
        )
        .expect("valid metric");
        let parked = IntGaugeVec::new(
            Opts::new(
                "sluice_tenant_parked_jobs",
                "Jobs held because their tenant is over its budget, by queue and tenant (the 50 holding most; the rest `other`)",
            ),
            &["queue", "tenant"],
        )
        .expect("valid metric");
        let budget_used = GaugeVec::new(
            Opts::new(
                "sluice_tenant_budget_used_ratio",
                "Share of its budget a tenant has spent this period, by queue, tenant (the 50 nearest their limits; the highest of the rest as `other`) and unit (tokens, dollars); near 1 its next job no longer fits and its jobs are parked",
            ),
            &["queue", "tenant", "unit"],
        )
        .expect("valid metric");
        // Registered once, with fixed names: only a defect could make this fail.
        let _ = r.register(Box::new(tokens.clone()));
        let _ = r.register(Box::new(cost.clone()));
        let _ = r.register(Box::new(parked.clone()));
        let _ = r.register(Box::new(budget_used.clone()));
        TenantMetrics {
            tokens,
            cost,
            parked,
            budget_used,
            named: Mutex::new(HashSet::new()),
        }
    }

    /// The label of `tenant`: its name while fewer than `TENANT_LABELS` are named.
    fn label(&self, tenant: Option<&str>) -> String {
        let Some(t) = tenant else {
            return "default".into();
        };
        let Ok(mut named) = self.named.lock() else {
            return "other".into();
        };
        if named.contains(t) || (named.len() < TENANT_LABELS && named.insert(t.to_string())) {
            t.to_string()
        } else {
            "other".into()
        }
    }

    /// Counts one answer's usage and its cost (`usage.cost`, 0 when unpriced) for `tenant`;
    /// nothing when the answer had no `usage`.
    pub fn record(&self, queue: &str, tenant: Option<&str>, usage: &Usage) {
        if usage.total.is_none() {
            return;
        }
        let label = self.label(tenant);
        for (kind, n) in [("prompt", usage.prompt), ("completion", usage.completion)] {
            self.tokens
                .with_label_values(&[queue, &label, kind])
                .inc_by(n);
        }
        self.cost
            .with_label_values(&[queue, &label])
            .inc_by(usage.cost.unwrap_or(0.0));
    }
}

impl TenantMetrics {
    /// Sets `queue`'s parked jobs per tenant (`rows`, most first), forgetting tenants no longer
    /// parked; a queue with none shows `other` 0, so the series exists for the dashboard.
    pub fn set_parked(&self, queue: &str, rows: &[(String, u64)]) {
        for m in self.parked.collect().iter().flat_map(|f| f.get_metric()) {
            let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
            if labels.first() == Some(&queue) {
                let _ = self.parked.remove_label_values(&labels);
            }
        }
        let mut other = 0;
        for (i, (tenant, n)) in rows.iter().enumerate() {
            if i < TENANT_LABELS {
                self.parked
                    .with_label_values(&[queue, tenant])
                    .set(*n as i64);
            } else {
                other += *n as i64;
            }
        }
        self.parked.with_label_values(&[queue, "other"]).set(other);
    }

    /// Sets `queue`'s budget ratios (`rows`, nearest their limits first), forgetting tenants no
    /// longer listed; `other` (the highest of the unnamed, else 0) always exists in both units.
    pub fn set_budget_use(&self, queue: &str, rows: &[BudgetUse]) {
        for m in self
            .budget_used
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
        {
            let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
            if labels.first() == Some(&queue) {
                let _ = self.budget_used.remove_label_values(&labels);
            }
        }
        let (mut other_tokens, mut other_dollars) = (0.0f64, 0.0f64);
        for (i, row) in rows.iter().enumerate() {
            for (unit, ratio, other) in [
                ("tokens", row.tokens, &mut other_tokens),
                ("dollars", row.dollars, &mut other_dollars),
            ] {
                let Some(ratio) = ratio else { continue };
                if i < TENANT_LABELS {
                    self.budget_used
                        .with_label_values(&[queue, &row.tenant, unit])
                        .set(ratio);
                } else {
                    *other = other.max(ratio);
                }
            }
        }
        for (unit, v) in [("tokens", other_tokens), ("dollars", other_dollars)] {
            self.budget_used
                .with_label_values(&[queue, "other", unit])
                .set(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_past_the_limit_are_other_and_none_is_default() {
        let m = TenantMetrics::new(&Registry::new());
        assert_eq!(m.label(None), "default");
        for i in 0..TENANT_LABELS {
            assert_eq!(m.label(Some(&format!("t{i}"))), format!("t{i}"));
        }
        assert_eq!(m.label(Some("late")), "other");
        assert_eq!(m.label(Some("t0")), "t0", "a named tenant keeps its label");
    }

    #[test]
    fn budget_ratios_name_the_50_nearest_their_limits_and_keep_the_highest_of_the_rest() {
        let m = TenantMetrics::new(&Registry::new());
        let rows: Vec<BudgetUse> = (0..60)
            .map(|i| BudgetUse {
                tenant: format!("t{i}"),
                tokens: Some(1.0 - i as f64 / 100.0),
                dollars: (i % 2 == 0).then_some(0.5),
            })
            .collect();
        m.set_budget_use("q", &rows);
        let get = |t: &str, u: &str| m.budget_used.with_label_values(&["q", t, u]).get();
        assert_eq!(get("t0", "tokens"), 1.0);
        assert_eq!(get("t0", "dollars"), 0.5);
        assert_eq!(get("other", "tokens"), 0.5, "t50's, the highest unnamed");
        assert_eq!(get("other", "dollars"), 0.5);
        m.set_budget_use("q", &[]);
        assert_eq!(
            m.budget_used.collect()[0].get_metric().len(),
            2,
            "only `other` is left, in both units"
        );
    }

    #[test]
    fn parked_jobs_name_the_50_tenants_holding_most_and_sum_the_rest() {
        let m = TenantMetrics::new(&Registry::new());
        let rows: Vec<(String, u64)> = (0..60).map(|i| (format!("t{i}"), 100 - i)).collect();
        m.set_parked("q", &rows);
        assert_eq!(m.parked.with_label_values(&["q", "t0"]).get(), 100);
        assert_eq!(
            m.parked.with_label_values(&["q", "other"]).get(),
            (41..=50).sum::<i64>()
        );
        m.set_parked("q", &[]);
        assert_eq!(
            m.parked.collect()[0].get_metric().len(),
            1,
            "only `other` is left"
        );
    }
}
