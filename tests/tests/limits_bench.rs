//! Rate-limit benchmarks (reports, not CI tests): run by hand with
//!   cargo test --release -p sluice-tests --test limits_bench -- --ignored --nocapture --test-threads 1
//! Each prints the achieved rate ÷ quota, the share of 429s and the busiest sliding second.

use std::time::Duration;

use serde_json::json;
use sluice_common::NewJob;
use sluice_tests::mock::{MockConfig, Stats};
use sluice_tests::rig::Rig;
use sluice_tests::worker_process::WorkerProcess;

struct Figures {
    calls: u64,
    tokens_per_sec: f64,
    rate_limited: u64,
    per_sec: f64,
    busiest: usize,
}

fn figures(stats: &Stats, from_ms: u64) -> Figures {
    let times = stats.call_times(from_ms);
    let busiest = Stats::busiest_second(&times);
    let limited = stats
        .jobs
        .clone()
        .unwrap_or_default()
        .values()
        .flatten()
        .filter(|c| c.t_ms >= from_ms && c.status == 429)
        .count() as u64;
    let span =
        (times.last().copied().unwrap_or(0) - times.first().copied().unwrap_or(0)) as f64 / 1000.0;
    let tokens: u64 = stats
        .jobs
        .clone()
        .unwrap_or_default()
        .values()
        .flatten()
        .filter(|c| c.t_ms >= from_ms)
        .map(|c| c.tokens)
        .sum();
    Figures {
        tokens_per_sec: tokens as f64 / span.max(0.001),
        calls: times.len() as u64,
        rate_limited: limited,
        per_sec: times.len() as f64 / span.max(0.001),
        busiest,
    }
}

async fn run(
    workers: usize,
    mock: MockConfig,
    upstream_toml: &str,
    jobs: Vec<NewJob>,
    until: Duration,
) -> Stats {
    let rig = Rig::start(mock).await;
    let mut options = rig.options();
    options.concurrency = 100;
    options.extra = upstream_toml.to_string();
    let n = jobs.len() as u64;
    for r in rig.producer.enqueue_batch(jobs).await {
        r.expect("enqueue");
    }
    let _workers: Vec<_> = (0..workers)
        .map(|i| WorkerProcess::spawn(&format!("w{i}"), &options))
        .collect();
    let mut events = rig.events().await;
    events.until(until, |s| s.count("completed") >= n).await;
    rig.mock.stats(true)
}

fn chat(i: usize, chars: usize, max_tokens: u64) -> NewJob {
    NewJob::post(
        "q",
        "mock",
        "/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(chars)}], "max_tokens": max_tokens, "n": i}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, see the module comment"]
async fn bench_6000_rpm_with_1_3_6_workers() {
    for workers in [1, 3, 6] {
        let jobs = (0..3000).map(|i| chat(i, 110, 16)).collect();
        let stats = run(
            workers,
            MockConfig {
                latency_ms: 20,
                rpm: Some(6000),
                ..MockConfig::default()
            },
            "rpm = 6000\n",
            jobs,
            Duration::from_secs(120),
        )
        .await;
        let f = figures(&stats, 0);
        println!(
            "rpm 6000, {workers} workers: {} calls, {:.1}/s = {:.1}% of quota, 429s {} ({:.2}%), busiest 1 s window {} = {:.1}% of quota/60",
            f.calls,
            f.per_sec,
            f.per_sec / 100.0 * 100.0,
            f.rate_limited,
            f.rate_limited as f64 / f.calls as f64 * 100.0,
            f.busiest,
            f.busiest as f64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, see the module comment"]
async fn bench_tpm_with_mixed_job_sizes() {
    // 120,000 TPM = 2,000 tokens/s; jobs of ~30 to ~1,300 tokens (prompt + max_tokens).
    let jobs = (0..1500)
        .map(|i| chat(i, 100 + (i * 397) % 4000, [16, 64, 256][i % 3]))
        .collect();
    let stats = run(
        3,
        MockConfig {
            latency_ms: 20,
            tpm: Some(120_000),
            ..MockConfig::default()
        },
        "tpm = 120000\n",
        jobs,
        Duration::from_secs(90),
    )
    .await;
    let f = figures(&stats, 0);
    let calls: Vec<_> = stats
        .jobs
        .clone()
        .unwrap_or_default()
        .into_values()
        .flatten()
        .collect();
    let t0 = calls.iter().map(|c| c.t_ms).min().unwrap_or(0);
    let mut limited: Vec<u64> = calls
        .iter()
        .filter(|c| c.status == 429)
        .map(|c| c.t_ms - t0)
        .collect();
    limited.sort();
    println!("429s at ms after the first call: {limited:?}");
    println!(
        "tpm 120000, 3 workers, mixed sizes: {} calls at {:.2}/s, {:.0} tokens/s = {:.1}% of the quota, 429s {} ({:.2}%)",
        f.calls,
        f.per_sec,
        f.tokens_per_sec,
        f.tokens_per_sec / 2000.0 * 100.0,
        f.rate_limited,
        f.rate_limited as f64 / f.calls.max(1) as f64 * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, see the module comment"]
async fn bench_adaptive_against_an_unannounced_300_rpm() {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let jobs = (0..900).map(|i| chat(i, 110, 16)).collect();
    let stats = run(
        3,
        MockConfig {
            latency_ms: 20,
            rpm: Some(300),
            ..MockConfig::default()
        },
        "rpm = 1200\nadaptive = true\n",
        jobs,
        Duration::from_secs(150),
    )
    .await;
    let all = figures(&stats, 0);
    let after = figures(&stats, started + 60_000);
    println!(
        "adaptive, ceiling 1200, real quota 300 RPM: whole run {} calls, 429s {:.2}%; after the first minute: {} calls at {:.2}/s = {:.1}% of 300 RPM, 429s {} ({:.2}%)",
        all.calls,
        all.rate_limited as f64 / all.calls.max(1) as f64 * 100.0,
        after.calls,
        after.per_sec,
        after.per_sec / 5.0 * 100.0,
        after.rate_limited,
        after.rate_limited as f64 / after.calls.max(1) as f64 * 100.0
    );
}
