//! A job's states and the status record read back from its hash.
//!
//! `queued → running → completed`, or `running → retrying → queued → …`, or `→ dead`, or
//! `cancelled`; `scheduled` for a job enqueued with a delay. The strings are the wire format
//! (docs/PROTOCOL.md), stored in the job hash's `state` field and in events.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Scheduled,
    Running,
    Retrying,
    Completed,
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retrying,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// A terminal job never changes state again (until a re-drive of a dead one).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state string that is not one of Sluice's states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// Everything the job hash says about one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    pub upstream: String,
    /// Attempts in the current life (reset by a re-drive).
    pub attempts: u32,
    /// Attempts over all lives.
    pub total_attempts: u32,
    /// Rate-limit and quota waits in this life (they spend no attempt).
    pub waits: u32,
    pub created_ms: Option<u64>,
    pub updated_ms: Option<u64>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// When a scheduled or retrying job is due.
    pub run_at_ms: Option<u64>,
    pub dedupe_key: Option<String>,
    pub last_class: Option<String>,
    pub last_error: Option<String>,
    /// HTTP status of the last failed call (none for a transport failure).
    pub last_status: Option<u16>,
    pub dead_reason: Option<String>,
    /// HTTP status of the successful call.
    pub status: Option<u16>,
    /// The stored result (JSON text) of a completed job.
    pub result: Option<String>,
    pub redrives: u32,
    /// One line per earlier life (re-drives).
    pub history: Option<String>,
    /// The tenant its spec names (`metadata.tenant`, set by sluice-api for a tenant's key);
    /// `None` for jobs of no tenant. The spec itself is not part of the status: a waiting job
    /// keeps it in its stream entry (docs/PROTOCOL.md).
    pub tenant: Option<String>,
    /// Completed from the response cache at enqueue: no call was made for it.
    pub cached: bool,
    /// The identical job this one follows (response cache, single flight), while it waits; once
    /// ended, the one whose answer it got.
    pub follows: Option<String>,
    /// The deployment (upstream name, and the model asked of it) whose answer completed the
    /// job: the job's own upstream, or one of its fallbacks.
    pub answered_by: Option<String>,
    /// Why a queued job is held rather than waiting its turn: `budget` while its tenant is
    /// parked over its budget (docs/OPERATIONS.md, "Tenants").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// The `tenant` of a spec (JSON text), or its `metadata.tenant` (how sluice-api marked it
/// before the spec had the field): for hashes written before the hash's `tenant` field.
fn tenant_of(spec: &str) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_str(spec).ok()?;
    let tenant = spec["tenant"]
        .as_str()
        .or(spec["metadata"]["tenant"].as_str());
    tenant.map(str::to_string)
}

impl JobStatus {
    /// Builds job `id`'s status from its hash's fields (HGETALL). A waiting job's hash holds
    /// only what differs from the defaults (no `id`: its key has it; no `updated_ms` before the
    /// first change; no `attempts` 0).
    pub fn from_fields(
        queue: &str,
        id: &str,
        mut f: HashMap<String, String>,
    ) -> Result<JobStatus, UnknownState> {
        let state = f.get("state").map(String::as_str).unwrap_or("").parse()?;
        fn num<T: FromStr>(f: &HashMap<String, String>, k: &str) -> Option<T> {
            f.get(k).and_then(|v| v.parse().ok())
        }
        Ok(JobStatus {
            id: f.remove("id").unwrap_or_else(|| id.to_string()),
            queue: queue.to_string(),
            state,
            upstream: f.remove("upstream").unwrap_or_default(),
            attempts: num(&f, "attempts").unwrap_or(0),
            total_attempts: num(&f, "total_attempts").unwrap_or(0),
            waits: num(&f, "waits").unwrap_or(0),
            created_ms: num(&f, "created_ms"),
            updated_ms: num(&f, "updated_ms").or_else(|| num(&f, "created_ms")),
            started_ms: num(&f, "started_ms"),
            finished_ms: num(&f, "finished_ms"),
            run_at_ms: num(&f, "run_at_ms"),
            redrives: num(&f, "redrives").unwrap_or(0),
            dedupe_key: f.remove("dedupe").filter(|k| !k.is_empty()),
            last_class: f.remove("last_class"),
            last_error: f.remove("last_error"),
            last_status: num(&f, "last_status"),
            dead_reason: f.remove("dead_reason"),
            status: num(&f, "status"),
            result: f.remove("result"),
            history: f.remove("history"),
            tenant: f
                .remove("tenant")
                .or_else(|| tenant_of(f.get("spec")?))
                .filter(|t| !t.is_empty()),
            cached: f.get("cached").is_some_and(|v| v == "1"),
            follows: f.remove("follows").or_else(|| f.remove("followed")),
            answered_by: None,
            held: None,
        }
        .answered(f.remove("answered_by")))
    }

    /// Who answered: the marked fallback, else (for a completed job that made its own call)
    /// its own upstream.
    fn answered(mut self, marked: Option<String>) -> JobStatus {
        self.answered_by = marked.or_else(|| {
            (self.state == JobState::Completed && !self.cached && self.follows.is_none())
                .then(|| self.upstream.clone())
        });
        self
    }
}
