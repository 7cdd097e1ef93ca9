//! The fuzz targets' bodies: each takes untrusted bytes the way a worker meets them and must
//! never panic. The `fuzz_targets/` binaries hand them libFuzzer's inputs; `tests/fuzz_replay.rs`
//! replays `seeds/` and `regressions/` on stable (see docs/RELIABILITY.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_common::store::{decode_delivered, decode_started};
use sluice_common::{JobLimits, JobSpec, NewJob, hints, reply, validate};

/// A job spec as stored in a job hash (a foreign producer may have written anything).
pub fn job_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = serde_json::from_str::<JobSpec>(text) else {
        return;
    };
    if validate::spec(&spec).is_ok() {
        // What passes validation can be prepared for enqueue and re-encoded.
        let mut job = NewJob::post("q", "u", "/", serde_json::json!({"a": 1}));
        job.spec = spec;
        let _ = job.prepare(&JobLimits::default());
    }
}

/// A Redis reply (RESP bytes) decoded as the worker decodes fetch/start and XREADGROUP replies.
pub fn stream_entry(data: &[u8]) {
    let Ok(value) = redis::parse_redis_value(data) else {
        return;
    };
    let _ = decode_started(&value, "fuzz");
    if let Ok(delivered) = decode_delivered(&value, &[]) {
        for d in delivered {
            if let Some(id) = d.fields.get("id") {
                let _ = validate::job_id(id);
            }
        }
    }
    let _ = reply::map(&value);
    let _ = reply::stream_entries(&value);
}

/// An upstream's answer headers, `name: value` per line, read by every rate-limit header parser.
pub fn limit_headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        if let Ok(v) = value.to_str() {
            let _ = hints::go_duration(v);
            let _ = hints::retry_after(v, SystemTime::now());
        }
        headers.append(name, value);
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = hints::server_wait(&headers, now);
    let _ = hints::should_retry(&headers);
    let _ = hints::exhausted(&headers);
}
