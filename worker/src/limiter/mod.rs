//! Fleet-wide rate limits per upstream: requests and tokens per minute (and per model), a hold
//! when the provider says stop, and a circuit breaker — all shared through Redis so that N workers
//! stay under one quota without knowing N.
//!
//! Each call asks `sluice_admit` once: a GCRA over the upstream's buckets that *reserves* the next
//! slot and answers how long to wait for it, so callers sleep exactly their turn instead of
//! polling (one Redis call per job). Waiting is a tokio sleep: no runtime thread is blocked and no
//! Redis connection is held. A slot further away than `HORIZON`, a provider hold or an open
//! circuit defers the job to the delayed ZSET instead (not in memory). After the call,
//! `sluice_report` carries what the answer means for everyone: a hold until the provider's reset,
//! a circuit opened by 401/403/quota or a run of transient failures, a probe's success closing it,
//! and the token estimate corrected from `usage`.
//!
//! An upstream without rate limits needs Redis only for holds and the circuit: after Redis
//! found it clear, this worker calls it for `CLEAR_FOR` (100 ms) without asking again, so such
//! calls cost no Redis work; a hold or an opened circuit reaches every worker within that time.
//!
//! In process, a per-upstream semaphore caps calls in flight (`max_concurrency`). An upstream with
//! `scope = "process"` is paced in process only (`local.rs`, through `governor`): no Redis call.
//!
//! Beside this file: `tokens.rs` (a job's token estimate and model), `learned.rs` (the limits
//! an upstream's answers state, and this worker's own successes and failures for the window) and
//! `local.rs` (the limits of `scope = "process"` upstreams).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_common::config::{Config, LimitScope};
use sluice_common::job::Priority;
use sluice_common::store::{Admission, AdmitRequest, LimitReport, Verdict};
use sluice_common::{JobSpec, Store, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::hints;

mod learned;
mod local;
mod tokens;

use crate::outage::ride_out;
use crate::outcome::{Class, Outcome};
use crate::prefetch::Prefetch;
use learned::{Failing, Learned};
use local::{Local, over_a_minute};
pub use tokens::estimate_tokens;
use tokens::model_of;

/// Longest wait a caller sleeps in memory for a reserved slot; beyond it the job is deferred.
const HORIZON: Duration = Duration::from_millis(2000);
/// Holds and half-open waits up to this are slept through; longer ones defer the job.
const SHORT_WAIT: Duration = Duration::from_millis(500);
/// Where a share is reserved for `high` jobs (`high_reserve`), how far ahead the others may
/// reserve a slot: a high job arriving then waits at most this behind them.
const HIGH_HEADROOM: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Default)]
struct RateLimits {
    rpm: u64,
    tpm: u64,
    adaptive: bool,
    burst_ms: u64,
    token_burst_ms: u64,
    models: HashMap<String, (u64, u64)>,
    cooloff_ms: u64,
    min_calls: u64,
    failure_pct: u64,
    window_ms: u64,
    probe_ms: u64,
    /// `high_reserve` in percent.
    reserve_pct: u64,
}

impl RateLimits {
    fn any(&self) -> bool {
        self.rpm > 0 || self.tpm > 0 || !self.models.is_empty()
    }
}

/// May the call go now?
pub enum Gate {
    Go(Ticket),
    /// Be the circuit's probe, but with the upstream's cheap request (the circuit was opened by
    /// a 401/403): send it, report it with this ticket, then ask again.
    ProbeFirst(Ticket),
    /// Not now: put the job back in the delayed ZSET for `wait`, marked `class`.
    Defer {
        wait: Duration,
        class: &'static str,
    },
    /// Never: the job's token estimate is over a whole minute's quota, so no slot can hold it
    /// (the provider would refuse it too).
    Refuse(String),
}

/// Permission for one call, kept until the call is answered.
pub struct Ticket {
    /// This call is the circuit's half-open probe.
    pub probe: bool,
    /// Tokens charged for it.
    pub tokens: u64,
    model: String,
    _slot: Option<OwnedSemaphorePermit>,
}

/// What a report did for the fleet.
#[derive(Debug, Default)]
pub struct Reported {
    /// The circuit's new state, when this answer changed it.
    pub circuit: Option<String>,
    /// This answer put a fleet-wide hold on the upstream.
    pub held: bool,
}

/// The limiter of every upstream of this worker.
pub struct Limiter {
    store: Store,
    limits: HashMap<String, RateLimits>,
    local: HashMap<String, Arc<Semaphore>>,
    /// Upstreams with `scope = "process"`: their limits, in this process only.
    process: HashMap<String, Local>,
    /// Per upstream: whether this worker saw a transient failure since its last success, and its
    /// successes not yet counted in the fleet's failure-rate window.
    failing: HashMap<String, Failing>,
    /// Per upstream: the limits its answers stated, for pacing when the config sets none.
    learned: HashMap<String, Learned>,
    /// Upstreams without rate limits: until when (ms since `epoch`) the last admission saw no
    /// hold and a closed circuit. Calls until then go without asking Redis.
    clear_until: HashMap<String, AtomicU64>,
    epoch: Instant,
    /// Jobs sleeping here for their slots, against `worker.prefetch` (the fetch loop's bound).
    pub sleeping: Arc<Prefetch>,
}

/// How long an upstream without rate limits is taken to stay clear (no hold, circuit closed)
/// after Redis said so: a hold or an opened circuit reaches this worker within this time.
const CLEAR_FOR: Duration = Duration::from_millis(100);

impl Limiter {
    pub fn from_config(store: Store, config: &Config) -> Limiter {
        let mut limits = HashMap::new();
        let mut local = HashMap::new();
        let mut failing = HashMap::new();
        let mut learned = HashMap::new();
        let mut process = HashMap::new();
        for (name, u) in &config.upstreams {
            if u.scope == LimitScope::Process {
                process.insert(name.clone(), Local::new(u));
            }
            limits.insert(
                name.clone(),
                RateLimits {
                    rpm: u.rpm,
                    tpm: u.tpm,
                    adaptive: u.adaptive,
                    burst_ms: u.burst_ms,
                    token_burst_ms: u.token_burst_ms,
                    models: u
                        .models
                        .iter()
                        .map(|(m, l)| (m.clone(), (l.rpm, l.tpm)))
                        .collect(),
                    cooloff_ms: u.circuit_cooloff_ms,
                    min_calls: u.circuit_min_calls,
                    failure_pct: (u.circuit_failure_rate * 100.0).round().clamp(1.0, 100.0) as u64,
                    window_ms: u.circuit_window_ms,
                    probe_ms: u.timeout_ms + 5_000,
                    reserve_pct: (u.high_reserve * 100.0).round().clamp(0.0, 99.0) as u64,
                },
            );
            if u.max_concurrency > 0 {
                local.insert(name.clone(), Arc::new(Semaphore::new(u.max_concurrency)));
            }
            failing.insert(name.clone(), Failing::default());
            learned.insert(name.clone(), Learned::default());
        }
        let clear_until = limits
            .iter()
            .filter(|(_, l)| !l.any())
            .map(|(name, _)| (name.clone(), AtomicU64::new(0)))
            .collect();
        Limiter {
            store,
            limits,
            local,
            process,
            failing,
            learned,
            clear_until,
            epoch: Instant::now(),
            sleeping: Prefetch::new(config.worker.prefetch),
        }
    }

    /// How long a success that used a dimension up holds the fleet: until the next request is
    /// allowed (one request's interval, or this call's tokens' worth), not the `reset` the
    /// provider sends (OpenAI's is the time until the bucket is *full*: ~60 s at remaining 0).
    /// Without a known limit for the exhausted dimension, the provider's reset stands.
    fn next_allowed(
        &self,
        upstream: &str,
        limits: &RateLimits,
        ticket: &Ticket,
        headers: &reqwest::header::HeaderMap,
        reset: Duration,
    ) -> Duration {
        let (rpm, tpm) = self.rates(upstream, limits);
        let (requests, tokens) = hints::exhausted_dimensions(headers);
        let mut next = Duration::ZERO;
        for (used_up, per_minute, cost) in [(requests, rpm, 1), (tokens, tpm, ticket.tokens.max(1))]
        {
            if !used_up {
                continue;
            }
            if per_minute == 0 {
                return reset;
            }
            next = next.max(Duration::from_millis(60_000 * cost / per_minute));
        }
        if !requests && !tokens {
            return reset;
        }
        next.min(reset)
    }

    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// An upstream without rate limits that Redis recently found clear.
    fn known_clear(&self, upstream: &str) -> bool {
        self.clear_until
            .get(upstream)
            .is_some_and(|t| self.elapsed_ms() < t.load(Ordering::Relaxed))
    }

    fn set_clear(&self, upstream: &str, clear: bool) {
        if let Some(t) = self.clear_until.get(upstream) {
            let until = if clear {
                self.elapsed_ms() + CLEAR_FOR.as_millis() as u64
            } else {
                0
            };
            t.store(until, Ordering::Relaxed);
        }
    }

    /// Waits for this job's turn at `upstream`, or says to defer it. `None` when abandoned.
    pub async fn admit(
        &self,
        upstream: &str,
        spec: &JobSpec,
        abandon: &CancellationToken,
    ) -> Result<Option<Gate>, StoreError> {
        let slot = match self.local.get(upstream) {
            Some(sem) => tokio::select! {
                p = sem.clone().acquire_owned() => p.ok(),
                _ = abandon.cancelled() => return Ok(None),
            },
            None => None,
        };
        let default = RateLimits::default();
        let limits = self.limits.get(upstream).unwrap_or(&default);
        if let Some(local) = self.process.get(upstream) {
            return Ok(local.admit(limits, spec, slot, abandon).await);
        }
        let (rpm, tpm) = self.rates(upstream, limits);
        let paced = rpm > 0 || tpm > 0 || !limits.models.is_empty();
        if !paced && self.known_clear(upstream) {
            // No limits to reserve against, and Redis said clear moments ago.
            return Ok(Some(Gate::Go(Ticket {
                probe: false,
                tokens: 0,
                model: String::new(),
                _slot: slot,
            })));
        }
        let model = model_of(spec);
        let tokens = estimate_tokens(spec);
        let (model_rpm, model_tpm) = limits.models.get(&model).copied().unwrap_or((0, 0));
        if let Some(refused) = over_a_minute(tokens, tpm, model_tpm) {
            return Ok(Some(refused));
        }
        // Not high where a share is kept for high: the rest of the rates, reserved close ahead.
        let reserve_pct = match spec.priority {
            Priority::High => 0,
            _ => limits.reserve_pct,
        };
        let horizon = if reserve_pct > 0 {
            HIGH_HEADROOM
        } else {
            HORIZON
        };
        let request = AdmitRequest {
            rpm,
            tpm,
            tokens,
            burst_ms: limits.burst_ms,
            token_burst_ms: limits.token_burst_ms,
            horizon_ms: horizon.as_millis() as u64,
            reserve_pct,
            probe_ms: limits.probe_ms,
            model: if model_rpm + model_tpm > 0 {
                &model
            } else {
                ""
            },
            model_rpm,
            model_tpm,
            adaptive: limits.adaptive,
        };
        let ticket = |probe| Ticket {
            probe,
            tokens,
            model: request.model.to_string(),
            _slot: slot,
        };
        for _ in 0..8 {
            // Redis away for a moment (a restart): asked again rather than failing the job.
            let admitted = ride_out(|| self.store.admit(upstream, &request)).await?;
            let (wait, defer_class) = match admitted {
                Admission::Reserved(_) if !paced => {
                    self.set_clear(upstream, true);
                    return Ok(Some(Gate::Go(ticket(false))));
                }
                Admission::Reserved(wait) if wait.is_zero() => {
                    return Ok(Some(Gate::Go(ticket(false))));
                }
                Admission::Reserved(wait) => {
                    let _sleeping = self.sleeping.hold();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = abandon.cancelled() => return Ok(None),
                    }
                    return Ok(Some(Gate::Go(ticket(false))));
                }
                Admission::Probe => return Ok(Some(Gate::Go(ticket(true)))),
                Admission::CheapProbe => return Ok(Some(Gate::ProbeFirst(ticket(true)))),
                Admission::Hold(w) => (w, "held"),
                Admission::Open(w) => (w, "circuit_open"),
                Admission::HalfOpen(w) => (w, "circuit_open"),
                // Kept back from the high jobs' headroom: ask again when the slot is near.
                // (Not counted against `prefetch`: it holds no slot, and a high job must not
                // wait in Redis for it.)
                Admission::Busy(w) if reserve_pct > 0 && w <= HORIZON => {
                    tokio::select! {
                        _ = tokio::time::sleep(w.saturating_sub(HIGH_HEADROOM / 2)) => {}
                        _ = abandon.cancelled() => return Ok(None),
                    }
                    continue;
                }
                Admission::Busy(w) => (w, "throttled"),
            };
            if wait > SHORT_WAIT {
                return Ok(Some(Gate::Defer {
                    wait,
                    class: defer_class,
                }));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                _ = abandon.cancelled() => return Ok(None),
            }
        }
        Ok(Some(Gate::Defer {
            wait: SHORT_WAIT,
            class: "throttled",
        }))
    }

    /// Tells the fleet what the answer means (only when it means something).
    pub async fn report(
        &self,
        upstream: &str,
        ticket: &Ticket,
        outcome: &Outcome,
        headers: Option<&reqwest::header::HeaderMap>,
        used_tokens: Option<u64>,
    ) -> Result<Reported, StoreError> {
        if let Some(local) = self.process.get(upstream) {
            // This process's upstream: a 429 holds this process only; no fleet state to tell.
            let hold =
                (outcome.class == Class::RateLimited).then(|| outcome.wait.unwrap_or(SHORT_WAIT));
            if let Some(wait) = hold {
                local.hold(wait);
            }
            return Ok(Reported {
                circuit: None,
                held: hold.is_some(),
            });
        }
        let default = RateLimits::default();
        let limits = self.limits.get(upstream).unwrap_or(&default);
        let failing = self.failing.get(upstream);
        let verdict = match outcome.class {
            Class::Success | Class::Invalid | Class::ContextLength if ticket.probe => {
                Verdict::ProbeOk
            }
            // A probe that failed opens the circuit again for a whole cool-off.
            _ if ticket.probe => Verdict::ProbeFailed,
            Class::Success => {
                if let Some(f) = failing {
                    f.success(limits.window_ms);
                }
                if failing.is_some_and(|f| f.failed.swap(false, Ordering::Relaxed)) {
                    Verdict::Ok
                } else {
                    Verdict::None
                }
            }
            Class::Transient => {
                if let Some(f) = failing {
                    f.failed.store(true, Ordering::Relaxed);
                }
                Verdict::Soft
            }
            Class::Auth => Verdict::Auth,
            Class::Quota => Verdict::Hard,
            Class::RateLimited if limits.adaptive => Verdict::Limited,
            Class::RateLimited | Class::Invalid | Class::ContextLength => Verdict::None,
        };
        if let Some(h) = headers {
            self.learn(upstream, limits, h);
        }
        // A 429 with a reset holds everyone until then; a success that used up a dimension, until
        // the next request is allowed.
        let hold = match (outcome.class, headers) {
            (Class::RateLimited, _) => outcome.wait,
            (Class::Success, Some(h)) if hints::exhausted(h) => outcome
                .wait
                .map(|reset| self.next_allowed(upstream, limits, ticket, h, reset)),
            _ => None,
        };
        let (_, tpm) = self.rates(upstream, limits);
        let (_, model_tpm) = limits.models.get(&ticket.model).copied().unwrap_or((0, 0));
        let counts_tokens = tpm > 0 || model_tpm > 0;
        let delta = match (outcome.class, used_tokens) {
            // Refused before any work (429, quota, auth): no tokens were used; give back the
            // whole estimate, as the provider does.
            (Class::RateLimited | Class::Quota | Class::Auth, _) if counts_tokens => {
                -(ticket.tokens as i64)
            }
            (_, Some(used)) if counts_tokens => used as i64 - ticket.tokens as i64,
            _ => 0,
        };
        if verdict == Verdict::None && hold.is_none() && delta == 0 {
            return Ok(Reported::default());
        }
        if hold.is_some_and(|h| !h.is_zero())
            || matches!(
                verdict,
                Verdict::Hard | Verdict::Auth | Verdict::ProbeFailed
            )
        {
            // Ask Redis again before the next call: this answer held or opened it.
            self.set_clear(upstream, false);
        }
        let changed = self
            .store
            .report(
                upstream,
                &LimitReport {
                    verdict,
                    hold_ms: hold.map(|h| h.as_millis() as u64).unwrap_or(0),
                    cooloff_ms: limits.cooloff_ms,
                    min_calls: limits.min_calls,
                    window_ms: limits.window_ms,
                    tpm,
                    delta_tokens: delta,
                    model: &ticket.model,
                    model_tpm,
                    ok_calls: failing.map(Failing::take).unwrap_or(0),
                    failure_pct: limits.failure_pct,
                },
            )
            .await?;
        if !changed.is_empty() {
            // A run of transient failures may just have opened the circuit.
            self.set_clear(upstream, false);
        }
        Ok(Reported {
            circuit: (!changed.is_empty()).then_some(changed),
            held: hold.is_some_and(|h| !h.is_zero()),
        })
    }
}
