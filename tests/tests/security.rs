//! Security end to end:
//! - a TLS-only redis-server (certificates made by the test, client certificates required) with
//!   the shipped ACL users runs a full job cycle: enqueue, retry through the delayed ZSET,
//!   dead letter, completion, wait;
//! - jobs written straight into Redis around the library (a hostile or buggy foreign producer)
//!   with absolute URLs, `..`, encoded traversal, CRLF and auth headers never reach another host:
//!   each is dead-lettered as invalid, and a second server they point at gets no call;
//! - an oversized request is refused at enqueue (by the library and by Redis's functions) and
//!   an oversized answer is dead-lettered, each with an error that names the limit.

use std::time::Duration;

use redis::AsyncCommands;
use sluice_common::{Config, JobState, NewJob};
use sluice_producer::Producer;
use sluice_tests::certs;
use sluice_tests::mock::{MockConfig, MockServer};
use sluice_tests::rig::BOUND;
use sluice_tests::rig::Rig;
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};
use sluice_tests::{RedisServer, chat_job, enqueue_all, scripted_job};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_with_client_certificates_and_acl_users_runs_a_full_job_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = certs::make(dir.path());
    let (acl, password) = certs::acl_file(dir.path());
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_string();
    let redis = RedisServer::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &path(&certs.server_cert),
        "--tls-key-file",
        &path(&certs.server_key),
        "--tls-ca-cert-file",
        &path(&certs.ca),
        "--tls-auth-clients",
        "yes",
        "--aclfile",
        &path(&acl),
    ])
    .await;
    let port = redis.port();
    let url_of = |user: &str| format!("rediss://{user}:{password}@127.0.0.1:{port}");
    let tls_env = vec![
        ("SLUICE__REDIS__TLS_CA_FILE".to_string(), path(&certs.ca)),
        (
            "SLUICE__REDIS__TLS_CERT_FILE".to_string(),
            path(&certs.client_cert),
        ),
        (
            "SLUICE__REDIS__TLS_KEY_FILE".to_string(),
            path(&certs.client_key),
        ),
    ];

    // Plain TCP to the TLS port is not Redis at all, and TLS without a client cert is refused.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
    let plain_ping = tokio::time::timeout(Duration::from_secs(2), async {
        let mut c = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await;
    assert!(
        !matches!(plain_ping, Ok(Ok(_))),
        "a plaintext PING was answered"
    );
    let mut no_cert = Config::defaults();
    no_cert.redis.url = url_of("sluice-producer");
    no_cert.redis.tls_ca_file = Some(path(&certs.ca));
    assert!(
        Producer::from_config(&no_cert).await.is_err(),
        "connected without a client certificate"
    );

    let mock = MockServer::start(MockConfig::default()).await;
    let mut options = WorkerOptions::new(&url_of("sluice-worker"), &mock.url());
    options.env = tls_env;
    options.extra = "rpm = 60000\n".into();
    let mut worker = WorkerProcess::spawn("w1", &options);
    worker
        .ready(BOUND)
        .await
        .unwrap_or_else(|| panic!("worker did not start over TLS:\n{}", worker.log()));

    let mut config = Config::defaults();
    config.redis.url = url_of("sluice-producer");
    config.redis.tls_ca_file = Some(path(&certs.ca));
    config.redis.tls_cert_file = Some(path(&certs.client_cert));
    config.redis.tls_key_file = Some(path(&certs.client_key));
    let producer = Producer::from_config(&config)
        .await
        .expect("the producer connects over TLS");
    let mut jobs: Vec<NewJob> = (0..5).map(|i| scripted_job(i, &[200])).collect();
    jobs.push(scripted_job(5, &[503, 200])); // retried through the delayed ZSET
    jobs.push(scripted_job(6, &[400])); // dead-lettered
    jobs.push(chat_job(7).with_dedupe_key("same"));
    let ids = enqueue_all(&producer, jobs).await;
    let again = producer
        .enqueue(chat_job(8).with_dedupe_key("same"))
        .await
        .expect("dedupe over TLS");
    assert_eq!(again.id, ids[7], "the dedupe key points at the first job");

    let mut states = Vec::new();
    for id in &ids {
        // `wait` blocks on the events stream over the blocking pool: TLS there too.
        let s = producer.wait("q", id, BOUND).await.expect("wait over TLS");
        states.push(s);
    }
    for (i, s) in states.iter().enumerate() {
        let want = if i == 6 {
            JobState::Dead
        } else {
            JobState::Completed
        };
        assert_eq!(s.state, want, "job {i}: {s:?}\n{}", worker.log());
    }
    assert_eq!(states[5].attempts, 2, "the 503 was retried once");
    let calls = mock.stats(true).jobs.expect("calls");
    assert_eq!(calls[&ids[5]].len(), 2);
    assert!(!worker.log().contains("NOPERM"), "{}", worker.log());
}

/// Writes a job straight into Redis the way the functions would, skipping every check.
async fn inject(r: &mut redis::aio::MultiplexedConnection, id: &str, spec: &serde_json::Value) {
    let entry: String = r
        .xadd("sluice:{q}:stream", "*", &[("id", id)])
        .await
        .expect("xadd");
    let spec = spec.to_string();
    let _: () = r
        .hset_multiple(
            format!("sluice:{{q}}:job:{id}"),
            &[
                ("id", id),
                ("state", "queued"),
                ("spec", spec.as_str()),
                ("entry", entry.as_str()),
            ],
        )
        .await
        .expect("hset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_written_around_the_library_cannot_reach_outside_their_upstream() {
    let rig = Rig::start(MockConfig::default()).await;
    let evil = MockServer::start(MockConfig::default()).await;
    let e = evil.addr();
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let paths = [
        format!("http://{e}/v1/chat/completions"),
        format!("//{e}/v1/chat/completions"),
        format!("@{e}/v1/chat/completions"),
        "/v1/../../steal".to_string(),
        "/v1/%2e%2e/%2e%2e/steal".to_string(),
        "/v1/%252e%252e/steal".to_string(),
        "/v1/..%5c..%5csteal".to_string(),
        format!("/v1/chat/completions\r\nHost: {e}"),
        "/v1/chat/completions%0d%0aX-Evil:%201".to_string(),
    ];
    let headers = [
        ("X-Ok", "a\r\nX-Evil: 1".to_string()),
        ("Authorization", "Bearer stolen".to_string()),
        ("Host", e.to_string()),
    ];
    let mut hostile = Vec::new();
    for p in &paths {
        hostile.push(serde_json::json!({"upstream": "mock", "request": {"method": "POST", "path": p, "body": body}}));
    }
    for (name, value) in &headers {
        hostile.push(serde_json::json!({"upstream": "mock", "request": {"method": "POST", "path": "/v1/chat/completions", "body": body, "headers": {*name: value}}}));
    }
    // The library refuses each of them at enqueue, naming the field...
    for spec in &hostile {
        let mut job = NewJob::post("q", "mock", "/v1/chat/completions", body.clone());
        job.spec = serde_json::from_value(spec.clone()).expect("a JobSpec");
        let refused = rig
            .producer
            .enqueue(job)
            .await
            .expect_err(&format!("enqueued {spec}"));
        assert!(
            refused.to_string().contains("request."),
            "{refused} names the field"
        );
    }
    // ...and a writer that goes around it gets them dead-lettered, not called.
    let mut r = rig.redis.client().await;
    let ids: Vec<String> = (0..hostile.len()).map(|i| format!("hostile-{i}")).collect();
    for (id, spec) in ids.iter().zip(&hostile) {
        inject(&mut r, id, spec).await;
    }
    let fine = rig.enqueue((0..5).map(chat_job).collect()).await;
    let _w = WorkerProcess::spawn("w", &rig.options());
    for id in ids.iter().chain(&fine) {
        rig.producer
            .wait("q", id, BOUND)
            .await
            .expect("the job ends");
    }
    for id in &ids {
        let s = rig
            .producer
            .status("q", id)
            .await
            .expect("status")
            .expect("job");
        assert_eq!(s.state, JobState::Dead, "{id}: {s:?}");
        assert_eq!(s.dead_reason.as_deref(), Some("invalid"), "{id}: {s:?}");
    }
    for id in &fine {
        let s = rig.producer.status("q", id).await.expect("s").expect("job");
        assert_eq!(s.state, JobState::Completed);
    }
    assert_eq!(evil.stats(false).calls, 0, "a job reached another host");
    let calls = rig.mock.stats(true).jobs.expect("calls");
    assert!(
        ids.iter().all(|id| !calls.contains_key(id)),
        "a hostile job was called"
    );
    assert_eq!(calls.len(), fine.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_answers_are_refused_with_errors_that_name_the_limit() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut config = Config::defaults();
    config.redis.url = rig.redis.url();
    config.queues.max_job_bytes = 10_000;
    let producer = Producer::from_config(&config).await.expect("producer");

    // The library refuses a request over max_job_bytes before Redis sees it.
    let big = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(20_000)}]});
    let err = producer
        .enqueue(NewJob::post(
            "q",
            "mock",
            "/v1/chat/completions",
            big.clone(),
        ))
        .await
        .expect_err("an oversized job was enqueued");
    assert!(err.to_string().contains("10000"), "{err}");
    // A foreign producer calling the function with an oversized spec is refused by Redis.
    let mut r = rig.redis.client().await;
    let spec = serde_json::json!({"upstream": "mock", "request": {"method": "POST", "path": "/v1/chat/completions", "body": big}}).to_string();
    let refused: redis::RedisResult<redis::Value> = redis::cmd("FCALL")
        .arg("sluice_enqueue")
        .arg(1)
        .arg("sluice:{q}:")
        .arg("foreign-1")
        .arg(&spec)
        .arg("")
        .arg(0)
        .arg(0)
        .arg(0)
        .arg(10_000)
        .arg(1000)
        .query_async(&mut r)
        .await;
    let e = refused.expect_err("Redis took an oversized spec");
    assert_eq!(e.code(), Some("SLUICE_TOO_LARGE"), "{e}");
    let keys: Vec<String> = r.keys("sluice:{q}:job:*").await.expect("keys");
    assert!(keys.is_empty(), "nothing was written: {keys:?}");

    // An answer over worker.result_max_bytes is dead-lettered; the others complete.
    let mut options = rig.options();
    options
        .env
        .push(("SLUICE__WORKER__RESULT_MAX_BYTES".into(), "4096".into()));
    let _w = WorkerProcess::spawn("w", &options);
    let huge_answer = NewJob::post(
        "q",
        "mock",
        "/v1/chat/completions",
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "mock": {"answer_bytes": 100_000}}),
    );
    let mut jobs = vec![huge_answer];
    jobs.extend((0..3).map(chat_job));
    let ids = enqueue_all(&producer, jobs).await;
    for id in &ids {
        producer.wait("q", id, BOUND).await.expect("ends");
    }
    let s = producer
        .status("q", &ids[0])
        .await
        .expect("s")
        .expect("job");
    assert_eq!(s.state, JobState::Dead);
    assert_eq!(s.dead_reason.as_deref(), Some("result_too_large"));
    let dead = producer
        .store()
        .dead_list("q", None, 10)
        .await
        .expect("dead letters");
    assert!(
        dead.iter()
            .any(|d| d.error.contains("worker.result_max_bytes (4096)")),
        "{dead:?}"
    );
    for id in &ids[1..] {
        let s = producer.status("q", id).await.expect("s").expect("job");
        assert_eq!(s.state, JobState::Completed);
    }
}
