//! Tokens and estimated cost per tenant (`sluice_tenant_tokens_total`,
//! `sluice_tenant_cost_dollars_total`), with bounded label cardinality: the first `TENANT_LABELS`
//! tenants this worker sees get a label of their own; every later one is counted as `other`,
//! and jobs without a tenant as `default`. A fleet's series per queue are thus at most
//! workers × (`TENANT_LABELS` + 2), however many tenants there are.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use prometheus::{CounterVec, IntCounterVec, Opts, Registry};
use sluice_common::config::ModelPrice;

use crate::usage::Usage;

/// Tenants a worker labels by name; later ones are `other`.
pub const TENANT_LABELS: usize = 50;

pub struct TenantMetrics {
    tokens: IntCounterVec,
    cost: CounterVec,
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
        // Registered once, with fixed names: only a defect could make this fail.
        let _ = r.register(Box::new(tokens.clone()));
        let _ = r.register(Box::new(cost.clone()));
        TenantMetrics {
            tokens,
            cost,
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

    /// Counts one answer's usage for `tenant`, priced by `model`.
    pub fn record(
        &self,
        queue: &str,
        tenant: Option<&str>,
        model: &str,
        usage: &Usage,
        prices: &BTreeMap<String, ModelPrice>,
    ) {
        if usage.total.is_none() {
            return;
        }
        let label = self.label(tenant);
        for (kind, n) in [("prompt", usage.prompt), ("completion", usage.completion)] {
            self.tokens
                .with_label_values(&[queue, &label, kind])
                .inc_by(n);
        }
        let dollars = prices
            .get(model)
            .map_or(0.0, |p| p.cost(usage.prompt, usage.completion));
        self.cost
            .with_label_values(&[queue, &label])
            .inc_by(dollars);
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
}
