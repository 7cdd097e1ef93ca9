//! What this worker learns from an upstream's answers: the limits they state
//! (`x-ratelimit-limit-*`, for an upstream whose config sets none, so the fleet paces by them) and
//! its own recent successes and failures (reported to the fleet's failure-rate window).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Limiter, RateLimits};
use crate::hints;

/// One upstream's recent calls as this worker saw them, for the fleet's failure-rate window.
#[derive(Default)]
pub(super) struct Failing {
    /// A transient failure since this worker's last success.
    pub(super) failed: AtomicBool,
    /// Successes not yet reported, and since when they are counted (successes older than the
    /// window are forgotten, not reported into a later window).
    oks: std::sync::Mutex<(u64, Option<Instant>)>,
}

impl Failing {
    pub(super) fn success(&self, window_ms: u64) {
        let mut g = self.oks.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if g.1
            .is_none_or(|t| now.duration_since(t) > Duration::from_millis(window_ms))
        {
            *g = (0, Some(now));
        }
        g.0 += 1;
    }

    /// The successes to report now (and counts afresh).
    pub(super) fn take(&self) -> u64 {
        let mut g = self.oks.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *g).0
    }
}

/// Limits an upstream's answers stated (`x-ratelimit-limit-*`), kept for an upstream whose config
/// sets none; 0 while unknown.
#[derive(Default)]
pub(super) struct Learned {
    rpm: AtomicU64,
    tpm: AtomicU64,
}

impl Limiter {
    /// Requests and tokens per minute to pace `upstream` by: the config's, else what its answers
    /// stated (0: none).
    pub(super) fn rates(&self, upstream: &str, limits: &RateLimits) -> (u64, u64) {
        let learned = self.learned.get(upstream);
        let pick = |configured: u64, learned: Option<&AtomicU64>| {
            if configured > 0 {
                configured
            } else {
                learned.map(|l| l.load(Ordering::Relaxed)).unwrap_or(0)
            }
        };
        (
            pick(limits.rpm, learned.map(|l| &l.rpm)),
            pick(limits.tpm, learned.map(|l| &l.tpm)),
        )
    }

    /// Keeps the limits an answer states for an upstream whose config sets none, so the
    /// fleet-wide GCRA paces it (every worker learns the same numbers from its own answers).
    pub(super) fn learn(
        &self,
        upstream: &str,
        limits: &RateLimits,
        headers: &reqwest::header::HeaderMap,
    ) {
        let Some(learned) = self.learned.get(upstream) else {
            return;
        };
        let stated = hints::stated_limits(headers);
        for (configured, stated, slot, what) in [
            (limits.rpm, stated.requests, &learned.rpm, "rpm"),
            (limits.tpm, stated.tokens, &learned.tpm, "tpm"),
        ] {
            if let (0, Some(n)) = (configured, stated)
                && slot.swap(n, Ordering::Relaxed) != n
            {
                tracing::info!(
                    upstream,
                    limit = what,
                    per_minute = n,
                    "pacing by the limit the upstream states"
                );
            }
        }
    }
}
