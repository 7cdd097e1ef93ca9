//! W2 on a Redis Cluster against one Redis (issue 8): the same drain — N pre-queued jobs answered
//! at once, one worker at concurrency 50 — on one `redis-server` and on a three-master cluster
//! (no replicas, no persistence, like the single one) with the queue in P partitions, the two
//! interleaved run after run. Throughput is jobs over the time from "go" to the last completion
//! (the worker reports its count every 50 ms); Redis CPU is `INFO` user + sys summed over the
//! masters.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::QUEUE;
use super::driver::WorkerChild;
use crate::RedisServer;
use crate::redis_cluster::RedisCluster;

/// One drain's figures.
#[derive(Debug, Clone, Copy)]
struct Drain {
    jobs_per_s: f64,
    redis_cpu_ms_per_1k: f64,
}

/// Runs the comparison `runs` times and prints each drain and the medians' ratio.
pub async fn w2(runs: usize, n: usize, partitions: u32) -> anyhow::Result<()> {
    let mut single = Vec::new();
    let mut cluster = Vec::new();
    for run in 1..=runs {
        let redis = RedisServer::start_with(&["--save", "", "--appendonly", "no"]).await;
        let d = drain(&[redis.url()], &redis.url(), 1, n).await?;
        println!(
            "run {run} one Redis:                {:>7.0} jobs/s, Redis CPU {:.1} ms per 1k jobs",
            d.jobs_per_s, d.redis_cpu_ms_per_1k
        );
        single.push(d);
        drop(redis);
        let c = RedisCluster::start_shape(3, 0, &["--save", "", "--appendonly", "no"]).await;
        let nodes: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
        let d = drain(&nodes, &c.url(), partitions, n).await?;
        println!(
            "run {run} 3-master cluster, P = {partitions}: {:>7.0} jobs/s, Redis CPU {:.1} ms per 1k jobs (all masters)",
            d.jobs_per_s, d.redis_cpu_ms_per_1k
        );
        cluster.push(d);
    }
    let median = |v: &[Drain], f: fn(&Drain) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(|a, b| a.total_cmp(b));
        xs[xs.len() / 2]
    };
    let (s, c) = (
        median(&single, |d| d.jobs_per_s),
        median(&cluster, |d| d.jobs_per_s),
    );
    let (sc, cc) = (
        median(&single, |d| d.redis_cpu_ms_per_1k),
        median(&cluster, |d| d.redis_cpu_ms_per_1k),
    );
    println!(
        "W2 cluster/one Redis: throughput {:.2}x ({c:.0} vs {s:.0} jobs/s), Redis CPU per job {:.2}x ({cc:.1} vs {sc:.1} ms per 1k)",
        c / s,
        cc / sc
    );
    Ok(())
}

/// Pre-queues `n` jobs, then drains them with one worker; `nodes` are the servers whose CPU counts.
async fn drain(nodes: &[String], url: &str, partitions: u32, n: usize) -> anyhow::Result<Drain> {
    let exe = std::env::current_exe()?;
    let status = Command::new(&exe)
        .args(["enqueue", "--redis-url", url, "--queue", QUEUE])
        .args([
            "--partitions",
            &partitions.to_string(),
            "--n",
            &n.to_string(),
        ])
        .args(["--mode", "bulk"])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "pre-queue failed");
    let dir = tempfile::tempdir()?;
    let args: Vec<String> = [
        "--redis-url",
        url,
        "--queue",
        QUEUE,
        "--partitions",
        &partitions.to_string(),
        "--concurrency",
        "50",
        "--kind",
        "noop",
        "--out",
        &dir.path().join("records.csv").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut worker = WorkerChild::spawn(&args)?;
    worker
        .ready
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow::anyhow!("the worker did not become ready"))?;
    let cpu0 = cpu_seconds(nodes).await?;
    let t0 = Instant::now();
    worker.send("go");
    let deadline = t0 + Duration::from_secs(300);
    let mut last = (0, t0);
    while last.0 < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let done = worker.done.load(std::sync::atomic::Ordering::Relaxed);
        if done != last.0 {
            last = (done, Instant::now());
        }
    }
    let cpu1 = cpu_seconds(nodes).await?;
    worker.send("stop");
    let _ = worker.child.wait();
    anyhow::ensure!(last.0 >= n as u64, "only {} of {n} completed", last.0);
    Ok(Drain {
        jobs_per_s: n as f64 / (last.1 - t0).as_secs_f64(),
        redis_cpu_ms_per_1k: (cpu1 - cpu0) * 1e6 / n as f64,
    })
}

/// CPU seconds (user + sys) used so far by the servers at `urls`, summed.
async fn cpu_seconds(urls: &[String]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        for line in info.lines() {
            if let Some(v) = line
                .strip_prefix("used_cpu_user:")
                .or_else(|| line.strip_prefix("used_cpu_sys:"))
            {
                total += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    Ok(total)
}
