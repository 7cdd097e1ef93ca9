//! `sluice-bench api`: what `sluice-api` costs, measured in one run on one machine, each figure
//! beside its direct counterpart:
//!
//! - **enqueue throughput**: N submits over HTTP (`POST /v1/queues/{q}/jobs`, each with its own
//!   `Idempotency-Key`, C concurrent connections) against N direct Redis enqueues by the Rust
//!   producer (same dedupe keys, same concurrency);
//! - **latency added** by the OpenAI-compatible endpoint at a fixed open-loop rate (default
//!   500 requests/s): `POST /v1/chat/completions` through sluice-api, Redis, a worker and the
//!   mock, against the same request sent straight to the mock; p50/p99 from each request's
//!   *scheduled* send time (no coordinated omission), alternating direct/relay twice;
//! - **sluice-api's memory**: peak RSS (VmHWM) and CPU seconds after everything.
//!
//! The mock answers at once and lives in this process; Redis, one worker and sluice-api are
//! child processes. Build with `--release`; run on a quiet machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::driver::{pct, proc_usage};
use crate::api_process::{ApiProcess, key_toml};
use crate::mock::{MockConfig, MockServer};
use crate::worker_process::{WorkerOptions, WorkerProcess};
use crate::{RedisServer, test_producer};

/// The benchmark's knobs.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Jobs submitted in each throughput case.
    #[arg(long, default_value_t = 50_000)]
    pub n: usize,
    /// Concurrent connections (throughput cases).
    #[arg(long, default_value_t = 64)]
    pub conns: usize,
    /// Requests per second of the latency cases.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Seconds of each latency case.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
}

const KEY: &str = "sk-bench";

fn chat(i: usize) -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("question {i}")}], "max_tokens": 16})
}

/// Runs `n` calls of `one` with `conns` at a time; jobs per second.
async fn closed_loop<F, Fut>(n: usize, conns: usize, one: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let one = Arc::new(one);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (one, next) = (one.clone(), next.clone());
            tokio::spawn(async move {
                let mut failed = 0usize;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return failed;
                    }
                    if !one(i).await {
                        failed += 1;
                    }
                }
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    if failed > 0 {
        println!("  ({failed} of {n} failed)");
    }
    n as f64 / secs
}

/// Sends `rate` requests a second for `secs` (open loop); each latency in ms from its scheduled
/// time, and how many failed.
async fn open_loop<F, Fut>(rate: u64, secs: u64, one: F) -> (Vec<f64>, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let n = (rate * secs) as usize;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(at).await;
        let call = one(i);
        tasks.push(tokio::spawn(async move {
            let ok = call.await;
            (at.elapsed().as_secs_f64() * 1000.0, ok)
        }));
    }
    let mut ms = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok((m, true)) => ms.push(m),
            _ => failed += 1,
        }
    }
    (ms, failed)
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let redis = RedisServer::start().await;
    let mock = MockServer::start(MockConfig::default()).await;
    let mut options = WorkerOptions::new(&redis.url(), &mock.url());
    options.queues = vec!["relay".into()];
    options.concurrency = 500;
    let _worker = WorkerProcess::spawn("bench-w", &options);
    let api = ApiProcess::start(
        &redis.url(),
        "max_streams_per_key = 100000",
        &key_toml("bench", KEY, &["relay", "submit", "direct"], "", ""),
    );
    let producer = test_producer(&redis.url()).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.conns.max(1024))
        .build()?;
    println!(
        "sluice-api benchmark: {} submits × {} connections; latency at {} req/s for {} s per case",
        args.n, args.conns, args.rate, args.secs
    );

    // Throughput: HTTP submits against direct Redis enqueues.
    let direct = {
        let producer = producer.clone();
        closed_loop(args.n, args.conns, move |i| {
            let producer = producer.clone();
            async move {
                let job =
                    sluice_common::NewJob::post("direct", "mock", "/v1/chat/completions", chat(i))
                        .with_dedupe_key(format!("d-{i}"));
                producer.enqueue(job).await.is_ok()
            }
        })
        .await
    };
    let over_http = {
        let (http, url) = (http.clone(), format!("{}/v1/queues/submit/jobs", api.base));
        closed_loop(args.n, args.conns, move |i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.post(&url)
                    .bearer_auth(KEY)
                    .header("Idempotency-Key", format!("h-{i}"))
                    .json(&json!({"upstream": "mock", "body": chat(i)}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 202)
            }
        })
        .await
    };
    println!("enqueue throughput (jobs/s)");
    println!("  direct Redis (Rust producer)   {direct:>9.0}");
    println!(
        "  HTTP POST …/jobs (sluice-api)  {over_http:>9.0}   ({:.2} of direct)",
        over_http / direct
    );

    // Latency: straight to the mock against through sluice-api, alternated.
    let mut direct_ms = Vec::new();
    let mut relay_ms = Vec::new();
    let mut failures = (0, 0);
    for round in 0..2 {
        let (http_d, url) = (http.clone(), format!("{}/v1/chat/completions", mock.url()));
        let (ms, failed) = open_loop(args.rate, args.secs, move |i| {
            let req = http_d.post(&url).json(&chat(i)).send();
            async move { req.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        direct_ms.extend(ms);
        failures.0 += failed;
        let (http_r, url) = (http.clone(), format!("{}/v1/chat/completions", api.base));
        let (ms, failed) = open_loop(args.rate, args.secs, move |i| {
            let req = http_r
                .post(&url)
                .bearer_auth(KEY)
                .header("Idempotency-Key", format!("r{round}-{i}"))
                .json(&chat(i))
                .send();
            async move {
                match req.await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        })
        .await;
        relay_ms.extend(ms);
        failures.1 += failed;
    }
    let (d50, d99) = (pct(&mut direct_ms, 0.5), pct(&mut direct_ms, 0.99));
    let (r50, r99) = (pct(&mut relay_ms, 0.5), pct(&mut relay_ms, 0.99));
    println!("latency at {} req/s, ms (p50 / p99)", args.rate);
    println!(
        "  straight to the mock           {d50:>6.2} / {d99:>6.2}   ({} requests, {} failed)",
        direct_ms.len(),
        failures.0
    );
    println!(
        "  POST /v1/chat/completions      {r50:>6.2} / {r99:>6.2}   ({} requests, {} failed)",
        relay_ms.len(),
        failures.1
    );
    println!(
        "  added by sluice-api + queue    {:>6.2} / {:>6.2}",
        r50 - d50,
        r99 - d99
    );

    let (cpu, hwm) = proc_usage(api.pid());
    println!("sluice-api process: peak RSS {hwm:.1} MiB, CPU {cpu:.1} s over the run");
    Ok(())
}
