//! The JSON form of a job for `sluice enqueue` (one object, or one per line of a JSONL file).
//!
//! ```json
//! {"queue": "reports", "upstream": "openai", "dedupe_key": "upload-4711",
//!  "request": {"method": "POST", "path": "/v1/chat/completions", "body": {"model": "…"}}}
//! ```
//! `queue`, `upstream` and `request.path` may be left to the command's flags; a top-level `body`
//! is short for a POST of that body to the default path. Unknown fields are refused by name.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_common::job::Priority;
use sluice_common::{JobSpec, Method, NewJob, Request, Schedule};

/// A job as written in JSON by a person or another program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    pub id: Option<String>,
    pub queue: Option<String>,
    pub upstream: Option<String>,
    pub request: Option<RequestInput>,
    /// Short for `request: {method: POST, path: <default>, body: …}`.
    pub body: Option<serde_json::Value>,
    pub dedupe_key: Option<String>,
    pub dedupe_window_secs: Option<u64>,
    pub delay_ms: Option<u64>,
    pub run_at_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub tokens: Option<u32>,
    /// Serve it from the response cache (or an identical job under way) and cache its answer
    /// for this long.
    pub cache_ttl_ms: Option<u64>,
    /// The job's own fallback chain (upstream names, each in its upstream's configured
    /// `fallbacks`); `[]` for none.
    pub fallbacks: Option<Vec<String>>,
    /// Whose job it is (fair shares, budgets); the command's `--tenant` when absent.
    pub tenant: Option<String>,
    /// `high`, `normal` or `low`; the command's `--priority` when absent.
    pub priority: Option<Priority>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    #[serde(default)]
    pub method: Method,
    pub path: Option<String>,
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Values the command line supplies where a job leaves them out.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub queue: String,
    pub upstream: Option<String>,
    pub path: String,
    pub tenant: Option<String>,
    pub priority: Option<Priority>,
}

/// Why a line could not become a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("not a job: {0}")]
    Json(String),
    #[error("{0}: missing (and no default given on the command line)")]
    Missing(&'static str),
    #[error("give either request or body, not both")]
    BodyTwice,
}

impl JobInput {
    /// Parses one JSON object.
    pub fn parse(text: &str) -> Result<JobInput, InputError> {
        serde_json::from_str(text).map_err(|e| InputError::Json(e.to_string()))
    }

    /// Sets the body (the `--body` flag).
    pub fn with_body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Fills in the defaults and builds the job (validation comes at enqueue).
    pub fn into_job(self, defaults: &Defaults) -> Result<NewJob, InputError> {
        let upstream = self
            .upstream
            .or_else(|| defaults.upstream.clone())
            .ok_or(InputError::Missing("upstream"))?;
        let request = match (self.request, self.body) {
            (Some(_), Some(_)) => return Err(InputError::BodyTwice),
            (Some(r), None) => Request {
                method: r.method,
                path: r.path.unwrap_or_else(|| defaults.path.clone()),
                body: r.body,
                headers: r.headers,
            },
            (None, body) => Request {
                method: Method::Post,
                path: defaults.path.clone(),
                body,
                headers: BTreeMap::new(),
            },
        };
        let schedule = match (self.delay_ms, self.run_at_ms) {
            (Some(d), _) if d > 0 => Schedule::After(Duration::from_millis(d)),
            (_, Some(at)) => Schedule::At(at),
            _ => Schedule::Now,
        };
        Ok(NewJob {
            id: self.id,
            queue: self.queue.unwrap_or_else(|| defaults.queue.clone()),
            dedupe_key: self.dedupe_key,
            dedupe_window: self.dedupe_window_secs.map(Duration::from_secs),
            schedule,
            cache: self
                .cache_ttl_ms
                .map(|ms| sluice_common::job::CacheOptions {
                    ttl: Duration::from_millis(ms),
                    vary: Vec::new(),
                    max_bytes: sluice_common::job::DEFAULT_CACHE_MAX_BYTES,
                }),
            spec: JobSpec {
                upstream,
                request,
                max_attempts: self.max_attempts,
                timeout_ms: self.timeout_ms,
                deadline_ms: self.deadline_ms,
                tokens: self.tokens,
                metadata: self.metadata,
                webhook: None,
                deliver: None,
                cache: None,
                fallbacks: self.fallbacks,
                tenant: self.tenant.or_else(|| defaults.tenant.clone()),
                priority: self.priority.or(defaults.priority).unwrap_or_default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            queue: "default".into(),
            upstream: Some("mock".into()),
            path: "/v1/chat/completions".into(),
            tenant: None,
            priority: None,
        }
    }

    #[test]
    fn a_bare_body_becomes_a_post_to_the_default_path() {
        let job = JobInput::parse(r#"{"body": {"model": "m"}, "dedupe_key": "k"}"#)
            .and_then(|i| i.into_job(&defaults()))
            .expect("valid");
        assert_eq!(job.spec.upstream, "mock");
        assert_eq!(job.spec.request.path, "/v1/chat/completions");
        assert_eq!(job.dedupe_key.as_deref(), Some("k"));
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = JobInput::parse(r#"{"body": {}, "urgency": 3}"#).expect_err("unknown field");
        assert!(err.to_string().contains("urgency"), "{err}");
        let err = JobInput::parse(r#"{"body": {}, "priority": "urgent"}"#).expect_err("bad lane");
        assert!(err.to_string().contains("urgent"), "{err}");
    }

    #[test]
    fn tenant_and_priority_come_from_the_line_else_the_flags() {
        let mut d = defaults();
        d.tenant = Some("flag-tenant".into());
        d.priority = Some(Priority::Low);
        let line = r#"{"body": {"a": 1}, "tenant": "acme", "priority": "high"}"#;
        let job = JobInput::parse(line)
            .expect("parse")
            .into_job(&d)
            .expect("job");
        assert_eq!(job.spec.tenant.as_deref(), Some("acme"));
        assert_eq!(job.spec.priority, Priority::High);
        let job = JobInput::parse(r#"{"body": {"a": 1}}"#).expect("parse");
        let job = job.into_job(&d).expect("job");
        assert_eq!(job.spec.tenant.as_deref(), Some("flag-tenant"));
        assert_eq!(job.spec.priority, Priority::Low);
        let job = JobInput::parse(r#"{"body": {"a": 1}}"#).expect("parse");
        let spec = job.into_job(&defaults()).expect("job").spec;
        assert_eq!((spec.tenant, spec.priority), (None, Priority::Normal));
        // A normal job's spec carries neither field: its JSON is what it was before them.
        let json = serde_json::to_string(&spec_of(r#"{"body": {"a": 1}}"#)).expect("json");
        assert!(
            !json.contains("tenant") && !json.contains("priority"),
            "{json}"
        );
    }

    fn spec_of(line: &str) -> JobSpec {
        let job = JobInput::parse(line).expect("parse");
        job.into_job(&defaults()).expect("job").spec
    }

    #[test]
    fn a_missing_upstream_is_named() {
        let mut d = defaults();
        d.upstream = None;
        let err = JobInput::parse(r#"{"body": {"a": 1}}"#)
            .and_then(|i| i.into_job(&d))
            .expect_err("no upstream");
        assert_eq!(err, InputError::Missing("upstream"));
    }
}
