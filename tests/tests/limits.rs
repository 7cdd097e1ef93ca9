//! Fleet-wide rate limits against the mock's enforced quota: several worker processes share one
//! quota through Redis, a provider's reset holds every worker, and a 401 opens the circuit.

use std::time::Duration;

use serde_json::json;
use sluice_common::{JobState, NewJob};
use sluice_tests::mock::{MockConfig, Stats};
use sluice_tests::rig::BOUND;
use sluice_tests::rig::Rig;
use sluice_tests::worker_process::WorkerProcess;
use sluice_tests::{RedisServer, eventually};

fn job(i: usize, script: Option<&[u16]>) -> NewJob {
    let mut body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("job {i}")}], "max_tokens": 16});
    if let Some(s) = script {
        body["mock"] = json!({"script": s});
    }
    NewJob::post("q", "mock", "/v1/chat/completions", body)
}

/// How often the `mock` upstream's circuit has opened.
async fn circuit_opens(store: sluice_common::Store) -> u64 {
    circuit_opens_of(&store, "mock").await
}

/// How many times upstream `u`'s circuit opened (0 while Redis cannot say).
async fn circuit_opens_of(store: &sluice_common::Store, u: &str) -> u64 {
    store
        .upstream_states_of(&[u.into()])
        .await
        .ok()
        .and_then(|s| s.into_iter().find(|s| s.upstream == u))
        .map(|s| s.opens)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_a_3000_rpm_quota_with_almost_no_429s() {
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        rpm: Some(3000),
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 50;
    options.extra = "rpm = 3000\n".into();
    let _workers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| WorkerProcess::spawn(n, &options))
        .collect();
    let n = 1500;
    let ids = rig.enqueue((0..n).map(|i| job(i, None)).collect()).await;
    let mut events = rig.events().await;
    let done = events
        .until(BOUND, |s| s.count("completed") >= n as u64)
        .await;
    assert!(done, "only {} completed", events.seen.count("completed"));
    for id in &ids {
        assert_eq!(events.seen.job(id, "completed"), 1);
    }
    let stats = rig.mock.stats(true);
    let share = stats.rate_limited as f64 / stats.calls as f64;
    // The busiest 1-second window of answered calls, against the quota's 50 per second.
    let times = stats.call_times(0);
    let busiest = Stats::busiest_second(&times);
    let span = (times.last().unwrap_or(&0) - times.first().unwrap_or(&0)) as f64 / 1000.0;
    println!(
        "3 workers at 3000 RPM: {} calls, {} 429s ({:.2}%), {:.1} calls/s over {span:.1} s, busiest 1 s window {busiest}",
        stats.calls,
        stats.rate_limited,
        share * 100.0,
        stats.calls as f64 / span.max(0.001),
    );
    assert!(share <= 0.01, "{:.2}% of answers were 429", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_a_2s_reset_holds_every_worker() {
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        rate_limit_reset_ms: 2000,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 20;
    let _workers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| WorkerProcess::spawn(n, &options))
        .collect();
    let mut events = rig.events().await;
    let first = rig.enqueue(vec![job(0, Some(&[429, 200]))]).await.remove(0);
    let limited = events
        .until(BOUND, |s| s.job(&first, "retrying") == 1)
        .await;
    assert!(limited, "the first job was never rate limited");
    let ids = rig.enqueue((1..=60).map(|i| job(i, None)).collect()).await;
    let done = events.until(BOUND, |s| s.count("completed") >= 61).await;
    assert!(done, "only {} completed", events.seen.count("completed"));

    let jobs = rig.mock.stats(true).jobs.expect("jobs");
    let limited_at = jobs[&first][0].t_ms;
    let earliest = ids.iter().map(|id| jobs[id][0].t_ms).min().expect("calls");
    let held = earliest - limited_at;
    println!("after the 429: the fleet's next call came {held} ms later");
    // The 429 was answered ~5 ms after its call; the hold runs 2 s from then.
    assert!(
        held >= 2000,
        "a worker called after {held} ms, inside the 2 s hold"
    );
    for id in &ids {
        assert_eq!(
            jobs[id].len(),
            1,
            "held jobs were called once, after the hold"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_opens_the_circuit_only_probes_reach_the_mock_and_jobs_complete_after() {
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        force_status: Some(401),
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 20;
    options.quota_wait_ms = 300;
    options.extra = "circuit_cooloff_ms = 300\n".into();
    let _a = WorkerProcess::spawn("a", &options);
    let _b = WorkerProcess::spawn("b", &options);
    let n = 100;
    let ids = rig.enqueue((0..n).map(|i| job(i, None)).collect()).await;
    let store = rig.producer.store().clone();
    let opens = || circuit_opens(store.clone());
    assert!(
        eventually(BOUND, || async { opens().await >= 1 }).await,
        "the circuit never opened"
    );
    // The second opening is the first half-open probe failing (late 401s of calls admitted before
    // the circuit opened are not openings); from here on only probes may call, and each failed
    // probe opens the circuit again. (Opens are read before calls, so a straggler can only widen
    // the allowance.)
    assert!(
        eventually(BOUND, || async { opens().await >= 2 }).await,
        "no first probe"
    );
    let opens_at_start = opens().await;
    let at_open = rig.mock.stats(false);
    assert!(
        eventually(BOUND, || async { opens().await >= opens_at_start + 4 }).await,
        "no probes"
    );
    let probes = opens().await - opens_at_start;
    let now = rig.mock.stats(false);
    let calls_while_open = now.calls - at_open.calls;
    let models_while_open = now.models_calls - at_open.models_calls;
    println!(
        "while open: {calls_while_open} job calls and {models_while_open} GET /v1/models probes for {probes} failed probes"
    );
    // Probes after a 401 are the cheap GET /v1/models, never a job's request (a job admitted
    // before the circuit opened may still land: one at most, as a straggler).
    assert!(
        calls_while_open <= 1,
        "{calls_while_open} job calls while open ({probes} probes)"
    );
    assert!(
        models_while_open + 1 >= probes,
        "{models_while_open} cheap probes for {probes} failed probes"
    );
    let stats = rig.producer.store().stats("q").await.expect("stats");
    assert_eq!(
        stats.counts.get("dead").copied().unwrap_or(0),
        0,
        "an auth outage dead-letters nothing"
    );

    rig.mock.set_config(MockConfig {
        latency_ms: 5,
        ..MockConfig::default()
    });
    let mut events = rig.events().await;
    let done = events
        .until(BOUND, |s| s.count("completed") >= n as u64)
        .await;
    assert!(done, "only {} completed", events.seen.count("completed"));
    for id in &ids {
        let s = rig.producer.status("q", id).await.expect("s").expect("job");
        assert_eq!(s.state, JobState::Completed);
    }
    let states = rig
        .producer
        .store()
        .upstream_states()
        .await
        .expect("states");
    assert_eq!(states[0].circuit, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_a_whole_minutes_tokens_is_dead_lettered_and_the_rest_run() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut options = rig.options();
    options.extra = "tpm = 10000\n".into();
    let mut events = rig.events().await;
    let _worker = WorkerProcess::spawn("w1", &options);
    let mut huge = job(0, None);
    huge.spec.tokens = Some(20_000);
    let mut jobs = vec![huge];
    jobs.extend((1..6).map(|i| job(i, None)));
    let ids = rig.enqueue(jobs).await;
    assert!(events.until(BOUND, |s| s.terminal_jobs() >= 6).await);
    assert_eq!(events.seen.job(&ids[0], "dead"), 1);
    assert_eq!(events.seen.count("completed"), 5);
    let status = rig
        .producer
        .status("q", &ids[0])
        .await
        .expect("status")
        .expect("job");
    assert_eq!(status.dead_reason.as_deref(), Some("over_limit"));
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("20000 tokens") && e.contains("10000")),
        "{status:?}"
    );
    assert_eq!(
        rig.mock.stats(false).calls,
        5,
        "the huge job never reached the mock"
    );
}

/// A report of `verdict` for upstream `u` with `ok_calls` successes, the default circuit settings
/// (at least 20 calls, 50% failed, in a 10 s window).
async fn report(
    store: &sluice_common::Store,
    u: &str,
    verdict: sluice_common::store::Verdict,
    ok_calls: u64,
) -> String {
    store
        .report(
            u,
            &sluice_common::store::LimitReport {
                verdict,
                hold_ms: 0,
                cooloff_ms: 30_000,
                min_calls: 20,
                window_ms: 10_000,
                tpm: 0,
                delta_tokens: 0,
                model: "",
                model_tpm: 0,
                ok_calls,
                failure_pct: 50,
            },
        )
        .await
        .expect("report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_on_a_failure_rate_not_on_a_run_of_failures_among_successes() {
    use sluice_common::store::Verdict;
    let redis = RedisServer::start().await;
    let store = sluice_common::Store::connect(&redis.url(), Default::default())
        .await
        .expect("store");
    // 30 transient failures, each reported with the 10 successes its worker saw since its last
    // report: 30 of 330 calls (9%) failed. Retries are succeeding: the circuit stays closed.
    for i in 0..30 {
        let r = report(&store, "chaos", Verdict::Soft, 10).await;
        assert_eq!(r, "", "opened at failure {i} of a 9% failure rate");
    }
    // All calls failing: opens once 20 calls are counted, not before.
    for i in 0..19 {
        assert_eq!(report(&store, "down", Verdict::Soft, 0).await, "", "{i}");
    }
    assert_eq!(report(&store, "down", Verdict::Soft, 0).await, "opened");
    let states = store
        .upstream_states_of(&["chaos".into(), "down".into()])
        .await
        .expect("states");
    let circuit = |u: &str| {
        states
            .iter()
            .find(|s| s.upstream == u)
            .map(|s| s.circuit.clone())
            .unwrap_or_default()
    };
    assert_eq!(circuit("chaos"), "closed");
    assert_eq!(circuit("down"), "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_401s_of_calls_admitted_before_the_circuit_opened_are_one_opening() {
    use sluice_common::store::Verdict;
    let redis = RedisServer::start().await;
    let store = sluice_common::Store::connect(&redis.url(), Default::default())
        .await
        .expect("store");
    // 40 calls in flight when the upstream's key is revoked: the first 401 opens the circuit, the
    // other 39 arrive while it is open.
    assert_eq!(report(&store, "u", Verdict::Auth, 0).await, "opened");
    for i in 1..40 {
        assert_eq!(report(&store, "u", Verdict::Auth, 0).await, "", "401 #{i}");
    }
    assert_eq!(report(&store, "u", Verdict::Hard, 0).await, "");
    let opens = circuit_opens_of(&store, "u").await;
    assert_eq!(
        opens, 1,
        "40 late 401s and a quota answer counted {opens} openings"
    );
    // A failed probe is a new opening; a success closes, and the next 401 opens again.
    assert_eq!(report(&store, "u", Verdict::ProbeFailed, 0).await, "opened");
    assert_eq!(report(&store, "u", Verdict::ProbeOk, 0).await, "closed");
    assert_eq!(report(&store, "u", Verdict::Auth, 0).await, "opened");
    assert_eq!(
        circuit_opens_of(&store, "u").await,
        1,
        "closing resets the count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_opens_the_circuit_again_for_a_whole_cool_off() {
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        force_status: Some(503),
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    // One call at a time: no call admitted before the circuit opened can fail after it, so
    // every call while it is open is a probe.
    options.concurrency = 1;
    options.max_attempts = 100;
    options.extra = "circuit_cooloff_ms = 300\ncircuit_min_calls = 5\n".into();
    let _a = WorkerProcess::spawn("a", &options);
    let n = 20;
    let ids = rig.enqueue((0..n).map(|i| job(i, None)).collect()).await;
    let store = rig.producer.store().clone();
    let opens = || circuit_opens(store.clone());
    // Five 503s of five calls open it.
    assert!(
        eventually(BOUND, || async { opens().await >= 1 }).await,
        "the circuit never opened"
    );
    let calls_at_open = rig.mock.stats(false).calls;
    // Three probes answered 503 ...
    assert!(
        eventually(BOUND, || async {
            rig.mock.stats(false).calls >= calls_at_open + 3
        })
        .await,
        "no probes"
    );
    // ... open it three times more: a failed probe re-opens at once, with a fresh cool-off,
    // and frees the probe key for the next (before: the circuit stayed open with a past
    // `until`, the probe key held for the probe's TTL, and no failure count reached again).
    assert!(
        eventually(BOUND, || async { opens().await >= 4 }).await,
        "opened {} times after 3 failed probes",
        opens().await
    );

    rig.mock.set_config(MockConfig {
        latency_ms: 5,
        ..MockConfig::default()
    });
    let mut events = rig.events().await;
    assert!(
        events.until(BOUND, |s| s.terminal_jobs() >= n).await,
        "only {} ended",
        events.seen.terminal_jobs()
    );
    for id in &ids {
        let s = rig.producer.status("q", id).await.expect("s").expect("job");
        assert_eq!(s.state, JobState::Completed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_rpm_configured_the_fleet_paces_by_the_limit_the_upstream_states() {
    // Like OpenAI: limit/remaining/reset headers on every answer (reset: until the bucket is
    // full), 429s with retry-after-ms; 600 requests a minute in a 10 s bucket (OpenAI's is a
    // minute: the same shape, a sixth of the test's run time).
    let rpm = 600;
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        rpm: Some(rpm),
        burst_secs: 10.0,
        reset_headers: true,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 50;
    options.max_attempts = 100;
    // No rpm in the config: the workers learn it from x-ratelimit-limit-requests.
    let _workers: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| WorkerProcess::spawn(n, &options))
        .collect();
    // 100 in the bucket, then 300 paced: about 30 s.
    let n = 400;
    let ids = rig.enqueue((0..n).map(|i| job(i, None)).collect()).await;
    let mut events = rig.events().await;
    let bound = Duration::from_secs(300);
    assert!(
        events
            .until(bound, |s| s.count("completed") >= n as u64)
            .await,
        "only {} completed",
        events.seen.count("completed")
    );
    for id in &ids {
        assert_eq!(events.seen.job(id, "completed"), 1);
    }
    let stats = rig.mock.stats(true);
    let times = stats.call_times(0);
    let span_s =
        (times.last().copied().unwrap_or(0) - times.first().copied().unwrap_or(0)) as f64 / 1000.0;
    let share_429 = stats.rate_limited as f64 / stats.calls as f64;
    // Successful calls per minute over the run, against the quota (the bucket's first minute
    // lets the fleet start above it).
    let used = n as f64 / (span_s.max(0.001) / 60.0) / rpm as f64;
    println!(
        "no rpm configured, upstream at {rpm} RPM: {n} jobs in {span_s:.1} s, {} calls, {} 429s \
         ({:.2}%), {:.0}% of the quota used, busiest 1 s window {}",
        stats.calls,
        stats.rate_limited,
        share_429 * 100.0,
        used * 100.0,
        Stats::busiest_second(&times)
    );
    assert!(
        share_429 <= 0.01,
        "{:.2}% of answers were 429",
        share_429 * 100.0
    );
    assert!(used >= 0.9, "only {:.0}% of the quota used", used * 100.0);
}
