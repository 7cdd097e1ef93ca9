//! Tokens an answer says it used: OpenAI's and Anthropic's `usage`, read without building the
//! rest of the answer (token metrics, the limiter's correction, the stored `usage` field), and
//! what they cost at the worker's `[prices]` (the stored `cost`, which settles a budget).

use std::collections::BTreeMap;

use sluice_common::config::ModelPrice;

/// Tokens an answer says it used (OpenAI's `usage.prompt_tokens`/`completion_tokens`/
/// `total_tokens`, or Anthropic's `input_tokens`/`output_tokens`).
#[derive(Debug, Default, PartialEq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    /// The total, when the answer has a `usage` object at all.
    pub total: Option<u64>,
    /// The `usage` object as JSON text, stored with the result ("" when absent).
    pub text: String,
    /// What it cost at the worker's `[prices]` (set by [`Usage::price`]; None: no usage or no
    /// price), stored with the result as `cost`: it corrects a budget in dollars.
    pub cost: Option<f64>,
}

/// Only the `usage` of an answer, kept as its text; the rest is skipped without being built.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize, Default)]
struct Counts {
    prompt_tokens: Option<u64>,
    input_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    output_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

impl Usage {
    pub fn of(body: &[u8]) -> Usage {
        let Ok(Answer { usage: Some(raw) }) = serde_json::from_slice::<Answer>(body) else {
            return Usage::default();
        };
        let Ok(c) = serde_json::from_str::<Counts>(raw.get()) else {
            return Usage::default();
        };
        let prompt = c.prompt_tokens.or(c.input_tokens).unwrap_or(0);
        let completion = c.completion_tokens.or(c.output_tokens).unwrap_or(0);
        let total = c.total_tokens.or_else(|| {
            let sum = prompt + completion;
            (sum > 0).then_some(sum)
        });
        Usage {
            prompt,
            completion,
            total,
            text: raw.get().to_string(),
            cost: None,
        }
    }

    /// Sets `cost` from `model`'s price in `prices` (or the `*` price); None when the answer
    /// had no `usage` or the model no price.
    pub fn price(&mut self, prices: &BTreeMap<String, ModelPrice>, model: &str) {
        self.cost = self
            .total
            .and(ModelPrice::of(prices, model))
            .map(|p| p.cost(self.prompt, self.completion));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_openai_and_anthropic_answers() {
        let openai = br#"{"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        assert_eq!(
            Usage::of(openai),
            Usage {
                prompt: 12,
                completion: 30,
                total: Some(42),
                text: r#"{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}"#.into(),
                cost: None,
            }
        );
        let anthropic = br#"{"usage":{"input_tokens":5,"output_tokens":7}}"#;
        assert_eq!(Usage::of(anthropic).total, Some(12));
        assert_eq!(Usage::of(b"not json"), Usage::default());
        assert_eq!(Usage::of(br#"{"choices":[]}"#).total, None);
    }

    #[test]
    fn a_call_costs_its_usage_at_its_models_price_and_nothing_without_usage() {
        let price = ModelPrice {
            input_per_mtok: 1_000.0,
            output_per_mtok: 3_000.0,
        };
        let prices = BTreeMap::from([("m".to_string(), price)]);
        let mut u = Usage::of(br#"{"usage":{"prompt_tokens":31,"completion_tokens":16}}"#);
        u.price(&prices, "m");
        assert_eq!(u.cost, Some(0.079));
        u.price(&prices, "other");
        assert_eq!(u.cost, None, "no price for the model, no * price");
        let mut none = Usage::of(br#"{"choices":[]}"#);
        none.price(&prices, "m");
        assert_eq!(
            none.cost, None,
            "an answer without usage costs nothing known"
        );
    }
}
