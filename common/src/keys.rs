//! The Redis key layout. Nothing outside this module spells a key.
//!
//! Every key of queue `Q` starts with `sluice:{Q}:`, so the whole queue hashes to one Redis Cluster
//! slot and each server-side function (which gets that prefix as its one key) stays in that slot.

/// The consumer group every worker of every queue reads through.
pub const GROUP: &str = "sluice";

/// A set of every queue name ever enqueued to (for `sluice stats` without a queue).
pub const QUEUES: &str = "sluice:queues";

/// The keys of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    queue: String,
    prefix: String,
}

/// A queue's lanes, in the order they are read: `high`, normal (`""`), `low` (the streams
/// `stream:high`, `stream`, `stream:low`). An entry of a lane other than normal is named
/// `<lane>/<ms>-<seq>` wherever an entry is named (docs/PROTOCOL.md, "Lanes").
pub const LANES: [&str; 3] = ["high", "", "low"];

/// The lane of an entry as functions name it, and its id in the lane's stream.
pub fn split_entry(entry: &str) -> (&str, &str) {
    match entry.split_once('/') {
        Some((lane, raw)) if LANES.contains(&lane) => (lane, raw),
        _ => ("", entry),
    }
}

/// An entry of `lane`'s stream as functions name it.
pub fn lane_entry(lane: &str, raw: &str) -> String {
    if lane.is_empty() {
        raw.to_string()
    } else {
        format!("{lane}/{raw}")
    }
}

impl QueueKeys {
    /// The caller has validated `queue` (see `validate::queue_name`).
    pub fn new(queue: &str) -> Self {
        QueueKeys {
            queue: queue.to_string(),
            prefix: format!("sluice:{{{queue}}}:"),
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// `sluice:{Q}:` — the one key every function call names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Stream of ready jobs, read through the consumer group: the normal lane.
    pub fn stream(&self) -> String {
        self.key("stream")
    }

    /// The ready stream of lane `lane` (`""`: normal, `stream`).
    pub fn lane_stream(&self, lane: &str) -> String {
        if lane.is_empty() {
            self.stream()
        } else {
            self.key(&format!("stream:{lane}"))
        }
    }

    /// Every lane with its stream, in the order fetch reads them.
    pub fn lane_streams(&self) -> [(&'static str, String); 3] {
        LANES.map(|lane| (lane, self.lane_stream(lane)))
    }

    /// ZSET of job ids scored by due time (ms): scheduled jobs and backoff sleeps.
    pub fn delayed(&self) -> String {
        self.key("delayed")
    }

    /// Stream of dead-lettered jobs with their reason.
    pub fn dead(&self) -> String {
        self.key("dead")
    }

    /// Capped stream of state changes.
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// Hash of per-state counters.
    pub fn counts(&self) -> String {
        self.key("counts")
    }

    /// Present while the queue is paused.
    pub fn paused(&self) -> String {
        self.key("paused")
    }

    /// Hash of each worker's last heartbeat on this queue (consumer → server ms).
    pub fn beats(&self) -> String {
        self.key("beats")
    }

    /// Hash of one job.
    pub fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }

    /// String holding the id of the job that owns a dedupe key.
    pub fn dedupe(&self, key: &str) -> String {
        self.key(&format!("dedupe:{key}"))
    }
}

/// A hash of each queue's partition count as its workers were configured (queue → P), so a
/// producer configured otherwise is refused instead of writing to partitions nobody reads.
pub const PARTITIONS: &str = "sluice:partitions";

/// A set of every upstream name a worker has been configured with (for `sluice stats`).
pub const UPSTREAMS: &str = "sluice:upstreams";

/// The prefix of one upstream's fleet-wide limiter, hold and circuit keys: `sluice:{u:NAME}:`.
/// The upstream's own hash tag keeps them in one Redis Cluster slot.
pub fn upstream_prefix(upstream: &str) -> String {
    format!("sluice:{{u:{upstream}}}:")
}

/// The keys of one upstream's fleet-wide limiter that are read outside the library (`sluice
/// stats`): its circuit hash, its provider hold and its adaptive rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamKeys {
    prefix: String,
}

impl UpstreamKeys {
    pub fn new(upstream: &str) -> Self {
        UpstreamKeys {
            prefix: upstream_prefix(upstream),
        }
    }

    /// `sluice:{u:NAME}:` — the one key the limiter's functions name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hash of the circuit: state, until, reason, opens.
    pub fn circuit(&self) -> String {
        format!("{}circuit", self.prefix)
    }

    /// The provider's hold (Unix ms until which nobody calls), with a TTL.
    pub fn hold(&self) -> String {
        format!("{}hold", self.prefix)
    }

    /// Hash of the adaptive rate (an adaptive upstream's current requests per minute).
    pub fn adaptive(&self) -> String {
        format!("{}adaptive", self.prefix)
    }
}

/// The name of partition `i` of queue `queue`: `queue#i`. Each partition is a queue of its own
/// with its own hash tag, so a cluster spreads a partitioned queue's slots over its masters.
pub fn partition(queue: &str, i: u32) -> String {
    format!("{queue}#{i}")
}

/// Splits a partition's name `Q#i` into `Q` and `i`; `None` for a plain queue name.
pub fn split_partition(name: &str) -> Option<(&str, u32)> {
    let (base, index) = name.rsplit_once('#')?;
    if index.is_empty() || index.len() > 4 || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, index.parse().ok()?))
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part inside the first
/// `{…}` that is not empty) or of the whole key, modulo 16384.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(bytes) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The queue a name belongs to: `Q` for a partition `Q#i`, else the name itself.
pub fn base_queue(name: &str) -> &str {
    split_partition(name).map_or(name, |(base, _)| base)
}

/// The partition (of `partitions`) that a job with routing key `key` goes to: FNV-1a (64-bit)
/// of the key's bytes, modulo the count. The key is the job's dedupe key, else its id, so every
/// job of one dedupe key lands in one partition and dedupe still holds. Foreign producers use
/// the same function (docs/PROTOCOL.md).
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_spec() {
        // CRC16/XMODEM("123456789") = 0x31C3 (the Redis Cluster spec's test vector).
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        // An empty tag hashes the whole key; the tag ends at the first `}` (spec examples).
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        // Sluice's keys: the queue's name is the tag (bench#0..2 land in three masters' ranges).
        assert_eq!(slot("sluice:{bench#0}:stream"), 3254);
        assert_eq!(slot("sluice:{bench#1}:stream"), 7319);
        assert_eq!(slot("sluice:{bench#2}:stream"), 11508);
    }

    #[test]
    fn partitions_have_their_own_hash_tag_and_a_stable_spread() {
        assert_eq!(partition("hot", 2), "hot#2");
        assert_eq!(
            QueueKeys::new(&partition("hot", 2)).prefix(),
            "sluice:{hot#2}:"
        );
        assert_eq!(split_partition("hot#2"), Some(("hot", 2)));
        assert_eq!(split_partition("hot"), None);
        assert_eq!(split_partition("hot#"), None);
        assert_eq!(split_partition("hot#x1"), None);
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c: the value foreign producers must reproduce.
        assert_eq!(partition_of("a", 1 << 16), 0xec8c);
        let mut seen = [0u32; 3];
        for i in 0..3000 {
            seen[partition_of(&format!("key-{i}"), 3) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn entries_name_their_lane() {
        assert_eq!(split_entry("1-0"), ("", "1-0"));
        assert_eq!(split_entry("high/1-0"), ("high", "1-0"));
        assert_eq!(split_entry("low/12-3"), ("low", "12-3"));
        assert_eq!(split_entry("other/1-0"), ("", "other/1-0"));
        for lane in LANES {
            let e = lane_entry(lane, "5-1");
            assert_eq!(split_entry(&e), (lane, "5-1"));
        }
        assert_eq!(
            QueueKeys::new("q").lane_stream("high"),
            "sluice:{q}:stream:high"
        );
    }

    #[test]
    fn every_key_carries_the_queue_hash_tag() {
        let k = QueueKeys::new("emails");
        for key in [
            k.stream(),
            k.lane_stream("high"),
            k.lane_stream("low"),
            k.delayed(),
            k.dead(),
            k.events(),
            k.counts(),
            k.paused(),
            k.job("1"),
            k.dedupe("d"),
        ] {
            assert!(key.starts_with("sluice:{emails}:"), "{key}");
        }
    }
}
