//! The soak run (`sluice-soak`, by hand through tests/soak.sh; not in CI): the mock's whole
//! fault menu at once — 500/502/503, rate-limit and quota 429s, rare 401s, 400s, hangs past the
//! timeout, connections cut mid-answer, latency with spread — plus a TCP reset of the workers'
//! Redis links every minute, under a steady enqueue rate for N minutes, with a worker fleet of
//! real processes.
//!
//! Every 10 s it prints the jobs so far and each worker's RSS and open file descriptors; at the
//! end, a summary: jobs, faults by kind, lost, completed twice, duplicate calls, RSS and
//! descriptors first/last/max (flat is the goal). It exits non-zero when a job was lost or
//! completed twice, or a worker's RSS grew more than 50% after the first minute.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::chat_job;
use crate::events::Events;
use crate::mock::MockConfig;
use crate::proxy::FaultProxy;
use crate::worker_process::{WorkerOptions, WorkerProcess};

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub minutes: f64,
    /// Jobs enqueued per second.
    pub rate: u32,
    pub workers: usize,
}

/// One worker's figure over time.
#[derive(Debug, Default)]
struct Series(Vec<u64>);

impl Series {
    fn summary(&self) -> String {
        let first = self.0.first().copied().unwrap_or(0);
        let last = self.0.last().copied().unwrap_or(0);
        let max = self.0.iter().copied().max().unwrap_or(0);
        format!("first {first}, last {last}, max {max}")
    }
}

fn proc_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn the_menu() -> MockConfig {
    MockConfig {
        latency_ms: 20,
        spread_ms: 80,
        fail_500: 0.02,
        fail_502: 0.02,
        fail_503: 0.03,
        rate_limit_429: 0.02,
        rate_limit_reset_ms: 500,
        quota_429: 0.002,
        auth_401: 0.0005,
        bad_400: 0.005,
        hang: 0.005,
        hang_ms: 5_000,
        reset: 0.01,
        ..MockConfig::default()
    }
}

/// Runs the soak and prints its summary; an error when a goal was missed.
pub async fn run(opts: SoakOptions) -> anyhow::Result<()> {
    let rig = crate::rig::Rig::start(the_menu()).await;
    let (redis, mock, producer) = (&rig.redis, &rig.mock, rig.producer.clone());
    let link = FaultProxy::start(format!("127.0.0.1:{}", redis.port()).parse()?).await;
    let mut options = WorkerOptions::new(&format!("redis://{}", link.addr()), &mock.url());
    options.concurrency = 200;
    options.lease_ms = 10_000;
    options.timeout_ms = 2_000;
    options.max_attempts = 8;
    options.base_ms = 100;
    options.cap_ms = 2_000;
    options.quota_wait_ms = 1_000;
    options.extra = "circuit_cooloff_ms = 2000\n".into();
    let workers: Vec<WorkerProcess> = (0..opts.workers)
        .map(|i| WorkerProcess::spawn(&format!("soak-{i}"), &options))
        .collect();
    let mut events = Events::new(&redis.url(), "q").await;

    let run_for = Duration::from_secs_f64(opts.minutes * 60.0);
    let started = Instant::now();
    let mut ids: Vec<String> = Vec::new();
    let mut rss: Vec<Series> = (0..workers.len()).map(|_| Series::default()).collect();
    let mut fds: Vec<Series> = (0..workers.len()).map(|_| Series::default()).collect();
    let mut redis_clients = Series::default();
    let mut next_sample = Instant::now();
    let mut next_reset = Instant::now() + Duration::from_secs(60);
    let mut link_resets = 0;
    let tick = Duration::from_millis(100);
    let per_tick = (f64::from(opts.rate) * tick.as_secs_f64()).max(1.0) as usize;
    let mut r = redis.client().await;
    println!(
        "soak: {} min, {} jobs/s, {} workers, mock faults {:?}",
        opts.minutes,
        opts.rate,
        opts.workers,
        the_menu()
    );
    while started.elapsed() < run_for {
        // Paced by the clock: as many as the rate says by now (reading events returns early).
        let due = (f64::from(opts.rate) * started.elapsed().as_secs_f64()) as usize;
        if due > ids.len() {
            let batch = (ids.len()..due.min(ids.len() + per_tick * 10))
                .map(chat_job)
                .collect();
            ids.extend(crate::enqueue_all(&producer, batch).await);
        }
        events.read(tick).await;
        if Instant::now() >= next_reset {
            link.reset_all();
            link_resets += 1;
            next_reset += Duration::from_secs(60);
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(10);
            let mut line = format!(
                "{:>5.0}s enqueued {} ended {}",
                started.elapsed().as_secs_f64(),
                ids.len(),
                events.seen.terminal_jobs()
            );
            for (i, w) in workers.iter().enumerate() {
                let (kib, n) = (proc_field(w.pid(), "VmRSS:"), open_fds(w.pid()));
                rss[i].0.push(kib / 1024);
                fds[i].0.push(n);
                line += &format!(" | {} {} MiB {} fds", w.name, kib / 1024, n);
            }
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut r)
                .await?;
            let clients = info
                .lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            redis_clients.0.push(clients);
            line += &format!(" | redis clients {clients}");
            println!("{line}");
        }
    }
    let n = ids.len();
    println!("soak: enqueueing stopped at {n}; waiting for the rest to end");
    let all = events
        .until(Duration::from_secs(300), |s| s.terminal_jobs() >= n)
        .await;

    let stats = producer.store().stats("q").await?;
    let mut lost = 0;
    let mut twice = 0;
    let mut dead_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for id in &ids {
        match producer.status("q", id).await? {
            None => lost += 1,
            Some(s) if !s.state.is_terminal() => lost += 1,
            Some(s) => {
                if let Some(reason) = s.dead_reason {
                    *dead_by_reason.entry(reason).or_default() += 1;
                }
            }
        }
        if events.seen.job(id, "completed") > 1 {
            twice += 1;
        }
    }
    let calls = mock.stats(true);
    let per_job = calls.jobs.clone().unwrap_or_default();
    let duplicate_calls: usize = per_job
        .values()
        .map(|c| {
            c.iter()
                .filter(|c| c.status == 200)
                .count()
                .saturating_sub(1)
        })
        .sum();
    let faults: HashMap<&str, u64> = calls
        .by_status
        .iter()
        .filter(|(s, _)| s.as_str() != "200")
        .map(|(s, n)| {
            let kind = match s.as_str() {
                "0" => "hang",
                "1" => "reset",
                other => other,
            };
            (kind, *n)
        })
        .collect();
    println!("\n## soak summary");
    println!(
        "jobs {n}; completed {}; dead {:?}; lost {lost}; completed twice {twice}; all ended: {all}",
        stats.counts.get("completed").copied().unwrap_or(0),
        dead_by_reason
    );
    println!(
        "calls {}; faults injected by the mock {faults:?}; Redis link resets {link_resets} ({} connections cut); duplicate 200s {duplicate_calls} ({:.3}% of jobs)",
        calls.calls,
        link.counts().reset,
        100.0 * duplicate_calls as f64 / n.max(1) as f64
    );
    for (i, w) in workers.iter().enumerate() {
        println!(
            "{}: RSS MiB {}; open fds {}",
            w.name,
            rss[i].summary(),
            fds[i].summary()
        );
    }
    println!("redis connected clients {}", redis_clients.summary());

    if lost > 0 || twice > 0 {
        bail!("lost {lost}, completed twice {twice}");
    }
    for (i, s) in rss.iter().enumerate() {
        // After the first minute's warm-up, RSS stays within 50%.
        let warm = s.0.get(6).copied().context("run at least a minute")?;
        let last = s.0.last().copied().unwrap_or(0);
        if last > warm + warm / 2 {
            bail!("{} grew from {warm} to {last} MiB", workers[i].name);
        }
    }
    Ok(())
}
