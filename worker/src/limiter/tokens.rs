//! A job's token estimate, before its call: what the fleet's token buckets reserve (corrected
//! from the answer's `usage` afterwards), and the model it names (for per-model limits).

use sluice_common::JobSpec;

/// The job's token estimate: its `tokens`, else prompt characters ÷ 4 plus the answer's cap.
pub fn estimate_tokens(spec: &JobSpec) -> u64 {
    if let Some(t) = spec.tokens {
        return u64::from(t);
    }
    let Some(body) = &spec.request.body else {
        return 1;
    };
    fn chars(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => s.chars().count(),
            serde_json::Value::Array(a) => a.iter().map(chars).sum(),
            serde_json::Value::Object(o) => o.values().map(chars).sum(),
            _ => 0,
        }
    }
    let prompt: usize = ["messages", "input", "prompt", "system"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(chars)
        .sum();
    let cap = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(|v| v.as_u64()))
        .unwrap_or(0);
    (prompt as u64).div_ceil(4).max(1) + cap
}

pub(super) fn model_of(spec: &JobSpec) -> String {
    spec.request
        .body
        .as_ref()
        .and_then(|b| b.get("model"))
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(body: serde_json::Value, tokens: Option<u32>) -> JobSpec {
        let mut job = sluice_common::NewJob::post("q", "u", "/v1/chat/completions", body);
        job.spec.tokens = tokens;
        job.spec
    }

    #[test]
    fn tokens_are_estimated_from_the_prompt_and_the_answer_cap() {
        let s = spec(
            json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(400)}], "max_tokens": 50}),
            None,
        );
        // 400 content chars + "user" (4) = 404 → 101 tokens, plus 50.
        assert_eq!(estimate_tokens(&s), 151);
        let s = spec(
            json!({"model": "m", "input": "abcd", "max_completion_tokens": 7}),
            None,
        );
        assert_eq!(estimate_tokens(&s), 8);
        let s = spec(json!({"model": "m"}), Some(1234));
        assert_eq!(estimate_tokens(&s), 1234);
    }
}
