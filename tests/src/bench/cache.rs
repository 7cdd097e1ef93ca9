//! `sluice-bench cache`: the response cache on a skewed workload. 10,000 questions drawn from a
//! Zipf distribution (s = 1) over 2,000 distinct ones (a fixed seed, 2, so every run draws the
//! same), run through the mock twice: once without the cache, once with it. Prints the upstream
//! calls and tokens of each, the saving against the repeat share of the draw, the latency of a
//! hit (enqueue to completed: the enqueue call itself), and Redis memory per cached answer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sluice_common::{JobState, NewJob};

use super::driver::pct;
use crate::events::Events;
use crate::mock::{MockConfig, MockServer};
use crate::rig::BOUND;
use crate::worker_process::{WorkerOptions, WorkerProcess};
use crate::{RedisServer, test_producer};

const QUERIES: usize = 10_000;
const DISTINCT: usize = 2_000;

/// SplitMix64: a fixed, dependency-free sequence for a draw every run repeats.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` ranks (0-based) from Zipf(s = 1) over `k` items.
fn zipf(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let weights: Vec<f64> = (1..=k).map(|r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(k);
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut draw = Draw(seed);
    (0..n)
        .map(|_| {
            let u = draw.next();
            cdf.partition_point(|c| *c < u).min(k - 1)
        })
        .collect()
}

fn question(queue: &str, rank: usize) -> NewJob {
    NewJob::post(
        queue,
        "mock",
        "/v1/chat/completions",
        serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 32, "messages": [{"role": "user", "content": format!("Support question number {rank}: how do I reset my password?")}]}),
    )
}

pub async fn run() -> anyhow::Result<()> {
    let ranks = zipf(QUERIES, DISTINCT, 2);
    let distinct = ranks.iter().collect::<HashSet<_>>().len();
    let repeat_share = 1.0 - distinct as f64 / QUERIES as f64;
    let redis = RedisServer::start().await;
    let mock = MockServer::start(MockConfig {
        latency_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let mut options = WorkerOptions::new(&redis.url(), &mock.url());
    options.queues = vec!["off".into(), "on".into()];
    options.concurrency = 200;
    let _worker = WorkerProcess::spawn("bench-w", &options);
    let producer = test_producer(&redis.url()).await;
    println!(
        "{QUERIES} questions, Zipf(s = 1) over {DISTINCT}, seed 2: {distinct} distinct, repeat share {:.2}%",
        100.0 * repeat_share
    );

    let mut rows = Vec::new();
    for cached in [false, true] {
        let queue = if cached { "on" } else { "off" };
        let mut events = Events::new(&redis.url(), queue).await;
        let before = mock.stats(true);
        let mut hits_ms = Vec::new();
        let mut hits = 0usize;
        // In order, 50 at a time, as users would ask.
        for chunk in ranks.chunks(50) {
            let sends = chunk.iter().map(|r| {
                let job = question(queue, *r);
                let job = if cached {
                    job.with_cache(Duration::from_secs(3600))
                } else {
                    job
                };
                let producer = &producer;
                async move {
                    let t = Instant::now();
                    let e = producer.enqueue(job).await;
                    (e, t.elapsed().as_secs_f64() * 1000.0)
                }
            });
            for (e, ms) in futures::future::join_all(sends).await {
                if e?.state == Some(JobState::Completed) {
                    hits += 1;
                    hits_ms.push(ms);
                }
            }
        }
        anyhow::ensure!(
            events
                .until(BOUND, |s| s.count("completed") >= QUERIES as u64)
                .await,
            "the jobs did not all complete"
        );
        let after = mock.stats(true);
        let tokens = |s: &crate::mock::Stats| -> u64 {
            s.jobs
                .iter()
                .flat_map(|j| j.values())
                .flatten()
                .map(|c| c.tokens)
                .sum()
        };
        rows.push((
            cached,
            after.calls - before.calls,
            tokens(&after) - tokens(&before),
            hits,
            hits_ms,
        ));
    }
    let (_, calls_on, tokens_on, hits, mut hits_ms) = rows.remove(1);
    let (_, calls_off, tokens_off, _, _) = rows.remove(0);
    let saved_calls = 1.0 - calls_on as f64 / calls_off as f64;
    let saved_tokens = 1.0 - tokens_on as f64 / tokens_off as f64;
    println!("                 upstream calls   tokens");
    println!("  cache off      {calls_off:>14}   {tokens_off:>8}");
    println!("  cache on       {calls_on:>14}   {tokens_on:>8}");
    println!(
        "  saved          {:>13.2}%   {:>7.2}%   (repeat share of the draw {:.2}%)",
        100.0 * saved_calls,
        100.0 * saved_tokens,
        100.0 * repeat_share
    );
    let followers = QUERIES - hits - calls_on as usize;
    println!(
        "  cache on: {hits} hits at enqueue, {followers} followers of an identical job under way"
    );
    println!(
        "  hit latency during the run, 50 enqueues at a time beside a busy worker: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut hits_ms, 0.5),
        pct(&mut hits_ms, 0.99)
    );
    // Hits one at a time on a quiet system: what one user's repeated question waits.
    let mut alone = Vec::with_capacity(1000);
    for r in ranks.iter().take(1000) {
        let job = question("on", *r).with_cache(Duration::from_secs(3600));
        let t = Instant::now();
        let e = producer.enqueue(job).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if e.state == Some(JobState::Completed) {
            alone.push(ms);
        }
    }
    println!(
        "  hit latency, one at a time after the run ({} hits of 1,000): p50 {:.2} ms, p99 {:.2} ms",
        alone.len(),
        pct(&mut alone, 0.5),
        pct(&mut alone, 0.99)
    );
    // Memory: what purging the cache gives back, per entry.
    let mut conn = redis.client().await;
    let entries: u64 = redis::cmd("ZCARD")
        .arg("sluice:{on}:cache:index")
        .query_async(&mut conn)
        .await?;
    let used = |info: String| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let before: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let purged = producer.store().purge_cache("on", None).await?;
    let after: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    println!(
        "  Redis memory per cached answer: {:.0} bytes ({entries} entries, {purged} purged, used_memory {:.1} → {:.1} MiB)",
        (used(before.clone()) - used(after.clone())) / entries.max(1) as f64,
        used(before) / 1048576.0,
        used(after) / 1048576.0
    );
    Ok(())
}
