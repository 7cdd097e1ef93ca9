//! Observability end to end: a real worker's /metrics after real jobs (counters that add up,
//! `promtool check metrics`, every metric the dashboard and the alerts query present), the
//! health probes, and a canary secret that must never reach the logs or Redis.

use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_common::{NewJob, Schedule};
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::BOUND;
use sluice_tests::rig::Rig;
use sluice_tests::scrape::{self, Scrape};
use sluice_tests::worker_process::WorkerProcess;
use sluice_tests::{chat_job, scripted_job};

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// `promtool <args>` with `input` on stdin; the test fails with its output unless it succeeds.
fn promtool(args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool not found ({e}): install Debian's prometheus package (tests/run.sh does)"
            )
        });
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every PromQL expression in the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/sluice.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

fn alert_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).expect("alerts");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts are YAML");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            out.push(r["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// The alerts' own unit tests (deploy/prometheus/alerts_test.yml): a queue in three partitions
/// is judged as one queue (each partition under the threshold, the queue over it), and gauges
/// that every worker reports are not summed across workers.
#[test]
fn alerts_fold_partitions_into_their_queue() {
    promtool(
        &[
            "test",
            "rules",
            repo_file("deploy/prometheus/alerts_test.yml")
                .to_str()
                .expect("path"),
        ],
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_add_up_pass_promtool_and_cover_the_dashboard() {
    // Failures of each class the counters split: 503s retried, 400s dead-lettered.
    let rig = Rig::start(MockConfig {
        latency_ms: 2,
        fail_503: 0.05,
        bad_400: 0.01,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.log_json = true;
    options.log_filter = "info".into();
    // A fallback chain, so its series exist (never taken: transient failures stay put).
    options.extra = format!(
        "fallbacks = [\"spare\"]\nfallback_transient_tries = 100\n[upstreams.spare]\nbase_url = \"{}\"\n",
        rig.mock.url()
    );
    let mut worker = WorkerProcess::spawn("w1", &options);
    let addr = worker
        .ready(BOUND)
        .await
        .unwrap_or_else(|| panic!("not ready:\n{}", worker.log()));
    assert_eq!(scrape::get(addr, "/healthz").await.0, 200);
    let (ready, why) = scrape::get(addr, "/readyz").await;
    assert_eq!(ready, 200, "{why}");

    let mut events = rig.events().await;
    // 1,000 jobs, 20 of which are sent twice under the same dedupe key, and 5 scheduled an hour
    // ahead and cancelled: enqueued 1,005, deduplicated 20.
    let mut jobs: Vec<NewJob> = (0..1000)
        .map(|i| {
            let j = chat_job(i);
            if i < 20 {
                j.with_dedupe_key(format!("k{i}"))
            } else {
                j
            }
        })
        .collect();
    jobs.extend((0..20).map(|i| chat_job(i).with_dedupe_key(format!("k{i}"))));
    let later: Vec<NewJob> = (0..5)
        .map(|i| chat_job(2000 + i).with_schedule(Schedule::After(Duration::from_secs(3600))))
        .collect();
    let results = rig.producer.enqueue_batch(jobs).await;
    let duplicates = results
        .iter()
        .filter(|r| !r.as_ref().expect("enqueue").created)
        .count();
    assert_eq!(duplicates, 20);
    for r in rig.producer.enqueue_batch(later).await {
        let id = r.expect("enqueue").id;
        rig.producer.cancel("q", &id).await.expect("cancel");
    }
    let done = events.until(BOUND, |s| s.terminal_jobs() >= 1005).await;
    assert!(done, "jobs did not all end: {:?}", events.seen.totals);

    let m = Scrape::fetch(addr).await;
    let q = [("queue", "q")];
    let state = |s: &str| m.sum("sluice_queue_jobs", &[("queue", "q"), ("state", s)]);
    let enqueued = m.sum("sluice_queue_enqueued_total", &q);
    let (completed, dead, cancelled) = (state("completed"), state("dead"), state("cancelled"));
    println!(
        "scrape after 1,000 jobs:\n{}",
        m.text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(enqueued, 1005.0);
    assert_eq!(m.sum("sluice_queue_deduplicated_total", &q), 20.0);
    assert_eq!(cancelled, 5.0);
    for live in ["scheduled", "queued", "running", "retrying"] {
        assert_eq!(state(live), 0.0, "{live} jobs left");
    }
    assert_eq!(
        enqueued,
        completed + dead + cancelled,
        "enqueued = completed + dead + cancelled"
    );
    assert!(
        dead > 0.0 && completed > 900.0,
        "completed {completed}, dead {dead}"
    );

    // This worker ran every job: its own counters match Redis's.
    let started = m.sum("sluice_jobs_started_total", &q);
    let w_completed = m.sum("sluice_jobs_completed_total", &q);
    let w_dead = m.sum("sluice_jobs_dead_total", &q);
    let retried = m.sum("sluice_jobs_retried_total", &q);
    let deferred = m.sum("sluice_jobs_deferred_total", &q);
    assert_eq!(w_completed, completed);
    assert_eq!(w_dead, dead);
    assert_eq!(
        m.sum(
            "sluice_jobs_dead_total",
            &[("queue", "q"), ("reason", "invalid")]
        ),
        dead,
        "only 400s are dead"
    );
    assert!(retried > 0.0, "5% 503s were retried");
    assert_eq!(
        started,
        w_completed + w_dead + retried + deferred,
        "every start ends in one of complete, dead, retry or defer"
    );
    let up = [("upstream", "mock")];
    let answers = m.sum("sluice_upstream_responses_total", &up);
    assert_eq!(
        m.sum(
            "sluice_upstream_responses_total",
            &[("upstream", "mock"), ("status", "2xx")]
        ),
        completed
    );
    assert_eq!(
        m.sum(
            "sluice_upstream_responses_total",
            &[("upstream", "mock"), ("status", "5xx")]
        ),
        m.sum(
            "sluice_jobs_retried_total",
            &[("queue", "q"), ("class", "transient")]
        )
    );
    assert_eq!(m.sum("sluice_upstream_call_seconds_count", &up), answers);
    assert_eq!(
        m.sum(
            "sluice_job_duration_seconds_count",
            &[("queue", "q"), ("outcome", "completed")]
        ),
        completed
    );
    assert_eq!(m.sum("sluice_queue_wait_seconds_count", &q), 1000.0);
    assert!(m.sum("sluice_tokens_total", &[("kind", "prompt")]) > 0.0);
    assert_eq!(m.sum("sluice_circuit_state", &up), 0.0);
    assert_eq!(m.sum("sluice_jobs_in_flight", &[]), 0.0);
    assert!(
        !m.text.contains(&results[0].as_ref().expect("id").id),
        "a job id in the metrics"
    );

    promtool(&["check", "metrics"], &m.text);
    promtool(
        &[
            "check",
            "rules",
            repo_file("deploy/prometheus/alerts.yml")
                .to_str()
                .expect("path"),
        ],
        "",
    );
    let present = m.families();
    for expr in dashboard_exprs().iter().chain(alert_exprs().iter()) {
        for name in scrape::metrics_in(expr) {
            assert!(
                present.contains(&name),
                "{name} (queried by `{expr}`) is not in a real scrape"
            );
        }
    }

    // One job's life in the JSON log: its span carries queue, id and upstream.
    let id = &results[25].as_ref().expect("id").id;
    let log = worker.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
    assert!(!lines.is_empty(), "job {id} is not in the log");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert_eq!(v["span"]["upstream"], "mock", "{line}");
    }
    println!("log of job {id}:\n{}", lines.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_fails_while_shutting_down_and_without_redis() {
    let rig = Rig::start(MockConfig {
        hang_ms: 60_000,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.grace_ms = 60_000;
    options.timeout_ms = 60_000;
    let mut worker = WorkerProcess::spawn("w1", &options);
    let addr = worker
        .ready(BOUND)
        .await
        .unwrap_or_else(|| panic!("not ready:\n{}", worker.log()));

    // A call in flight keeps the worker in its grace period after SIGTERM.
    rig.producer
        .enqueue(scripted_job(1, &[0]))
        .await
        .expect("enqueue");
    let deadline = tokio::time::Instant::now() + BOUND;
    while rig.mock.stats(false).calls == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.terminate();
    let mut status = 200;
    while status == 200 && tokio::time::Instant::now() < deadline {
        status = scrape::get(addr, "/readyz").await.0;
    }
    assert_eq!(status, 503, "not ready while shutting down");
    assert_eq!(scrape::get(addr, "/healthz").await.0, 200, "still alive");
    worker.kill9();

    // Redis gone: not ready, with the reason.
    let worker = WorkerProcess::spawn("w2", &options);
    let mut worker = worker;
    let addr = worker.ready(BOUND).await.expect("ready");
    let mut conn = rig.redis.client().await;
    let _: Result<(), _> = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async(&mut conn)
        .await;
    let (status, body) = scrape::get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    assert_eq!(scrape::get(addr, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_secret_never_reaches_logs_metrics_or_redis() {
    let canary = format!("sk-canary-{}", uuid_like());
    let rig = Rig::start(MockConfig::default()).await;
    let mut options = rig.options();
    options.log_json = true;
    // Everything, down to the HTTP client's own debug logs.
    options.log_filter = "debug".into();
    options.quota_wait_ms = 50;
    options.env = vec![("SLUICE_TEST_CANARY".into(), canary.clone())];
    options.extra = "auth_env = \"SLUICE_TEST_CANARY\"\ncircuit_cooloff_ms = 100\n".into();
    let mut events = rig.events().await;
    let mut worker = WorkerProcess::spawn("w1", &options);
    // A 401 whose body echoes the key, then a success; a 400; plain successes.
    let mut jobs = vec![scripted_job(0, &[401, 200]), scripted_job(1, &[400])];
    jobs.extend((2..6).map(chat_job));
    let ids = rig.enqueue(jobs).await;
    let done = events.until(BOUND, |s| s.terminal_jobs() >= 6).await;
    assert!(done, "{:?}\n{}", events.seen.totals, worker.log());
    // Not in /metrics, /healthz or /readyz either.
    let addr = worker.http_addr(BOUND).await.expect("worker http address");
    for path in ["metrics", "healthz", "readyz"] {
        let text = reqwest::get(format!("http://{addr}/{path}"))
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        assert!(!text.is_empty() || path != "metrics");
        assert!(!text.contains(&canary), "the canary is in /{path}");
    }
    worker.terminate();
    worker.wait_exit(BOUND).await.expect("worker exits");

    // The 401 happened and its message (with the key redacted) was recorded.
    let status = rig.producer.status("q", &ids[0]).await.expect("status");
    let history = format!("{status:?}");
    assert!(
        history.contains("Incorrect API key provided: ***"),
        "the 401's redacted message is in the job's record: {history}"
    );
    let log = worker.log();
    assert!(
        log.contains("401") || log.contains("auth"),
        "the log saw the 401"
    );
    assert!(!log.contains(&canary), "the canary is in the worker's log");

    // Every value of every key in Redis.
    let mut conn = rig.redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(keys.len() > 5);
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("type");
        let dump: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query_async(&mut conn).await,
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await,
            "stream" => {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
            }
            "zset" => {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            }
            "set" => {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            }
            _ => Ok(redis::Value::Nil),
        }
        .expect("read key");
        assert!(
            !format!("{dump:?}").contains(&canary),
            "the canary is in Redis key {key}"
        );
    }
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{t:x}{:x}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_started_before_its_redis_waits_not_ready_and_starts_when_it_comes() {
    let mut rig = Rig::start(MockConfig::default()).await;
    rig.redis.stop_hard();
    let mut worker = rig.spawn("early");
    let addr = worker
        .http_addr(BOUND)
        .await
        .unwrap_or_else(|| panic!("no http address while Redis is away:\n{}", worker.log()));
    let (status, body) = scrape::get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("not started") && body.contains("Redis"),
        "{body}"
    );
    assert_eq!(
        scrape::get(addr, "/healthz").await.0,
        200,
        "alive while waiting"
    );
    let deadline = tokio::time::Instant::now() + BOUND;
    while !worker.log().contains("the worker starts once it answers") {
        assert!(tokio::time::Instant::now() < deadline, "{}", worker.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    rig.redis.start_again();
    let ready = sluice_tests::eventually(BOUND, || async {
        scrape::get(addr, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "never ready once Redis came: {}", worker.log());
    // A producer of its own: the rig's lost its connection with the restart.
    let producer = sluice_tests::test_producer(&rig.url()).await;
    let mut events = rig.events().await;
    sluice_tests::enqueue_all(&producer, vec![chat_job(1)]).await;
    assert!(
        events.until(BOUND, |s| s.count("completed") >= 1).await,
        "{}",
        worker.log()
    );
    let status = worker.wait_exit(Duration::ZERO).await;
    assert!(status.is_none(), "the worker exited: {status:?}");
}
