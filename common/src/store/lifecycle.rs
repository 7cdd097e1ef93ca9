//! A job through a worker: `sluice_fetch`, `sluice_start`, `sluice_complete`, `sluice_retry`,
//! `sluice_dead`, `sluice_promote`, `sluice_release`. Beside it, `delivery.rs`: the consumer
//! groups, blocking reads and leases.

use super::*;

/// What the start function says of one delivered entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// Run it: the spec as stored and the attempt number in this life.
    Run {
        entry: String,
        id: String,
        spec: String,
        attempt: u32,
        /// Waits (rate limit, quota, auth) so far in this life.
        waits: u32,
        /// When the job became runnable (enqueued, or its scheduled time), Unix ms; 0 if unknown.
        ready_ms: u64,
    },
    /// Terminal, cancelled or stale: acked and removed already.
    Skip { entry: String, id: String },
    /// No such job: left pending for the caller to dead-letter as malformed.
    Missing { entry: String, id: String },
    /// An entry that names no job (from `fetch`): left pending for the caller to dead-letter,
    /// with an excerpt of its fields.
    Malformed { entry: String, raw: String },
    /// The queue is paused: nothing was started; a delivered job was handed back (queued again
    /// under a new entry). From `fetch`, entry and id are empty.
    Paused { entry: String, id: String },
    /// The job's key holds something that is not a job (another type: Redis said WRONGTYPE):
    /// left pending for the caller to dead-letter as `corrupt`, the key left alone.
    Corrupt {
        entry: String,
        id: String,
        error: String,
    },
}

/// An entry read from a queue's stream: its id and its fields (normally just `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub entry: String,
    pub fields: HashMap<String, String>,
}

/// What a promote call did, with the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    pub promoted: u64,
    pub next_due_ms: Option<u64>,
    pub now_ms: u64,
}

/// What a retry spends: a call that failed spends an attempt; a rate-limit or quota answer
/// spends a wait; a job deferred before its call (limiter, hold, open circuit) spends neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    Attempt,
    Wait,
    Neither,
}

impl Spend {
    fn wire(self) -> &'static str {
        match self {
            Spend::Attempt => "1",
            Spend::Wait => "0",
            Spend::Neither => "n",
        }
    }
}

/// What complete, retry or dead-letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Done,
    /// The job was not running (already terminal, or never started): nothing was changed.
    Refused(String),
}

/// A finished job to record as completed (see [`Store::complete_many`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    pub id: String,
    /// The stream entry it was delivered as (acknowledged by the completion).
    pub entry: String,
    /// The answer's body.
    pub result: String,
    pub http_status: u16,
    /// More fields stored with the result (`usage`, `headers`, `called_ms`).
    pub fields: Vec<(String, String)>,
}

/// A running job's sleep in the delayed ZSET (`sluice_retry`): a backoff, a provider's wait, or a
/// deferral before the call.
#[derive(Debug, Clone, Copy)]
pub struct Sleep<'a> {
    pub id: &'a str,
    /// The stream entry the job runs under.
    pub entry: &'a str,
    pub delay: Duration,
    /// The failure class (`transient`, `rate_limited`, …) or why the call was deferred.
    pub class: &'a str,
    pub error: &'a str,
    pub http_status: Option<u16>,
    /// What the sleep spends: an attempt, a wait, or neither.
    pub spend: Spend,
}

/// A dead letter (`sluice_dead`): a job's, or with an empty `id` a raw stream entry's that names
/// no runnable job (`raw` keeps an excerpt of what it held).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadLetter<'a> {
    pub id: &'a str,
    pub entry: &'a str,
    /// `exhausted`, `invalid`, `malformed`, `poison`, …
    pub reason: &'a str,
    pub error: &'a str,
    pub http_status: Option<u16>,
    pub raw: &'a str,
}

impl Store {
    /// Reads up to `count` new entries of the queue for `consumer` without blocking and starts
    /// them, in one round trip (empty when there are none).
    pub async fn fetch(
        &self,
        queue: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Started>, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_fetch", &keys);
        cmd.arg(keys::GROUP)
            .arg(self.settings.events_maxlen)
            .arg(consumer)
            .arg(count)
            .arg(self.settings.aging.as_millis() as u64);
        self.started(cmd, "sluice_fetch").await
    }

    /// Marks delivered entries running by `consumer` (one call for the whole batch).
    pub async fn start(
        &self,
        queue: &str,
        consumer: &str,
        entries: &[(String, String)],
    ) -> Result<Vec<Started>, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_start", &keys);
        cmd.arg(keys::GROUP)
            .arg(self.settings.events_maxlen)
            .arg(consumer);
        for (entry, id) in entries {
            cmd.arg(entry).arg(id);
        }
        self.started(cmd, "sluice_start").await
    }

    pub(super) async fn started(
        &self,
        cmd: redis::Cmd,
        name: &'static str,
    ) -> Result<Vec<Started>, StoreError> {
        let reply: Value = cmd.run(self).await?;
        decode_started(&reply, name)
    }

    /// Stores a result and completes a running job; refused if it is not running.
    pub async fn complete(
        &self,
        queue: &str,
        id: &str,
        entry: &str,
        result: &str,
        http_status: u16,
        extra: &[(&str, &str)],
    ) -> Result<Transition, StoreError> {
        let one = Completion {
            id: id.to_string(),
            entry: entry.to_string(),
            result: result.to_string(),
            http_status,
            fields: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut t = self
            .complete_many(queue, std::slice::from_ref(&one))
            .await?;
        t.pop().ok_or(StoreError::Protocol("sluice_complete"))
    }

    /// Completes many running jobs of one queue in one call; one transition per job, in order.
    pub async fn complete_many(
        &self,
        queue: &str,
        jobs: &[Completion],
    ) -> Result<Vec<Transition>, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_complete", &keys);
        cmd.arg(keys::GROUP)
            .arg(self.settings.retention.as_millis() as u64)
            .arg(self.settings.events_maxlen);
        for j in jobs {
            cmd.arg(&j.id)
                .arg(&j.entry)
                .arg(&j.result)
                .arg(j.http_status)
                .arg(j.fields.len());
            for (field, value) in &j.fields {
                cmd.arg(field).arg(value);
            }
        }
        let reply: Vec<String> = cmd.run(self).await?;
        if reply.len() != jobs.len() {
            return Err(StoreError::Protocol("sluice_complete"));
        }
        Ok(reply
            .into_iter()
            .map(|r| match r.strip_prefix("refused:") {
                Some(state) => Transition::Refused(state.to_string()),
                None => Transition::Done,
            })
            .collect())
    }

    /// Puts a running job to sleep in the delayed ZSET for `sleep.delay`.
    pub async fn retry(&self, queue: &str, sleep: &Sleep<'_>) -> Result<Transition, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_retry", &keys);
        cmd.arg(keys::GROUP)
            .arg(sleep.id)
            .arg(sleep.entry)
            .arg(sleep.delay.as_millis() as u64)
            .arg(sleep.class)
            .arg(sleep.error)
            .arg(sleep.http_status.map(|s| s.to_string()).unwrap_or_default())
            .arg(sleep.spend.wire())
            .arg(self.settings.events_maxlen);
        self.transition(cmd, "sluice_retry").await
    }

    /// Dead-letters a job (or, with an empty or unknown id, a raw stream entry).
    pub async fn dead_letter(
        &self,
        queue: &str,
        letter: &DeadLetter<'_>,
    ) -> Result<Transition, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_dead", &keys);
        cmd.arg(keys::GROUP)
            .arg(letter.id)
            .arg(letter.entry)
            .arg(letter.reason)
            .arg(letter.error)
            .arg(
                letter
                    .http_status
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            )
            .arg(self.settings.dead_retention.as_millis() as u64)
            .arg(self.settings.dead_maxlen)
            .arg(self.settings.events_maxlen)
            .arg(letter.raw);
        self.transition(cmd, "sluice_dead").await
    }

    /// Runs a complete, retry or dead-letter call.
    pub(super) async fn transition(
        &self,
        cmd: redis::Cmd,
        name: &'static str,
    ) -> Result<Transition, StoreError> {
        let reply: Vec<String> = cmd.run(self).await?;
        match reply.first().map(String::as_str) {
            Some("completed" | "retrying" | "dead") => Ok(Transition::Done),
            Some("refused") => Ok(Transition::Refused(
                reply.get(1).cloned().unwrap_or_default(),
            )),
            _ => Err(StoreError::Protocol(name)),
        }
    }

    /// Moves up to `limit` due jobs to the stream; returns how many, and when the next is due.
    pub async fn promote(&self, queue: &str, limit: u32) -> Result<(u64, Option<u64>), StoreError> {
        let p = self.promote_timed(queue, limit, true).await?;
        Ok((p.promoted, p.next_due_ms))
    }

    /// Like `promote`, also returning the server's clock (to sleep until the next due time);
    /// with `trim`, also trims acknowledged entries from the stream.
    pub async fn promote_timed(
        &self,
        queue: &str,
        limit: u32,
        trim: bool,
    ) -> Result<Promoted, StoreError> {
        let keys = keys_for(queue)?;
        let (n, next, now): (i64, i64, i64) = Self::fcall("sluice_promote", &keys)
            .arg(limit)
            .arg(self.settings.events_maxlen)
            .arg(if trim { keys::GROUP } else { "" })
            .run(self)
            .await?;
        Ok(Promoted {
            promoted: n.max(0) as u64,
            next_due_ms: (next >= 0).then_some(next as u64),
            now_ms: now.max(0) as u64,
        })
    }

    /// Hands running jobs back to the queue (shutdown): `(entry, id)` pairs; returns how many.
    pub async fn release(
        &self,
        queue: &str,
        entries: &[(String, String)],
    ) -> Result<u64, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_release", &keys);
        cmd.arg(keys::GROUP).arg(self.settings.events_maxlen);
        for (entry, id) in entries {
            cmd.arg(entry).arg(id);
        }
        cmd.run(self).await
    }
}
