//! W1–W6 standalone: starts its own `redis-server` (no persistence) and, for W3 and W6, the mock
//! model API in this process; runs the workers as child processes of this same binary (the
//! `worker` adapter command) and prints, per workload, jobs/s, latency p50/p99, Redis commands
//! per job and Redis CPU ms per 1,000 jobs (`INFO` deltas over the drain), and the workers' CPU
//! and peak RSS (`/proc`). The side-by-side run with BullMQ is `tests/bench/compare.sh`, which feeds the
//! same adapter to the anchors' harness.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Kind;
use super::records::{self, Record};
use crate::RedisServer;
use crate::mock::{MockConfig, MockServer, Stats};

/// The workloads, by the anchors' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    W1,
    W2,
    W3,
    W4,
    W5,
    W6,
    All,
}

/// What one case measured.
pub type Figures = serde_json::Map<String, Value>;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A snapshot of Redis's `INFO`: commands processed, CPU seconds (user + sys), and per command
/// (`INFO commandstats`) its calls and microseconds.
struct RedisStats {
    cmds: f64,
    cpu_s: f64,
    per_command: HashMap<String, (f64, f64)>,
}

async fn redis_stats(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<RedisStats> {
    let info: String = redis::cmd("INFO").arg("all").query_async(conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let mut per_command = HashMap::new();
    for line in info.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let value = |key: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        per_command.insert(name.to_string(), (value("calls"), value("usec")));
    }
    Ok(RedisStats {
        cmds: field("total_commands_processed"),
        cpu_s: field("used_cpu_user") + field("used_cpu_sys"),
        per_command,
    })
}

impl RedisStats {
    /// Per job between `self` and `later`: commands, Redis CPU ms per 1,000 jobs, and each
    /// command's calls (and its own µs) per job, busiest first.
    fn delta(&self, later: &RedisStats, jobs: f64, f: &mut Figures) {
        f.insert(
            "redis_cmds_per_job".into(),
            json!((later.cmds - self.cmds) / jobs),
        );
        f.insert(
            "redis_cpu_ms_per_1k".into(),
            json!((later.cpu_s - self.cpu_s) * 1e6 / jobs),
        );
        let mut per: Vec<(String, f64, f64)> = later
            .per_command
            .iter()
            .map(|(k, (calls, usec))| {
                let (c0, u0) = self.per_command.get(k).copied().unwrap_or((0.0, 0.0));
                (k.clone(), (calls - c0) / jobs, (usec - u0) / jobs)
            })
            .filter(|(_, calls, _)| *calls > 0.0005)
            .collect();
        per.sort_by(|a, b| b.1.total_cmp(&a.1));
        let text: Vec<String> = per
            .iter()
            .map(|(k, c, u)| format!("{k} {c:.2} ({u:.1} µs)"))
            .collect();
        f.insert("redis_calls_per_job".into(), json!(text.join(", ")));
    }
}

/// CPU seconds and peak RSS (MiB) of a process, from /proc.
pub(super) fn proc_usage(pid: u32) -> (f64, f64) {
    let tick = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / tick)
        })
        .unwrap_or(0.0);
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0;
    (cpu, hwm)
}

pub(super) fn pct(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let k = (xs.len() - 1) as f64 * q;
    let lo = k.floor() as usize;
    let hi = (lo + 1).min(xs.len() - 1);
    xs[lo] + (xs[hi] - xs[lo]) * (k - lo as f64)
}

/// A worker child process speaking the adapter protocol.
pub(super) struct WorkerChild {
    pub(super) child: Child,
    stdin: ChildStdin,
    pub(super) done: Arc<AtomicU64>,
    pub(super) ready: mpsc::Receiver<()>,
}

impl WorkerChild {
    pub(super) fn spawn(args: &[String]) -> anyhow::Result<WorkerChild> {
        let exe = std::env::current_exe()?;
        // SLUICE_BENCH_WRAP runs each worker under a profiler, e.g. "heaptrack" (its figures
        // are then the profiler's process's, not the worker's).
        let mut cmd = match std::env::var("SLUICE_BENCH_WRAP") {
            Ok(wrap) if !wrap.is_empty() => {
                let mut c = Command::new(wrap);
                c.arg(exe);
                c
            }
            _ => Command::new(exe),
        };
        let mut child = cmd
            .arg("worker")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let done = Arc::new(AtomicU64::new(0));
        let (tx, ready) = mpsc::channel();
        let d = done.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v.get("ready").is_some() {
                    let _ = tx.send(());
                }
                if let Some(n) = v.get("done").and_then(Value::as_u64) {
                    d.store(n, Ordering::Relaxed);
                }
            }
        });
        Ok(WorkerChild {
            child,
            stdin,
            done,
            ready,
        })
    }

    pub(super) fn send(&mut self, line: &str) {
        let _ = writeln!(self.stdin, "{line}");
        let _ = self.stdin.flush();
    }
}

/// One workload's settings.
struct Case {
    name: &'static str,
    n: usize,
    concurrency: usize,
    kind: Kind,
    workers: usize,
    limit: Option<(u64, u64)>,
    /// Mock latency (W3, W6), served by this process.
    mock_latency_ms: Option<u64>,
    /// The upstream's `http` setting.
    http: &'static str,
}

/// W6: 10,000 calls in flight at once (mock at 2 s, one worker at concurrency 10,000), over the
/// upstream setting `http`.
fn w6(name: &'static str, http: &'static str) -> Case {
    Case {
        name,
        n: 10_000,
        concurrency: 10_000,
        kind: Kind::Http,
        workers: 1,
        limit: None,
        mock_latency_ms: Some(2_000),
        http,
    }
}

pub async fn run(which: Workload, out: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let redis = RedisServer::start_with(&["--save", "", "--appendonly", "no"]).await;
    let port = redis.port();
    let mut conn = redis.client().await;
    let mut results: Vec<Figures> = Vec::new();
    let want = |w: Workload| which == Workload::All || which == w;
    if want(Workload::W1) {
        for (mode, name) in [("bulk", "W1-bulk"), ("single", "W1-single-c50")] {
            results.push(enqueue_case(&mut conn, port, name, mode).await?);
        }
    }
    let cases = [
        (
            Workload::W2,
            Case {
                name: "W2-drain",
                n: 50_000,
                concurrency: 50,
                kind: Kind::Noop,
                workers: 1,
                limit: None,
                mock_latency_ms: None,
                http: "auto",
            },
        ),
        (
            Workload::W3,
            Case {
                name: "W3-http",
                n: 20_000,
                concurrency: 200,
                kind: Kind::Http,
                workers: 1,
                limit: None,
                mock_latency_ms: Some(50),
                http: "auto",
            },
        ),
        (
            Workload::W4,
            Case {
                name: "W4-limit500",
                n: 10_000,
                concurrency: 50,
                kind: Kind::Noop,
                workers: 2,
                limit: Some((50, 100)),
                mock_latency_ms: None,
                http: "auto",
            },
        ),
        (
            Workload::W5,
            Case {
                name: "W5-retry",
                n: 2_000,
                concurrency: 50,
                kind: Kind::FailOnce,
                workers: 1,
                limit: None,
                mock_latency_ms: None,
                http: "auto",
            },
        ),
        (Workload::W6, w6("W6-memory-10k", "auto")),
        // h2c to the mock: many calls on one connection (docs/OPERATIONS.md, "HTTP to upstreams").
        (Workload::W6, w6("W6-memory-10k-http2", "http2")),
    ];
    for (w, case) in cases {
        if want(w) {
            results.push(worker_case(&mut conn, port, &case).await?);
        }
    }
    for r in &results {
        println!("{}", Value::Object(r.clone()));
    }
    print_table(&results);
    if let Some(path) = out {
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn enqueue_case(
    conn: &mut redis::aio::MultiplexedConnection,
    port: u16,
    name: &str,
    mode: &str,
) -> anyhow::Result<Figures> {
    let _: () = redis::cmd("FLUSHALL").query_async(conn).await?;
    let n = 50_000;
    let s0 = redis_stats(conn).await?;
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args([
            "enqueue",
            "--port",
            &port.to_string(),
            "--n",
            &n.to_string(),
            "--mode",
            mode,
        ])
        .stderr(Stdio::inherit())
        .output()?;
    let s1 = redis_stats(conn).await?;
    let line = String::from_utf8_lossy(&output.stdout);
    let v: Value = line
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| anyhow::anyhow!("{name}: enqueue printed no result: {line}"))?;
    let secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
    let mut f = Figures::new();
    f.insert("case".into(), json!(name));
    f.insert("n".into(), json!(n));
    f.insert("jobs_per_s".into(), json!(n as f64 / secs));
    s0.delta(&s1, n as f64, &mut f);
    Ok(f)
}

async fn worker_case(
    conn: &mut redis::aio::MultiplexedConnection,
    port: u16,
    case: &Case,
) -> anyhow::Result<Figures> {
    let _: () = redis::cmd("FLUSHALL").query_async(conn).await?;
    let mock = match case.mock_latency_ms {
        Some(ms) => Some(
            MockServer::start(MockConfig {
                latency_ms: ms,
                ..MockConfig::default()
            })
            .await,
        ),
        None => None,
    };
    // Pre-queue (bulk), as the harness does.
    let exe = std::env::current_exe()?;
    let status = Command::new(&exe)
        .args([
            "enqueue",
            "--port",
            &port.to_string(),
            "--n",
            &case.n.to_string(),
            "--mode",
            "bulk",
        ])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "{}: pre-queue failed", case.name);
    let dir = tempfile::tempdir()?;
    let mut workers = Vec::new();
    for k in 0..case.workers {
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--concurrency".into(),
            case.concurrency.to_string(),
            "--kind".into(),
            match case.kind {
                Kind::Noop => "noop",
                Kind::Http => "http",
                Kind::FailOnce => "fail_once",
            }
            .into(),
            "--out".into(),
            dir.path()
                .join(format!("records{k}.csv"))
                .display()
                .to_string(),
            "--backoff-ms".into(),
            "1000".into(),
            "--http".into(),
            case.http.into(),
        ];
        if let Some(m) = &mock {
            args.extend([
                "--mock-url".into(),
                format!("{}/v1/chat/completions", m.url()),
            ]);
        }
        if let Some((max, dur)) = case.limit {
            args.extend([
                "--limit-max".into(),
                max.to_string(),
                "--limit-duration-ms".into(),
                dur.to_string(),
            ]);
        }
        workers.push(WorkerChild::spawn(&args)?);
    }
    for w in &workers {
        w.ready
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow::anyhow!("{}: a worker did not become ready", case.name))?;
    }
    let cpu0: Vec<f64> = workers.iter().map(|w| proc_usage(w.child.id()).0).collect();
    let s0 = redis_stats(conn).await?;
    let go = now_ms();
    for w in &mut workers {
        w.send("go");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak_rss = 0.0f64;
    while workers
        .iter()
        .map(|w| w.done.load(Ordering::Relaxed))
        .sum::<u64>()
        < case.n as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s1 = redis_stats(conn).await?;
    let usage: Vec<(f64, f64)> = workers.iter().map(|w| proc_usage(w.child.id())).collect();
    for u in &usage {
        peak_rss += u.1;
    }
    for w in &mut workers {
        w.send("stop");
    }
    for w in &mut workers {
        let _ = w.child.wait();
    }
    let mut recs: Vec<Record> = Vec::new();
    for k in 0..case.workers {
        recs.extend(records::read_csv(
            &dir.path().join(format!("records{k}.csv")),
        )?);
    }
    let n = recs.len() as f64;
    let mut f = Figures::new();
    f.insert("case".into(), json!(case.name));
    f.insert("n".into(), json!(case.n));
    f.insert("completed".into(), json!(recs.len()));
    if recs.is_empty() {
        return Ok(f);
    }
    let last = recs.iter().map(|r| r.end_ms).fold(f64::MIN, f64::max);
    f.insert("jobs_per_s".into(), json!(n / ((last - go) / 1000.0)));
    let mut e2e: Vec<f64> = recs.iter().map(|r| r.end_ms - r.enq_ms).collect();
    let mut pick: Vec<f64> = recs.iter().map(|r| r.end_ms - r.start_ms).collect();
    f.insert("enq_to_done_ms_p50".into(), json!(pct(&mut e2e, 0.5)));
    f.insert("enq_to_done_ms_p99".into(), json!(pct(&mut e2e, 0.99)));
    f.insert("call_to_done_ms_p50".into(), json!(pct(&mut pick, 0.5)));
    f.insert("call_to_done_ms_p99".into(), json!(pct(&mut pick, 0.99)));
    s0.delta(&s1, n, &mut f);
    let wcpu: f64 = usage.iter().zip(&cpu0).map(|(u, c)| u.0 - c).sum();
    f.insert("worker_cpu_ms_per_1k".into(), json!(wcpu * 1e6 / n));
    f.insert("worker_peak_rss_mib".into(), json!(peak_rss));
    if let Some((max, dur)) = case.limit {
        let limit = max as f64 * 1000.0 / dur as f64;
        // Call times are whole milliseconds (the worker's clock).
        let mut starts: Vec<u64> = recs.iter().map(|r| r.start_ms as u64).collect();
        starts.sort_unstable();
        let rate = (n - 1.0) / ((starts[starts.len() - 1] - starts[0]) as f64 / 1000.0);
        let busiest = Stats::busiest_second(&starts);
        f.insert("limit_per_s".into(), json!(limit));
        f.insert("pct_of_limit".into(), json!(100.0 * rate / limit));
        f.insert("max_starts_any_1s".into(), json!(busiest));
        f.insert(
            "max_starts_any_1s_pct".into(),
            json!(100.0 * busiest as f64 / limit),
        );
    }
    if case.kind == Kind::FailOnce {
        let mut late: Vec<f64> = recs
            .iter()
            .filter_map(|r| Some(r.start_ms - r.fail_ms? - 1000.0))
            .collect();
        f.insert("retried".into(), json!(late.len()));
        f.insert("retry_lateness_ms_p50".into(), json!(pct(&mut late, 0.5)));
        f.insert("retry_lateness_ms_p99".into(), json!(pct(&mut late, 0.99)));
    }
    if case.kind == Kind::Http && case.mock_latency_ms == Some(50) {
        f.insert(
            "pct_of_little_limit".into(),
            json!(100.0 * (n / ((last - go) / 1000.0)) / (case.concurrency as f64 / 0.05)),
        );
    }
    Ok(f)
}

fn print_table(results: &[Figures]) {
    let keys = [
        ("jobs_per_s", "jobs/s"),
        ("redis_cmds_per_job", "cmds/job"),
        ("redis_cpu_ms_per_1k", "Redis CPU ms/1k"),
        ("worker_cpu_ms_per_1k", "worker CPU ms/1k"),
        ("worker_peak_rss_mib", "worker RSS MiB"),
        ("enq_to_done_ms_p50", "enq→done p50"),
        ("enq_to_done_ms_p99", "enq→done p99"),
        ("call_to_done_ms_p50", "call→done p50"),
        ("call_to_done_ms_p99", "call→done p99"),
        ("pct_of_little_limit", "% of Little limit"),
        ("pct_of_limit", "% of limit"),
        ("max_starts_any_1s_pct", "busiest 1 s %"),
        ("retry_lateness_ms_p50", "lateness p50 ms"),
        ("retry_lateness_ms_p99", "lateness p99 ms"),
    ];
    println!("\n| case | figures |\n|---|---|");
    for r in results {
        let mut cells: HashMap<&str, String> = HashMap::new();
        for (k, label) in keys {
            if let Some(v) = r.get(k).and_then(Value::as_f64) {
                cells.insert(label, format!("{label} {v:.1}"));
            }
        }
        let text: Vec<String> = keys.iter().filter_map(|(_, l)| cells.remove(l)).collect();
        println!(
            "| {} | {} |",
            r.get("case").and_then(Value::as_str).unwrap_or("?"),
            text.join("; ")
        );
    }
}
