//! Translation between OpenAI chat completions and Anthropic messages, for fallback chains that
//! cross providers (issue 21): a job's request is rewritten for the deployment that runs it, and
//! the answer is rewritten back, so the stored result has the shape the job asked for whichever
//! provider answered.
//!
//! Only the common subset crosses: a system prompt, text messages (user and assistant),
//! `max_tokens`, `temperature`, `stop`, and the answer's text, stop reason and usage. A request
//! with anything else (tools, images, `n` > 1, streaming, response formats, …) is refused with
//! the field named, never silently cut: a fallback must not answer a different question.

use serde_json::{Map, Value, json};

pub use sluice_common::config::ApiFormat;

/// Why a request or an answer could not be translated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("`{0}` is outside the subset Sluice translates between providers")]
    Unsupported(String),
    #[error("`{field}` is {problem}")]
    Invalid { field: String, problem: String },
}

/// Anthropic requires `max_tokens`; an OpenAI request may leave it out. This is what it gets.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn invalid(field: &str, problem: &str) -> TranslateError {
    TranslateError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

fn object(body: &Value) -> Result<&Map<String, Value>, TranslateError> {
    body.as_object().ok_or(TranslateError::NotAnObject)
}

/// Refuses every key of `obj` not in `allowed`, naming the first one (`prefix` for nested keys).
fn only(obj: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), TranslateError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(TranslateError::Unsupported(format!("{prefix}{k}"))),
        None => Ok(()),
    }
}

/// A message's text: a string, or an array of `{"type": "text", "text": …}` parts (both APIs
/// accept both forms), joined.
fn text_of(content: &Value, field: &str) -> Result<String, TranslateError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts {
                let part = part
                    .as_object()
                    .ok_or_else(|| invalid(field, "a part that is not an object"))?;
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {}
                    Some(other) => {
                        return Err(TranslateError::Unsupported(format!(
                            "{field} part of type {other}"
                        )));
                    }
                    None => return Err(invalid(field, "a part without a type")),
                }
                only(part, &["type", "text"], &format!("{field}."))?;
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(field, "a text part without text"))?;
                out.push_str(text);
            }
            Ok(out)
        }
        _ => Err(invalid(field, "neither text nor a list of text parts")),
    }
}

/// The request's `messages` as (field name, role, text), each message allowed only `keys`.
fn turns<'r>(
    req: &'r Map<String, Value>,
    keys: &[&str],
) -> Result<Vec<(String, &'r str, String)>, TranslateError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "missing or not a list"))?;
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let m = m
            .as_object()
            .ok_or_else(|| invalid(&field, "not an object"))?;
        only(m, keys, &format!("{field}."))?;
        let text = text_of(m.get("content").unwrap_or(&Value::Null), &field)?;
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&field, "without a role"))?;
        out.push((field, role, text));
    }
    Ok(out)
}

/// `stop`: a string or a list of strings, as a list.
fn stop_list(v: &Value, field: &str) -> Result<Vec<Value>, TranslateError> {
    match v {
        Value::String(_) => Ok(vec![v.clone()]),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(items.clone()),
        Value::Null => Ok(Vec::new()),
        _ => Err(invalid(field, "neither a string nor a list of strings")),
    }
}

/// An OpenAI chat-completions request as an Anthropic messages request for `model`.
pub fn openai_request_to_anthropic(body: &Value, model: &str) -> Result<Value, TranslateError> {
    let req = object(body)?;
    only(
        req,
        &[
            "model",
            "messages",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "stop",
            "n",
            "stream",
        ],
        "",
    )?;
    if req.get("n").is_some_and(|n| n.as_u64() != Some(1)) {
        return Err(TranslateError::Unsupported("n other than 1".into()));
    }
    if req.get("stream").is_some_and(|s| s != &Value::Bool(false)) {
        return Err(TranslateError::Unsupported("stream".into()));
    }
    let mut system: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (field, role, text) in turns(req, &["role", "content", "name"])? {
        match role {
            // Anthropic has one system prompt, beside the messages: every system (or developer)
            // message goes there, in order.
            "system" | "developer" => system.push(text),
            "user" | "assistant" => out.push(json!({"role": role, "content": text})),
            other => return Err(TranslateError::Unsupported(format!("{field}.role {other}"))),
        }
    }
    let max_tokens = match req.get("max_completion_tokens").or(req.get("max_tokens")) {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid("max_tokens", "not a whole number"))?,
    };
    let mut a = Map::new();
    a.insert("model".into(), json!(model));
    a.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        a.insert("system".into(), json!(system.join("\n\n")));
    }
    a.insert("messages".into(), Value::Array(out));
    if let Some(t) = req.get("temperature").filter(|t| !t.is_null()) {
        // OpenAI's range is 0–2, Anthropic's 0–1: a value over 1 cannot mean the same there.
        match t.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => {
                a.insert("temperature".into(), t.clone());
            }
            Some(_) => return Err(invalid("temperature", "over Anthropic's maximum of 1")),
            None => return Err(invalid("temperature", "not a number")),
        }
    }
    if let Some(stop) = req.get("stop") {
        let list = stop_list(stop, "stop")?;
        if !list.is_empty() {
            a.insert("stop_sequences".into(), Value::Array(list));
        }
    }
    Ok(Value::Object(a))
}

/// An Anthropic messages request as an OpenAI chat-completions request for `model`.
pub fn anthropic_request_to_openai(body: &Value, model: &str) -> Result<Value, TranslateError> {
    let req = object(body)?;
    only(
        req,
        &[
            "model",
            "messages",
            "max_tokens",
            "system",
            "temperature",
            "stop_sequences",
            "stream",
        ],
        "",
    )?;
    if req.get("stream").is_some_and(|s| s != &Value::Bool(false)) {
        return Err(TranslateError::Unsupported("stream".into()));
    }
    let mut out = Vec::new();
    if let Some(system) = req.get("system") {
        out.push(json!({"role": "system", "content": text_of(system, "system")?}));
    }
    for (field, role, text) in turns(req, &["role", "content"])? {
        match role {
            "user" | "assistant" => out.push(json!({"role": role, "content": text})),
            other => return Err(TranslateError::Unsupported(format!("{field}.role {other}"))),
        }
    }
    let mut o = Map::new();
    o.insert("model".into(), json!(model));
    o.insert("messages".into(), Value::Array(out));
    if let Some(n) = req.get("max_tokens") {
        let n = n
            .as_u64()
            .ok_or_else(|| invalid("max_tokens", "not a whole number"))?;
        o.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = req.get("temperature").filter(|t| !t.is_null()) {
        if t.as_f64().is_none() {
            return Err(invalid("temperature", "not a number"));
        }
        o.insert("temperature".into(), t.clone());
    }
    if let Some(stop) = req.get("stop_sequences") {
        let list = stop_list(stop, "stop_sequences")?;
        if !list.is_empty() {
            o.insert("stop".into(), Value::Array(list));
        }
    }
    Ok(Value::Object(o))
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`, and back.
fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        Some("end_turn") | Some("stop_sequence") => json!("stop"),
        Some("max_tokens") => json!("length"),
        Some("refusal") => json!("content_filter"),
        Some("tool_use") => json!("tool_calls"),
        _ => Value::Null,
    }
}

fn stop_reason(finish_reason: Option<&str>) -> Value {
    match finish_reason {
        Some("stop") => json!("end_turn"),
        Some("length") => json!("max_tokens"),
        Some("content_filter") => json!("refusal"),
        Some("tool_calls") => json!("tool_use"),
        _ => Value::Null,
    }
}

fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// An Anthropic answer as an OpenAI chat completion (`model` is the model that answered;
/// `created` is the Unix time in seconds, which Anthropic's answer lacks).
pub fn anthropic_answer_to_openai(body: &Value, created: u64) -> Result<Value, TranslateError> {
    let ans = object(body)?;
    let content = ans
        .get("content")
        .ok_or_else(|| invalid("content", "missing"))?;
    let text = text_of(content, "content")?;
    let usage = ans.get("usage").and_then(Value::as_object);
    let prompt = count(usage.and_then(|u| u.get("input_tokens")));
    let completion = count(usage.and_then(|u| u.get("output_tokens")));
    let id = ans.get("id").and_then(Value::as_str).unwrap_or("");
    Ok(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": ans.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason(ans.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }))
}

/// An OpenAI chat completion as an Anthropic answer (its first choice).
pub fn openai_answer_to_anthropic(body: &Value) -> Result<Value, TranslateError> {
    let ans = object(body)?;
    let choice = ans
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("choices", "missing or empty"))?;
    let message = choice
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("choices[0].message", "missing"))?;
    let text = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(c) => text_of(c, "choices[0].message.content")?,
    };
    let usage = ans.get("usage").and_then(Value::as_object);
    Ok(json!({
        "id": ans.get("id").and_then(Value::as_str).unwrap_or(""),
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "model": ans.get("model").cloned().unwrap_or(Value::Null),
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": Value::Null,
        "usage": {
            "input_tokens": count(usage.and_then(|u| u.get("prompt_tokens"))),
            "output_tokens": count(usage.and_then(|u| u.get("completion_tokens"))),
        },
    }))
}

/// A request in `from`'s format rewritten for `to` (unchanged but for the model when they match).
pub fn request(
    body: &Value,
    from: ApiFormat,
    to: ApiFormat,
    model: &str,
) -> Result<Value, TranslateError> {
    match (from, to) {
        (ApiFormat::Openai, ApiFormat::Anthropic) => openai_request_to_anthropic(body, model),
        (ApiFormat::Anthropic, ApiFormat::Openai) => anthropic_request_to_openai(body, model),
        _ => {
            let mut same = object(body)?.clone();
            same.insert("model".into(), json!(model));
            Ok(Value::Object(same))
        }
    }
}

/// An answer in `from`'s format rewritten into `to`'s (unchanged when they match).
pub fn answer(
    body: &Value,
    from: ApiFormat,
    to: ApiFormat,
    created: u64,
) -> Result<Value, TranslateError> {
    match (from, to) {
        (ApiFormat::Anthropic, ApiFormat::Openai) => anthropic_answer_to_openai(body, created),
        (ApiFormat::Openai, ApiFormat::Anthropic) => openai_answer_to_anthropic(body),
        _ => Ok(body.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_outside_the_subset_is_refused_by_name() {
        let tools = json!({"model": "m", "messages": [], "tools": []});
        assert_eq!(
            openai_request_to_anthropic(&tools, "c"),
            Err(TranslateError::Unsupported("tools".into()))
        );
        let image = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert_eq!(
            openai_request_to_anthropic(&image, "c"),
            Err(TranslateError::Unsupported(
                "messages[0] part of type image_url".into()
            ))
        );
        let hot = json!({"model": "m", "messages": [], "temperature": 1.5});
        assert!(matches!(
            openai_request_to_anthropic(&hot, "c"),
            Err(TranslateError::Invalid { .. })
        ));
        let n2 = json!({"model": "m", "messages": [], "n": 2});
        assert!(openai_request_to_anthropic(&n2, "c").is_err());
        let tool_msg = json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]});
        assert!(openai_request_to_anthropic(&tool_msg, "c").is_err());
        assert_eq!(
            openai_request_to_anthropic(&json!([1]), "c"),
            Err(TranslateError::NotAnObject)
        );
    }

    #[test]
    fn a_missing_max_tokens_gets_anthropics_required_value() {
        let req = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let a = openai_request_to_anthropic(&req, "claude").expect("translates");
        assert_eq!(a["max_tokens"], json!(DEFAULT_MAX_TOKENS));
        assert_eq!(a["model"], json!("claude"));
    }
}
