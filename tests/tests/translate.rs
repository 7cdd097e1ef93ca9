//! OpenAI chat completions ↔ Anthropic messages (sluice_worker::translate, issue 21), on the
//! providers' own API-reference examples (tests/fixtures/providers, sources in its README):
//! - each reference request and answer translates, with the system prompt, text, stop reason
//!   and usage where the other provider keeps them;
//! - every field of the subset survives a round trip, request and answer, in both directions;
//!   what cannot cross (Anthropic's `stop_sequence` value) is asserted lost, not assumed kept.

use serde_json::{Value, json};
use sluice_worker::translate::{self, ApiFormat, DEFAULT_MAX_TOKENS};

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/providers")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const NOW: u64 = 1_764_662_400;

#[test]
fn openais_reference_request_becomes_an_anthropic_request() {
    let openai = fixture("openai_chat_request.json");
    let a = translate::request(
        &openai,
        ApiFormat::Openai,
        ApiFormat::Anthropic,
        "claude-sonnet-4-20250514",
    )
    .expect("the reference request translates");
    assert_eq!(
        a,
        json!({
            "model": "claude-sonnet-4-20250514",
            // Anthropic requires max_tokens; the OpenAI request left it out.
            "max_tokens": DEFAULT_MAX_TOKENS,
            // The developer message is Anthropic's system prompt.
            "system": "You are a helpful assistant.",
            "messages": [{"role": "user", "content": "Hello!"}],
        })
    );
}

#[test]
fn anthropics_reference_answer_becomes_an_openai_chat_completion() {
    let answer = fixture("anthropic_messages_response.json");
    let o = translate::answer(&answer, ApiFormat::Anthropic, ApiFormat::Openai, NOW)
        .expect("the reference answer translates");
    assert_eq!(
        o,
        json!({
            "id": "msg_013Zva2CNHkjNP9q4kN2FiKL",
            "object": "chat.completion",
            "created": NOW,
            "model": "claude-sonnet-4-20250514",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! My name is Claude."},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
        })
    );
    // Cut by max_tokens, text in two blocks: joined, and "length" as OpenAI says it.
    let cut = translate::answer(
        &fixture("anthropic_max_tokens_response.json"),
        ApiFormat::Anthropic,
        ApiFormat::Openai,
        NOW,
    )
    .expect("translates");
    assert_eq!(
        cut["choices"][0]["message"]["content"],
        json!("Rome is the capital of Italy, and")
    );
    assert_eq!(cut["choices"][0]["finish_reason"], json!("length"));
    assert_eq!(cut["usage"]["total_tokens"], json!(39));
}

#[test]
fn anthropics_reference_request_and_openais_reference_answer_cross_the_other_way() {
    let a = fixture("anthropic_messages_request.json");
    let o = translate::request(&a, ApiFormat::Anthropic, ApiFormat::Openai, "gpt-4o")
        .expect("translates");
    assert_eq!(
        o,
        json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Hello, world"}],
            "max_tokens": 1024,
        })
    );
    let answer = fixture("openai_chat_response.json");
    let back = translate::answer(&answer, ApiFormat::Openai, ApiFormat::Anthropic, NOW)
        .expect("translates");
    assert_eq!(
        back,
        json!({
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
            "model": "gpt-4.1-2025-04-14",
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 19, "output_tokens": 10},
        })
    );
}

#[test]
fn every_field_of_the_subset_survives_a_round_trip() {
    // OpenAI → Anthropic → OpenAI: the same request (text parts joined into one string, which
    // both APIs read the same).
    let openai = fixture("openai_subset_request.json");
    let there =
        translate::request(&openai, ApiFormat::Openai, ApiFormat::Anthropic, "claude").unwrap();
    assert_eq!(there, {
        let mut a = fixture("anthropic_subset_request.json");
        a["model"] = json!("claude");
        a
    });
    let back = translate::request(&there, ApiFormat::Anthropic, ApiFormat::Openai, "gpt-4o")
        .expect("translates back");
    let mut expected = openai.clone();
    expected["messages"][3]["content"] = json!("And of Italy?");
    assert_eq!(back, expected);

    // Anthropic → OpenAI → Anthropic: the same request.
    let a = fixture("anthropic_subset_request.json");
    let o = translate::request(&a, ApiFormat::Anthropic, ApiFormat::Openai, "gpt-4o").unwrap();
    let again = translate::request(
        &o,
        ApiFormat::Openai,
        ApiFormat::Anthropic,
        "claude-sonnet-4-20250514",
    )
    .unwrap();
    assert_eq!(again, a);

    // Answers, both ways: text, stop reason, usage and id come back.
    for name in [
        "anthropic_messages_response.json",
        "anthropic_max_tokens_response.json",
    ] {
        let a = fixture(name);
        let o = translate::answer(&a, ApiFormat::Anthropic, ApiFormat::Openai, NOW).unwrap();
        let again = translate::answer(&o, ApiFormat::Openai, ApiFormat::Anthropic, NOW).unwrap();
        let mut joined = a.clone();
        let text: String = a["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["text"].as_str().unwrap())
            .collect();
        joined["content"] = json!([{"type": "text", "text": text}]);
        assert_eq!(again, joined, "{name}");
    }
    let o = fixture("openai_chat_response.json");
    let a = translate::answer(&o, ApiFormat::Openai, ApiFormat::Anthropic, NOW).unwrap();
    let again = translate::answer(&a, ApiFormat::Anthropic, ApiFormat::Openai, 1741569952).unwrap();
    for field in ["id", "object", "created", "model"] {
        assert_eq!(again[field], o[field], "{field}");
    }
    assert_eq!(
        again["choices"][0]["message"]["content"],
        o["choices"][0]["message"]["content"]
    );
    assert_eq!(
        again["choices"][0]["finish_reason"],
        o["choices"][0]["finish_reason"]
    );
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(again["usage"][field], o["usage"][field], "{field}");
    }

    // What cannot cross: OpenAI has no field for the stop sequence that matched.
    let mut by_sequence = fixture("anthropic_messages_response.json");
    by_sequence["stop_reason"] = json!("stop_sequence");
    by_sequence["stop_sequence"] = json!("END");
    let o = translate::answer(&by_sequence, ApiFormat::Anthropic, ApiFormat::Openai, NOW).unwrap();
    assert_eq!(o["choices"][0]["finish_reason"], json!("stop"));
    let a = translate::answer(&o, ApiFormat::Openai, ApiFormat::Anthropic, NOW).unwrap();
    assert_eq!(
        (a["stop_reason"].clone(), a["stop_sequence"].clone()),
        (json!("end_turn"), Value::Null)
    );
}
