//! deploy/redis/users.acl loaded into a real redis-server: the worker user runs a full job cycle
//! of a tenant's jobs (read, start, limiter, retry, promote, dead-letter, complete, queue
//! gauges) and cannot run
//! FLUSHALL or CONFIG; the producer user can enqueue, read status and wait, and nothing else;
//! `sluice-api` runs as the sluice-api user (submit, read, follow, cancel).

use std::time::Duration;

use sluice_common::{NewJob, StoreError};
use sluice_tests::api_process::{ApiProcess, key_toml};
use sluice_tests::certs::acl_file;
use sluice_tests::events::Events;
use sluice_tests::mock::{MockConfig, MockServer};
use sluice_tests::rig::BOUND;
use sluice_tests::scrape::Scrape;
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};
use sluice_tests::{RedisServer, enqueue_all, scripted_job};

/// A worker's read of queue q, which no producer or API user may run.
const XREADGROUP: &[&str] = &[
    "XREADGROUP",
    "GROUP",
    "sluice",
    "x",
    "STREAMS",
    "sluice:{q}:stream",
    ">",
];

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// The error code of a command's reply: `None` when it succeeded.
async fn refused(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> Option<String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query_async::<redis::Value>(conn).await {
        Ok(_) => None,
        Err(e) => Some(e.code().unwrap_or("?").to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_and_producer_users_have_just_what_they_need() {
    let acl_dir = tempfile::tempdir().expect("temp dir");
    let (acl, password) = acl_file(acl_dir.path());
    let redis = RedisServer::start_with(&["--aclfile", acl.to_str().expect("path")]).await;
    let port = redis.port();
    let url_of = |user: &str| format!("redis://{user}:{password}@127.0.0.1:{port}");
    let mock = MockServer::start(MockConfig::default()).await;

    // The worker (as sluice-worker) loads the library, creates the group and runs the jobs;
    // a limit makes every call go through the fleet-wide limiter; its prices are published to
    // the queue (a budget in dollars reserves at them).
    let mut options = WorkerOptions::new(&url_of("sluice-worker"), &mock.url());
    options.extra =
        "rpm = 60000\n\n[prices.\"*\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n".into();
    let mut worker = WorkerProcess::spawn("w1", &options);
    let addr = worker
        .ready(BOUND)
        .await
        .unwrap_or_else(|| panic!("worker did not start:\n{}", worker.log()));

    // The operator gives tenant acme a budget in dollars first, so the worker's user reserves
    // and corrects dollars for its jobs.
    let operator = sluice_tests::test_producer(&url_of("sluice-operator")).await;
    let dollars = sluice_common::store::TenantChange {
        budget_dollars: Some(1000.0),
        ..Default::default()
    };
    let set = operator
        .store()
        .set_tenant("q", "acme", &dollars)
        .await
        .expect("the operator sets a budget in dollars");
    assert!(set.priced, "the worker published its prices");
    let producer = sluice_tests::test_producer(&url_of("sluice-producer")).await;
    let mut events = Events::new(&redis.url(), "q").await;
    let mut jobs: Vec<NewJob> = (0..5).map(|i| scripted_job(i, &[200])).collect();
    jobs.push(scripted_job(5, &[503, 200])); // retried, then promoted, then completed
    jobs.push(scripted_job(6, &[400])); // dead-lettered
    // Tenants' jobs: the queue is fair-queued (the tenants' lists, tags and budgets), so every
    // user runs those paths too.
    let jobs = jobs.into_iter().map(|j| j.with_tenant("acme")).collect();
    // A tenant's only job, alone: the producer's enqueue moves it and leaves its tenant idle
    // (its saved tag, and the pruning of tags the queue's virtual time has passed).
    enqueue_all(&producer, vec![scripted_job(7, &[200]).with_tenant("solo")]).await;
    let ids = enqueue_all(&producer, jobs).await;
    let done = events.until(BOUND, |s| s.terminal_jobs() >= 8).await;
    assert!(done, "{:?}\n{}", events.seen.totals, worker.log());
    assert_eq!(events.seen.count("completed"), 7);
    assert_eq!(events.seen.count("dead"), 1);
    assert_eq!(events.seen.job(&ids[5], "retrying"), 1);

    // The producer reads status and waits.
    let status = producer
        .status("q", &ids[0])
        .await
        .expect("status")
        .expect("job");
    assert_eq!(status.state, sluice_common::JobState::Completed);
    let waited = producer
        .wait("q", &ids[6], Duration::from_secs(5))
        .await
        .expect("wait");
    assert!(format!("{waited:?}").contains("Dead"), "{waited:?}");

    // ... and nothing else: no job-moving function, no worker command, nothing dangerous.
    match producer.cancel("q", &ids[0]).await {
        Err(e) => assert!(e.to_string().contains("denied"), "{e}"),
        Ok(o) => panic!("the producer cancelled a job: {o:?}"),
    }
    let mut p = connect(&url_of("sluice-producer")).await;
    let denied = refused(
        &mut p,
        &["FCALL", "sluice_start", "1", "sluice:{q}:", "sluice", "100"],
    )
    .await;
    assert_eq!(denied.as_deref(), Some("SLUICE_DENIED"));
    for args in [
        XREADGROUP,
        &["XACK", "sluice:{q}:stream", "sluice", "0-1"],
        &["DEL", "sluice:{q}:stream"],
        &["FLUSHALL"],
        &["CONFIG", "GET", "maxmemory"],
        &["KEYS", "*"],
        &[
            "FUNCTION",
            "LOAD",
            "REPLACE",
            "#!lua name=x\nredis.register_function('x', function() return 1 end)",
        ],
        &["GET", "not-sluice"],
    ] {
        assert_eq!(
            refused(&mut p, args).await.as_deref(),
            Some("NOPERM"),
            "producer ran {args:?}"
        );
    }

    // The worker user: no FLUSHALL, no CONFIG, no keys outside sluice:.
    let mut w = connect(&url_of("sluice-worker")).await;
    for args in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["KEYS", "*"],
        &["SHUTDOWN"],
        &["GET", "not-sluice"],
    ] {
        assert_eq!(
            refused(&mut w, args).await.as_deref(),
            Some("NOPERM"),
            "worker ran {args:?}"
        );
    }

    // The operator (the `sluice` CLI's admin commands) may cancel.
    operator
        .cancel("q", &ids[0])
        .await
        .expect("the operator cancels");
    operator
        .store()
        .stats("q")
        .await
        .expect("the operator reads stats");
    // ... and sets a tenant's budget and weight, and reads the tenants (`sluice budget set`,
    // `sluice weight set`, `sluice stats --tenants`).
    let change = sluice_common::store::TenantChange {
        weight: Some(Some(2.0)),
        budget_tokens: Some(1_000_000),
        ..Default::default()
    };
    operator
        .store()
        .set_tenant("q", "acme", &change)
        .await
        .expect("the operator sets a tenant's budget");
    let tenants = operator
        .store()
        .tenants("q")
        .await
        .expect("the operator reads tenants");
    let acme = tenants.iter().find(|t| t.tenant == "acme");
    assert_eq!(tenants.len(), 2, "{tenants:?}");
    // Six calls were made, each priced and settled: the dollars spent are the calls' cost.
    assert!(
        acme.is_some_and(|t| t.spent_dollars > 0.0 && t.budget_dollars == Some(1000.0)),
        "{tenants:?}"
    );

    // Queue gauges for /metrics are read with the worker's user too.
    let m = Scrape::fetch(addr).await;
    assert_eq!(m.sum("sluice_metrics_refresh_errors_total", &[]), 0.0);
    assert_eq!(
        m.sum(
            "sluice_queue_jobs",
            &[("queue", "q"), ("state", "completed")]
        ),
        7.0
    );
    assert!(!worker.log().contains("NOPERM"), "{}", worker.log());

    // sluice-api as the sluice-api user: submit, read, follow and cancel a job (a paused queue
    // keeps it from running), with no NOPERM anywhere.
    operator.store().set_paused("q", true).await.expect("pause");
    let keys = key_toml("a", "key-a", &["q"], "", "");
    let api = ApiProcess::start(&url_of("sluice-api"), "", &keys);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/queues/q/jobs", api.base))
        .bearer_auth("key-a")
        .json(&serde_json::json!({"upstream": "mock", "body": {"x": 1}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    let location = r.headers()["location"]
        .to_str()
        .expect("Location")
        .to_string();
    let get = |path: String| {
        http.get(format!("{}{path}", api.base))
            .bearer_auth("key-a")
            .send()
    };
    assert_eq!(
        get(location.clone()).await.expect("GET").status().as_u16(),
        200
    );
    let events = get(format!("{location}/events")).await.expect("GET");
    assert_eq!(events.status().as_u16(), 200);
    drop(events);
    let r = http
        .post(format!("{}{location}/cancel", api.base))
        .bearer_auth("key-a")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    // It may not run workers' functions it lacks the commands for, nor anything dangerous.
    let mut a = connect(&url_of("sluice-api")).await;
    for args in [
        &["FLUSHALL"][..],
        &["CONFIG", "GET", "maxmemory"],
        &["KEYS", "*"],
        XREADGROUP,
    ] {
        assert_eq!(
            refused(&mut a, args).await.as_deref(),
            Some("NOPERM"),
            "sluice-api ran {args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_that_finds_no_library_says_what_to_do() {
    let acl_dir = tempfile::tempdir().expect("temp dir");
    let (acl, password) = acl_file(acl_dir.path());
    let redis = RedisServer::start_with(&["--aclfile", acl.to_str().expect("path")]).await;
    let url = format!(
        "redis://sluice-producer:{password}@127.0.0.1:{}",
        redis.port()
    );
    let err = sluice_producer::Producer::connect(&url)
        .await
        .err()
        .expect("no library, no load permission");
    let text = err.to_string();
    assert!(text.contains("may not load it"), "{text}");
    assert!(matches!(
        sluice_common::Store::connect(&url, Default::default()).await,
        Err(StoreError::LibraryMissing { .. })
    ));
}
