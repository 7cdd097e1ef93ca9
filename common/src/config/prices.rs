//! `[prices."MODEL"]`: what a model's tokens cost, in dollars (or any one currency) per million
//! tokens. They price the response cache's estimated saving (`sluice_cache_cost_saved_dollars`),
//! each tenant's cost (`sluice_tenant_cost_dollars_total`) and budgets in dollars: workers publish
//! them to each queue they serve, where a move reserves a job's estimate at them, and report
//! each call's cost with its completion. `[prices."*"]` prices every model not named.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One model's price per million tokens, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// The name under which a price covers every model without its own.
pub const ANY_MODEL: &str = "*";

impl ModelPrice {
    /// The cost of `input` and `output` tokens.
    pub fn cost(&self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input_per_mtok + output as f64 * self.output_per_mtok) / 1e6
    }

    /// `model`'s price in `prices`, else the price of `*`, else none.
    pub fn of<'a>(prices: &'a BTreeMap<String, ModelPrice>, model: &str) -> Option<&'a ModelPrice> {
        prices.get(model).or_else(|| prices.get(ANY_MODEL))
    }

    /// Whether both prices are finite and not negative (checked when the config loads).
    pub fn is_valid(&self) -> bool {
        [self.input_per_mtok, self.output_per_mtok]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0 && *v <= 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_without_a_price_takes_the_star_price() {
        let p = |i, o| ModelPrice {
            input_per_mtok: i,
            output_per_mtok: o,
        };
        let mut prices = BTreeMap::new();
        prices.insert("a".to_string(), p(1.0, 2.0));
        assert_eq!(ModelPrice::of(&prices, "b"), None);
        prices.insert(ANY_MODEL.to_string(), p(3.0, 4.0));
        assert_eq!(ModelPrice::of(&prices, "a"), Some(&p(1.0, 2.0)));
        assert_eq!(ModelPrice::of(&prices, "b"), Some(&p(3.0, 4.0)));
        assert_eq!(p(1.0, 2.0).cost(1_000_000, 500_000), 2.0);
        assert!(!p(-1.0, 2.0).is_valid() && !p(f64::NAN, 2.0).is_valid());
    }
}
