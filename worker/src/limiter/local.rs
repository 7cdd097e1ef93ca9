//! The limits of an upstream with `scope = "process"`: each worker paces its own calls in memory
//! through `governor` (a GCRA per upstream and per model, requests and tokens), with no Redis
//! round trip. For an upstream beside each worker (a model server in the same pod), whose
//! capacity grows with the fleet instead of being one provider quota shared by all.
//!
//! A 429's hold is this process's too (`hold`): the other workers' servers are not the one that
//! answered. There is no fleet circuit for such an upstream; its failures are retried per class.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::tokens::{estimate_tokens, model_of};
use super::{Gate, RateLimits, Ticket};
use sluice_common::JobSpec;
use sluice_common::config::UpstreamConfig;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// One dimension's bucket: a rate per minute with a burst of `burst_ms` of it (at least one).
struct Bucket {
    gcra: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

impl Bucket {
    fn per_minute(per_minute: u64, burst_ms: u64) -> Option<Bucket> {
        if per_minute == 0 {
            return None;
        }
        let period = Duration::from_nanos((60_000_000_000 / per_minute).max(1));
        let burst = (per_minute.saturating_mul(burst_ms) / 60_000).clamp(1, u32::MAX as u64);
        let burst = NonZeroU32::new(burst as u32)?;
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(Bucket {
            gcra: RateLimiter::direct(quota),
            burst,
        })
    }

    /// Takes `n` cells now, or says how long until they are there. A cost larger than the
    /// burst takes the whole burst (the rate still holds over time).
    fn take(&self, n: u64, clock: &DefaultClock) -> Option<Duration> {
        let n = NonZeroU32::new(n.clamp(1, self.burst.get() as u64) as u32)?;
        match self.gcra.check_n(n) {
            Ok(Ok(())) | Err(_) => None,
            Ok(Err(not_until)) => Some(not_until.wait_time_from(clock.now())),
        }
    }
}

/// Requests and tokens of one upstream, or of one of its models.
struct Pair {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Pair {
    fn new(rpm: u64, tpm: u64, burst_ms: u64, token_burst_ms: u64) -> Pair {
        Pair {
            requests: Bucket::per_minute(rpm, burst_ms),
            tokens: Bucket::per_minute(tpm, token_burst_ms),
        }
    }
}

/// The in-process limits of one upstream.
pub struct Local {
    upstream: Pair,
    models: HashMap<String, Pair>,
    clock: DefaultClock,
    /// Until when (ms since `epoch`) a 429 holds this process's calls.
    hold_until: AtomicU64,
    epoch: Instant,
}

impl Local {
    pub fn new(u: &UpstreamConfig) -> Local {
        Local {
            upstream: Pair::new(u.rpm, u.tpm, u.burst_ms, u.token_burst_ms),
            models: u
                .models
                .iter()
                .map(|(m, l)| {
                    let pair = Pair::new(l.rpm, l.tpm, u.burst_ms, u.token_burst_ms);
                    (m.clone(), pair)
                })
                .collect(),
            clock: DefaultClock::default(),
            hold_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Waits until a call of `model` with `tokens` may go, taking its cells: requests first,
    /// then tokens, each bucket once it has room (so a wait never takes a cell twice). `false`
    /// when abandoned.
    pub async fn acquire(&self, model: &str, tokens: u64, abandon: &CancellationToken) -> bool {
        let pause = |wait: Duration| async move {
            tokio::select! {
                _ = tokio::time::sleep(wait) => true,
                _ = abandon.cancelled() => false,
            }
        };
        loop {
            let held = self.hold_until.load(Ordering::Relaxed);
            let now = self.epoch.elapsed().as_millis() as u64;
            if held <= now {
                break;
            }
            if !pause(Duration::from_millis(held - now)).await {
                return false;
            }
        }
        let pairs = [Some(&self.upstream), self.models.get(model)];
        let requests = pairs.iter().flatten().filter_map(|p| p.requests.as_ref());
        let token_buckets = pairs.iter().flatten().filter_map(|p| p.tokens.as_ref());
        let costs = requests
            .map(|b| (b, 1))
            .chain(token_buckets.map(|b| (b, tokens)));
        for (bucket, n) in costs {
            while let Some(wait) = bucket.take(n, &self.clock) {
                if !pause(wait).await {
                    return false;
                }
            }
        }
        true
    }

    /// A 429 from this process's upstream: hold its calls for `wait`.
    pub fn hold(&self, wait: Duration) {
        let until = self.epoch.elapsed().as_millis() as u64 + wait.as_millis() as u64;
        self.hold_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Admission: the buckets in memory, no Redis.
    pub(super) async fn admit(
        &self,
        limits: &RateLimits,
        spec: &JobSpec,
        slot: Option<OwnedSemaphorePermit>,
        abandon: &CancellationToken,
    ) -> Option<Gate> {
        let model = model_of(spec);
        let tokens = estimate_tokens(spec);
        let model_tpm = limits.models.get(&model).map_or(0, |l| l.1);
        if let Some(refused) = over_a_minute(tokens, limits.tpm, model_tpm) {
            return Some(refused);
        }
        if !self.acquire(&model, tokens, abandon).await {
            return None;
        }
        Some(Gate::Go(Ticket {
            probe: false,
            tokens,
            model,
            _slot: slot,
        }))
    }
}

/// A job whose estimate is over a whole minute's token quota can never be admitted.
pub(super) fn over_a_minute(tokens: u64, tpm: u64, model_tpm: u64) -> Option<Gate> {
    for (limit, what) in [(tpm, "the upstream's tpm"), (model_tpm, "the model's tpm")] {
        if limit > 0 && tokens > limit {
            return Some(Gate::Refuse(format!(
                "the job's estimate of {tokens} tokens is over {what} of {limit}: it can never be admitted"
            )));
        }
    }
    None
}
