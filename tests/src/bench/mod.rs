//! The benchmark (`sluice-bench`): Sluice through the workloads of `../shared/anchors`.
//!
//! - [`adapter`]: the anchors harness's adapter protocol (`enqueue`, `worker`), so its
//!   `harness.py` runs Sluice beside BullMQ on one Redis (`tests/bench/compare.sh`);
//! - [`instant`]: an upstream that answers at once (W2, W4), or fails each job's first call with
//!   a `retry-after-ms` (W5);
//! - [`records`]: each completed job's times, read back from its hash: the harness's CSV;
//! - [`driver`]: W1–W6 standalone, on its own Redis, with the figures issue #6 asks for;
//! - [`api`]: `sluice-api` against direct calls (enqueue throughput, latency added, memory);
//! - [`cache`]: the response cache on a Zipf workload, off against on;
//! - [`cluster`]: W2 on a three-master Redis Cluster with a partitioned queue against one Redis.

pub mod adapter;
pub mod api;
pub mod cache;
pub mod cluster;
pub mod driver;
pub mod instant;
pub mod records;

use sluice_common::NewJob;

/// The queue every workload uses.
pub const QUEUE: &str = "bench";
/// The upstream name jobs carry.
pub const UPSTREAM: &str = "bench";

/// What a job's call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Answered at once by the in-process [`instant`] upstream.
    Noop,
    /// Sent to `--mock-url` (the harness's mock, 50 ms).
    Http,
    /// The first call answers 503 with `retry-after-ms: <backoff>`, the second 200.
    #[value(name = "fail_once", alias = "fail-once")]
    FailOnce,
}

/// The anchors' ~200-byte payload: `{"i", "model", "messages": [110 chars], "max_tokens": 16}`.
pub fn payload(i: usize) -> serde_json::Value {
    let filler = "Summarise this support ticket in one line. ".repeat(3);
    serde_json::json!({
        "i": i,
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": &filler[..110]}],
        "max_tokens": 16,
    })
}

/// Job `i` of a run: the workload's payload POSTed to the bench upstream.
/// `SLUICE_BENCH_PRIORITY=high|low` puts every job in that lane (what lanes cost a queue that
/// uses them); unset or anything else: normal. `SLUICE_BENCH_TENANTS=N` gives job `i` tenant
/// `t<i mod N>` (what fair queueing costs with N tenants); unset: no tenant.
pub fn job(queue: &str, i: usize) -> NewJob {
    let mut job = NewJob::post(queue, UPSTREAM, "/v1/chat/completions", payload(i));
    if let Some(Ok(p)) = std::env::var("SLUICE_BENCH_PRIORITY")
        .ok()
        .map(|p| p.parse())
    {
        job = job.with_priority(p);
    }
    if let Some(n) = std::env::var("SLUICE_BENCH_TENANTS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        job = job.with_tenant(format!("t{}", i % n));
    }
    job
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_payload_is_the_anchors() {
        let p = super::payload(0);
        let content = p["messages"][0]["content"].as_str().unwrap_or_default();
        assert_eq!(content.len(), 110);
        assert!(content.ends_with("Summarise this support t"));
        assert_eq!(p.to_string().len(), 197);
    }
}
