//! Reading the server's hints: how long a provider asks us to wait, and whether it says retrying
//! can help. Pure functions over response headers, so every format is unit-tested (and fuzzed:
//! tests/fuzz/). The worker's `outcome` reads them; they live here so the fuzz targets build without
//! the worker's HTTP stack.
//!
//! Order (first found wins): `retry-after-ms` / `x-ms-retry-after-ms`, then `retry-after`
//! (seconds or an HTTP date), then OpenAI's `x-ratelimit-reset-{requests,tokens}` durations
//! (`1s`, `6m0s`, `20ms`, `1m30.5s`, also the `_usage_based` variants), then Anthropic's
//! `anthropic-ratelimit-*-reset` RFC 3339 times. Azure's `-1` and `0` mean "unknown".

use std::time::{Duration, SystemTime};

use http::HeaderMap;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Seconds as a Duration; `None` for what no Duration holds (NaN, infinite, past u64 seconds —
/// `retry-after: 1e300` must not panic: found by fuzzing, tests/fuzz/regressions/limit_headers).
fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// A positive number of milliseconds; `-1`, `0` and garbage mean unknown.
fn positive_ms(v: &str) -> Option<Duration> {
    let ms: f64 = v.parse().ok()?;
    (ms > 0.0).then(|| seconds(ms / 1000.0))?
}

/// `retry-after`: delay-seconds (integer, or a decimal some servers send) or an HTTP date.
pub fn retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = v.parse::<f64>() {
        return (secs > 0.0).then(|| seconds(secs))?;
    }
    let at = httpdate::parse_http_date(v).ok()?;
    at.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// A Go-style duration as OpenAI sends it: `1s`, `6m0s`, `20ms`, `1m30.5s`, `1.92s`, `1h2m3s`,
/// `500us`/`500µs`, `10ns`. The `m` of `ms` is never read as minutes.
pub fn go_duration(v: &str) -> Option<Duration> {
    let mut rest = v.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    (total > 0.0).then(|| seconds(total))?
}

/// How long the server asks us to wait, if it says.
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(d) = header(headers, name).and_then(positive_ms) {
            return Some(d);
        }
    }
    if let Some(d) = header(headers, "retry-after").and_then(|v| retry_after(v, now)) {
        return Some(d);
    }
    if let Some(d) = openai_reset(headers) {
        return Some(d);
    }
    anthropic_reset(headers, now)
}

/// OpenAI's resets: the exhausted dimension's (remaining = 0) if one is, else the longest.
fn openai_reset(headers: &HeaderMap) -> Option<Duration> {
    let mut exhausted: Option<Duration> = None;
    let mut longest: Option<Duration> = None;
    for dim in [
        "requests",
        "tokens",
        "tokens_usage_based",
        "requests_usage_based",
    ] {
        let Some(reset) =
            header(headers, &format!("x-ratelimit-reset-{dim}")).and_then(go_duration)
        else {
            continue;
        };
        longest = longest.max(Some(reset));
        let remaining = header(headers, &format!("x-ratelimit-remaining-{dim}"))
            .and_then(|v| v.parse::<i64>().ok());
        if remaining == Some(0) {
            exhausted = exhausted.max(Some(reset));
        }
    }
    exhausted.or(longest)
}

/// Anthropic's resets are absolute RFC 3339 times: the exhausted family's, else the latest.
fn anthropic_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut exhausted: Option<Duration> = None;
    let mut latest: Option<Duration> = None;
    for family in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let Some(at) = header(headers, &format!("anthropic-ratelimit-{family}-reset"))
            .and_then(|v| humantime::parse_rfc3339_weak(v).ok())
        else {
            continue;
        };
        let Ok(wait) = at.duration_since(now) else {
            continue;
        };
        latest = latest.max(Some(wait));
        let remaining = header(headers, &format!("anthropic-ratelimit-{family}-remaining"))
            .and_then(|v| v.parse::<i64>().ok());
        if remaining == Some(0) {
            exhausted = exhausted.max(Some(wait));
        }
    }
    exhausted.or(latest).filter(|d| !d.is_zero())
}

/// `x-should-retry: true|false`, which overrides the class.
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match header(headers, "x-should-retry")?
        .to_ascii_lowercase()
        .as_str()
    {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The provider's own limits, as its answers state them: requests and tokens per minute
/// (OpenAI's `x-ratelimit-limit-requests|tokens`, Anthropic's
/// `anthropic-ratelimit-requests|tokens-limit`). The limiter paces the fleet by them when the
/// config sets none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatedLimits {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
}

/// The limits an answer states (positive whole numbers only; anything else is unknown).
pub fn stated_limits(headers: &HeaderMap) -> StatedLimits {
    let first = |names: [&str; 2]| {
        names
            .iter()
            .filter_map(|n| header(headers, n)?.parse::<u64>().ok())
            .find(|n| *n > 0)
    };
    StatedLimits {
        requests: first([
            "x-ratelimit-limit-requests",
            "anthropic-ratelimit-requests-limit",
        ]),
        tokens: first([
            "x-ratelimit-limit-tokens",
            "anthropic-ratelimit-tokens-limit",
        ]),
    }
}

/// Which dimensions an answer says are used up: (requests, tokens).
pub fn exhausted_dimensions(headers: &HeaderMap) -> (bool, bool) {
    let zero = |names: [&str; 2]| {
        names
            .iter()
            .any(|n| header(headers, n).is_some_and(|v| v == "0"))
    };
    (
        zero([
            "x-ratelimit-remaining-requests",
            "anthropic-ratelimit-requests-remaining",
        ]),
        zero([
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-tokens-remaining",
        ]),
    )
}

/// Whether a successful answer says a rate-limit dimension is used up (remaining = 0).
pub fn exhausted(headers: &HeaderMap) -> bool {
    headers.iter().any(|(name, value)| {
        let n = name.as_str();
        (n.starts_with("x-ratelimit-remaining-")
            || (n.starts_with("anthropic-ratelimit-") && n.ends_with("-remaining")))
            && value.to_str().is_ok_and(|v| v.trim() == "0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn waits_no_duration_can_hold_are_unknown_not_a_panic() {
        // Found by fuzzing (tests/fuzz/regressions/limit_headers): Duration::from_secs_f64 panicked.
        let now = SystemTime::now();
        let huge = "9".repeat(80);
        assert_eq!(retry_after(&huge, now), None);
        assert_eq!(retry_after("1e300", now), None);
        assert_eq!(retry_after("inf", now), None);
        assert_eq!(retry_after("NaN", now), None);
        assert_eq!(go_duration(&format!("{huge}h")), None);
        assert_eq!(go_duration("1e300s"), None);
        let h = headers(&[("retry-after-ms", "1e300"), ("retry-after", &huge)]);
        assert_eq!(server_wait(&h, now), None);
        let h = headers(&[("retry-after-ms", "1e300"), ("retry-after", "2")]);
        assert_eq!(server_wait(&h, now), Some(Duration::from_secs(2)));
    }

    #[test]
    fn go_durations_parse_every_unit_and_ms_is_not_minutes() {
        assert_eq!(go_duration("1s"), ms(1000));
        assert_eq!(go_duration("6m0s"), ms(360_000));
        assert_eq!(go_duration("20ms"), ms(20));
        assert_eq!(go_duration("1m30.5s"), ms(90_500));
        assert_eq!(go_duration("1.92s"), ms(1920));
        assert_eq!(go_duration("2m59.56s"), ms(179_560));
        assert_eq!(go_duration("1h2m3.5s"), ms(3_723_500));
        assert_eq!(go_duration("500us"), Some(Duration::from_micros(500)));
        assert_eq!(go_duration("500µs"), Some(Duration::from_micros(500)));
        assert_eq!(go_duration("0s"), None);
        assert_eq!(go_duration("soon"), None);
        assert_eq!(go_duration("5"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("7", now), ms(7000));
        assert_eq!(retry_after("0.5", now), ms(500));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), ms(30_000));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&past, now), None);
        assert_eq!(retry_after("0", now), None);
    }

    #[test]
    fn retry_after_ms_is_read_first() {
        let now = SystemTime::now();
        let h = headers(&[
            ("retry-after-ms", "1500"),
            ("retry-after", "2"),
            ("x-ratelimit-reset-requests", "6m0s"),
        ]);
        assert_eq!(server_wait(&h, now), ms(1500));
        let h = headers(&[("retry-after", "2"), ("x-ratelimit-reset-requests", "6m0s")]);
        assert_eq!(server_wait(&h, now), ms(2000));
    }

    #[test]
    fn azure_minus_one_and_zero_mean_unknown() {
        let now = SystemTime::now();
        let h = headers(&[("x-ms-retry-after-ms", "-1"), ("retry-after", "3")]);
        assert_eq!(server_wait(&h, now), ms(3000));
        let h = headers(&[("retry-after-ms", "0"), ("x-ms-retry-after-ms", "250")]);
        assert_eq!(server_wait(&h, now), ms(250));
        let h = headers(&[("x-ratelimit-reset-tokens", "0")]);
        assert_eq!(server_wait(&h, now), None);
    }

    #[test]
    fn openai_resets_prefer_the_exhausted_dimension() {
        let now = SystemTime::now();
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "5000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(server_wait(&h, now), ms(1000));
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens_usage_based", "12ms"),
            ("x-ratelimit-remaining-tokens_usage_based", "0"),
        ]);
        assert_eq!(server_wait(&h, now), ms(12));
    }

    #[test]
    fn anthropic_resets_are_absolute_times() {
        let now = humantime::parse_rfc3339("2025-02-24T22:25:28Z").expect("time");
        let h = headers(&[
            ("anthropic-ratelimit-requests-reset", "2025-02-24T22:25:30Z"),
            ("anthropic-ratelimit-requests-remaining", "999"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-02-24T22:25:47Z",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
        ]);
        assert_eq!(server_wait(&h, now), ms(19_000));
    }

    #[test]
    fn should_retry_and_exhaustion_are_read() {
        assert_eq!(
            should_retry(&headers(&[("x-should-retry", "false")])),
            Some(false)
        );
        assert_eq!(
            should_retry(&headers(&[("x-should-retry", "TRUE")])),
            Some(true)
        );
        assert_eq!(should_retry(&headers(&[])), None);
        assert!(exhausted(&headers(&[(
            "x-ratelimit-remaining-requests",
            "0"
        )])));
        assert!(exhausted(&headers(&[(
            "anthropic-ratelimit-tokens-remaining",
            "0"
        )])));
        assert!(!exhausted(&headers(&[(
            "x-ratelimit-remaining-requests",
            "3"
        )])));
    }

    #[test]
    fn stated_limits_and_exhausted_dimensions_are_read_from_openai_and_anthropic() {
        let openai = headers(&[
            ("x-ratelimit-limit-requests", "200"),
            ("x-ratelimit-limit-tokens", "40000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "39000"),
        ]);
        assert_eq!(
            stated_limits(&openai),
            StatedLimits {
                requests: Some(200),
                tokens: Some(40000)
            }
        );
        assert_eq!(exhausted_dimensions(&openai), (true, false));
        let anthropic = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
        ]);
        assert_eq!(stated_limits(&anthropic).requests, Some(50));
        assert_eq!(exhausted_dimensions(&anthropic), (false, true));
        for bad in ["0", "-1", "1.5", "lots"] {
            let h = headers(&[("x-ratelimit-limit-requests", bad)]);
            assert_eq!(stated_limits(&h).requests, None, "{bad}");
        }
    }
}
