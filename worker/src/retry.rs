//! The retry policy, in one place: what happens to a job after each classified answer.
//!
//! Transient failures back off exponentially with full jitter and spend the attempt budget; a
//! longer server hint wins. Rate-limited jobs sleep until the provider's reset and do not spend
//! attempts, but have their own bound (`max_waits`). Quota and auth refusals wait `quota_wait`
//! (the circuit breaker keeps the fleet off the upstream meanwhile), also without spending
//! attempts. Invalid requests die at once. Every sleep is a score in the delayed ZSET, never a
//! timer in a worker.

use std::time::Duration;

use rand::RngExt;
use sluice_common::config::RetryConfig;

use crate::outcome::{Class, Outcome};

/// What to do with a job after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Complete,
    Retry {
        delay: Duration,
        spends_attempt: bool,
    },
    Dead {
        reason: &'static str,
    },
}

/// Where a job is in its budgets when the answer came.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// This attempt's number (1 for the first call).
    pub attempt: u32,
    /// Waits (rate limit, quota, auth) so far.
    pub waits: u32,
    /// The job's own attempt budget, if it set one.
    pub max_attempts: Option<u32>,
    /// Milliseconds until the job's deadline, if it has one.
    pub until_deadline: Option<Duration>,
}

/// The retry policy from config.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub factor: f64,
    pub cap: Duration,
    pub max_waits: u32,
    pub max_server_wait: Duration,
    pub quota_wait: Duration,
    /// Fraction of a server-asked wait added at random on top (`retry.server_wait_spread`).
    pub server_wait_spread: f64,
}

impl RetryPolicy {
    pub fn from_config(c: &RetryConfig) -> Self {
        RetryPolicy {
            max_attempts: c.max_attempts,
            base: Duration::from_millis(c.base_ms),
            factor: c.factor,
            cap: Duration::from_millis(c.cap_ms),
            max_waits: c.max_waits,
            max_server_wait: Duration::from_millis(c.max_server_wait_ms),
            quota_wait: Duration::from_millis(c.quota_wait_ms),
            server_wait_spread: c.server_wait_spread.clamp(0.0, 1.0),
        }
    }

    /// The backoff ceiling before jitter for this attempt: min(cap, base · factor^(attempt−1)).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1).min(64) as i32);
        let ms = (self.base.as_millis() as f64 * exp).min(self.cap.as_millis() as f64);
        Duration::from_millis(ms as u64)
    }

    /// Full jitter: uniform in [0, ceiling].
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    /// A wait the server asked for, honoured as asked up to `max_server_wait`, plus a little
    /// (never negative) spread so a fleet does not return in one instant.
    fn server_wait(&self, wait: Duration) -> Duration {
        let wait = wait.min(self.max_server_wait);
        let spread = ((wait.as_millis() as f64 * self.server_wait_spread) as u64).min(250);
        wait + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    pub fn decide(&self, outcome: &Outcome, budget: Budget) -> Decision {
        let decision = match outcome.class {
            Class::Success => return Decision::Complete,
            Class::Invalid => return Decision::Dead { reason: "invalid" },
            // A larger model is the processor's to find (`context_fallback`); retrying the same
            // request on the same model cannot help.
            Class::ContextLength => {
                return Decision::Dead {
                    reason: "context_length",
                };
            }
            Class::Transient => {
                let max = budget.max_attempts.unwrap_or(self.max_attempts);
                if budget.attempt >= max {
                    return Decision::Dead {
                        reason: "exhausted",
                    };
                }
                let backoff = self.backoff(budget.attempt);
                let delay = match outcome.wait {
                    Some(hint) if hint > backoff => self.server_wait(hint),
                    _ => backoff,
                };
                Decision::Retry {
                    delay,
                    spends_attempt: true,
                }
            }
            Class::RateLimited | Class::Quota | Class::Auth => {
                if budget.waits >= self.max_waits {
                    return Decision::Dead {
                        reason: match outcome.class {
                            Class::RateLimited => "rate_limited_too_long",
                            _ => "quota_or_auth_too_long",
                        },
                    };
                }
                let delay = match (outcome.class, outcome.wait) {
                    (Class::RateLimited, Some(hint)) => self.server_wait(hint),
                    (Class::RateLimited, None) => self.backoff(budget.waits + 1).max(self.base),
                    (_, hint) => self.server_wait(hint.unwrap_or_default().max(self.quota_wait)),
                };
                Decision::Retry {
                    delay,
                    spends_attempt: false,
                }
            }
        };
        match (&decision, budget.until_deadline) {
            (Decision::Retry { delay, .. }, Some(left)) if *delay >= left => {
                Decision::Dead { reason: "deadline" }
            }
            _ => decision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            factor: 2.0,
            cap: Duration::from_millis(1000),
            max_waits: 2,
            max_server_wait: Duration::from_secs(3600),
            quota_wait: Duration::from_secs(60),
            server_wait_spread: 0.05,
        }
    }

    fn outcome(class: Class, wait: Option<Duration>) -> Outcome {
        Outcome {
            class,
            status: None,
            wait,
            detail: String::new(),
        }
    }

    fn budget(attempt: u32, waits: u32) -> Budget {
        Budget {
            attempt,
            waits,
            max_attempts: None,
            until_deadline: None,
        }
    }

    #[test]
    fn transient_failures_back_off_within_the_ceiling_and_exhaust() {
        let p = policy();
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(3), Duration::from_millis(400));
        assert_eq!(p.ceiling(10), Duration::from_millis(1000));
        for _ in 0..100 {
            match p.decide(&outcome(Class::Transient, None), budget(2, 0)) {
                Decision::Retry {
                    delay,
                    spends_attempt: true,
                } => assert!(delay <= Duration::from_millis(200)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            p.decide(&outcome(Class::Transient, None), budget(3, 0)),
            Decision::Dead {
                reason: "exhausted"
            }
        );
    }

    #[test]
    fn a_longer_server_hint_wins_and_is_never_shortened() {
        let p = policy();
        let hint = Duration::from_secs(6 * 60);
        for class in [Class::Transient, Class::RateLimited] {
            match p.decide(&outcome(class, Some(hint)), budget(1, 0)) {
                Decision::Retry { delay, .. } => {
                    assert!(delay >= hint && delay <= hint + Duration::from_millis(250))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn rate_limits_do_not_spend_attempts_but_have_their_own_bound() {
        let p = policy();
        let o = outcome(Class::RateLimited, Some(Duration::from_secs(1)));
        assert!(matches!(
            p.decide(&o, budget(3, 1)),
            Decision::Retry {
                spends_attempt: false,
                ..
            }
        ));
        assert_eq!(
            p.decide(&o, budget(1, 2)),
            Decision::Dead {
                reason: "rate_limited_too_long"
            }
        );
    }

    #[test]
    fn quota_and_auth_wait_and_invalid_dies_at_once() {
        let p = policy();
        match p.decide(&outcome(Class::Auth, None), budget(1, 0)) {
            Decision::Retry {
                delay,
                spends_attempt: false,
            } => assert!(delay >= Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.decide(&outcome(Class::Invalid, None), budget(1, 0)),
            Decision::Dead { reason: "invalid" }
        );
    }

    #[test]
    fn a_retry_past_the_deadline_is_dead() {
        let p = policy();
        let mut b = budget(1, 0);
        b.until_deadline = Some(Duration::from_millis(10));
        assert_eq!(
            p.decide(
                &outcome(Class::RateLimited, Some(Duration::from_secs(5))),
                b
            ),
            Decision::Dead { reason: "deadline" }
        );
    }

    #[test]
    fn a_server_wait_gets_the_configured_spread_and_none_at_zero() {
        let mut p = policy();
        let asked = Duration::from_millis(1000);
        for _ in 0..200 {
            let w = p.server_wait(asked);
            assert!(
                w >= asked && w <= asked + Duration::from_millis(50),
                "{w:?}"
            );
        }
        p.server_wait_spread = 0.0;
        for _ in 0..50 {
            assert_eq!(p.server_wait(asked), asked);
        }
        // The spread never exceeds 250 ms, however long the wait.
        p.server_wait_spread = 1.0;
        let long = Duration::from_secs(600);
        for _ in 0..50 {
            assert!(p.server_wait(long) <= long + Duration::from_millis(250));
        }
    }
}
