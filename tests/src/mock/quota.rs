//! The mock's enforced quota: token buckets for requests and tokens per minute, refilled
//! continuously, with a burst of one second's share (providers enforce per-minute limits over
//! windows of seconds). An empty bucket answers how long until it can serve the request.

use std::time::{Duration, Instant};

/// A continuously refilled bucket.
#[derive(Debug)]
pub struct Bucket {
    per_minute: f64,
    capacity: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(per_minute: u64, burst_secs: f64) -> Self {
        let per_minute = per_minute.max(1) as f64;
        let capacity = (per_minute / 60.0 * burst_secs).max(1.0);
        Bucket {
            per_minute,
            capacity,
            level: capacity,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.duration_since(self.at).as_secs_f64();
        self.level = (self.level + secs * self.per_minute / 60.0).min(self.capacity);
        self.at = now;
    }

    /// Takes `cost` now, or says how long until it could.
    pub fn take(&mut self, cost: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let cost = cost.min(self.capacity);
        if self.level >= cost {
            self.level -= cost;
            Ok(())
        } else {
            let secs = (cost - self.level) / (self.per_minute / 60.0);
            Err(Duration::from_secs_f64(secs))
        }
    }

    /// Gives back part of a charge (tokens that were reserved but not used).
    pub fn refund(&mut self, amount: f64) {
        self.level = (self.level + amount).min(self.capacity);
    }

    /// How long until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    pub fn until_full(&self) -> Duration {
        let missing = (self.capacity - self.level).max(0.0);
        Duration::from_secs_f64(missing / (self.per_minute / 60.0))
    }

    /// What is left (for the remaining headers).
    pub fn remaining(&self) -> u64 {
        self.level.max(0.0) as u64
    }
}
