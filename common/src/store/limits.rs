//! The fleet-wide limiter's calls (`sluice_admit`, `sluice_report`) and the upstreams' state
//! for `sluice stats`.

use super::*;

/// Limits the admit function applies (0 = none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdmitRequest<'a> {
    pub rpm: u64,
    pub tpm: u64,
    pub tokens: u64,
    /// Burst window in ms: no window of this length carries more than its share plus this.
    pub burst_ms: u64,
    /// Burst window of the token buckets, in ms.
    pub token_burst_ms: u64,
    /// Longest wait reserved; beyond it the caller is told `Busy` and nothing is reserved.
    pub horizon_ms: u64,
    /// How long a half-open probe may take before another is allowed.
    pub probe_ms: u64,
    pub model: &'a str,
    pub model_rpm: u64,
    pub model_tpm: u64,
    /// `rpm` is a ceiling and the fleet's rate follows the provider (AIMD).
    pub adaptive: bool,
    /// For a call that is not `high`: the percentage of `rpm` and `tpm` reserved for high ones
    /// (0: none), which this call may not use.
    pub reserve_pct: u64,
}

/// The fleet-wide limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A slot is reserved: start after this wait.
    Reserved(Duration),
    /// Go now as the circuit's half-open probe.
    Probe,
    /// Be the circuit's half-open probe with the upstream's cheap request (no tokens spent),
    /// not the job's: the circuit was opened by a 401/403.
    CheapProbe,
    /// The provider asked everyone to wait this long.
    Hold(Duration),
    /// The circuit is open for this long.
    Open(Duration),
    /// Another probe is in flight; ask again later.
    HalfOpen(Duration),
    /// The next free slot is further away than the horizon.
    Busy(Duration),
}

/// What a call's answer tells the fleet-wide limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Successes to count in the failure-rate window (sent with this worker's first success
    /// after a failure of its own).
    Ok,
    /// The probe succeeded: close the circuit.
    ProbeOk,
    /// The probe failed: open the circuit again, with a fresh cool-off.
    ProbeFailed,
    /// A transient failure: counts towards opening the circuit.
    Soft,
    /// Quota: open the circuit now.
    Hard,
    /// Auth (401/403): open the circuit now; its probes are the upstream's cheap request.
    Auth,
    /// A 429 rate limit: an adaptive upstream slows down.
    Limited,
    /// Nothing for the circuit (token correction or hold only).
    None,
}

/// A report after a call.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitReport<'a> {
    pub verdict: Verdict,
    /// Hold the upstream for everyone this long from now (server clock); 0 = none.
    pub hold_ms: u64,
    pub cooloff_ms: u64,
    /// Calls in the window before the failure rate counts.
    pub min_calls: u64,
    pub window_ms: u64,
    pub tpm: u64,
    /// Actual minus estimated tokens.
    pub delta_tokens: i64,
    pub model: &'a str,
    pub model_tpm: u64,
    /// Successful calls of this worker not yet counted in the window.
    pub ok_calls: u64,
    /// Failure rate that opens the circuit, in percent (1..=100).
    pub failure_pct: u64,
}

/// An upstream's fleet-wide state for `sluice stats`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct UpstreamState {
    pub upstream: String,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    /// Milliseconds until the circuit's cool-off ends (open) .
    pub open_for_ms: Option<u64>,
    /// Milliseconds of provider hold left.
    pub hold_for_ms: Option<u64>,
    /// Times the circuit went from closed (or half-open) to open; late failures of calls admitted
    /// before it opened are not counted.
    pub opens: u64,
    /// The fleet's current request rate of an adaptive upstream (requests per minute).
    pub adaptive_rpm: Option<f64>,
}

impl Store {
    /// Asks the fleet-wide limiter of `upstream` for a slot (one call, one round trip).
    pub async fn admit(
        &self,
        upstream: &str,
        r: &AdmitRequest<'_>,
    ) -> Result<Admission, StoreError> {
        let (wait, kind): (f64, String) = redis::cmd("FCALL")
            .arg("sluice_admit")
            .arg(1)
            .arg(keys::upstream_prefix(upstream))
            .arg(r.rpm)
            .arg(r.tpm)
            .arg(r.tokens)
            .arg(r.burst_ms)
            .arg(r.horizon_ms)
            .arg(r.probe_ms)
            .arg(r.model)
            .arg(r.model_rpm)
            .arg(r.model_tpm)
            .arg(if r.adaptive { "1" } else { "0" })
            .arg(r.token_burst_ms)
            .arg(r.reserve_pct)
            .run(self)
            .await?;
        let wait = Duration::from_micros((wait.max(0.0) * 1000.0) as u64);
        Ok(match kind.as_str() {
            "ok" => Admission::Reserved(wait),
            "probe" => Admission::Probe,
            "probe_auth" => Admission::CheapProbe,
            "hold" => Admission::Hold(wait),
            "open" => Admission::Open(wait),
            "half_open" => Admission::HalfOpen(wait),
            "busy" => Admission::Busy(wait),
            _ => return Err(StoreError::Protocol("sluice_admit")),
        })
    }

    /// Tells the fleet-wide limiter of `upstream` what a call's answer means for everyone.
    /// Returns `opened` or `closed` when the circuit changed.
    pub async fn report(&self, upstream: &str, r: &LimitReport<'_>) -> Result<String, StoreError> {
        let kind = match r.verdict {
            Verdict::Ok => "ok",
            Verdict::ProbeOk => "probe_ok",
            Verdict::ProbeFailed => "probe_fail",
            Verdict::Soft => "soft",
            Verdict::Hard => "hard",
            Verdict::Auth => "auth",
            Verdict::Limited => "limited",
            Verdict::None => "none",
        };
        redis::cmd("FCALL")
            .arg("sluice_report")
            .arg(1)
            .arg(keys::upstream_prefix(upstream))
            .arg(kind)
            .arg(r.hold_ms)
            .arg(r.cooloff_ms)
            .arg(r.min_calls)
            .arg(r.window_ms)
            .arg(r.tpm)
            .arg(r.delta_tokens)
            .arg(r.model)
            .arg(r.model_tpm)
            .arg(r.ok_calls)
            .arg(r.failure_pct)
            .run(self)
            .await
    }

    /// Records the upstream names a worker serves (for `sluice stats`).
    pub async fn register_upstreams(&self, names: &[String]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("SADD")
            .arg(keys::UPSTREAMS)
            .arg(names)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The sorted members of a registry set (`sluice:queues`, `sluice:upstreams`).
    pub(super) async fn members(&self, set: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(set)
            .query_async(&mut conn)
            .await?;
        names.sort();
        Ok(names)
    }

    /// Circuit and hold of every registered upstream.
    pub async fn upstream_states(&self) -> Result<Vec<UpstreamState>, StoreError> {
        let names = self.members(keys::UPSTREAMS).await?;
        self.upstream_states_of(&names).await
    }

    /// The fleet-wide state of the named upstreams (one pipelined round trip each).
    pub async fn upstream_states_of(
        &self,
        names: &[String],
    ) -> Result<Vec<UpstreamState>, StoreError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let k = keys::UpstreamKeys::new(name);
            type Reply = (HashMap<String, String>, i64, (u64, u64), Option<String>);
            let (circuit, hold_ttl, now, rate): Reply = redis::pipe()
                .cmd("HGETALL")
                .arg(k.circuit())
                .cmd("PTTL")
                .arg(k.hold())
                .cmd("TIME")
                .cmd("HGET")
                .arg(k.adaptive())
                .arg("rate")
                .query_async(&mut conn)
                .await?;
            let now_ms = now.0 * 1000 + now.1 / 1000;
            let until: u64 = circuit
                .get("until")
                .and_then(|u| u.parse().ok())
                .unwrap_or(0);
            let state = match circuit.get("state").map(String::as_str) {
                Some("open") if until > now_ms => "open",
                Some("open") => "half_open",
                _ => "closed",
            };
            out.push(UpstreamState {
                upstream: name.clone(),
                circuit: state.to_string(),
                open_for_ms: (state == "open").then(|| until - now_ms),
                hold_for_ms: (hold_ttl > 0).then_some(hold_ttl as u64),
                opens: circuit
                    .get("opens")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(0),
                adaptive_rpm: rate.and_then(|r| r.parse().ok()),
            });
        }
        Ok(out)
    }
}
