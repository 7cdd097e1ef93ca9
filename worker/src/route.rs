//! Fallback routing (issue 21): the deployments a job may run on, in order, and the rules that
//! move it along the chain (docs/OPERATIONS.md, "Fallback chains").
//!
//! Step 0 is the job's own upstream with its own spec. A later step is a configured fallback
//! (limited to the job's own chain when it names one), with the job's model mapped and, when
//! the formats differ, its request translated ([`crate::translate`]). Steps are built only when
//! a job moves on, so a job that never does costs nothing here.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use sluice_common::JobSpec;
use sluice_common::config::{ApiFormat, Fallback};

use crate::outcome::{Class, Outcome};
use crate::translate;
use crate::upstream::{Upstream, Upstreams};

/// One deployment a job may run on, and its spec as that deployment takes it.
pub struct Step<'a> {
    pub upstream: Arc<Upstream>,
    pub spec: Cow<'a, JobSpec>,
    /// The format of the job's own request (answers are translated back into it).
    pub asked: ApiFormat,
}

impl Step<'_> {
    /// For a fallback's answer, what the job's status shows as `answered_by`: `upstream`, or
    /// `upstream/model` when the model was mapped. None on the job's own upstream (the step
    /// whose spec is the job's own), which the status shows by default.
    pub fn answered_by(&self, job_model: Option<&str>) -> Option<String> {
        if let Cow::Borrowed(_) = self.spec {
            return None;
        }
        Some(match (model_of(&self.spec), job_model) {
            (Some(m), Some(j)) if m != j => format!("{}/{m}", self.upstream.name),
            _ => self.upstream.name.clone(),
        })
    }

    /// Whether answers must be translated back to the job's format.
    pub fn translates(&self) -> bool {
        self.upstream.chain.format != self.asked
    }
}

/// A job's chain: its own upstream, then the fallbacks it may take.
pub struct Plan<'a> {
    primary: Arc<Upstream>,
    spec: &'a JobSpec,
    /// The job's own chain, as indexes into the primary's configured one (None: all of it):
    /// nothing is copied for a job that keeps the configured chain.
    own: Option<Vec<usize>>,
}

/// The body's `model`, if it names one.
pub fn model_of(spec: &JobSpec) -> Option<&str> {
    spec.request.body.as_ref()?.get("model")?.as_str()
}

impl<'a> Plan<'a> {
    /// The chain for `spec` on `primary`: the configured fallbacks, or the job's own chain when
    /// it names one (which must stay within them: a foreign producer's job that names another
    /// upstream is refused with the reason).
    pub fn new(primary: Arc<Upstream>, spec: &'a JobSpec) -> Result<Plan<'a>, String> {
        let configured = &primary.chain.fallbacks;
        let own = match &spec.fallbacks {
            None => None,
            Some(own) => {
                sluice_common::config::confine(&primary.name, own, configured)?;
                Some(
                    own.iter()
                        .filter_map(|name| configured.iter().position(|f| &f.upstream == name))
                        .collect(),
                )
            }
        };
        Ok(Plan { primary, spec, own })
    }

    /// Fallback `i` of the job's chain (0: the first after the primary).
    fn fallback(&self, i: usize) -> Option<&Fallback> {
        let configured = &self.primary.chain.fallbacks;
        match &self.own {
            None => configured.get(i),
            Some(own) => own.get(i).and_then(|&k| configured.get(k)),
        }
    }

    /// How many steps the chain has (1: no fallback).
    pub fn steps(&self) -> usize {
        1 + match &self.own {
            None => self.primary.chain.fallbacks.len(),
            Some(own) => own.len(),
        }
    }

    /// Where a run starts: transient failures retry the same deployment `transient_tries`
    /// times, then the next, so attempt n starts at step (n − 1) ÷ tries (the last step at
    /// most). Other classes move on within a run and leave the attempt count alone.
    pub fn start(&self, attempt: u32) -> usize {
        let tries = self.primary.chain.transient_tries.max(1);
        ((attempt.saturating_sub(1) / tries) as usize).min(self.steps() - 1)
    }

    /// The upstream name of step `i`.
    pub fn name_of(&self, i: usize) -> &str {
        match i {
            0 => &self.primary.name,
            _ => self
                .fallback(i - 1)
                .map(|f| f.upstream.as_str())
                .unwrap_or(""),
        }
    }

    /// The upstream name of the context fallback ("" without one).
    pub fn context_name(&self) -> &str {
        self.primary
            .chain
            .context_fallback
            .as_ref()
            .map(|f| f.upstream.as_str())
            .unwrap_or("")
    }

    /// The primary's settings: `fallback_after`, the context fallback.
    pub fn primary(&self) -> &Upstream {
        &self.primary
    }

    /// Step `i` (0 is the job's own upstream). An error names why this deployment cannot take
    /// the job (an unknown upstream in this worker's config, a request outside the translated
    /// subset); the caller moves past it.
    pub fn step(&self, upstreams: &Upstreams, i: usize) -> Result<Step<'a>, String> {
        if i == 0 {
            return Ok(Step {
                upstream: self.primary.clone(),
                spec: Cow::Borrowed(self.spec),
                asked: self.primary.chain.format,
            });
        }
        let f = self
            .fallback(i - 1)
            .ok_or_else(|| format!("no step {i} in the chain"))?;
        self.to(upstreams, f)
    }

    /// The larger-context deployment, if the primary names one.
    pub fn context_step(&self, upstreams: &Upstreams) -> Result<Step<'a>, String> {
        match &self.primary.chain.context_fallback {
            Some(f) => self.to(upstreams, f),
            None => Err("no context_fallback".into()),
        }
    }

    /// The job's spec rewritten for fallback `f`: its upstream, its model, its format.
    fn to(&self, upstreams: &Upstreams, f: &Fallback) -> Result<Step<'a>, String> {
        let upstream = upstreams
            .get(&f.upstream)
            .cloned()
            .ok_or_else(|| format!("no upstream named {:?} in this worker's config", f.upstream))?;
        let asked = self.primary.chain.format;
        let to = upstream.chain.format;
        let mut spec = self.spec.clone();
        spec.upstream = upstream.name.clone();
        spec.fallbacks = None;
        if let Some(body) = &self.spec.request.body {
            let model = body.get("model").and_then(|m| m.as_str()).unwrap_or("");
            let mapped = f.model_for(model);
            if asked != to {
                if self.spec.request.path != asked.chat_path() {
                    return Err(format!(
                        "{} speaks {to:?} and only chat requests ({}) are translated",
                        upstream.name,
                        asked.chat_path()
                    ));
                }
                spec.request.path = to.chat_path().to_string();
            }
            let translated =
                translate::request(body, asked, to, mapped).map_err(|e| e.to_string())?;
            spec.request.body = Some(translated);
        }
        // A cached or followed answer belongs to the request as asked: the cache entry is the
        // primary's (a fallback's answer still completes the job and its followers).
        Ok(Step {
            upstream,
            spec: Cow::Owned(spec),
            asked,
        })
    }
}

/// Where in the chain a job is trying now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Step `i` of the chain (0: the job's own upstream).
    Chain(usize),
    /// The primary's larger-context deployment.
    Context,
}

impl Target {
    /// The next step, if any (the context deployment is a chain's end).
    pub fn next(self, plan: &Plan) -> Option<Target> {
        match self {
            Target::Chain(i) if i + 1 < plan.steps() => Some(Target::Chain(i + 1)),
            _ => None,
        }
    }
}

/// Whether a deferral at admission (no call made) moves the job on: the deployment is held
/// longer than `fallback_after`, or its circuit is open (quota, auth, failures).
pub fn moves_on_deferral(class: &str, wait: Duration, fallback_after: Duration) -> bool {
    match class {
        "circuit_open" => true,
        "held" => wait > fallback_after,
        _ => false,
    }
}

/// Whether an answer moves the job to the next deployment now, within this run: a rate limit
/// whose wait is longer than `fallback_after`, quota, auth. Transient failures retry the same
/// deployment first ([`Plan::start`]); invalid requests are wrong everywhere.
pub fn moves_on_answer(outcome: &Outcome, fallback_after: Duration) -> bool {
    match outcome.class {
        Class::RateLimited => outcome.wait.is_some_and(|w| w > fallback_after),
        Class::Quota | Class::Auth => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(class: Class, wait: Option<Duration>) -> Outcome {
        Outcome {
            class,
            status: Some(429),
            wait,
            detail: String::new(),
        }
    }

    #[test]
    fn the_rules_by_class() {
        let after = Duration::from_secs(5);
        let long = Some(Duration::from_secs(60));
        let short = Some(Duration::from_secs(2));
        assert!(moves_on_answer(&outcome(Class::RateLimited, long), after));
        assert!(!moves_on_answer(&outcome(Class::RateLimited, short), after));
        assert!(!moves_on_answer(&outcome(Class::RateLimited, None), after));
        assert!(moves_on_answer(&outcome(Class::Quota, None), after));
        assert!(moves_on_answer(&outcome(Class::Auth, None), after));
        for stays in [Class::Transient, Class::Invalid, Class::ContextLength] {
            assert!(!moves_on_answer(&outcome(stays, long), after), "{stays}");
        }
        assert!(moves_on_deferral("held", Duration::from_secs(60), after));
        assert!(!moves_on_deferral("held", Duration::from_secs(1), after));
        assert!(moves_on_deferral(
            "circuit_open",
            Duration::from_secs(1),
            after
        ));
        assert!(!moves_on_deferral(
            "throttled",
            Duration::from_secs(60),
            after
        ));
    }
}
