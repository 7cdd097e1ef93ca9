//! Validation of jobs and names, with errors that name the offending field.
//!
//! The rules keep a job inside its upstream: the path cannot be an absolute URL, climb with `..`
//! (plain or percent-encoded), or smuggle a header through CR/LF; a job cannot set auth or
//! hop-by-hop headers. The worker applies the same checks again to whatever it reads from Redis,
//! since a foreign producer may have skipped them.

use std::time::Duration;

use crate::job::{JobLimits, JobSpec, NewJob, Schedule};

/// Why a job was refused. Every variant names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidJob {
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("job spec is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

fn bad(field: &'static str, reason: impl Into<String>) -> InvalidJob {
    InvalidJob::Field {
        field,
        reason: reason.into(),
    }
}

/// Headers a job may never set: credentials come from the worker's config, framing from the client.
const FORBIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
];

const MAX_ATTEMPTS: u32 = 100;
/// Most upstreams a job's own fallback chain may name.
const MAX_CHAIN: usize = 16;
const MAX_TIMEOUT_MS: u64 = 3_600_000;
const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_DEDUPE_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);

/// Checks a whole job (everything but its encoded size, which `NewJob::prepare` checks).
pub fn job(job: &NewJob, limits: &JobLimits) -> Result<(), InvalidJob> {
    queue_name(&job.queue)?;
    if let Some(id) = &job.id {
        job_id(id)?;
    }
    if let Some(key) = &job.dedupe_key {
        if key.is_empty() || key.len() > 256 {
            return Err(bad("dedupe_key", "must be 1 to 256 bytes"));
        }
        if key.chars().any(char::is_control) {
            return Err(bad("dedupe_key", "contains a control character"));
        }
    }
    if let Some(window) = job.dedupe_window
        && (window.is_zero() || window > MAX_DEDUPE_WINDOW)
    {
        return Err(bad("dedupe_window", "must be between 1 ms and 90 days"));
    }
    let horizon = limits.max_delay.min(MAX_DELAY);
    let ahead = match job.schedule {
        Schedule::Now => Duration::ZERO,
        Schedule::After(d) => d,
        Schedule::At(ms) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Duration::from_millis(ms).saturating_sub(now)
        }
    };
    if ahead > horizon {
        return Err(bad(
            "delay",
            format!(
                "{} s ahead, further than the horizon of {} s (queues.max_delay_secs)",
                ahead.as_secs(),
                horizon.as_secs()
            ),
        ));
    }
    spec(&job.spec)
}

/// Checks a job spec: the part a worker runs. Also used by the worker on what it reads back.
pub fn spec(spec: &JobSpec) -> Result<(), InvalidJob> {
    upstream_name(&spec.upstream)?;
    if let Some(t) = &spec.tenant {
        tenant_name(t)?;
    }
    if let Some(chain) = &spec.fallbacks {
        if chain.len() > MAX_CHAIN {
            return Err(bad(
                "fallbacks",
                format!("{} upstreams, over the limit of {MAX_CHAIN}", chain.len()),
            ));
        }
        for (i, name) in chain.iter().enumerate() {
            if upstream_name(name).is_err() {
                return Err(bad(
                    "fallbacks",
                    format!("{name:?} is not an upstream name"),
                ));
            }
            if name == &spec.upstream || chain[..i].contains(name) {
                return Err(bad("fallbacks", format!("{name:?} is in the chain twice")));
            }
        }
    }
    path(&spec.request.path)?;
    let method = spec.request.method;
    match (&spec.request.body, method.has_body()) {
        (None | Some(serde_json::Value::Null), true) => {
            return Err(bad(
                "request.body",
                format!("empty: a {} needs a JSON body", method.as_str()),
            ));
        }
        (Some(serde_json::Value::Object(map)), true) if map.is_empty() => {
            return Err(bad("request.body", "empty JSON object"));
        }
        (Some(_), false) => {
            return Err(bad(
                "request.body",
                format!("a {} carries no body", method.as_str()),
            ));
        }
        _ => {}
    }
    if let Some(serde_json::Value::Object(map)) = &spec.request.body
        && map.get("stream") == Some(&serde_json::Value::Bool(true))
    {
        return Err(bad(
            "request.body.stream",
            "streaming responses are not supported; send \"stream\": false",
        ));
    }
    for (name, value) in &spec.request.headers {
        header(name, value)?;
    }
    if let Some(w) = &spec.webhook {
        webhook_url(&w.url)?;
        if w.key.is_empty() {
            return Err(bad(
                "webhook.key",
                "missing: the API key whose allowlist applies",
            ));
        }
    }
    let delivery = spec.upstream == crate::job::WEBHOOK_UPSTREAM;
    if delivery != spec.deliver.is_some() {
        return Err(bad(
            "upstream",
            format!(
                "{:?} is reserved for webhook deliveries, which the library makes",
                crate::job::WEBHOOK_UPSTREAM
            ),
        ));
    }
    if let Some(n) = spec.max_attempts
        && !(1..=MAX_ATTEMPTS).contains(&n)
    {
        return Err(bad(
            "max_attempts",
            format!("must be 1 to {MAX_ATTEMPTS}, got {n}"),
        ));
    }
    if let Some(t) = spec.timeout_ms
        && !(1..=MAX_TIMEOUT_MS).contains(&t)
    {
        return Err(bad(
            "timeout_ms",
            format!("must be 1 to {MAX_TIMEOUT_MS}, got {t}"),
        ));
    }
    Ok(())
}

/// A webhook URL: http(s) with a host, at most 2,048 bytes (the host allowlist is the API key's).
pub fn webhook_url(url: &str) -> Result<(), InvalidJob> {
    match crate::webhook::allowed(url, &[]) {
        Err(crate::webhook::WebhookError::HostNotAllowed(_)) => Ok(()),
        _ => Err(bad(
            "webhook.url",
            format!("{url:?} is not an http:// or https:// URL with a host (at most 2048 bytes)"),
        )),
    }
}

/// Queue names become part of Redis keys inside a `{…}` hash tag.
/// A tenant: 1 to 64 of `[A-Za-z0-9_.:@-]` (it becomes part of Redis keys in the queue's slot).
pub fn tenant_name(name: &str) -> Result<(), InvalidJob> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "tenant",
            format!("{name:?} is not 1 to 64 of [A-Za-z0-9_.:@-]"),
        ))
    }
}

pub fn queue_name(name: &str) -> Result<(), InvalidJob> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "queue",
            format!("{name:?} is not 1 to 64 of [A-Za-z0-9_.-]"),
        ))
    }
}

/// Upstream names refer to the worker's config; they are names, never URLs.
pub fn upstream_name(name: &str) -> Result<(), InvalidJob> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "upstream",
            format!("{name:?} is not an upstream name (1 to 64 of [A-Za-z0-9_-]; not a URL)"),
        ))
    }
}

/// Job ids end up in key names and log lines.
pub fn job_id(id: &str) -> Result<(), InvalidJob> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "id",
            format!("{id:?} is not 1 to 128 of [A-Za-z0-9_.:-]"),
        ))
    }
}

/// A request path must stay below the upstream's base URL.
pub fn path(path: &str) -> Result<(), InvalidJob> {
    const FIELD: &str = "request.path";
    if path.len() > 2048 {
        return Err(bad(FIELD, "longer than 2048 bytes"));
    }
    if path.chars().any(char::is_whitespace) {
        return Err(bad(FIELD, "contains a raw space; percent-encode it"));
    }
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(bad(
            FIELD,
            format!("{path:?} must start with a single '/' (a path, not a URL)"),
        ));
    }
    // Decode up to three times so that %252e%252e is caught as well as %2e%2e.
    let mut decoded = path.to_string();
    for _ in 0..3 {
        check_path_text(&decoded)?;
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    check_path_text(&decoded)
}

fn check_path_text(p: &str) -> Result<(), InvalidJob> {
    const FIELD: &str = "request.path";
    if p.chars().any(char::is_control) {
        return Err(bad(FIELD, "contains a control character (CR, LF, NUL, …)"));
    }
    if p.contains('\\') {
        return Err(bad(FIELD, "contains a backslash"));
    }
    if p.contains("://") {
        return Err(bad(FIELD, "contains a URL scheme"));
    }
    let before_query = p.split(['?', '#']).next().unwrap_or("");
    if before_query.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(bad(FIELD, "contains a '.' or '..' segment"));
    }
    Ok(())
}

/// Decodes `%XX` escapes; malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A header a job may set: a token name, a value without line breaks, nothing secret.
pub fn header(name: &str, value: &str) -> Result<(), InvalidJob> {
    const FIELD: &str = "request.headers";
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > 64 || !name.bytes().all(token) {
        return Err(bad(FIELD, format!("{name:?} is not a header name")));
    }
    if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(bad(
            FIELD,
            format!("{name:?} may not be set by a job (auth and framing come from the worker)"),
        ));
    }
    if value.len() > 4096 || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(bad(
            FIELD,
            format!("value of {name:?} contains a line break or NUL, or is over 4096 bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_upstream_are_refused() {
        for p in [
            "https://evil.example/v1",
            "//evil.example/v1",
            "v1/chat",
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2E/admin",
            "/v1/%252e%252e/admin",
            "/v1/chat\r\nX-Evil: 1",
            "/v1/chat%0d%0aX-Evil:%201",
            "/v1\\..\\admin",
            "/v1/x?u=http://evil",
        ] {
            assert!(path(p).is_err(), "{p} should be refused");
        }
        for p in [
            "/v1/chat/completions",
            "/v1/models/gpt-4o?x=1",
            "/a%20b",
            "/v1/a..b",
        ] {
            assert!(path(p).is_ok(), "{p} should pass: {:?}", path(p));
        }
    }

    #[test]
    fn auth_and_injected_headers_are_refused() {
        assert!(header("Authorization", "Bearer x").is_err());
        assert!(header("X-Api-Key", "x").is_err());
        assert!(header("X-Ok", "a\r\nX-Evil: 1").is_err());
        assert!(header("Bad Name", "x").is_err());
        assert!(header("OpenAI-Beta", "assistants=v2").is_ok());
    }

    #[test]
    fn names_are_checked() {
        assert!(queue_name("emails.v2").is_ok());
        assert!(queue_name("a{b}").is_err());
        assert!(queue_name("").is_err());
        assert!(upstream_name("openai").is_ok());
        assert!(upstream_name("http://x").is_err());
        assert!(job_id("018f-aa:1").is_ok());
        assert!(job_id("a b").is_err());
    }
}
