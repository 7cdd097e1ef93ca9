//! Classifying an upstream answer: success, rate limited, quota, auth, transient or invalid.
//!
//! The class decides the handling (`retry`): rate-limited jobs wait for the provider's reset
//! without spending attempts; quota and auth refusals cannot heal by retrying soon; transient
//! failures back off; invalid requests are dead-lettered at once. Two 429s differ by their body:
//! `rate_limit_exceeded` waits, `insufficient_quota` and its kin are quota.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::hints;

/// What kind of answer a call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Success,
    RateLimited,
    /// Out of money or over a spend or usage cap: waiting a little will not help.
    Quota,
    /// 401/403: the credentials are wrong or lack permission.
    Auth,
    Transient,
    Invalid,
    /// The request is longer than the model's context window (a 400 that says so): wrong here,
    /// possibly right on a larger model (`context_fallback`).
    ContextLength,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Success => "success",
            Class::RateLimited => "rate_limited",
            Class::Quota => "quota",
            Class::Auth => "auth",
            Class::Transient => "transient",
            Class::Invalid => "invalid",
            Class::ContextLength => "context_length",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub class: Class,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// How long the server asked us to wait, if it did.
    pub wait: Option<Duration>,
    /// A short description for logs and the job's last error: status, error code, message.
    pub detail: String,
}

/// Error codes (OpenAI `code`/`type`, Anthropic `error.details.error_code`) that mean quota.
fn is_quota_code(code: &str) -> bool {
    matches!(
        code,
        "insufficient_quota"
            | "credit_balance_exhausted"
            | "usage_limit_reached"
            | "usage_not_included"
            | "enforced_spend_limit_reached"
            | "billing_hard_limit_reached"
    ) || code.ends_with("_spend_limit_exceeded")
        || code.ends_with("_usage_limit_exceeded")
        || code.contains("PerDay")
}

/// A 400 (or 413) saying the prompt does not fit the model: OpenAI's and Azure's
/// `context_length_exceeded`, Anthropic's "prompt is too long", Gemini's "exceeds the maximum
/// number of tokens".
fn is_context_length(status: u16, codes: &[String], message: &str) -> bool {
    if !matches!(status, 400 | 413) {
        return false;
    }
    let m = message.to_ascii_lowercase();
    codes.iter().any(|c| c == "context_length_exceeded")
        || m.contains("prompt is too long")
        || m.contains("maximum context length")
        || m.contains("exceeds the maximum number of tokens")
}

/// The error codes and the message found in a JSON error body (OpenAI, Anthropic, Gemini shapes).
fn error_fields(body: &[u8]) -> (Vec<String>, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (Vec::new(), String::from_utf8_lossy(body).into_owned());
    };
    let err = v.get("error").unwrap_or(&v);
    let mut codes = Vec::new();
    let mut push = |x: Option<&serde_json::Value>| {
        if let Some(s) = x.and_then(|x| x.as_str()) {
            codes.push(s.to_string());
        }
    };
    push(err.get("code"));
    push(err.get("type"));
    push(err.get("status"));
    push(err.get("details").and_then(|d| d.get("error_code")));
    if let Some(details) = err.get("details").and_then(|d| d.as_array()) {
        for d in details {
            if let Some(violations) = d.get("violations").and_then(|v| v.as_array()) {
                for violation in violations {
                    push(violation.get("quotaId"));
                }
            }
        }
    }
    let message = err
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    (codes, message)
}

fn excerpt(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    one_line.trim().to_string()
}

/// Classifies an HTTP answer.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Outcome {
    if (200..300).contains(&status) {
        // A success's reset only matters when it used a dimension up (the limiter then holds
        // the fleet until it): read the hints only then.
        let wait = if hints::exhausted(headers) {
            hints::server_wait(headers, now)
        } else {
            None
        };
        return Outcome {
            class: Class::Success,
            status: Some(status),
            wait,
            detail: format!("HTTP {status}"),
        };
    }
    let wait = hints::server_wait(headers, now);
    let (codes, message) = error_fields(body);
    let quota = codes.iter().any(|c| is_quota_code(c));
    let mut class = match status {
        429 if quota => Class::Quota,
        429 => Class::RateLimited,
        401 | 403 => Class::Auth,
        408 | 409 | 425 | 500..=599 => Class::Transient,
        _ => Class::Invalid,
    };
    // The server's own word on retrying wins over the status.
    match (hints::should_retry(headers), class) {
        (Some(true), Class::Invalid | Class::Auth) => class = Class::Transient,
        (Some(false), Class::Transient | Class::RateLimited) => class = Class::Invalid,
        _ => {}
    }
    if class == Class::Invalid && is_context_length(status, &codes, &message) {
        class = Class::ContextLength;
    }
    let code = codes.first().map(String::as_str).unwrap_or("");
    let detail = excerpt(&format!("HTTP {status} {code}: {message}"), 300);
    Outcome {
        class,
        status: Some(status),
        wait,
        detail,
    }
}

/// Classifies a call that got no complete answer (timeout, refused or reset connection).
pub fn transport_failure(what: &str) -> Outcome {
    Outcome {
        class: Class::Transient,
        status: None,
        wait: None,
        detail: excerpt(what, 300),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn classify_json(status: u16, body: &str, headers: &[(&str, &str)]) -> Outcome {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        classify(status, &h, body.as_bytes(), SystemTime::now())
    }

    #[test]
    fn a_429_is_a_rate_limit_unless_the_body_says_quota() {
        let rl = classify_json(
            429,
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            &[("x-ratelimit-reset-requests", "2s")],
        );
        assert_eq!(rl.class, Class::RateLimited);
        assert_eq!(rl.wait, Some(Duration::from_secs(2)));
        for body in [
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
            r#"{"error":{"code":"organization_spend_limit_exceeded"}}"#,
            r#"{"error":{"code":"credit_balance_exhausted"}}"#,
            r#"{"error":{"code":"usage_limit_reached"}}"#,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"spend","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
            r#"{"error":{"status":"RESOURCE_EXHAUSTED","details":[{"violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#,
        ] {
            assert_eq!(classify_json(429, body, &[]).class, Class::Quota, "{body}");
        }
    }

    #[test]
    fn statuses_map_to_their_classes() {
        assert_eq!(classify_json(200, "{}", &[]).class, Class::Success);
        assert_eq!(classify_json(401, "{}", &[]).class, Class::Auth);
        assert_eq!(classify_json(403, "{}", &[]).class, Class::Auth);
        for s in [408, 409, 500, 502, 503, 504, 529] {
            assert_eq!(classify_json(s, "{}", &[]).class, Class::Transient, "{s}");
        }
        for s in [400, 404, 413, 422] {
            assert_eq!(classify_json(s, "{}", &[]).class, Class::Invalid, "{s}");
        }
    }

    #[test]
    fn x_should_retry_overrides_the_class() {
        assert_eq!(
            classify_json(400, "{}", &[("x-should-retry", "true")]).class,
            Class::Transient
        );
        assert_eq!(
            classify_json(503, "{}", &[("x-should-retry", "false")]).class,
            Class::Invalid
        );
    }

    #[test]
    fn a_prompt_too_long_for_the_model_is_its_own_class_in_every_providers_words() {
        for body in [
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
            r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
        ] {
            assert_eq!(
                classify_json(400, body, &[]).class,
                Class::ContextLength,
                "{body}"
            );
        }
        let other = r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","code":"invalid_value"}}"#;
        assert_eq!(classify_json(400, other, &[]).class, Class::Invalid);
        // A 500 that mentions context is not this class.
        let odd = r#"{"error":{"message":"maximum context length exceeded in the backend"}}"#;
        assert_eq!(classify_json(500, odd, &[]).class, Class::Transient);
    }

    #[test]
    fn the_detail_names_status_code_and_message() {
        let o = classify_json(
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#,
            &[],
        );
        assert_eq!(o.class, Class::ContextLength);
        assert!(
            o.detail
                .starts_with("HTTP 400 context_length_exceeded: This model"),
            "{}",
            o.detail
        );
    }
}
