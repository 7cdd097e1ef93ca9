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

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};

use super::Api;
use super::errors::ApiError;
use super::hub::Subscription;
use super::jobs::owned;
use sluice_common::JobState;
use sluice_common::view::JobView;

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
    id: String,
    /// The job's changes from the queue's follower (the hub).
    sub: Subscription,
    ready: VecDeque<Event>,
    /// The newest entry sent, or the position the job's view was read at: changes at or
    /// before it were sent (or are in the view) and are dropped.
    last: (u64, u64),
    done: bool,
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
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resume =
        match resume {
            Some(entry) => Some(entry_key(&entry).map(|k| (entry.clone(), k)).ok_or_else(
                || {
                    ApiError::Invalid(format!(
                        "Last-Event-ID: {entry:?} is not an event id this stream sent"
                    ))
                },
            )?),
            None => None,
        };
    let slot = api.streams.take(&key.name)?;
    let unavailable = |e: sluice_common::StoreError| ApiError::Unavailable(e.to_string());
    // Subscribed before anything is read: a change after the reads below is delivered.
    // `now.queue` is the job's own queue (its partition on a partitioned queue).
    let sub = api
        .hub
        .subscribe(&now.queue, id)
        .await
        .map_err(unavailable)?;
    let store = api.producer.store();
    let mut ready = VecDeque::new();
    let mut done = false;
    let last = match resume {
        // Resumed: every change the stream holds after the client's last event, then the ones
        // to come (none, when the job had ended already).
        Some((entry, mut last)) => {
            let (_, changes) = store
                .job_events_now(&now.queue, id, &entry)
                .await
                .map_err(unavailable)?;
            for (entry, state) in changes {
                last = entry_key(&entry).unwrap_or(last);
                ready.push_back(state_event(id, &entry, state));
                done |= state.is_terminal();
            }
            done |= now.state.is_terminal();
            last
        }
        None => {
            let (status, position) = store
                .status_and_position(&now.queue, id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::NotFound(format!("no job {id} in queue {queue}")))?;
            done = status.state.is_terminal();
            let view = serde_json::to_string(&JobView::from(status)).unwrap_or_default();
            ready.push_back(Event::default().id(&position).event("job").data(view));
            entry_key(&position).unwrap_or((0, 0))
        }
    };
    let follow = Follow {
        id: id.to_string(),
        sub,
        ready,
        last,
        done,
        _slot: slot,
    };
    Ok(stream::unfold(follow, next))
}

fn state_event(id: &str, entry: &str, state: JobState) -> Event {
    let data = serde_json::json!({"id": id, "state": state}).to_string();
    Event::default().id(entry).event("state").data(data)
}

/// The next event: a buffered one, else the job's next change from the hub.
async fn next(mut f: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    loop {
        if let Some(e) = f.ready.pop_front() {
            return Some((Ok(e), f));
        }
        if f.done {
            return None;
        }
        // None: the queue's follower stopped; the client resumes with Last-Event-ID.
        let change = f.sub.changes.recv().await?;
        let Some(key) = entry_key(&change.entry) else {
            continue;
        };
        if key <= f.last {
            continue;
        }
        f.last = key;
        f.ready
            .push_back(state_event(&f.id, &change.entry, change.state));
        f.done = change.state.is_terminal();
    }
}

/// A stream entry id, `<ms>-<seq>`, as a number pair (ordered as the stream orders them).
fn entry_key(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    if ms.is_empty() || seq.is_empty() || ms.len() > 20 || seq.len() > 20 {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}
