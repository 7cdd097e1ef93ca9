//! The job API: submit (the `Idempotency-Key` header is the dedupe key), read, cancel, and a
//! queue's stats. A new job answers 202 with its `Location`; the same key with the same request
//! answers 200 with the existing job; the same key with another request answers 409.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_common::job::{Priority, Webhook};
use sluice_common::store::CancelOutcome;
use sluice_common::{JobStatus, NewJob, Schedule};

use super::Api;
use super::auth::Key;
use super::errors::ApiError;
use sluice_common::view::JobView;

/// The body of `POST /v1/queues/{queue}/jobs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// An upstream of this key, by name.
    pub upstream: String,
    /// The request path below the upstream's base URL.
    #[serde(default = "default_path")]
    #[schema(default = "/v1/chat/completions")]
    pub path: String,
    /// The JSON body sent to the upstream.
    #[schema(value_type = Object)]
    pub body: Value,
    /// Run it this many milliseconds from now.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// This job's attempt budget (the workers' `[retry] max_attempts` otherwise).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// A URL to POST the job to when it ends (its host must be in the key's `webhook_hosts`).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Serve it from the queue's response cache (or an identical job under way) and cache its
    /// answer for this many milliseconds.
    #[serde(default)]
    pub cache_ttl_ms: Option<u64>,
    /// This job's own fallback chain, in order: upstreams of this key that are in its
    /// upstream's configured `fallbacks` (`[]`: none). Absent: the whole configured chain.
    #[serde(default)]
    pub fallbacks: Option<Vec<String>>,
    /// `high`, `normal` (the default) or `low`: the job's lane within its tenant's share. Its
    /// tenant is the key's.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub priority: Option<Priority>,
}

/// A new job (202).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: String,
    pub queue: String,
    pub state: String,
}

fn default_path() -> String {
    "/v1/chat/completions".into()
}

/// Counts the answer under `route` and turns an error into its JSON.
pub(super) fn answer(api: &Api, route: &str, r: Result<Response, ApiError>) -> Response {
    let response = r.unwrap_or_else(IntoResponse::into_response);
    api.count(route, response.status());
    response
}

#[utoipa::path(post, path = "/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = String, Path, description = "a queue of this key"),
        ("Idempotency-Key" = Option<String>, Header, description = "the dedupe key: one user action, one job")),
    request_body = Submit,
    responses(
        (status = 202, description = "a new job", body = Created, headers(("Location" = String))),
        (status = 200, description = "the job this Idempotency-Key made, for the same request", body = JobView),
        (status = 409, description = "the Idempotency-Key belongs to a job with another request", body = super::errors::ErrorBody),
        (status = 413, description = "over api.max_body_bytes or the key's cap", body = super::errors::ErrorBody),
        (status = 422, description = "a field is wrong; the message names it", body = super::errors::ErrorBody),
        (status = 401, body = super::errors::ErrorBody), (status = 404, body = super::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit(
    State(api): State<Arc<Api>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = submit_inner(&api, &queue, &headers, body).await;
    answer(&api, "submit", r)
}

async fn submit_inner(
    api: &Api,
    queue: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = api.keys.check(headers)?;
    key.queue(queue)?;
    let body = read_body(body)?;
    key.body_fits(body.len(), api.max_body_bytes)?;
    let req: Submit =
        serde_json::from_slice(&body).map_err(|e| ApiError::Invalid(format!("body: {e}")))?;
    key.upstream(&req.upstream)?;
    let mut job = NewJob::post(queue, &req.upstream, &req.path, req.body);
    job.spec.max_attempts = req.max_attempts;
    job.spec.priority = req.priority.unwrap_or_default();
    if let Some(chain) = req.fallbacks {
        for name in &chain {
            key.upstream(name)?;
        }
        job = job.with_fallbacks(chain);
    }
    if let Some(url) = req.webhook {
        key.webhook(&url)?;
        job.spec.webhook = Some(Webhook {
            url,
            key: key.name.clone(),
        });
    }
    if let Some(ms) = req.delay_ms {
        job = job.with_schedule(Schedule::After(Duration::from_millis(ms)));
    }
    if let Some(ms) = req.cache_ttl_ms.filter(|ms| *ms > 0) {
        job = job.with_cache(Duration::from_millis(ms));
    }
    let job = with_identity(job, key, headers)?;
    let e = api.producer.enqueue(job).await?;
    let location = format!("/v1/queues/{queue}/jobs/{}", e.id);
    if e.created {
        let body = Created {
            state: e.state.map(|s| s.to_string()).unwrap_or_default(),
            id: e.id,
            queue: queue.to_string(),
        };
        return Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, location)],
            Json(body),
        )
            .into_response());
    }
    if e.conflict {
        let body = json!({
            "error": {"code": "conflict", "message": "this Idempotency-Key belongs to a job with another request"},
            "job": {"id": e.id, "queue": queue},
        });
        return Ok((
            StatusCode::CONFLICT,
            [(header::LOCATION, location)],
            Json(body),
        )
            .into_response());
    }
    // The same request again: the job as it is now.
    let view = match api.producer.status(queue, &e.id).await? {
        Some(s) => serde_json::to_value(JobView::from(s)).unwrap_or(Value::Null),
        None => json!({"id": e.id, "queue": queue, "state": "expired"}),
    };
    Ok((StatusCode::OK, [(header::LOCATION, location)], Json(view)).into_response())
}

/// The request's body, or 413 over `api.max_body_bytes` (the router's cap).
pub(super) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge("body: over api.max_body_bytes".into()),
        _ => ApiError::Invalid(format!("body: {}", e.body_text())),
    })
}

/// Stamps `job` with the key's tenant and takes the `Idempotency-Key` header as its dedupe key.
pub(super) fn with_identity(
    mut job: NewJob,
    key: &Key,
    headers: &HeaderMap,
) -> Result<NewJob, ApiError> {
    if !key.tenant.is_empty() {
        job.spec.tenant = Some(key.tenant.clone());
    }
    if let Some(k) = headers.get("idempotency-key") {
        let k = k
            .to_str()
            .map_err(|_| ApiError::Invalid("Idempotency-Key: not visible ASCII".into()))?;
        job = job.with_dedupe_key(k);
    }
    Ok(job)
}

/// The job, if it exists and is this key's (queue and tenant); 404 otherwise.
pub(super) async fn owned(
    api: &Api,
    key: &Key,
    queue: &str,
    id: &str,
) -> Result<JobStatus, ApiError> {
    key.queue(queue)?;
    let missing = || ApiError::NotFound(format!("no job {id} in queue {queue}"));
    let s = api.producer.status(queue, id).await?.ok_or_else(missing)?;
    if s.tenant.as_deref().unwrap_or_default() != key.tenant {
        return Err(missing());
    }
    Ok(s)
}

#[utoipa::path(get, path = "/v1/queues/{queue}/jobs/{id}", tag = "jobs",
    params(("queue" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = JobView),
        (status = 404, description = "absent, expired, or another key's", body = super::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn read(
    State(api): State<Arc<Api>>,
    Path((queue, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let key = api.keys.check(&headers)?;
        let s = owned(&api, key, &queue, &id).await?;
        Ok(Json(JobView::from(s)).into_response())
    }
    .await;
    answer(&api, "read", r)
}

#[utoipa::path(post, path = "/v1/queues/{queue}/jobs/{id}/cancel", tag = "jobs",
    params(("queue" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "`{id, state: cancelled, previous_state}`"),
        (status = 409, description = "running or ended", body = super::errors::ErrorBody),
        (status = 404, body = super::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(api): State<Arc<Api>>,
    Path((queue, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let key = api.keys.check(&headers)?;
        owned(&api, key, &queue, &id).await?;
        match api.producer.cancel(&queue, &id).await? {
            CancelOutcome::Cancelled(from) => Ok(Json(
                json!({"id": id, "state": "cancelled", "previous_state": from.to_string()}),
            )
            .into_response()),
            CancelOutcome::Refused(state) => Err(ApiError::Conflict(format!(
                "job {id} is {state}: only queued, scheduled or retrying jobs can be cancelled"
            ))),
            CancelOutcome::NotFound => {
                Err(ApiError::NotFound(format!("no job {id} in queue {queue}")))
            }
        }
    }
    .await;
    answer(&api, "cancel", r)
}

#[utoipa::path(get, path = "/v1/queues/{queue}", tag = "queues",
    params(("queue" = String, Path)),
    responses((status = 200, description = "the queue's stats, as `sluice stats --json`"),
        (status = 404, body = super::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn queue(
    State(api): State<Arc<Api>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let key = api.keys.check(&headers)?;
        key.queue(&queue)?;
        let stats = api
            .producer
            .store()
            .stats(&queue)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(Json(stats).into_response())
    }
    .await;
    answer(&api, "queue", r)
}
