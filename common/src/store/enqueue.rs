//! Enqueueing (`sluice_enqueue_many`): batches per queue slot, registration of new queues, the
//! partition a job is routed to, and the reply per job (created, duplicate, conflict, refused).

use super::*;

/// What enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The id of the job that now owns this work: the new job, or the earlier one on a duplicate.
    pub id: String,
    /// False when the dedupe key (or the id) already belonged to a job.
    pub created: bool,
    /// A duplicate whose owner was enqueued with another request (its spec's SHA-1 differs):
    /// the same key reused for different work. Never true when `created`.
    pub conflict: bool,
    /// The owning job's state; `None` when its hash has expired but its dedupe key has not.
    pub state: Option<JobState>,
}

/// A per-job refusal of `sluice_enqueue_many` ("SLUICE_INVALID why") as the error the
/// single-job call's error reply gives.
pub(super) fn refusal(text: &str) -> StoreError {
    let (code, why) = text.split_once(' ').unwrap_or((text, ""));
    match code {
        "SLUICE_TOO_LARGE" => StoreError::TooLarge(why.to_string()),
        "SLUICE_INVALID" => StoreError::Invalid(why.to_string()),
        _ => StoreError::Invalid(text.to_string()),
    }
}

pub(super) fn parse_enqueued(v: Value) -> Result<Enqueued, StoreError> {
    if let Value::ServerError(e) = v {
        return Err(StoreError::from_redis(e.into()));
    }
    let bad = || StoreError::Protocol("sluice_enqueue");
    let f = array(&v).ok_or_else(bad)?;
    let s = |i: usize| f.get(i).and_then(text).ok_or_else(bad);
    let (created, conflict) = match s(0)?.as_str() {
        "created" => (true, false),
        "duplicate" => (false, false),
        "conflict" => (false, true),
        // A refusal of this job alone, worded as the single-job call's error reply.
        "error" => return Err(refusal(&s(1)?)),
        _ => return Err(bad()),
    };
    Ok(Enqueued {
        id: s(1)?,
        created,
        conflict,
        state: s(2)?.parse().ok(),
    })
}

impl Store {
    /// One `sluice_enqueue_many` call for `jobs` (all of one queue).
    pub(super) fn enqueue_many_cmd(&self, queue: &str, jobs: &[&PreparedJob]) -> redis::Cmd {
        let keys = QueueKeys::new(queue);
        let mut cmd = Self::fcall("sluice_enqueue_many", &keys);
        cmd.arg(self.settings.max_job_bytes)
            .arg(self.settings.events_maxlen);
        for job in jobs {
            let (dkey, dttl) = match &job.dedupe {
                Some((k, ttl)) => (k.as_str(), *ttl),
                None => ("", 0),
            };
            let (delay_ms, run_at_ms) = match job.schedule {
                Schedule::Now => (0, 0),
                Schedule::After(d) => (d.as_millis() as u64, 0),
                Schedule::At(ms) => (0, ms),
            };
            cmd.arg(job.id.as_str())
                .arg(&job.spec_json)
                .arg(dkey)
                .arg(dttl)
                .arg(delay_ms)
                .arg(run_at_ms);
        }
        cmd
    }

    /// Queues of `jobs` not yet registered in `sluice:queues` by this process.
    pub(super) fn unregistered<'a>(&self, queues: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut known = self
            .known_queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queues
            .filter(|q| known.insert(q.to_string()))
            .map(str::to_string)
            .collect()
    }

    /// Lets a later call register these queues again (their registration failed).
    pub(super) fn forget_queues(&self, queues: &[String]) {
        let mut known = self
            .known_queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for q in queues {
            known.remove(q);
        }
    }

    /// Enqueues one job (one round trip, plus a one-time registration of its queue).
    pub async fn enqueue(&self, job: &PreparedJob) -> Result<Enqueued, StoreError> {
        let mut results = self.enqueue_batch(std::slice::from_ref(job)).await?;
        results
            .pop()
            .ok_or(StoreError::Protocol("sluice_enqueue"))?
    }

    /// Enqueues many jobs in one pipeline (on a cluster: one call per queue slot, all sent at
    /// once). The outer error is a failure of the whole round trip; each job has its own result
    /// (a refusal of one does not affect the others).
    pub async fn enqueue_batch(
        &self,
        jobs: &[PreparedJob],
    ) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        // Each job's queue, or the partition its dedupe key (else its id) maps to.
        let routed: Vec<String> = jobs.iter().map(|j| self.route(j)).collect();
        let new_queues = self.unregistered(jobs.iter().map(|j| j.queue.as_str()));
        if !new_queues.is_empty()
            && let Err(e) = self.check_partitions(&new_queues).await
        {
            self.forget_queues(&new_queues);
            return Err(e);
        }
        let mut cmds = Vec::new();
        if !new_queues.is_empty() {
            let mut sadd = redis::cmd("SADD");
            sadd.arg(keys::QUEUES).arg(&new_queues);
            cmds.push(sadd);
        }
        // One call per queue, jobs in input order within it.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, queue) in routed.iter().enumerate() {
            match groups.iter_mut().find(|(q, _)| *q == queue.as_str()) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((queue.as_str(), vec![i])),
            }
        }
        for (queue, idx) in &groups {
            let group: Vec<&PreparedJob> = idx.iter().map(|&i| &jobs[i]).collect();
            cmds.push(self.enqueue_many_cmd(queue, &group));
        }
        let mut replies = match self.send_all(&cmds).await {
            Ok(r) if r.len() == cmds.len() => r,
            other => {
                self.forget_queues(&new_queues);
                return Err(match other {
                    Err(e) => e,
                    Ok(_) => StoreError::Protocol("sluice_enqueue_many"),
                });
            }
        };
        if !new_queues.is_empty()
            && let Err(e) = replies.remove(0)
            && !matches!(e, StoreError::Denied(_))
        {
            // The jobs are in; let a later call register their queues (unless this user may
            // not: then it would only be refused again).
            self.forget_queues(&new_queues);
        }
        let mut results: Vec<Option<Result<Enqueued, StoreError>>> =
            (0..jobs.len()).map(|_| None).collect();
        for ((_, idx), reply) in groups.iter().zip(replies) {
            match reply {
                Ok(Value::Array(items)) if items.len() == idx.len() => {
                    for (&i, item) in idx.iter().zip(items) {
                        results[i] = Some(parse_enqueued(item));
                    }
                }
                Ok(_) => return Err(StoreError::Protocol("sluice_enqueue_many")),
                // The whole call failed (no library, denied, not replicated, …): every job of
                // it says why.
                Err(e) => {
                    for &i in idx {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Protocol("sluice_enqueue_many"))))
            .collect())
    }

    /// Sends writes in one round trip and returns each one's reply. On one server they go as one
    /// pipeline; on a cluster each goes to the primary of its slot, all at once. With
    /// `wait_replicas`, each is followed by a `WAIT` on the same node, and a write that too few
    /// replicas confirmed is an error. The outer error is a failure of the whole round trip.
    pub(super) async fn send_all(
        &self,
        cmds: &[redis::Cmd],
    ) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let mut replies = self.send_all_once(cmds).await?;
        // Redis lost the library (see `Run`): load it and send what it refused once more.
        let refused: Vec<usize> = (0..replies.len())
            .filter(|&i| matches!(&replies[i], Err(StoreError::Redis(e)) if missing_library(e)))
            .collect();
        if !refused.is_empty() {
            self.load_library().await?;
            let again: Vec<redis::Cmd> = refused.iter().map(|&i| cmds[i].clone()).collect();
            for (i, r) in refused.into_iter().zip(self.send_all_once(&again).await?) {
                replies[i] = r;
            }
        }
        Ok(replies)
    }

    pub(super) async fn send_all_once(
        &self,
        cmds: &[redis::Cmd],
    ) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let wait = self.settings.wait_replicas;
        let wait_cmd = || {
            let mut c = redis::cmd("WAIT");
            c.arg(wait)
                .arg(self.settings.wait_timeout.as_millis() as u64);
            c
        };
        let checked = |reply: Value, acked: Option<&Value>| -> Result<Value, StoreError> {
            if let Value::ServerError(e) = reply {
                return Err(StoreError::from_redis(e.into()));
            }
            if let Some(Value::ServerError(e)) = acked {
                // WAIT itself was refused (an ACL user without it, say): say that, not "0 replicas".
                return Err(StoreError::from_redis(e.clone().into()));
            }
            match acked.map(|a| int(a).unwrap_or(0).max(0) as u64) {
                Some(acked) if acked < u64::from(wait) => Err(StoreError::NotReplicated {
                    acked,
                    wanted: wait,
                }),
                _ => Ok(reply),
            }
        };
        match &self.conn {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                if wait > 0 {
                    pipe.add_command(wait_cmd());
                }
                let mut replies: Vec<Value> = pipe.query_async(&mut c.clone()).await?;
                let acked = (wait > 0).then(|| replies.pop()).flatten();
                Ok(replies
                    .into_iter()
                    .map(|r| checked(r, acked.as_ref()))
                    .collect())
            }
            Conn::Cluster(c) => {
                let sent = cmds.iter().map(|cmd| {
                    let mut c = c.clone();
                    let mut pipe = redis::pipe();
                    pipe.ignore_errors().add_command(cmd.clone());
                    if wait > 0 {
                        // No key: the pipeline goes to the node of the write before it.
                        pipe.add_command(wait_cmd());
                    }
                    async move {
                        let mut replies: Vec<Value> = pipe
                            .query_async(&mut c)
                            .await
                            .map_err(StoreError::from_redis)?;
                        let acked = (wait > 0).then(|| replies.pop()).flatten();
                        let reply = replies
                            .pop()
                            .ok_or(StoreError::Protocol("cluster pipeline"))?;
                        checked(reply, acked.as_ref())
                    }
                });
                Ok(futures::future::join_all(sent).await)
            }
        }
    }

    /// The partition count of `queue` in this process's config (1: not partitioned).
    pub(super) fn partition_count(&self, queue: &str) -> u32 {
        self.settings
            .partitions
            .get(queue)
            .copied()
            .unwrap_or(1)
            .max(1)
    }

    /// Refuses queues whose workers recorded another partition count than ours (one round trip,
    /// the first time this process enqueues to a queue).
    pub(super) async fn check_partitions(&self, queues: &[String]) -> Result<(), StoreError> {
        // HGETs, not one HMGET: the shipped producer ACL user has HGET (docs/PROTOCOL.md, ACLs).
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("HGET").arg(keys::PARTITIONS).arg(q);
        }
        let mut conn = self.conn.clone();
        let recorded: Vec<Option<u32>> = match pipe.query_async(&mut conn).await {
            Ok(r) => r,
            // A user that may not read the registry enqueues unchecked, as before it existed.
            Err(e) if e.code() == Some("NOPERM") => return Ok(()),
            Err(e) => return Err(StoreError::from_redis(e)),
        };
        for (queue, workers) in queues.iter().zip(recorded) {
            let ours = self.partition_count(queue);
            if let Some(workers) = workers
                && workers != ours
            {
                return Err(StoreError::Partitions {
                    queue: queue.clone(),
                    workers,
                    ours,
                });
            }
        }
        Ok(())
    }

    /// Records the partition count of each queue a worker consumes whole (`hot`, not `hot#3`);
    /// returns the queues whose count was recorded otherwise before (another worker's config),
    /// with that count.
    pub async fn record_partitions(
        &self,
        queues: &[String],
    ) -> Result<Vec<(String, u32)>, StoreError> {
        let whole: Vec<&String> = queues
            .iter()
            .filter(|q| keys::split_partition(q).is_none())
            .collect();
        if whole.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let before: Vec<Option<u32>> = redis::cmd("HMGET")
            .arg(keys::PARTITIONS)
            .arg(&whole)
            .query_async(&mut conn)
            .await?;
        let mut set = redis::cmd("HSET");
        set.arg(keys::PARTITIONS);
        for q in &whole {
            set.arg(q.as_str()).arg(self.partition_count(q));
        }
        set.query_async::<()>(&mut conn).await?;
        Ok(whole
            .into_iter()
            .zip(before)
            .filter_map(|(q, b)| {
                b.filter(|&b| b != self.partition_count(q))
                    .map(|b| (q.clone(), b))
            })
            .collect())
    }

    /// The queue a job goes to: its own, or for a partitioned queue the partition its dedupe key
    /// (else its id) maps to.
    pub(super) fn route(&self, job: &PreparedJob) -> String {
        match self.partition_count(&job.queue) {
            1 => job.queue.clone(),
            p => {
                let key = job.dedupe.as_ref().map_or(job.id.0.as_str(), |(k, _)| k);
                keys::partition(&job.queue, keys::partition_of(key, p))
            }
        }
    }

    /// The queues that hold `queue`'s jobs: its partitions `Q#0 … Q#P-1`, or itself.
    pub fn partitions_of(&self, queue: &str) -> Vec<String> {
        match self.partition_count(queue) {
            1 => vec![queue.to_string()],
            p => (0..p).map(|i| keys::partition(queue, i)).collect(),
        }
    }
}
