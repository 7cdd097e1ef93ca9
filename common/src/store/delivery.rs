//! Delivery of a queue's entries beyond `sluice_fetch`, in every lane: the consumer groups, the
//! blocking read, and leases: heartbeats, reclaim (XAUTOCLAIM) and the takeover of a dead
//! worker's entries (`sluice_beat`, `sluice_takeover`, `sluice_leave`).

use super::*;

impl Store {
    /// Creates the queue's consumer group (and stream) in every lane where it is missing,
    /// reading from the start.
    pub async fn create_group(&self, queue: &str) -> Result<(), StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        for (_, stream) in keys.lane_streams() {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(keys::GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match r {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(StoreError::Redis(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads up to `count` new entries of each lane for `consumer`, blocking up to `block_ms`
    /// until any lane has one, over `blocking` (a dedicated connection: a blocking read must not
    /// stall the shared one). Entries come named with their lane, higher lanes first.
    pub async fn read_group<C: redis::aio::ConnectionLike + Send>(
        &self,
        blocking: &mut C,
        queue: &str,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<Delivered>, StoreError> {
        let keys = keys_for(queue)?;
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(keys::GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(keys.lane_streams().map(|(_, s)| s).to_vec())
            .arg(&[">"; 3][..])
            .query_async(blocking)
            .await?;
        let lanes: Vec<(String, &str)> = keys.lane_streams().map(|(l, s)| (s, l)).into();
        decode_delivered(&reply, &lanes)
    }

    /// Takes over entries idle longer than `min_idle` (a dead worker's), with their delivery
    /// counts. Entries deleted while pending are dropped from the pending list by Redis.
    pub async fn autoclaim(
        &self,
        queue: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<(Delivered, u64)>, StoreError> {
        let keys = keys_for(queue)?;
        let mut out = Vec::new();
        for (lane, stream) in keys.lane_streams() {
            if out.len() >= count {
                break;
            }
            let claimed = self
                .autoclaim_lane(&stream, consumer, min_idle, count - out.len())
                .await;
            match claimed {
                Ok(claimed) => out.extend(claimed.into_iter().map(|(mut d, n)| {
                    d.entry = keys::lane_entry(lane, &d.entry);
                    (d, n)
                })),
                // A lane without its group (never used) holds nothing to claim.
                Err(StoreError::NoGroup(_)) if !lane.is_empty() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// `autoclaim` in one lane's stream (entries named by their id in it).
    async fn autoclaim_lane(
        &self,
        stream: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<(Delivered, u64)>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(keys::GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let claimed = array(&reply)
            .and_then(|r| r.get(1))
            .and_then(reply::stream_entries)
            .ok_or(StoreError::Protocol("XAUTOCLAIM"))?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // Delivery counts of what we now own (XAUTOCLAIM counted this delivery).
        let first = claimed.first().map(|(e, _)| e.clone()).unwrap_or_default();
        let last = claimed.last().map(|(e, _)| e.clone()).unwrap_or_default();
        let pending: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(keys::GROUP)
            .arg(&first)
            .arg(&last)
            .arg(claimed.len() * 2 + 10)
            .arg(consumer)
            .query_async(&mut conn)
            .await?;
        let counts: HashMap<String, u64> = array(&pending)
            .unwrap_or_default()
            .iter()
            .filter_map(|row| {
                let row = array(row)?;
                Some((text(row.first()?)?, int(row.get(3)?)?.max(0) as u64))
            })
            .collect();
        Ok(claimed
            .into_iter()
            .map(|(entry, fields)| {
                let n = counts.get(&entry).copied().unwrap_or(1);
                (Delivered { entry, fields }, n)
            })
            .collect())
    }

    /// Records that `consumer` is alive on `queue` (`sluice_beat`, the server's clock).
    pub async fn beat(&self, queue: &str, consumer: &str) -> Result<(), StoreError> {
        let keys = keys_for(queue)?;
        let _: Value = Self::fcall("sluice_beat", &keys)
            .arg(consumer)
            .run(self)
            .await?;
        Ok(())
    }

    /// A cleanly stopping worker leaves `queue` (`sluice_leave`): its beat goes, and its consumer
    /// too when nothing is pending for it. `true` when the consumer was forgotten.
    pub async fn leave(&self, queue: &str, consumer: &str) -> Result<bool, StoreError> {
        let keys = keys_for(queue)?;
        let n: i64 = Self::fcall("sluice_leave", &keys)
            .arg(keys::GROUP)
            .arg(consumer)
            .run(self)
            .await?;
        Ok(n == 1)
    }

    /// Takes up to `count` pending entries of consumers whose beats stopped more than
    /// `dead_after` ago (`sluice_takeover`), with their delivery counts (this one included).
    pub async fn takeover(
        &self,
        queue: &str,
        consumer: &str,
        dead_after: Duration,
        count: usize,
    ) -> Result<Vec<(Delivered, u64)>, StoreError> {
        let keys = keys_for(queue)?;
        let reply: Value = Self::fcall("sluice_takeover", &keys)
            .arg(keys::GROUP)
            .arg(consumer)
            .arg(dead_after.as_millis().max(1) as u64)
            .arg(count.max(1))
            .run(self)
            .await?;
        decode_takeover(&reply)
    }

    /// Resets the idle time of our in-flight entries so no one reclaims a live, slow call.
    pub async fn heartbeat(
        &self,
        queue: &str,
        consumer: &str,
        entries: &[String],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let keys = keys_for(queue)?;
        let mut pipe = redis::pipe();
        for (lane, stream) in keys.lane_streams() {
            let raws: Vec<&str> = entries
                .iter()
                .map(|e| keys::split_entry(e))
                .filter(|(l, _)| *l == lane)
                .map(|(_, raw)| raw)
                .collect();
            if !raws.is_empty() {
                pipe.cmd("XCLAIM")
                    .arg(stream)
                    .arg(keys::GROUP)
                    .arg(consumer)
                    .arg(0)
                    .arg(raws)
                    .arg("JUSTID")
                    .ignore();
            }
        }
        let mut conn = self.conn.clone();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}
