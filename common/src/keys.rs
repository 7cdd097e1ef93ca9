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

    /// Stream of ready jobs, read through the consumer group.
    pub fn stream(&self) -> String {
        self.key("stream")
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

    /// Hash of one job.
    pub fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }

    /// String holding the id of the job that owns a dedupe key.
    pub fn dedupe(&self, key: &str) -> String {
        self.key(&format!("dedupe:{key}"))
    }
}

/// A set of every upstream name a worker has been configured with (for `sluice stats`).
pub const UPSTREAMS: &str = "sluice:upstreams";

/// The prefix of one upstream's fleet-wide limiter, hold and circuit keys: `sluice:{u:NAME}:`.
/// The upstream's own hash tag keeps them in one Redis Cluster slot.
pub fn upstream_prefix(upstream: &str) -> String {
    format!("sluice:{{u:{upstream}}}:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_queue_hash_tag() {
        let k = QueueKeys::new("emails");
        for key in [
            k.stream(),
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
