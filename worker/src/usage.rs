//! Tokens an answer says it used: OpenAI's and Anthropic's `usage`, read without building the
//! rest of the answer (token metrics, the limiter's correction, the stored `usage` field).

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
    /// What it cost at the worker's `[prices]` (set by the processor; None: no usage or no
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
}

#[cfg(test)]
mod tests {
    use super::Usage;

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
}
