//! `GET /v1/queues/{queue}/jobs/{id}/events`: a job's state changes as Server-Sent Events.
//!
//! The first event is the job as it is now (`event: job`, the full view), read together with the
//! queue's events-stream position; then one `event: state` per change, each with the stream
//! entry as its SSE `id`. A client that reconnects with `Last-Event-ID` gets every change after
//! that entry — nothing lost, nothing twice — and the stream ends after a terminal state. The
//! events stream is capped (`queues.events_maxlen`): a client gone for longer than it holds
//! gets the job's current view first instead.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};

use super::Api;
use super::errors::ApiError;
use super::jobs::owned;
use sluice_common::view::JobView;

/// Longest one read of the events stream blocks before looking again.
const BLOCK: Duration = Duration::from_secs(5);

#[utoipa::path(get, path = "/v1/queues/{queue}/jobs/{id}/events", tag = "jobs",
    params(("queue" = String, Path), ("id" = String, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    responses(
        (status = 200, description = "text/event-stream: `event: job` (the job now), then `event: state` per change; ends after a terminal state", content_type = "text/event-stream", body = String),
        (status = 404, body = super::errors::ErrorBody), (status = 429, description = "the key's open streams are at api.max_streams_per_key", body = super::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(api): State<Arc<Api>>,
    Path((queue, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = start(&api, &queue, &id, &headers).await;
    let response = match r {
        Ok(stream) => Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response(),
        Err(e) => e.into_response(),
    };
    api.count("events", response.status());
    response
}

/// Where a follower is.
struct Follow {
    api: Arc<Api>,
    queue: String,
    id: String,
    after: String,
    ready: VecDeque<Event>,
    done: bool,
    /// The job had ended when a resumed stream began: what follows `after` is all there is.
    ended_before: bool,
    /// This stream's place in its key's cap (`api.max_streams_per_key`), given back on drop.
    _slot: super::streams::Slot,
}

async fn start(
    api: &Arc<Api>,
    queue: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + use<>, ApiError> {
    let key = api.keys.check(headers)?;
    let now = owned(api, key, queue, id).await?;
    let slot = api.streams.take(&key.name)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut ready = VecDeque::new();
    let mut done = false;
    let after = match resume {
        Some(entry) if is_entry_id(&entry) => entry,
        Some(entry) => {
            return Err(ApiError::Invalid(format!(
                "Last-Event-ID: {entry:?} is not an event id this stream sent"
            )));
        }
        None => {
            let (status, position) = api
                .producer
                .store()
                .status_and_position(queue, id)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
                .ok_or_else(|| ApiError::NotFound(format!("no job {id} in queue {queue}")))?;
            done = status.state.is_terminal();
            let view = serde_json::to_string(&JobView::from(status)).unwrap_or_default();
            ready.push_back(Event::default().id(&position).event("job").data(view));
            position
        }
    };
    let follow = Follow {
        api: api.clone(),
        // The job's own queue (its partition on a partitioned queue), found once.
        queue: now.queue.clone(),
        id: id.to_string(),
        after,
        ready,
        done,
        ended_before: now.state.is_terminal(),
        _slot: slot,
    };
    Ok(stream::unfold(follow, next))
}

/// The next event: a buffered one, else the next batch read from the events stream.
async fn next(mut f: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    loop {
        if let Some(e) = f.ready.pop_front() {
            return Some((Ok(e), f));
        }
        if f.done {
            return None;
        }
        // A job that had ended: its remaining changes are in the stream already.
        let block = if f.ended_before {
            Duration::from_millis(1)
        } else {
            BLOCK
        };
        match f
            .api
            .producer
            .job_events(&f.queue, &f.id, &f.after, block)
            .await
        {
            Ok((last, changes)) => {
                if changes.is_empty() && f.ended_before && last == f.after {
                    return None;
                }
                f.after = last;
                for (entry, state) in changes {
                    let data = serde_json::json!({"id": f.id, "state": state}).to_string();
                    f.ready
                        .push_back(Event::default().id(&entry).event("state").data(data));
                    if state.is_terminal() {
                        f.done = true;
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(queue = %f.queue, id = %f.id, error = %e, "reading job events failed");
                // The client reconnects with Last-Event-ID and loses nothing.
                return None;
            }
        }
    }
}

/// A stream entry id, `<ms>-<seq>`: what this stream sends as event ids.
fn is_entry_id(s: &str) -> bool {
    s.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.len() <= 20
            && seq.len() <= 20
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}
