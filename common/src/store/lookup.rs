//! Finding a job and following it: status, waiting for the end on the events stream, cancel.

use super::*;

/// What cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled from this state.
    Cancelled(JobState),
    /// Not cancellable in this state (running or terminal).
    Refused(JobState),
    NotFound,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Waited {
    /// The job reached a terminal state.
    Done(Box<JobStatus>),
    TimedOut,
    /// No such job (never enqueued, or its hash expired).
    NotFound,
}

/// Whether an events-stream entry is about job `id`: its `id`, or one of its `ids` (an event for
/// several jobs that reached the same state in one call).
pub fn names(fields: &HashMap<String, String>, id: &str) -> bool {
    fields.get("id").map(String::as_str) == Some(id)
        || fields
            .get("ids")
            .is_some_and(|ids| ids.split(' ').any(|i| i == id))
}

impl Store {
    /// The queue to act on for job `id`: its partition when `queue` is partitioned (found by
    /// `locate`; `None` if no partition has it), else `queue` itself, unread.
    pub(super) async fn holding(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        if self.partitions_of(queue).len() > 1 {
            Ok(self.locate(queue, id).await?.map(|(part, _)| part))
        } else {
            Ok(Some(queue.to_string()))
        }
    }

    /// The partition of `queue` that holds job `id` (the queue itself when not partitioned),
    /// with the job's status; `None` if no partition has it.
    pub(super) async fn locate(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<(String, JobStatus)>, StoreError> {
        let parts = self.partitions_of(queue);
        // All partitions at once: one round trip's wait however many there are.
        let found =
            futures::future::try_join_all(parts.iter().map(|p| self.status_in(p, id))).await?;
        Ok(parts
            .into_iter()
            .zip(found)
            .find_map(|(part, status)| status.map(|s| (part, s))))
    }

    /// The job's status, or `None` if no such job (never enqueued, or expired). On a
    /// partitioned queue, every partition is asked (at once).
    pub async fn status(&self, queue: &str, id: &str) -> Result<Option<JobStatus>, StoreError> {
        Ok(self.locate(queue, id).await?.map(|(_, status)| status))
    }

    /// The job's spec (JSON text) where it is kept: its hash's `spec`, else its ready-stream
    /// entry's (docs/PROTOCOL.md, `spec`). `None`: no such job, or one that kept none (it
    /// completed, or was cancelled, straight from its entry).
    pub async fn spec(&self, queue: &str, id: &str) -> Result<Option<String>, StoreError> {
        let Some(part) = self.holding(queue, id).await? else {
            return Ok(None);
        };
        let keys = keys_for(&part)?;
        let mut conn = self.conn.clone();
        let (spec, entry): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(keys.job(id))
            .arg("spec")
            .arg("entry")
            .query_async(&mut conn)
            .await?;
        let Some(entry) = entry.filter(|e| spec.is_none() && !e.is_empty()) else {
            return Ok(spec);
        };
        let (lane, raw) = keys::split_entry(&entry);
        let reply: Value = redis::cmd("XRANGE")
            .arg(keys.lane_stream(lane))
            .arg(raw)
            .arg(raw)
            .query_async(&mut conn)
            .await?;
        let entries = reply::stream_entries(&reply).ok_or(StoreError::Protocol("XRANGE stream"))?;
        Ok(entries
            .into_iter()
            .next()
            .and_then(|(_, mut f)| f.remove("spec")))
    }

    /// The job's status in one queue (or partition).
    pub(super) async fn status_in(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<JobStatus>, StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.job(id))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        // A queued job in its tenant's list (`fair`, no entry) whose tenant is parked is held.
        let in_list = fields.get("state").map(String::as_str) == Some("queued")
            && fields.contains_key("fair")
            && fields.get("entry").is_none_or(|e| e.is_empty());
        let tenant = fields.get("tenant").cloned();
        let mut status = JobStatus::from_fields(queue, id, fields)
            .map_err(|_| StoreError::Protocol("job hash state"))?;
        if in_list {
            let parked: bool = redis::cmd("SISMEMBER")
                .arg(format!("{}parked", keys.prefix()))
                .arg(tenant.as_deref().unwrap_or("default"))
                .query_async(&mut conn)
                .await?;
            if parked {
                status.held = Some("budget".into());
            }
        }
        Ok(Some(status))
    }

    /// Waits until the job is terminal and returns its status.
    ///
    /// Blocks on the queue's events stream (XREAD BLOCK) over `blocking`, a dedicated connection,
    /// rather than polling. The state and the stream's last id are read in one MULTI, so no event
    /// can fall between them. If the capped stream might have been trimmed past an event, the
    /// job's state is read once more directly.
    pub async fn wait_terminal<C: redis::aio::ConnectionLike + Send>(
        &self,
        blocking: &mut C,
        queue: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Waited, StoreError> {
        const READ_COUNT: usize = 1000;
        let deadline = tokio::time::Instant::now() + timeout;
        // The status and the stream's position in one MULTI: an ended job is answered from it.
        let Some((status, mut last)) = self.status_and_position(queue, id).await? else {
            return Ok(Waited::NotFound);
        };
        if status.state.is_terminal() {
            return Ok(Waited::Done(Box::new(status)));
        }
        let queue = status.queue.as_str();
        let keys = keys_for(queue)?;
        let terminal = |s: Option<&str>| {
            s.and_then(|s| s.parse::<JobState>().ok())
                .is_some_and(JobState::is_terminal)
        };
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Waited::TimedOut);
            }
            let block_ms = (deadline - now).min(LONGEST_BLOCK).as_millis().max(1) as u64;
            let reply: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(keys.events())
                .arg(&last)
                .query_async(blocking)
                .await?;
            let entries = reply::read_entries(&reply).unwrap_or_default();
            let full = entries.len() >= READ_COUNT;
            let mut seen = false;
            for (entry, fields) in entries {
                last = entry;
                if names(&fields, id) && terminal(fields.get("state").map(String::as_str)) {
                    seen = true;
                }
            }
            if seen || full {
                match self.status_in(queue, id).await? {
                    Some(status) if status.state.is_terminal() => {
                        return Ok(Waited::Done(Box::new(status)));
                    }
                    Some(_) => {}
                    None => return Ok(Waited::NotFound),
                }
            }
        }
    }

    /// A job's status and the position of its queue's events stream, read in one MULTI (no
    /// event falls between them): where a follower of the job's events starts. `None`: no job.
    pub async fn status_and_position(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<(JobStatus, String)>, StoreError> {
        let Some(part) = self.holding(queue, id).await? else {
            return Ok(None);
        };
        let keys = keys_for(&part)?;
        let mut conn = self.conn.clone();
        let (fields, last): (HashMap<String, String>, Value) = redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(keys.job(id))
            .cmd("XREVRANGE")
            .arg(keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let status = JobStatus::from_fields(&part, id, fields)
            .map_err(|_| StoreError::Protocol("a job hash with an unknown state"))?;
        Ok(Some((status, newest_entry(&last))))
    }

    /// Every state change in queue `queue`'s events stream after entry `after` (at most 1,000),
    /// as (entry, job id, state); with the position to read on from. `block`: wait up to this
    /// long for the first (on a blocking connection); `None` answers at once.
    pub async fn queue_events<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
        queue: &str,
        after: &str,
        block: Option<Duration>,
    ) -> Result<(String, Vec<(String, String, JobState)>), StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1000);
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(block.min(LONGEST_BLOCK).as_millis().max(1) as u64);
        }
        let reply: Value = cmd
            .arg("STREAMS")
            .arg(keys.events())
            .arg(after)
            .query_async(conn)
            .await?;
        let mut last = after.to_string();
        let mut changes = Vec::new();
        for (entry, fields) in reply::read_entries(&reply).unwrap_or_default() {
            // One entry names one job (`id`) or, for a batch, many (`ids`, space-separated).
            if let Some(state) = fields.get("state").and_then(|s| s.parse::<JobState>().ok()) {
                let ids = fields.get("id").into_iter().chain(fields.get("ids"));
                for job in ids.flat_map(|v| v.split(' ')).filter(|j| !j.is_empty()) {
                    changes.push((entry.clone(), job.to_string(), state));
                }
            }
            last = entry;
        }
        Ok((last, changes))
    }

    /// Job `id`'s changes after entry `after` that the events stream holds now (no waiting), up
    /// to the stream's end; with the position read to.
    pub async fn job_events_now(
        &self,
        queue: &str,
        id: &str,
        after: &str,
    ) -> Result<(String, Vec<(String, JobState)>), StoreError> {
        let mut conn = self.conn.clone();
        let mut after = after.to_string();
        let mut mine = Vec::new();
        loop {
            let (last, all) = self.queue_events(&mut conn, queue, &after, None).await?;
            if last == after {
                return Ok((after, mine));
            }
            after = last;
            mine.extend(
                all.into_iter()
                    .filter(|(_, job, _)| job == id)
                    .map(|(entry, _, state)| (entry, state)),
            );
        }
    }

    /// The newest entry of queue `queue`'s events stream (`0-0` when empty): where a follower
    /// that wants only what comes next starts.
    pub async fn events_position(&self, queue: &str) -> Result<String, StoreError> {
        let keys = keys_for(queue)?;
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(newest_entry(&reply))
    }

    /// Cancels a job that has not started (queued, scheduled or retrying).
    pub async fn cancel(&self, queue: &str, id: &str) -> Result<CancelOutcome, StoreError> {
        let Some(part) = self.holding(queue, id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        let queue = part.as_str();
        let keys = keys_for(queue)?;
        let reply: Vec<String> = Self::fcall("sluice_cancel", &keys)
            .arg(keys::GROUP)
            .arg(id)
            .arg(self.settings.retention.as_millis() as u64)
            .arg(self.settings.events_maxlen)
            .run(self)
            .await?;
        let state = |s: &str| s.parse().map_err(|_| StoreError::Protocol("sluice_cancel"));
        match reply.as_slice() {
            [o, prev] if o == "cancelled" => Ok(CancelOutcome::Cancelled(state(prev)?)),
            [o, st] if o == "refused" => Ok(CancelOutcome::Refused(state(st)?)),
            [o, _] if o == "missing" => Ok(CancelOutcome::NotFound),
            _ => Err(StoreError::Protocol("sluice_cancel")),
        }
    }
}

/// The id of the newest entry of an `XREVRANGE … COUNT 1` reply (`0-0` for an empty stream).
fn newest_entry(reply: &Value) -> String {
    reply::stream_entries(reply)
        .and_then(|e| e.into_iter().next())
        .map(|(entry, _)| entry)
        .unwrap_or_else(|| "0-0".to_string())
}
