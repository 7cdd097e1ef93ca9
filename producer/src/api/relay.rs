//! The OpenAI-compatible endpoint: `POST /v1/chat/completions`, `/v1/embeddings` and
//! `/v1/responses`. A request becomes a job on the key's first queue and first upstream (its
//! `Idempotency-Key` is the dedupe key); the endpoint waits for the job up to `api.relay_wait_ms`
//! and answers with the upstream's status and body as they came, plus `Sluice-Job-Id`. Rate limits
//! and 5xx answers are ridden out in the queue, so the caller waits instead of seeing a 429.
//!
//! - `Prefer: respond-async` answers 202 with the job's `Location` at once;
//! - `Sluice-Priority: high|normal|low` puts the job in that lane (default normal);
//! - a job still running after the wait answers 504 with its id (the same `Idempotency-Key`
//!   returns the result later); a client that goes away does not cancel its job;
//! - a dead job answers the upstream's last status with an OpenAI-shaped error (502 when no
//!   upstream answered), a cancelled one 409.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_common::job::Priority;
use sluice_common::{JobState, JobStatus, NewJob};

use super::Api;
use super::auth::Key;
use super::errors::ApiError;
use super::jobs::{answer, read_body, with_identity};

type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

/// The header that names the job behind an answer.
pub const JOB_ID_HEADER: &str = "sluice-job-id";

/// The header that gives a request's priority lane (an OpenAI SDK sends it in `extra_headers`).
pub const PRIORITY_HEADER: &str = "sluice-priority";

/// One route of the endpoint: `$name` serves `POST $path` (documented once, here, for all three).
macro_rules! relay_route {
    ($name:ident, $path:tt) => {
        #[utoipa::path(post, path = $path, tag = "openai",
            params(("Idempotency-Key" = Option<String>, Header, description = "the dedupe key; resend it to get a result later"),
                ("Prefer" = Option<String>, Header, description = "`respond-async`: 202 with the job's Location at once"),
                ("Sluice-Priority" = Option<String>, Header, description = "`high`, `normal` (the default) or `low`: the job's lane within its tenant's share")),
            request_body(content = Object, description = "the OpenAI request, sent on as it is"),
            responses(
                (status = 200, description = "the upstream's answer, verbatim (any status it gave)", headers(("Sluice-Job-Id" = String))),
                (status = 202, description = "with Prefer: respond-async", body = super::jobs::Created),
                (status = 504, description = "the job has not ended within api.relay_wait_ms", body = super::errors::ErrorBody),
                (status = 422, body = super::errors::ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $name(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
            let r = relay(&api, $path, &headers, body).await;
            answer(&api, stringify!($name), r)
        }
    };
}

relay_route!(chat_completions, "/v1/chat/completions");
relay_route!(embeddings, "/v1/embeddings");
relay_route!(responses, "/v1/responses");

/// The key's queue and upstream for this endpoint: its first of each.
fn route(key: &Key) -> Result<(&str, &str), ApiError> {
    match (key.queues.first(), key.upstreams.first()) {
        (Some(q), Some(u)) => Ok((q, u)),
        _ => Err(ApiError::Invalid(
            "this key has no queue or no upstream configured (api.keys.NAME.queues, upstreams)"
                .into(),
        )),
    }
}

async fn relay(
    api: &Api,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = api.keys.check(headers)?;
    let body = read_body(body)?;
    key.body_fits(body.len(), api.max_body_bytes)?;
    let (queue, upstream) = route(key)?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Invalid(format!("body: not JSON ({e})")))?;
    if !request.is_object() {
        return Err(ApiError::Invalid("body: must be a JSON object".into()));
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::Invalid(
            "stream: streamed answers are not supported yet; send \"stream\": false".into(),
        ));
    }
    let mut job = with_identity(NewJob::post(queue, upstream, path, request), key, headers)?;
    job.spec.priority = priority(headers)?;
    job.spec.metadata.insert("via".into(), json!("openai"));
    let enqueued = api.producer.enqueue(job).await?;
    let id = enqueued.id;
    let location = format!("/v1/queues/{queue}/jobs/{id}");
    if enqueued.conflict {
        return Err(ApiError::Conflict(format!(
            "this Idempotency-Key belongs to job {id}, made with another request"
        )));
    }
    if prefers_async(headers) {
        let state = enqueued.state.map(|s| s.to_string()).unwrap_or_default();
        let body = json!({"id": id, "queue": queue, "state": state});
        return Ok(with_job(
            (StatusCode::ACCEPTED, axum::Json(body)).into_response(),
            &id,
            &location,
        ));
    }
    let wait = Duration::from_millis(api.relay_wait_ms);
    let Some(status) = ended(api, queue, &id, wait).await? else {
        let e = ApiError::StillRunning(format!(
            "job {id} has not ended after {} s; send the same Idempotency-Key again for its \
             answer, or follow {location}",
            wait.as_secs()
        ));
        return Ok(with_job(e.into_response(), &id, &location));
    };
    Ok(with_job(verbatim(status), &id, &location))
}

/// The request's `Sluice-Priority` (normal when absent); anything but a lane's name is refused.
fn priority(headers: &HeaderMap) -> Result<Priority, ApiError> {
    let Some(v) = headers.get(PRIORITY_HEADER) else {
        return Ok(Priority::default());
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::Invalid("Sluice-Priority: not visible ASCII".into()))?;
    v.trim()
        .parse()
        .map_err(|e| ApiError::Invalid(format!("Sluice-Priority: {e}")))
}

/// Job `id` once it has ended, waiting up to `wait` for the queue's follower (the hub) to report
/// its end; `None` when it has not ended by then.
async fn ended(
    api: &Api,
    queue: &str,
    id: &str,
    wait: Duration,
) -> Result<Option<JobStatus>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let missing = || ApiError::NotFound(format!("no job {id} in queue {queue}"));
    let first = api.producer.status(queue, id).await?.ok_or_else(missing)?;
    if first.state.is_terminal() {
        return Ok(Some(first));
    }
    // Subscribed, then read again: an end between the two reads is in the second.
    let part = first.queue;
    let mut sub = api
        .hub
        .subscribe(&part, id)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let again = api.producer.status(&part, id).await?.ok_or_else(missing)?;
    if again.state.is_terminal() {
        return Ok(Some(again));
    }
    loop {
        match tokio::time::timeout_at(deadline, sub.changes.recv()).await {
            Err(_) => return Ok(None),
            Ok(None) => {
                return Err(ApiError::Unavailable(
                    "the queue's events could not be followed".into(),
                ));
            }
            Ok(Some(change)) if change.state.is_terminal() => {
                let status = api.producer.status(&part, id).await?.ok_or_else(missing)?;
                return Ok(Some(status));
            }
            Ok(Some(_)) => {}
        }
    }
}

/// `Prefer: respond-async` (RFC 7240), among other preferences.
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

fn with_job(mut r: Response, id: &str, location: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(JOB_ID_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// An ended job as the upstream answered it.
fn verbatim(s: JobStatus) -> Response {
    let json_body = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(body),
        )
            .into_response()
    };
    match s.state {
        JobState::Completed => {
            let status = s
                .status
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            json_body(status, s.result.unwrap_or_default())
        }
        JobState::Cancelled => {
            ApiError::Conflict(format!("job {} was cancelled", s.id)).into_response()
        }
        _ => {
            // Dead: the upstream's last status when one answered, else 502; OpenAI's error shape.
            let status = s
                .last_status
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| c.is_client_error() || c.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            let reason = s.dead_reason.unwrap_or_else(|| "dead".into());
            let body = json!({"error": {
                "message": s.last_error.unwrap_or_else(|| format!("job {} is dead ({reason})", s.id)),
                "type": s.last_class.unwrap_or_else(|| "sluice_dead".into()),
                "code": reason,
            }});
            json_body(status, body.to_string())
        }
    }
}
