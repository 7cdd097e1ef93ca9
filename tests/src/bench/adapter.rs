//! The anchors harness's adapter protocol (`../shared/anchors/README.md`, "Adapter protocol"):
//!
//! - `enqueue`: enqueues N payloads (bulk: `Producer::enqueue_batch`, `--chunk` jobs per
//!   pipelined round trip; single: one `enqueue` per call from `--concurrency` tasks sharing one
//!   connection) and prints `{"n", "seconds"}`;
//! - `worker`: the real worker runtime in this process (`sluice_worker::worker`), printing
//!   `{"ready"}`, starting on `go`, reporting `{"done"}` every 50 ms, and on `stop` writing the
//!   per-job CSV from the job hashes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use sluice_common::Config;
use sluice_worker::metrics::Metrics;
use sluice_worker::shutdown::Shutdown;
use tokio::io::AsyncBufReadExt;

use super::{Kind, QUEUE, records};

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[arg(long, default_value_t = 6390)]
    pub port: u16,
    /// A Redis URL instead of `--port` (a `redis+cluster://` one, say).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Partitions of the queue (`queues.partitions`).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    #[arg(long, default_value = QUEUE)]
    pub queue: String,
    #[arg(long, default_value_t = 50_000)]
    pub n: usize,
    #[arg(long, value_enum, default_value_t = Mode::Bulk)]
    pub mode: Mode,
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 1000)]
    pub chunk: usize,
    #[arg(long, value_enum, default_value_t = Kind::Noop)]
    pub kind: Kind,
    #[arg(long, default_value_t = 1000)]
    pub backoff_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Bulk,
    Single,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(long, default_value_t = 6390)]
    pub port: u16,
    /// A Redis URL instead of `--port` (a `redis+cluster://` one, say).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Partitions of the queue (`queues.partitions`).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    #[arg(long, default_value = QUEUE)]
    pub queue: String,
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value_t = Kind::Noop)]
    pub kind: Kind,
    #[arg(long, default_value = "records.csv")]
    pub out: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:18080/v1/chat/completions")]
    pub mock_url: String,
    #[arg(long, default_value_t = 1000)]
    pub backoff_ms: u64,
    /// Fleet-wide limit: this many calls per `limit_duration_ms` (becomes the upstream's rpm).
    #[arg(long)]
    pub limit_max: Option<u64>,
    #[arg(long, default_value_t = 1000)]
    pub limit_duration_ms: u64,
    /// The limiter's burst window (`upstreams.*.burst_ms`).
    #[arg(long, default_value_t = 10)]
    pub burst_ms: u64,
    /// The upstream's `http` setting: auto, http1 or http2 (h2c to the mock).
    #[arg(long, default_value = "auto")]
    pub http: String,
}

fn redis_url(url: &Option<String>, port: u16) -> String {
    url.clone()
        .unwrap_or_else(|| format!("redis://127.0.0.1:{port}"))
}

fn say(v: serde_json::Value) {
    println!("{v}");
}

pub async fn enqueue(a: EnqueueArgs) -> anyhow::Result<()> {
    let mut config = Config::defaults();
    config.redis.url = redis_url(&a.redis_url, a.port);
    config.producer.batch_size = a.chunk.max(1);
    config
        .queues
        .partitions
        .insert(a.queue.clone(), a.partitions);
    let producer = sluice_producer::Producer::from_config(&config).await?;
    let jobs: Vec<_> = (0..a.n).map(|i| super::job(&a.queue, i)).collect();
    let t0 = Instant::now();
    let refused = match a.mode {
        Mode::Bulk => producer
            .enqueue_batch(jobs)
            .await
            .into_iter()
            .filter(|r| r.is_err())
            .count(),
        Mode::Single => {
            let jobs = std::sync::Mutex::new(jobs.into_iter());
            let next = || jobs.lock().ok().and_then(|mut j| j.next());
            let callers = (0..a.concurrency.max(1)).map(|_| async {
                let mut refused = 0;
                while let Some(job) = next() {
                    if producer.enqueue(job).await.is_err() {
                        refused += 1;
                    }
                }
                refused
            });
            futures::future::join_all(callers).await.into_iter().sum()
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    if refused > 0 {
        anyhow::bail!("{refused} of {} enqueues failed", a.n);
    }
    say(
        serde_json::json!({"n": a.n, "seconds": seconds, "mode": format!("{:?}", a.mode).to_lowercase()}),
    );
    Ok(())
}

/// The worker's config for this run, as a file would give it.
fn worker_config(a: &WorkerArgs, base_url: &str, consumer: &str) -> anyhow::Result<Config> {
    let limit = match a.limit_max {
        Some(max) => format!(
            "rpm = {}\nburst_ms = {}\n",
            max * 60_000 / a.limit_duration_ms.max(1),
            a.burst_ms
        ),
        None => String::new(),
    };
    let toml = format!(
        r#"
[redis]
url = "{url}"
[worker]
queues = ["{queue}"]
concurrency = {conc}
consumer = "{consumer}"
http_listen = ""
[log]
filter = "warn"
[retry]
# The upstream's retry-after (the workload's fixed backoff) wins over a 1 ms jittered backoff,
# and is honoured exactly: the other systems' fixed backoff has no spread either.
base_ms = 1
cap_ms = 1
server_wait_spread = 0.0
[queues.partitions]
{queue} = {partitions}
[upstreams.bench]
base_url = "{base_url}"
timeout_ms = 30000
http = "{http}"
{circuit}{limit}"#,
        url = redis_url(&a.redis_url, a.port),
        partitions = a.partitions,
        // W5's failures are the jobs' own, not an outage: its 2,000 503s in a second would
        // (rightly) open the circuit, which the workload is not about.
        circuit = if a.kind == Kind::FailOnce {
            "circuit_min_calls = 1000000000\n"
        } else {
            ""
        },
        queue = a.queue,
        conc = a.concurrency,
        http = a.http,
    );
    let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(file.path(), toml)?;
    Ok(Config::load(Some(file.path()))?)
}

/// The scheme, host and port of `url` (the job carries the path).
fn origin(url: &str) -> anyhow::Result<String> {
    let u = reqwest::Url::parse(url)?;
    Ok(u.origin().ascii_serialization())
}

pub async fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let base_url = match a.kind {
        Kind::Http => origin(&a.mock_url)?,
        Kind::Noop => super::instant::serve(None).await?,
        Kind::FailOnce => super::instant::serve(Some(a.backoff_ms)).await?,
    };
    let consumer = format!("bench-{}", std::process::id());
    let config = worker_config(&a, &base_url, &consumer)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log.filter))
        .with_writer(std::io::stderr)
        .try_init();
    // Load the library and create the groups before "go", as the other systems' workers do.
    let store = sluice_common::Store::connect(&config.redis.url, config.store_settings()).await?;
    for q in config.worker_queues() {
        store.create_group(&q).await?;
    }
    say(serde_json::json!({"ready": true, "pid": std::process::id()}));

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let shutdown = Shutdown::new();
    let metrics = Metrics::new(config.worker.concurrency);
    let counters: Vec<_> = config
        .worker_queues()
        .iter()
        .map(|q| metrics.completed.with_label_values(&[q.as_str()]))
        .collect();
    let completed = || counters.iter().map(|c| c.get()).sum::<u64>();
    let mut running = None;
    let mut metrics = Some(metrics);
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let mut last = u64::MAX;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) if l.trim() == "go" => {
                    if let Some(m) = metrics.take() {
                        running = Some(tokio::spawn(sluice_worker::worker::run_with_metrics(
                            config.clone(),
                            shutdown.clone(),
                            m,
                        )));
                    }
                }
                Ok(Some(l)) if l.trim() == "stop" => break,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            },
            _ = ticker.tick() => {
                let done = completed();
                if done != last {
                    last = done;
                    say(serde_json::json!({"done": done}));
                }
            }
        }
    }
    shutdown.stop.cancel();
    if let Some(r) = running {
        r.await??;
    }
    // Per-job records are read from one server (SCAN); a cluster run reports throughput only.
    let recs = if store.is_cluster() {
        Vec::new()
    } else {
        let client = redis::Client::open(config.redis.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        records::read(&mut conn, &a.queue, Some(&consumer)).await?
    };
    records::write_csv(&a.out, &recs)?;
    say(serde_json::json!({"stopped": true, "done": completed(), "records": recs.len()}));
    Ok(())
}
