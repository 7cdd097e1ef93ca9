//! A job as the API shows it: what a product's UI needs to say "queued, running, retrying, needs
//! attention" without knowing Sluice's internals.

use crate::{JobState, JobStatus};
use serde::Serialize;
use serde_json::Value;

/// A job's view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    /// Attempts spent (calls that failed or are running).
    pub attempts: u32,
    /// Rate-limit and quota waits (they spend no attempt).
    pub waits: u32,
    /// When a scheduled or retrying job runs next (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    pub created_at: Option<u64>,
    pub updated_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Completed from the response cache: no upstream call was made for this job.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// The identical job whose call serves this one (single flight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    /// The deployment that answered (`upstream` or `upstream/model`): the job's own upstream
    /// or one of its fallbacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// The upstream's answer, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultView>,
    /// Set when a person must act: a dead job, or one waiting on an upstream that refuses the
    /// credentials or the quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_attention: Option<Attention>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastError {
    /// `rate_limited`, `quota`, `auth`, `transient`, `invalid`, or why a call was deferred.
    pub class: Option<String>,
    /// The upstream's HTTP status (none for a transport failure).
    pub status: Option<u16>,
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultView {
    pub status: Option<u16>,
    /// The answer's body (JSON; a string if it was not JSON).
    #[schema(value_type = Object)]
    pub body: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attention {
    pub reason: String,
    /// What an operator can do about it.
    pub action: String,
}

impl From<JobStatus> for JobView {
    fn from(s: JobStatus) -> Self {
        let waiting = matches!(s.state, JobState::Scheduled | JobState::Retrying);
        let result = s
            .result
            .as_ref()
            .filter(|_| s.state == JobState::Completed)
            .map(|r| ResultView {
                status: s.status,
                body: serde_json::from_str(r).unwrap_or_else(|_| Value::String(r.clone())),
            });
        let needs_attention = attention(&s);
        JobView {
            next_attempt_at: s.run_at_ms.filter(|_| waiting),
            last_error: s.last_error.clone().map(|message| LastError {
                class: s.last_class.clone(),
                status: s.last_status,
                message,
            }),
            created_at: s.created_ms,
            updated_at: s.updated_ms,
            started_at: s.started_ms,
            finished_at: s.finished_ms,
            result,
            needs_attention,
            cached: s.cached,
            follows: s.follows,
            answered_by: s.answered_by,
            id: s.id,
            queue: s.queue,
            state: s.state,
            attempts: s.attempts,
            waits: s.waits,
        }
    }
}

/// Why a person must look at this job, if one must.
fn attention(s: &JobStatus) -> Option<Attention> {
    let (reason, action) = match (s.state, s.last_class.as_deref()) {
        (JobState::Dead, _) => {
            let reason = s.dead_reason.clone().unwrap_or_else(|| "dead".into());
            let action = match reason.as_str() {
                "invalid" | "over_limit" => {
                    "the upstream refused the request itself: fix it and submit a new job"
                }
                "exhausted" | "poison" | "deadline" => {
                    "retries ran out: once the upstream is healthy, re-drive it (sluice dlq redrive)"
                }
                _ => "see last_error; re-drive it (sluice dlq redrive) or submit again",
            };
            (reason, action)
        }
        (JobState::Retrying | JobState::Scheduled, Some("auth")) => (
            "upstream_auth".to_string(),
            "the upstream refuses the worker's credentials: fix its key; the job resumes by itself",
        ),
        (JobState::Retrying | JobState::Scheduled, Some("quota")) => (
            "upstream_quota".to_string(),
            "the upstream's quota or billing is exhausted: raise it; the job resumes by itself",
        ),
        _ => return None,
    };
    Some(Attention {
        reason,
        action: action.to_string(),
    })
}
