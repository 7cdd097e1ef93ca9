//! Tenants of a queue (docs/OPERATIONS.md, "Tenants"): a tenant's weight and budget
//! (`sluice_tenant`), and what `sluice stats --tenants` shows: each tenant's backlog, share of
//! the tokens used, spend this period and whether it is parked.
//!
//! Budgets in dollars reserve at the queue's `prices`, which workers publish from their
//! `[prices]` (`publish_prices`).
//!
//! A partitioned queue keeps its tenants per partition: a weight is written to every partition,
//! a budget divided among them (each partition's share, rounded up).

use super::*;

/// Budget periods: spend starts again at 0 each UTC day or calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// A change to one tenant's settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantChange {
    /// Its weight in the fair share; `Some(None)` goes back to the default, 1.
    pub weight: Option<Option<f64>>,
    /// Tokens per period; `Some(0)` removes that limit.
    pub budget_tokens: Option<u64>,
    /// Dollars per period (at the queue's published prices); `Some(0.0)` removes that limit.
    pub budget_dollars: Option<f64>,
    pub period: Option<Period>,
}

/// What `set_tenant` learned besides: whether the queue has prices published (without them a
/// budget in dollars counts every job at 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSet {
    pub priced: bool,
}

/// One tenant as `sluice stats --tenants` shows it (summed over partitions).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct TenantStats {
    pub tenant: String,
    pub weight: f64,
    /// Jobs waiting in the tenant's lists (not yet moved to a lane).
    pub backlog: u64,
    /// Tokens its completed calls used (from `usage`), since the queue was tenanted.
    pub tokens: u64,
    /// `tokens` as a share of all tenants' tokens (0 to 1).
    pub share: f64,
    /// Tokens per period, when it has a budget.
    pub budget: Option<u64>,
    pub period: Option<String>,
    /// Spent (reserved, then corrected by usage) this period.
    pub spent: u64,
    /// Dollars per period, when its budget has them.
    pub budget_dollars: Option<f64>,
    /// Dollars spent (reserved at the published prices, then corrected by each call's cost)
    /// this period.
    pub spent_dollars: f64,
    /// Over budget: its `backlog` jobs are held until the budget is raised or a new period.
    pub parked: bool,
}

/// How much of its budget a tenant has spent this period (over every partition), for
/// `sluice_tenant_budget_used_ratio`.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetUse {
    pub tenant: String,
    /// Tokens spent ÷ its token limit, when it has one.
    pub tokens: Option<f64>,
    /// Dollars spent ÷ its dollar limit, when it has one.
    pub dollars: Option<f64>,
}

impl BudgetUse {
    /// The larger of its two ratios (0 with neither).
    pub fn most(&self) -> f64 {
        self.tokens.unwrap_or(0.0).max(self.dollars.unwrap_or(0.0))
    }
}

/// A partition's tenants as its keys hold them: backlogged (`tenants`), `parked`, tokens used
/// (`tused`), `weights`, and idle ones with a kept place in the fair order (`tidle`); `TIME`.
type TenantKeys = (
    Vec<String>,
    Vec<String>,
    HashMap<String, u64>,
    HashMap<String, String>,
    Vec<String>,
    (u64, u64),
);

/// Adds to `pipe` the HMGET of tenant `t`'s budget (partition prefix `p`) that `BudgetRead::of`
/// reads: one reply.
fn budget_fields(pipe: &mut redis::Pipeline, p: &str, t: &str) {
    pipe.cmd("HMGET")
        .arg(format!("{p}budget:{t}"))
        .arg("tokens")
        .arg("spent")
        .arg("period")
        .arg("dollars")
        .arg("dspent")
        .arg("pid");
}

/// What the worker's tenant gauges read of a queue ([`Store::tenant_gauges`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantGauges {
    /// Parked tenants and the jobs each holds in its lists, most first.
    pub parked: Vec<(String, u64)>,
    /// Tenants with a budget, nearest their limits first.
    pub budgets: Vec<BudgetUse>,
}

/// One partition's budget of a tenant, as of now: its limits and this period's spend.
struct BudgetRead {
    tokens: Option<u64>,
    dollars: Option<f64>,
    spent: u64,
    spent_dollars: f64,
    period: Option<String>,
}

impl BudgetRead {
    /// `budget_fields`' reply at `now_ms` (None: no budget). Spend of an earlier period is not
    /// this one's: the library starts the new period at 0 when it next looks at the budget.
    fn of(v: &Value, now_ms: u64) -> Option<BudgetRead> {
        let b = array(v)?;
        let field = |k: usize| b.get(k).and_then(text);
        let tokens = field(0).and_then(|v| v.parse::<u64>().ok());
        let dollars = field(3).and_then(|v| v.parse::<f64>().ok());
        if tokens.is_none() && dollars.is_none() {
            return None;
        }
        let period = field(2);
        let current = field(5) == Some(period_id(period.as_deref(), now_ms));
        let spent = |k: usize| {
            let v = field(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            if current { v.max(0.0) } else { 0.0 }
        };
        Some(BudgetRead {
            tokens,
            dollars,
            spent: spent(1) as u64,
            spent_dollars: spent(4),
            period,
        })
    }
}

/// The period a budget counts in at `now_ms` (the library's `period_id`): the UTC day's number,
/// or the month as yyyymm. A budget whose `pid` is another has spent nothing yet this period.
fn period_id(period: Option<&str>, now_ms: u64) -> String {
    let days = now_ms / 86_400_000;
    if period != Some("month") {
        return days.to_string();
    }
    let at = std::time::UNIX_EPOCH + Duration::from_millis(now_ms);
    let date = humantime::format_rfc3339_seconds(at).to_string();
    format!(
        "{}{}",
        date.get(0..4).unwrap_or_default(),
        date.get(5..7).unwrap_or_default()
    )
}

/// Adds to `pipe` the lengths of tenant `t`'s three lists (partition prefix `p`): its backlog,
/// three replies.
fn backlog(pipe: &mut redis::Pipeline, p: &str, t: &str) {
    for lane in ["high", "normal", "low"] {
        pipe.cmd("LLEN").arg(format!("{p}tq:{t}:{lane}"));
    }
}

impl Store {
    /// Sets a tenant's weight or budget on every partition of `queue`; a parked tenant is put
    /// back in turn (and parked again at once if its next job still does not fit).
    pub async fn set_tenant(
        &self,
        queue: &str,
        tenant: &str,
        change: &TenantChange,
    ) -> Result<TenantSet, StoreError> {
        crate::validate::tenant_name(tenant)?;
        let parts = self.partitions_of(queue);
        let n = parts.len() as u64;
        let mut priced = true;
        for part in parts {
            let keys = keys_for(&part)?;
            let mut cmd = Self::fcall("sluice_tenant", &keys);
            cmd.arg(tenant);
            if let Some(w) = change.weight {
                cmd.arg("weight")
                    .arg(w.map(|w| w.to_string()).unwrap_or_default());
            }
            if let Some(b) = change.budget_tokens {
                cmd.arg("budget").arg(b.div_ceil(n.max(1)));
            }
            if let Some(d) = change.budget_dollars {
                cmd.arg("dollars")
                    .arg(format!("{:.9}", d / n.max(1) as f64));
            }
            if let Some(p) = change.period {
                cmd.arg("period").arg(p.as_str());
            }
            let reply: Value = cmd.run(self).await?;
            priced &= array(&reply).and_then(|r| r.get(8).and_then(int)) == Some(1);
        }
        Ok(TenantSet { priced })
    }

    /// Publishes `prices` to every partition of `queue`, replacing what was there: budgets in
    /// dollars reserve each job's estimate at them. A worker with prices calls it at start.
    pub async fn publish_prices(
        &self,
        queue: &str,
        prices: &BTreeMap<String, crate::config::ModelPrice>,
    ) -> Result<(), StoreError> {
        for part in self.partitions_of(queue) {
            let keys = keys_for(&part)?;
            let mut cmd = Self::fcall("sluice_prices", &keys);
            for (model, price) in prices {
                cmd.arg(model)
                    .arg(price.input_per_mtok)
                    .arg(price.output_per_mtok);
            }
            let _: Value = cmd.run(self).await?;
        }
        Ok(())
    }

    /// What the worker's tenant gauges show of `queue` (every partition's, summed), in one
    /// round trip to learn who is parked and budgeted and one to read them: the parked tenants
    /// and the jobs each holds in its lists, most first; and every tenant with a budget and how
    /// much of it is spent this period, nearest its limit first.
    pub async fn tenant_gauges(&self, queue: &str) -> Result<TenantGauges, StoreError> {
        // tenant -> (tokens spent, token limit, dollars spent, dollar limit)
        type Sums = (u64, Option<u64>, f64, Option<f64>);
        let mut held: HashMap<String, u64> = HashMap::new();
        let mut sums: BTreeMap<String, Sums> = BTreeMap::new();
        for part in self.partitions_of(queue) {
            let keys = keys_for(&part)?;
            let p = keys.prefix();
            let mut conn = self.conn.clone();
            let (parked, budgeted, time): (Vec<String>, Vec<String>, (u64, u64)) = redis::pipe()
                .cmd("SMEMBERS")
                .arg(format!("{p}parked"))
                .cmd("SMEMBERS")
                .arg(format!("{p}budgets"))
                .cmd("TIME")
                .query_async(&mut conn)
                .await?;
            if parked.is_empty() && budgeted.is_empty() {
                continue;
            }
            let now_ms = time.0 * 1000 + time.1 / 1000;
            let mut pipe = redis::pipe();
            for t in &parked {
                backlog(&mut pipe, p, t);
            }
            for t in &budgeted {
                budget_fields(&mut pipe, p, t);
            }
            let r: Vec<Value> = pipe.query_async(&mut conn).await?;
            let (lens, budgets) = r.split_at((3 * parked.len()).min(r.len()));
            for (t, n) in parked.iter().zip(lens.chunks(3)) {
                let jobs = n.iter().filter_map(int).map(|v| v.max(0) as u64);
                *held.entry(t.clone()).or_default() += jobs.sum::<u64>();
            }
            for (t, v) in budgeted.iter().zip(budgets) {
                let Some(b) = BudgetRead::of(v, now_ms) else {
                    continue;
                };
                let s = sums.entry(t.clone()).or_default();
                s.0 += b.spent;
                s.2 += b.spent_dollars;
                if let Some(l) = b.tokens {
                    *s.1.get_or_insert(0) += l;
                }
                if let Some(l) = b.dollars {
                    *s.3.get_or_insert(0.0) += l;
                }
            }
        }
        let mut parked: Vec<(String, u64)> = held.into_iter().collect();
        parked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let ratio = |spent: f64, limit: f64| if limit > 0.0 { spent / limit } else { 0.0 };
        let mut budgets: Vec<BudgetUse> = sums
            .into_iter()
            .map(|(tenant, (spent, tokens, dspent, dollars))| BudgetUse {
                tenant,
                tokens: tokens.map(|l| ratio(spent as f64, l as f64)),
                dollars: dollars.map(|l| ratio(dspent, l)),
            })
            .collect();
        budgets.sort_by(|a, b| b.most().total_cmp(&a.most()).then(a.tenant.cmp(&b.tenant)));
        Ok(TenantGauges { parked, budgets })
    }

    /// Every tenant of `queue` with jobs waiting, a setting, tokens used or a saved place in the
    /// fair order, busiest first (most backlog, then most tokens).
    pub async fn tenants(&self, queue: &str) -> Result<Vec<TenantStats>, StoreError> {
        self.tenants_where(queue, None).await
    }

    /// One tenant of `queue` as [`Store::tenants`] shows it (its share still of all tenants'
    /// tokens), reading no other tenant's lists or budget; None when the queue holds nothing of
    /// it (no jobs waiting, setting, tokens used or kept place).
    pub async fn tenant(
        &self,
        queue: &str,
        tenant: &str,
    ) -> Result<Option<TenantStats>, StoreError> {
        Ok(self.tenants_where(queue, Some(tenant)).await?.pop())
    }

    async fn tenants_where(
        &self,
        queue: &str,
        only: Option<&str>,
    ) -> Result<Vec<TenantStats>, StoreError> {
        let mut all: BTreeMap<String, TenantStats> = BTreeMap::new();
        let mut total = 0u64;
        for part in self.partitions_of(queue) {
            let keys = keys_for(&part)?;
            let p = keys.prefix();
            let mut conn = self.conn.clone();
            let (active, parked, used, weights, idle, time): TenantKeys = redis::pipe()
                .cmd("ZRANGE")
                .arg(format!("{p}tenants"))
                .arg(0)
                .arg(-1)
                .cmd("SMEMBERS")
                .arg(format!("{p}parked"))
                .cmd("HGETALL")
                .arg(format!("{p}tused"))
                .cmd("HGETALL")
                .arg(format!("{p}weights"))
                .cmd("ZRANGE")
                .arg(format!("{p}tidle"))
                .arg(0)
                .arg(-1)
                .cmd("TIME")
                .query_async(&mut conn)
                .await?;
            let now_ms = time.0 * 1000 + time.1 / 1000;
            let mut names: Vec<String> = active.into_iter().chain(parked.iter().cloned()).collect();
            names.extend(used.keys().cloned());
            names.extend(weights.keys().cloned());
            names.extend(idle);
            names.sort();
            names.dedup();
            total += used.values().sum::<u64>();
            if let Some(only) = only {
                names.retain(|t| t == only);
            }
            if names.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for t in &names {
                backlog(&mut pipe, p, t);
                budget_fields(&mut pipe, p, t);
            }
            let r: Vec<Value> = pipe.query_async(&mut conn).await?;
            for (i, t) in names.iter().enumerate() {
                let row = all.entry(t.clone()).or_insert_with(|| TenantStats {
                    tenant: t.clone(),
                    weight: 1.0,
                    ..TenantStats::default()
                });
                row.backlog += (0..3)
                    .map(|k| r.get(4 * i + k).and_then(int).unwrap_or(0).max(0) as u64)
                    .sum::<u64>();
                row.tokens += used.get(t).copied().unwrap_or(0);
                if let Some(w) = weights.get(t).and_then(|w| w.parse::<f64>().ok()) {
                    row.weight = w;
                }
                row.parked |= parked.contains(t);
                if let Some(b) = r.get(4 * i + 3).and_then(|v| BudgetRead::of(v, now_ms)) {
                    if let Some(limit) = b.tokens {
                        *row.budget.get_or_insert(0) += limit;
                    }
                    if let Some(limit) = b.dollars {
                        *row.budget_dollars.get_or_insert(0.0) += limit;
                    }
                    row.spent += b.spent;
                    row.spent_dollars += b.spent_dollars;
                    row.period = b.period;
                }
            }
        }
        let mut rows: Vec<TenantStats> = all.into_values().collect();
        for t in &mut rows {
            t.share = if total > 0 {
                t.tokens as f64 / total as f64
            } else {
                0.0
            };
        }
        rows.sort_by(|a, b| {
            b.backlog
                .cmp(&a.backlog)
                .then(b.tokens.cmp(&a.tokens))
                .then(a.tenant.cmp(&b.tenant))
        });
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::period_id;

    #[test]
    fn periods_are_utc_days_and_calendar_months() {
        // 2026-12-03T00:00:00Z; 2024-02-29T23:59:59Z and a second later.
        assert_eq!(period_id(Some("day"), 1_796_256_000_000), "20790");
        assert_eq!(period_id(None, 1_796_256_000_000), "20790");
        assert_eq!(period_id(Some("month"), 1_796_256_000_000), "202612");
        assert_eq!(period_id(Some("month"), 1_709_251_199_000), "202402");
        assert_eq!(period_id(Some("month"), 1_709_251_200_000), "202403");
    }
}
