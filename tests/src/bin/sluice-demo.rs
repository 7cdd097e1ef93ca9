//! `sluice-demo`: the README's first command. Starts a local Redis, the bundled mock model API
//! (50 ms answers, with some 503s, 429s and 400s) and a small worker fleet, enqueues a batch
//! with the `sluice` CLI (progress bar), follows the jobs to their end, sends one more job over
//! HTTP to `sluice-api` and follows it by Server-Sent Events, and prints what happened.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_tests::RedisServer;
use sluice_tests::bins::cargo_bin;
use sluice_tests::events::Events;
use sluice_tests::mock::{MockConfig, MockServer};
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};

/// The mock provider's quota, which the workers are configured to share.
const QUOTA_RPM: u64 = 90_000;

#[derive(Parser)]
#[command(
    name = "sluice-demo",
    about = "Run a Sluice fleet against the mock model API"
)]
struct Cli {
    /// Jobs to enqueue.
    #[arg(long, default_value_t = 5000)]
    jobs: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Concurrency of each worker.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let redis = RedisServer::start().await;
    let mock = MockServer::start(MockConfig {
        latency_ms: 50,
        spread_ms: 20,
        fail_503: 0.05,
        bad_400: 0.005,
        rpm: Some(QUOTA_RPM),
        ..MockConfig::default()
    })
    .await;
    println!("redis        {}", redis.url());
    println!(
        "mock API     {} (50-70 ms, 5% 503, 0.5% 400, quota {QUOTA_RPM} RPM answered with 429s)",
        mock.url()
    );

    let mut options = WorkerOptions::new(&redis.url(), &mock.url());
    options.queues = vec!["demo".into()];
    options.concurrency = cli.concurrency;
    options.base_ms = 200;
    options.cap_ms = 2_000;
    // The fleet shares the provider's quota through Redis.
    options.extra = format!("rpm = {QUOTA_RPM}\n");
    let mut workers: Vec<WorkerProcess> = (0..cli.workers)
        .map(|i| WorkerProcess::spawn(&format!("demo-worker-{i}"), &options))
        .collect();
    println!(
        "workers      {} × concurrency {} (sluice-worker processes)",
        cli.workers, cli.concurrency
    );

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("batch.jsonl");
    let mut lines = String::new();
    for i in 0..cli.jobs {
        lines.push_str(&format!(
            "{{\"dedupe_key\": \"doc-{i}\", \"body\": {{\"model\": \"gpt-4o-mini\", \"messages\": [{{\"role\": \"user\", \"content\": \"Summarise document {i}\"}}], \"max_tokens\": 16}}}}\n"
        ));
    }
    std::fs::write(&file, lines)?;

    let mut events = Events::new(&redis.url(), "demo").await;
    println!("\n$ sluice enqueue --file batch.jsonl --queue demo --upstream mock");
    let sluice = cargo_bin("sluice-producer", "sluice");
    let started = Instant::now();
    let status = Command::new(sluice)
        .args([
            "--redis",
            &redis.url(),
            "enqueue",
            "--queue",
            "demo",
            "--upstream",
            "mock",
        ])
        .arg("--file")
        .arg(&file)
        .status()
        .context("run sluice enqueue")?;
    anyhow::ensure!(status.success(), "sluice enqueue failed");

    let bar = ProgressBar::new(cli.jobs as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} jobs ended ({per_sec})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while events.seen.terminal_jobs() < cli.jobs && Instant::now() < deadline {
        events.read(Duration::from_millis(200)).await;
        bar.set_position(events.seen.terminal_jobs() as u64);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    let seen = &events.seen;
    let dead = seen.count("dead");
    let completed = seen.count("completed");
    let retried_jobs = seen
        .by_job
        .values()
        .filter(|s| s.contains_key("retrying"))
        .count();
    let stats = mock.stats(false);
    println!("\nwhat happened");
    println!("  jobs          {}", cli.jobs);
    println!("  completed     {completed}");
    println!(
        "  retried       {retried_jobs} jobs ({} retries)",
        seen.count("retrying")
    );
    println!("  dead-lettered {dead}");
    let store = sluice_common::Store::connect(&redis.url(), Default::default()).await?;
    let mut reasons = std::collections::BTreeMap::new();
    for d in store.dead_list("demo", None, 10_000).await? {
        *reasons
            .entry(format!("{} (HTTP {})", d.reason, d.status))
            .or_insert(0) += 1;
    }
    for (reason, n) in reasons {
        println!("    {n:>5} {reason}");
    }
    println!(
        "  upstream      {} calls: {:?}",
        stats.calls, stats.by_status
    );
    println!("  calls before a 429's reset: {}", stats.early_calls);
    println!(
        "  achieved      {:.0} jobs/s ({} jobs in {:.2} s, enqueue to last end)",
        (completed + dead) as f64 / elapsed.as_secs_f64(),
        completed + dead,
        elapsed.as_secs_f64()
    );
    let limit = (cli.workers * cli.concurrency) as f64 / 0.060;
    println!(
        "  limits        quota {} calls/s; concurrency {limit:.0} calls/s (workers × concurrency ÷ 60 ms)",
        QUOTA_RPM / 60
    );

    // One more job, the way a product backend sends it: over HTTP to sluice-api, followed by SSE.
    if let Err(e) = over_http(&redis.url()).await {
        println!("(the HTTP part failed: {e:#})");
    }
    for w in &workers {
        w.terminate();
    }
    for w in &mut workers {
        let _ = w.wait_exit(Duration::from_secs(30)).await;
    }
    Ok(())
}

/// Starts `sluice-api` with a demo key, submits one job with an `Idempotency-Key` and prints its
/// Server-Sent Events until it ends.
async fn over_http(redis_url: &str) -> anyhow::Result<()> {
    use sluice_tests::api_process::{ApiProcess, key_toml};
    let api = ApiProcess::start(
        redis_url,
        "",
        &key_toml("demo", "sk-sluice-demo", &["demo"], "", ""),
    );
    let http = reqwest::Client::new();
    let body = r#"{"upstream": "mock", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise the upload"}]}}"#;
    println!("\n$ curl -X POST {}/v1/queues/demo/jobs \\", api.base);
    println!("    -H 'Authorization: Bearer sk-sluice-demo' -H 'Idempotency-Key: upload-4711' \\");
    println!("    -d '{body}'");
    let r = http
        .post(format!("{}/v1/queues/demo/jobs", api.base))
        .bearer_auth("sk-sluice-demo")
        .header("Idempotency-Key", "upload-4711")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    println!("{} {}", status.as_u16(), r.text().await?);
    println!(
        "\n$ curl -N {}{location}/events -H 'Authorization: Bearer sk-sluice-demo'",
        api.base
    );
    let mut r = http
        .get(format!("{}{location}/events", api.base))
        .bearer_auth("sk-sluice-demo")
        .send()
        .await?;
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), r.chunk()).await?? {
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Whole events only: print each as `event: data` on one line (the job view cut short).
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let kind = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("");
            let data: String = data.chars().take(110).collect();
            if !kind.is_empty() {
                println!("{kind:<6} {data}");
            }
        }
    }
    Ok(())
}
