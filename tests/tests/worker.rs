//! The worker runtime end to end: real `sluice-worker` processes, a real Redis, and the mock
//! model API over real HTTP.

use std::time::Duration;

use redis::AsyncCommands;
use sluice_common::JobState;
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::{BOUND, Rig, count};
use sluice_tests::worker_process::WorkerProcess;
use sluice_tests::{chat_job, scripted_job};

fn jobs_called(rig: &Rig, id: &str) -> bool {
    rig.mock
        .stats(true)
        .jobs
        .is_some_and(|jobs| jobs.contains_key(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_through_faults_end_completed_or_dead_exactly_once() {
    let rig = Rig::start(MockConfig {
        latency_ms: 1,
        spread_ms: 4,
        fail_503: 0.10,
        rate_limit_429: 0.05,
        rate_limit_reset_ms: 300,
        hang: 0.02,
        hang_ms: 3_000,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 200;
    options.timeout_ms = 1_000;
    let _a = WorkerProcess::spawn("a", &options);
    let _b = WorkerProcess::spawn("b", &options);
    let n = 10_000;
    let ids = rig.enqueue((0..n).map(chat_job).collect()).await;
    let mut events = rig.events().await;
    let done = events.until(BOUND, |s| s.terminal_jobs() >= n).await;
    assert!(
        done,
        "only {} of {n} jobs ended",
        events.seen.terminal_jobs()
    );

    let c = rig.counts().await;
    assert_eq!(
        count(&c, "completed") + count(&c, "dead"),
        n as i64,
        "{c:?}"
    );
    for live in ["queued", "scheduled", "running", "retrying"] {
        assert_eq!(count(&c, live), 0, "{live} left: {c:?}");
    }
    assert_eq!(count(&c, "refused_completions"), 0);
    let stats = rig.mock.stats(true);
    assert_eq!(stats.early_calls, 0, "a call came before its 429's reset");
    assert!(stats.rate_limited > 0 && stats.by_status.contains_key("503"));
    let jobs = stats.jobs.expect("per-job calls");
    let mut extra_ok_calls = 0;
    for id in &ids {
        let status = rig
            .producer
            .status("q", id)
            .await
            .expect("status")
            .expect("job");
        let ok_calls = jobs
            .get(id)
            .map(|calls| calls.iter().filter(|c| c.status == 200).count())
            .unwrap_or(0);
        match status.state {
            JobState::Completed => {
                // A 200 that arrived after the worker's timeout is a duplicate call, not a
                // second completion; it is counted and reported.
                assert!(ok_calls >= 1, "job {id} completed without a 200");
                extra_ok_calls += ok_calls - 1;
                assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
            }
            JobState::Dead => assert_eq!(status.dead_reason.as_deref(), Some("exhausted")),
            other => panic!("job {id} ended {other}"),
        }
    }
    println!(
        "10k jobs: completed {}, dead {}, calls {}, 503s {:?}, 429s {}, hangs {:?}, late 200s after a timeout {extra_ok_calls}",
        count(&c, "completed"),
        count(&c, "dead"),
        stats.calls,
        stats.by_status.get("503"),
        stats.rate_limited,
        stats.by_status.get("0"),
    );
    // Redis memory stays bounded: no entry is left in the ready stream.
    let mut r = rig.redis.client().await;
    let len: u64 = r.xlen("sluice:{q}:stream").await.expect("XLEN");
    assert_eq!(len, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_after_one_call_and_a_401_is_classified_auth_not_retried_blindly() {
    let rig = Rig::start(MockConfig::default()).await;
    let _w = WorkerProcess::spawn("w", &rig.options());
    let mut elsewhere = chat_job(3);
    elsewhere.spec.upstream = "not-configured".into();
    let ids = rig
        .enqueue(vec![
            scripted_job(1, &[400]),
            scripted_job(2, &[401, 200]),
            elsewhere,
        ])
        .await;
    let mut events = rig.events().await;
    let (bad, unauthorized, unknown) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let seen = events
        .until(BOUND, |s| {
            s.job(&bad, "dead") == 1
                && s.job(&unauthorized, "retrying") == 1
                && s.job(&unknown, "dead") == 1
        })
        .await;
    assert!(seen, "{:?}", events.seen.by_job);

    let s = rig
        .producer
        .status("q", &bad)
        .await
        .expect("s")
        .expect("job");
    assert_eq!(s.state, JobState::Dead);
    assert_eq!(s.dead_reason.as_deref(), Some("invalid"));
    assert_eq!(s.last_status, Some(400));
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("invalid_value")),
        "{s:?}"
    );
    let dead = rig
        .producer
        .store()
        .dead_list("q", None, 10)
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 2);
    let d400 = dead.iter().find(|d| d.id == bad).expect("the 400 job");
    assert_eq!(
        (d400.reason.as_str(), d400.status.as_str()),
        ("invalid", "400")
    );
    let du = dead
        .iter()
        .find(|d| d.id == unknown)
        .expect("the unknown-upstream job");
    assert_eq!(du.reason, "unknown_upstream");
    assert!(
        !jobs_called(&rig, &unknown),
        "no call for an unknown upstream"
    );

    let u = rig
        .producer
        .status("q", &unauthorized)
        .await
        .expect("s")
        .expect("job");
    assert_eq!(u.state, JobState::Retrying);
    assert_eq!(u.last_class.as_deref(), Some("auth"));
    assert_eq!(
        u.attempts, 0,
        "an auth refusal does not spend the attempt budget"
    );
    let jobs = rig.mock.stats(true).jobs.expect("jobs");
    assert_eq!(jobs[&bad].len(), 1, "a 400 is called exactly once");
    assert_eq!(jobs[&unauthorized].len(), 1, "a 401 is not retried at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_200_in_flight_a_second_worker_reclaims_them_and_none_completes_twice() {
    let rig = Rig::start(MockConfig {
        latency_ms: 3_000,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 250;
    options.lease_ms = 2_000;
    let mut a = WorkerProcess::spawn("a", &options);
    let ids = rig.enqueue((0..200).map(chat_job).collect()).await;
    let mut events = rig.events().await;
    let running = events.until(BOUND, |s| s.count("running") >= 200).await;
    assert!(running, "200 jobs never ran: {}", a.log());
    a.kill9();
    rig.mock.set_config(MockConfig {
        latency_ms: 5,
        ..MockConfig::default()
    });
    let b = WorkerProcess::spawn("b", &options);
    let done = events.until(BOUND, |s| s.count("completed") >= 200).await;
    assert!(
        done,
        "only {} completed: {}",
        events.seen.count("completed"),
        b.log()
    );
    for id in &ids {
        assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
        let s = rig.producer.status("q", id).await.expect("s").expect("job");
        assert_eq!(s.state, JobState::Completed);
    }
    let c = rig.counts().await;
    assert_eq!(count(&c, "completed"), 200);
    assert_eq!(count(&c, "running"), 0);
    assert_eq!(count(&c, "refused_completions"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_longer_than_the_lease_is_not_reclaimed_while_its_worker_lives() {
    let rig = Rig::start(MockConfig {
        latency_ms: 5_000,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.lease_ms = 2_000;
    let _a = WorkerProcess::spawn("a", &options);
    let _b = WorkerProcess::spawn("b", &options);
    let id = rig.enqueue(vec![chat_job(1)]).await.remove(0);
    let status = rig.producer.wait("q", &id, BOUND).await.expect("job ends");
    assert_eq!(status.state, JobState::Completed);
    assert_eq!(status.attempts, 1, "never reclaimed and run again");
    let jobs = rig.mock.stats(true).jobs.expect("jobs");
    assert_eq!(jobs[&id].len(), 1, "one call only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_stream_is_dead_lettered_as_malformed_and_the_rest_run() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut r = rig.redis.client().await;
    let stream = "sluice:{q}:stream";
    let huge = "x".repeat(2 * 1024 * 1024);
    let _: String = r.xadd(stream, "*", &[("foo", "bar")]).await.expect("xadd");
    let _: String = r
        .xadd(stream, "*", &[("id", "not a {valid} id")])
        .await
        .expect("xadd");
    let _: String = r.xadd(stream, "*", &[("id", "ghost")]).await.expect("xadd");
    let _: String = r
        .xadd(stream, "*", &[("junk", huge.as_str())])
        .await
        .expect("xadd");
    // A job hash whose spec is not JSON (a foreign producer bypassing the library).
    let entry: String = r
        .xadd(stream, "*", &[("id", "bad-spec")])
        .await
        .expect("xadd");
    let _: () = r
        .hset_multiple(
            "sluice:{q}:job:bad-spec",
            &[
                ("id", "bad-spec"),
                ("state", "queued"),
                ("spec", "{not json"),
                ("entry", entry.as_str()),
            ],
        )
        .await
        .expect("hset");
    let ids = rig.enqueue((0..50).map(chat_job).collect()).await;
    let _w = WorkerProcess::spawn("w", &rig.options());

    let mut events = rig.events().await;
    let done = events
        .until(BOUND, |s| {
            ids.iter().all(|id| s.job(id, "completed") == 1) && s.job("bad-spec", "dead") == 1
        })
        .await;
    assert!(done, "{:?}", events.seen.totals);
    let dead = rig
        .producer
        .store()
        .dead_list("q", None, 100)
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 5, "{dead:?}");
    assert!(dead.iter().all(|d| d.reason == "malformed"), "{dead:?}");
    assert!(
        dead.iter().all(|d| d.raw.len() <= 600),
        "raw excerpts are bounded"
    );
    let bad = rig
        .producer
        .status("q", "bad-spec")
        .await
        .expect("s")
        .expect("job");
    assert_eq!(bad.state, JobState::Dead);
    // Acknowledged entries are trimmed by the scheduler (at least every second).
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut len: u64 = r.xlen(stream).await.expect("XLEN");
    while len > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        len = r.xlen(stream).await.expect("XLEN");
    }
    assert_eq!(len, 0, "every garbage entry left the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_hands_back_what_did_not_finish() {
    let rig = Rig::start(MockConfig {
        latency_ms: 200,
        spread_ms: 2_000,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 100;
    options.grace_ms = 1_000;
    let mut a = WorkerProcess::spawn("a", &options);
    let n = 2_000;
    let ids = rig.enqueue((0..n).map(chat_job).collect()).await;
    let mut events = rig.events().await;
    let busy = events.until(BOUND, |s| s.count("completed") >= 50).await;
    assert!(busy, "the worker never got going: {}", a.log());
    a.terminate();
    let status = a.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}: {}",
        a.log()
    );
    let c = rig.counts().await;
    assert_eq!(
        count(&c, "running"),
        0,
        "nothing left running without an owner: {c:?}"
    );
    assert_eq!(
        count(&c, "queued") + count(&c, "completed"),
        n as i64,
        "no job lost: {c:?}"
    );
    let pending = rig
        .producer
        .store()
        .stats("q")
        .await
        .expect("stats")
        .pending;
    assert_eq!(pending, 0, "nothing left in the pending list");

    // A new worker finishes the rest; every job completes exactly once.
    rig.mock.set_config(MockConfig::default());
    let _b = WorkerProcess::spawn("b", &options);
    let done = events
        .until(BOUND, |s| s.count("completed") >= n as u64)
        .await;
    assert!(done, "only {} completed", events.seen.count("completed"));
    for id in &ids {
        assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_hands_back_at_once_and_a_stopped_worker_leaves_stats() {
    // Calls that never answer, a grace period far past the test's bound: only the second
    // signal can end this worker in time.
    let rig = Rig::start(MockConfig {
        hang: 1.0,
        hang_ms: 600_000,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 5;
    options.grace_ms = 600_000;
    options.timeout_ms = 600_000;
    let mut a = WorkerProcess::spawn("a", &options);
    let b = WorkerProcess::spawn("b", &{
        let mut o = options.clone();
        o.concurrency = 1;
        o
    });
    let n = 6;
    rig.enqueue((0..n).map(chat_job).collect()).await;
    assert!(
        rig.mock.until_in_flight(n as u64, BOUND).await,
        "the calls never came: {}",
        a.log()
    );
    let stats = rig.producer.store().stats("q").await.expect("stats");
    assert_eq!((stats.workers, stats.consumers), (2, 2), "{stats:?}");

    let addr = a.http_addr(BOUND).await.expect("a's http address");
    a.terminate();
    // The first signal has been taken once a says it is shutting down.
    let shutting_down = sluice_tests::eventually(BOUND, || async {
        sluice_tests::scrape::get(addr, "/readyz").await.1 == "shutting down\n"
    })
    .await;
    assert!(shutting_down, "{}", a.log());
    a.terminate();
    let status = a.wait_exit(BOUND).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after a second SIGTERM: {}",
        a.log()
    );
    let c = rig.counts().await;
    assert_eq!(count(&c, "queued"), 5, "a's five calls handed back: {c:?}");
    assert_eq!(count(&c, "running"), 1, "b's call still running: {c:?}");
    let stats = rig.producer.store().stats("q").await.expect("stats");
    assert_eq!(
        (stats.workers, stats.consumers),
        (1, 1),
        "the stopped worker is not counted: {stats:?}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_retries_across_three_workers_are_each_promoted_once() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut options = rig.options();
    options.concurrency = 100;
    options.base_ms = 1_000;
    options.factor = 1.0;
    options.cap_ms = 1_000;
    // Every job's first call fails at once: to the circuit breaker that is an outage (a run of
    // transient failures), which is not what this test is about.
    options.extra = "circuit_min_calls = 1000000\n".into();
    let _workers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| WorkerProcess::spawn(n, &options))
        .collect();
    let n = 2_000;
    let ids = rig
        .enqueue((0..n).map(|i| scripted_job(i, &[503, 200])).collect())
        .await;
    let mut events = rig.events().await;
    let done = events
        .until(BOUND, |s| s.count("completed") >= n as u64)
        .await;
    assert!(done, "only {} completed", events.seen.count("completed"));
    let jobs = rig.mock.stats(true).jobs.expect("jobs");
    for id in &ids {
        assert_eq!(events.seen.job(id, "retrying"), 1, "job {id}");
        // Enqueue, then exactly one promotion.
        assert_eq!(
            events.seen.job(id, "queued"),
            2,
            "job {id} promoted more than once"
        );
        assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
        assert_eq!(jobs[id].len(), 2, "job {id}: one failed call, one success");
    }
}

/// Samples the mock's calls-in-flight gauge every 20 ms from when `from` calls have been made
/// until `to` have (the ramp-up and the tail left out), sorted.
async fn in_flight_between(rig: &Rig, from: u64, to: u64) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut samples = Vec::new();
    loop {
        let s = rig.mock.stats(false);
        if s.calls >= to {
            break;
        }
        if s.calls >= from {
            samples.push(s.in_flight);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} calls were made",
            s.calls
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples.sort_unstable();
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_queue_holds_no_slots_a_busy_queue_of_the_same_worker_could_use() {
    let rig = Rig::start(MockConfig {
        // Long calls, so that the worker's own work between them (complete, fetch, start) is a
        // small part of a slot's time even on a loaded machine: a CI run with 100 ms calls
        // beside the ten-thousand-job test sampled a median of 17 busy slots with no fault.
        latency_ms: 1_000,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 20;
    options.queues = vec!["q".into(), "idle".into()];
    let _w = WorkerProcess::spawn("w", &options);
    let n = 400;
    rig.enqueue((0..n).map(chat_job).collect()).await;

    let before = in_flight_between(&rig, 40, 160).await;
    // Pause the busy queue until nothing of it is in flight, then resume it.
    let store = rig.producer.store();
    store.set_paused("q", true).await.expect("pause");
    let deadline = tokio::time::Instant::now() + BOUND;
    while rig.mock.stats(false).in_flight > 0 {
        assert!(tokio::time::Instant::now() < deadline, "pause never took");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let paused_at = rig.mock.stats(false).calls;
    store.set_paused("q", false).await.expect("resume");
    let after = in_flight_between(&rig, paused_at + 40, paused_at + 160).await;

    let median = |s: &[u64]| s.get(s.len() / 2).copied().unwrap_or(0);
    println!(
        "20 slots, queues q (backlog {n}) and idle: calls in flight, median {} (min {}, {} samples) \
         before a pause/resume of q, median {} (min {}, {} samples) after",
        median(&before),
        before.first().copied().unwrap_or(0),
        before.len(),
        median(&after),
        after.first().copied().unwrap_or(0),
        after.len()
    );
    assert!(!before.is_empty() && !after.is_empty(), "no samples");
    assert!(median(&before) >= 18, "before: {before:?}");
    assert!(median(&after) >= 18, "after: {after:?}");
    let mut events = rig.events().await;
    assert!(
        events.until(BOUND, |s| s.terminal_jobs() >= n).await,
        "the backlog did not drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_key_of_the_wrong_type_is_dead_lettered_corrupt_and_the_queue_runs_on() {
    let rig = Rig::start(MockConfig::default()).await;
    let ids = rig.enqueue((0..3).map(chat_job).collect()).await;
    // The first job's hash is replaced by a string (WRONGTYPE for every hash command).
    let mut r = rig.redis.client().await;
    let key = format!("sluice:{{q}}:job:{}", ids[0]);
    let _: () = r.del(&key).await.expect("del");
    let _: () = r.set(&key, "not a hash").await.expect("set");
    let _w = WorkerProcess::spawn("w", &rig.options());
    for id in &ids[1..] {
        let s = rig.producer.wait("q", id, BOUND).await.expect("job ends");
        assert_eq!(s.state, JobState::Completed);
    }
    let dead_stream = "sluice:{q}:dead";
    assert!(
        sluice_tests::eventually(BOUND, || {
            let mut r = r.clone();
            async move { r.xlen::<_, u64>(dead_stream).await.unwrap_or(0) >= 1 }
        })
        .await,
        "the corrupt entry was never dead-lettered"
    );
    let rows: redis::streams::StreamRangeReply = r.xrange_all(dead_stream).await.expect("xrange");
    assert_eq!(rows.ids.len(), 1, "one dead letter");
    let f = &rows.ids[0].map;
    let field = |k: &str| {
        f.get(k)
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .unwrap_or_default()
    };
    assert_eq!(field("reason"), "corrupt");
    assert_eq!(field("raw"), format!("id={}", ids[0]));
    assert!(field("error").contains("WRONGTYPE"), "{}", field("error"));
    // Nothing left pending: the entry was not dropped, it was dead-lettered.
    let pending: redis::streams::StreamPendingReply = r
        .xpending("sluice:{q}:stream", sluice_common::keys::GROUP)
        .await
        .expect("xpending");
    assert_eq!(pending.count(), 0);
    let v: String = r.get(&key).await.expect("the key is left alone");
    assert_eq!(v, "not a hash");
    assert!(!jobs_called(&rig, &ids[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_over_the_workers_size_limit_is_dead_invalid_without_a_call() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut options = rig.options();
    options
        .env
        .push(("SLUICE__QUEUES__MAX_JOB_BYTES".into(), "4096".into()));
    // A protocol client raises max_bytes itself: the library takes 8 KB, the worker must not.
    let body = "x".repeat(8_000);
    let spec = serde_json::json!({"upstream": "mock", "request": {"method": "POST",
        "path": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": body}]}}});
    let mut r = rig.redis.client().await;
    let _: redis::Value = redis::cmd("FCALL")
        .arg("sluice_enqueue")
        .arg(1)
        .arg("sluice:{q}:")
        .arg(&["big-1", &spec.to_string(), "", "0", "0", "0", "1000000", ""])
        .query_async(&mut r)
        .await
        .expect("the library takes what max_bytes allows");
    let _w = WorkerProcess::spawn("w", &options);
    let s = rig.producer.wait("q", "big-1", BOUND).await.expect("ends");
    assert_eq!(s.state, JobState::Dead);
    assert_eq!(s.dead_reason.as_deref(), Some("invalid"));
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("over this worker's limit of 4096 bytes")),
        "{:?}",
        s.last_error
    );
    assert!(!jobs_called(&rig, "big-1"), "the upstream was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_pause_returns_no_job_of_the_queue_starts() {
    let rig = Rig::start(MockConfig::default()).await;
    let _w = WorkerProcess::spawn("w", &rig.options());
    // The worker is up and idle, blocked in its read of q.
    let warm = rig.enqueue(vec![chat_job(0)]).await;
    rig.producer
        .wait("q", &warm[0], BOUND)
        .await
        .expect("warm-up job");
    let calls_before = rig.mock.stats(false).calls;

    rig.producer
        .store()
        .set_paused("q", true)
        .await
        .expect("pause");
    let ids = rig.enqueue((1..=50).map(chat_job).collect()).await;
    // The issue's own measure: two seconds after the enqueue, nothing has started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = rig.counts().await;
    assert_eq!(count(&c, "running"), 0, "{c:?}");
    assert_eq!(count(&c, "queued"), 50, "{c:?}");
    assert_eq!(
        rig.mock.stats(false).calls,
        calls_before,
        "a paused queue's job was called"
    );
    for id in &ids {
        let s = rig
            .producer
            .status("q", id)
            .await
            .expect("status")
            .expect("job");
        assert_eq!(s.state, JobState::Queued);
        assert_eq!(s.attempts, 0, "job {id} was started");
    }

    rig.producer
        .store()
        .set_paused("q", false)
        .await
        .expect("resume");
    let mut events = rig.events().await;
    assert!(
        events.until(BOUND, |s| s.count("completed") >= 51).await,
        "only {} completed after the resume",
        events.seen.count("completed")
    );
    for id in &ids {
        assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
    }
}
