//! `[prices."MODEL"]`: what a model's tokens cost, for the estimated cost the response cache
//! saved (`sluice_cache_cost_saved_dollars`). Dollars (or any one currency) per million tokens.

use serde::Deserialize;

/// One model's price per million tokens, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl ModelPrice {
    /// The cost of `input` and `output` tokens.
    pub fn cost(&self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input_per_mtok + output as f64 * self.output_per_mtok) / 1e6
    }
}
