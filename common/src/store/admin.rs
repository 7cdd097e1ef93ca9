//! What operators do: queue numbers, the dead-letter stream (list, re-drive, purge), pause, and
//! tidying idle consumers.

use super::*;

/// One entry of the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadEntry {
    /// Entry id in the dead stream (what re-drive and purge take).
    pub entry: String,
    pub id: String,
    pub reason: String,
    pub status: String,
    pub attempts: u32,
    pub error: String,
    pub upstream: String,
    pub at_ms: u64,
    /// Raw fields of a malformed stream entry that had no job.
    pub raw: String,
}

/// Re-drive counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Redriven {
    pub redriven: u64,
    /// No job hash (a raw dead letter, or its hash expired): nothing to re-drive; the entry is
    /// kept until `purge`.
    pub kept: u64,
    /// Not dead any more (its entry is kept), or no such entry.
    pub skipped: u64,
}

/// A queue's numbers for `sluice stats`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Partitions summed here (1: not partitioned).
    pub partitions: u32,
    /// Entries in the ready stream (delivered or not).
    pub stream_len: u64,
    /// Entries not yet delivered to any worker (consumer-group lag).
    pub lag: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Consumers in the group, live or not (a killed worker's stays until it is taken over).
    pub consumers: u64,
    /// Workers whose heartbeat on this queue is recent (within three beats).
    pub workers: u64,
    pub delayed: u64,
    pub dead_len: u64,
    pub paused: bool,
    /// Gauges for live states, totals for terminal ones, plus `deduplicated` and friends.
    pub counts: BTreeMap<String, i64>,
    /// The lanes other than normal (`high`, `low`); their entries are in the sums above too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<LaneStats>,
}

/// One lane's share of a queue's ready stream.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct LaneStats {
    pub lane: String,
    pub stream_len: u64,
    pub lag: Option<u64>,
}

impl Store {
    /// Whether the queue is paused.
    pub async fn is_paused(&self, queue: &str) -> Result<bool, StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        Ok(redis::cmd("EXISTS")
            .arg(keys.paused())
            .query_async::<i64>(&mut conn)
            .await?
            == 1)
    }

    /// Removes consumers with nothing pending that have been idle longer than `idle`
    /// (workers that are gone), from every lane's group; returns how many (of the normal lane).
    pub async fn tidy_consumers(&self, queue: &str, idle: Duration) -> Result<u64, StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        let mut removed = 0;
        for (lane, stream) in keys.lane_streams() {
            let reply: Value = match redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&stream)
                .arg(keys::GROUP)
                .query_async(&mut conn)
                .await
            {
                Ok(r) => r,
                // A lane never used has no group.
                Err(e) if !lane.is_empty() && e.code().is_some() => continue,
                Err(e) => return Err(e.into()),
            };
            for c in array(&reply).unwrap_or_default() {
                let c = reply::map_values(c).unwrap_or_default();
                let pending = c.get("pending").and_then(int).unwrap_or(1);
                let idle_ms = c.get("idle").and_then(int).unwrap_or(0);
                if let Some(name) = c.get("name").and_then(text)
                    && pending == 0
                    && idle_ms as u128 > idle.as_millis()
                {
                    let _: i64 = redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(&stream)
                        .arg(keys::GROUP)
                        .arg(&name)
                        .query_async(&mut conn)
                        .await?;
                    removed += u64::from(lane.is_empty());
                }
            }
        }
        Ok(removed)
    }

    /// Reads up to `count` dead-letter entries after `after` (exclusive; `None` from the start).
    pub async fn dead_list(
        &self,
        queue: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadEntry>, StoreError> {
        let keys = keys_for(queue)?;
        let start = match after {
            Some(id) => format!("({id}"),
            None => "-".to_string(),
        };
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(keys.dead())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        reply::stream_entries(&reply)
            .ok_or(StoreError::Protocol("XRANGE dead"))
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|(entry, f)| {
                        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                        DeadEntry {
                            id: get("id"),
                            reason: get("reason"),
                            status: get("status"),
                            attempts: get("attempts").parse().unwrap_or(0),
                            error: get("error"),
                            upstream: get("upstream"),
                            at_ms: get("at_ms").parse().unwrap_or(0),
                            raw: get("raw"),
                            entry,
                        }
                    })
                    .collect()
            })
    }

    /// Re-drives dead-letter entries: their jobs are queued again with attempts reset.
    pub async fn redrive(&self, queue: &str, entries: &[String]) -> Result<Redriven, StoreError> {
        let keys = keys_for(queue)?;
        let (redriven, kept, skipped): (u64, u64, u64) = Self::fcall("sluice_redrive", &keys)
            .arg(self.settings.events_maxlen)
            .arg(entries)
            .run(self)
            .await?;
        Ok(Redriven {
            redriven,
            kept,
            skipped,
        })
    }

    /// Deletes dead-letter entries and their dead jobs; returns how many entries went.
    pub async fn purge(&self, queue: &str, entries: &[String]) -> Result<u64, StoreError> {
        let keys = keys_for(queue)?;
        Self::fcall("sluice_purge", &keys)
            .arg(entries)
            .run(self)
            .await
    }

    /// Deletes the queue's cached answers (of `upstream` only, when given), every partition;
    /// how many went.
    pub async fn purge_cache(
        &self,
        queue: &str,
        upstream: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for part in self.partitions_of(queue) {
            let keys = keys_for(&part)?;
            let mut offset: i64 = 0;
            while offset >= 0 {
                let (n, next): (u64, i64) = Self::fcall("sluice_cache_purge", &keys)
                    .arg(upstream.unwrap_or(""))
                    .arg(offset)
                    .arg(1000)
                    .run(self)
                    .await?;
                deleted += n;
                offset = next;
            }
        }
        Ok(deleted)
    }

    /// Pauses (workers stop fetching from the queue) or resumes it; every partition of a
    /// partitioned queue.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        for part in self.partitions_of(queue) {
            let keys = keys_for(&part)?;
            let mut conn = self.conn.clone();
            let cmd = if paused {
                let mut c = redis::cmd("SET");
                c.arg(keys.paused()).arg("1");
                c
            } else {
                let mut c = redis::cmd("DEL");
                c.arg(keys.paused());
                c
            };
            cmd.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    /// Every queue that a Sluice producer has enqueued to.
    pub async fn queues(&self) -> Result<Vec<String>, StoreError> {
        self.members(keys::QUEUES).await
    }

    /// A queue's numbers, read in one pipeline; a partitioned queue's are the sums over its
    /// partitions (consumers: the most any partition has).
    pub async fn stats(&self, queue: &str) -> Result<QueueStats, StoreError> {
        let parts = self.partitions_of(queue);
        if parts.len() == 1 {
            return self.stats_of(queue).await;
        }
        let each = futures::future::try_join_all(parts.iter().map(|p| self.stats_of(p))).await?;
        let mut sum = QueueStats {
            queue: queue.to_string(),
            partitions: parts.len() as u32,
            ..QueueStats::default()
        };
        for s in each {
            sum.stream_len += s.stream_len;
            sum.lag = match (sum.lag, s.lag) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            sum.pending += s.pending;
            sum.consumers = sum.consumers.max(s.consumers);
            sum.workers = sum.workers.max(s.workers);
            sum.delayed += s.delayed;
            sum.dead_len += s.dead_len;
            sum.paused |= s.paused;
            for (k, v) in s.counts {
                *sum.counts.entry(k).or_default() += v;
            }
        }
        Ok(sum)
    }

    /// One queue's (or partition's) numbers, read in one pipeline.
    pub(super) async fn stats_of(&self, queue: &str) -> Result<QueueStats, StoreError> {
        let keys = keys_for(queue)?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("ZCARD")
            .arg(keys.delayed())
            .cmd("XLEN")
            .arg(keys.dead())
            .cmd("EXISTS")
            .arg(keys.paused())
            .cmd("HGETALL")
            .arg(keys.counts())
            .cmd("HVALS")
            .arg(keys.beats())
            .cmd("TIME");
        // Then each lane's length and group: 6 + 2 × lane.
        for (_, stream) in keys.lane_streams() {
            pipe.cmd("XLEN")
                .arg(&stream)
                .cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream);
        }
        let mut conn = self.conn.clone();
        let r: Vec<Value> = pipe.query_async(&mut conn).await?;
        let n = |i: usize| r.get(i).and_then(int).unwrap_or(0).max(0) as u64;
        let mut stats = QueueStats {
            queue: queue.to_string(),
            partitions: 1,
            delayed: n(0),
            dead_len: n(1),
            paused: n(2) == 1,
            ..QueueStats::default()
        };
        if let Some(map) = r.get(3).and_then(reply::map) {
            stats.counts = map
                .into_iter()
                .map(|(k, v)| (k, v.parse().unwrap_or(0)))
                .collect();
        }
        let mut lag = Some(0);
        for (i, (lane, _)) in keys.lane_streams().iter().enumerate() {
            let len = n(6 + 2 * i);
            stats.stream_len += len;
            let mut lane_lag = None;
            for g in r.get(7 + 2 * i).and_then(array).unwrap_or_default() {
                let g = reply::map_values(g).unwrap_or_default();
                if g.get("name").and_then(text).as_deref() == Some(keys::GROUP) {
                    stats.pending += g.get("pending").and_then(int).unwrap_or(0).max(0) as u64;
                    let consumers = g.get("consumers").and_then(int).unwrap_or(0).max(0) as u64;
                    stats.consumers = stats.consumers.max(consumers);
                    lane_lag = g.get("lag").and_then(int).map(|l| l.max(0) as u64);
                }
            }
            // A lane without a group (never used) is empty: no lag.
            let lane_lag = lane_lag.or((len == 0).then_some(0));
            lag = lag.zip(lane_lag).map(|(a, b)| a + b);
            if !lane.is_empty() {
                stats.lanes.push(LaneStats {
                    lane: lane.to_string(),
                    stream_len: len,
                    lag: lane_lag,
                });
            }
        }
        stats.lag = lag;
        // Beats are the server's clock (ms); so is `now`.
        let now = r.get(5).and_then(array).and_then(|t| {
            let secs = t.first().and_then(int)?;
            let micros = t.get(1).and_then(int)?;
            Some(secs * 1000 + micros / 1000)
        });
        if let (Some(now), Some(beats)) = (now, r.get(4).and_then(array)) {
            let live_within = 3 * self.settings.heartbeat.as_millis() as i64;
            stats.workers = beats
                .iter()
                .filter_map(int)
                .filter(|&beat| now - beat <= live_within)
                .count() as u64;
        }
        Ok(stats)
    }
}
