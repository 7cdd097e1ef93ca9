//! The response cache and single flight (docs/OPERATIONS.md, "Response cache"), on a real Redis
//! with real workers and the mock: a fresh answer completes an identical job at enqueue with no
//! call; an expired one does not; field order does not matter, the model does; identical jobs
//! enqueued together make one call; a leader that dies or is cancelled hands over to a follower,
//! and no follower is lost.

use std::time::Duration;

use serde_json::json;
use sluice_common::{JobState, NewJob};
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::{BOUND, Rig, count};

const TTL: Duration = Duration::from_secs(600);

fn ask(body: serde_json::Value) -> NewJob {
    NewJob::post("q", "mock", "/v1/chat/completions", body).with_cache(TTL)
}

/// The queue's cached answers (`cache:<64 hex digits>`, not the index, sizes or total).
async fn cache_entries(rig: &Rig) -> Vec<String> {
    let mut conn = rig.redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sluice:{q}:cache:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    keys.into_iter()
        .filter(|k| {
            let tail = k.rsplit(':').next().unwrap_or("");
            tail.len() == 64 && tail.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .collect()
}

/// Enqueues `job` with `producer` and waits until it has completed; what enqueue said.
async fn completed(
    producer: &sluice_producer::Producer,
    events: &mut sluice_tests::events::Events,
    job: NewJob,
) -> sluice_common::Enqueued {
    let e = producer.enqueue(job).await.expect("enqueue");
    assert!(
        events
            .until(BOUND, |s| s.job(&e.id, "completed") == 1)
            .await,
        "job {} did not complete",
        e.id
    );
    e
}

fn question(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "What is a sluice?"}], "max_tokens": 16})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_answer_serves_an_identical_request_at_enqueue_with_no_call() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut events = rig.events().await;
    // A price of $1 a token in and $2 out makes the estimated cost easy to check.
    let mut options = rig.options();
    options.extra =
        "\n[prices.\"gpt-4o-mini\"]\ninput_per_mtok = 1000000.0\noutput_per_mtok = 2000000.0\n"
            .into();
    let mut worker = sluice_tests::worker_process::WorkerProcess::spawn("w", &options);
    let first = rig
        .enqueue(vec![ask(question("gpt-4o-mini"))])
        .await
        .remove(0);
    assert!(
        events
            .until(BOUND, |s| s.job(&first, "completed") == 1)
            .await
    );
    assert_eq!(rig.mock.stats(false).calls, 1);

    // The same request (fields in another order): completed by the enqueue itself.
    let reordered = json!({"max_tokens": 16, "messages": [{"content": "What is a sluice?", "role": "user"}], "model": "gpt-4o-mini"});
    let e = rig.producer.enqueue(ask(reordered)).await.expect("enqueue");
    assert_eq!(e.state, Some(JobState::Completed), "{e:?}");
    let hit = rig.status(&e.id).await;
    let leader = rig.status(&first).await;
    assert!(hit.cached && !leader.cached);
    assert_eq!(hit.result, leader.result);
    assert_eq!(hit.status, Some(200));
    // Waiting on it answers at once, and its event is in the stream like any completion.
    let waited = rig.producer.wait("q", &e.id, BOUND).await.expect("wait");
    assert_eq!(waited.state, JobState::Completed);
    assert!(
        events
            .until(BOUND, |s| s.job(&e.id, "completed") == 1)
            .await
    );

    // Another model is another request: a miss, and a call.
    let other = rig.enqueue(vec![ask(question("gpt-4o"))]).await.remove(0);
    assert!(
        events
            .until(BOUND, |s| s.job(&other, "completed") == 1)
            .await
    );
    assert_eq!(rig.mock.stats(false).calls, 2);
    let c = rig.counts().await;
    println!(
        "cache: hits {}, misses {}, followers {}; mock calls {}",
        count(&c, "cache_hits"),
        count(&c, "cache_misses"),
        count(&c, "cache_followers"),
        rig.mock.stats(false).calls
    );
    assert_eq!((count(&c, "cache_hits"), count(&c, "cache_misses")), (1, 2));
    let (input, output) = (
        count(&c, "saved_in:gpt-4o-mini"),
        count(&c, "saved_out:gpt-4o-mini"),
    );
    assert!(input > 0 && output > 0, "{c:?}");
    assert_eq!(input + output, count(&c, "cache_tokens_saved"));

    // Prometheus: the worker exports the queue's cache counters and the estimated cost saved.
    let addr = worker.ready(BOUND).await.expect("worker ready");
    let m = sluice_tests::scrape::Scrape::fetch(addr).await;
    let q = [("queue", "q")];
    assert_eq!(m.sum("sluice_cache_hits_total", &q), 1.0);
    assert_eq!(m.sum("sluice_cache_misses_total", &q), 2.0);
    assert_eq!(
        m.sum("sluice_cache_tokens_saved_total", &q),
        (input + output) as f64
    );
    assert_eq!(
        m.sum("sluice_cache_cost_saved_dollars", &q),
        (input + 2 * output) as f64
    );

    // `sluice stats` shows the hit rate.
    let text = rig.cli(&["stats", "q"]);
    assert!(
        text.contains("cache    hit rate 33.3%: 1 hits, 0 followers of an identical job, 2 misses"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_answer_is_not_served() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut events = rig.events().await;
    let _worker = rig.spawn("w");
    let short = |body| {
        NewJob::post("q", "mock", "/v1/chat/completions", body)
            .with_cache(Duration::from_millis(300))
    };
    let first = rig.enqueue(vec![short(question("m"))]).await.remove(0);
    assert!(
        events
            .until(BOUND, |s| s.job(&first, "completed") == 1)
            .await
    );
    // Until Redis has expired the entry (its TTL is the only clock here).
    let started = std::time::Instant::now();
    loop {
        if cache_entries(&rig).await.is_empty() {
            break;
        }
        assert!(started.elapsed() < BOUND, "the cache entry never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = rig.enqueue(vec![short(question("m"))]).await.remove(0);
    assert!(
        events
            .until(BOUND, |s| s.job(&again, "completed") == 1)
            .await
    );
    assert_eq!(
        rig.mock.stats(false).calls,
        2,
        "the expired answer was not served"
    );
    let s = rig.status(&again).await;
    assert!(!s.cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_jobs_at_once_make_one_call_and_share_its_answer() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut events = rig.events().await;
    let ids = rig
        .enqueue((0..100).map(|_| ask(question("m"))).collect())
        .await;
    let _worker = rig.spawn("w");
    assert!(events.until(BOUND, |s| s.count("completed") >= 100).await);
    assert_eq!(rig.mock.stats(false).calls, 1);
    let mut answers = std::collections::HashSet::new();
    for id in &ids {
        let s = rig.status(id).await;
        assert_eq!(s.state, JobState::Completed, "{id}");
        answers.insert(s.result.expect("result"));
    }
    assert_eq!(answers.len(), 1, "one answer for all");
    let c = rig.counts().await;
    assert_eq!(count(&c, "cache_followers"), 99);
    let saved = count(&c, "cache_tokens_saved");
    assert!(
        saved > 0 && saved % 99 == 0,
        "99 followers × the leader's tokens: {saved}"
    );
    assert_eq!(count(&c, "completed"), 100);
    assert_eq!(count(&c, "queued"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_cancelled_leader_hands_over_and_no_follower_is_lost() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut events = rig.events().await;
    // Dead: every call answers 400, so each leader in turn is dead-lettered and the next
    // follower takes over; all six end, each after its own call.
    let bad = json!({"model": "m", "messages": [{"role": "user", "content": "bad"}], "mock": {"script": [400]}});
    let dead_ids = rig
        .enqueue((0..6).map(|_| ask(bad.clone())).collect())
        .await;
    // Cancelled: a leader cancelled before any worker runs; a follower leads, one call serves
    // the other four.
    let good_ids = rig
        .enqueue((0..5).map(|_| ask(question("m"))).collect())
        .await;
    let cancelled = rig
        .producer
        .cancel("q", &good_ids[0])
        .await
        .expect("cancel");
    assert!(matches!(
        cancelled,
        sluice_common::store::CancelOutcome::Cancelled(_)
    ));
    let _worker = rig.spawn("w");
    assert!(
        events
            .until(BOUND, |s| dead_ids.iter().all(|id| s.job(id, "dead") == 1)
                && good_ids[1..].iter().all(|id| s.job(id, "completed") == 1))
            .await,
        "{:?}",
        events.seen.totals
    );
    let stats = rig.mock.stats(false);
    println!(
        "6 jobs answered 400: dead one by one; 5 good, leader cancelled: mock calls {}",
        stats.calls
    );
    assert_eq!(stats.calls, 6 + 1);
    let c = rig.counts().await;
    assert_eq!(count(&c, "queued"), 0, "{c:?}");
}

/// An upstream's `cache_ttl_ms` applies to jobs that say nothing of the cache, when the request
/// asks for a repeatable answer: `temperature` 0 is served from the cache the second time,
/// `temperature` 0.7 is called both times (docs/OPERATIONS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_cache_setting_serves_deterministic_requests_only() {
    let rig = Rig::start(MockConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("producer.toml");
    std::fs::write(
        &file,
        format!(
            "[redis]\nurl = \"{}\"\n\n[upstreams.mock]\nbase_url = \"{}\"\ncache_ttl_ms = 600000\n",
            rig.url(),
            rig.mock.url()
        ),
    )
    .expect("write config");
    let config = sluice_common::Config::load(Some(&file)).expect("config");
    let producer = sluice_producer::Producer::from_config(&config)
        .await
        .expect("producer");
    let mut events = rig.events().await;
    let _worker = rig.spawn("w");
    let job = |temperature: f64| {
        NewJob::post(
            "q",
            "mock",
            "/v1/chat/completions",
            json!({"model": "m", "temperature": temperature, "messages": [{"role": "user", "content": "hi"}]}),
        )
    };
    for (temperature, calls_after) in [(0.0, 1), (0.0, 1), (0.7, 2), (0.7, 3)] {
        completed(&producer, &mut events, job(temperature)).await;
        assert_eq!(
            rig.mock.stats(false).calls,
            calls_after,
            "temperature {temperature}"
        );
    }
}

/// Memory stays bounded: with `queues.cache_max_bytes` at 1,000, five answers of ~400 bytes
/// keep the queue's cached bytes at or under 1,000 (the soonest to expire evicted, counted); an
/// answer over the job's `max_bytes` is not stored at all, so its repeat is called again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_cache_stays_under_its_byte_cap_and_big_answers_are_not_stored() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut config = sluice_common::Config::defaults();
    config.redis.url = rig.url();
    config.queues.cache_max_bytes = 1_000;
    let producer = sluice_producer::Producer::from_config(&config)
        .await
        .expect("producer");
    let mut events = rig.events().await;
    let _worker = rig.spawn("w");
    for i in 0..5 {
        completed(&producer, &mut events, ask(question(&format!("model-{i}")))).await;
    }
    let mut conn = rig.redis.client().await;
    let bytes: u64 = redis::cmd("GET")
        .arg("sluice:{q}:cache:bytes")
        .query_async(&mut conn)
        .await
        .expect("GET");
    let entries = cache_entries(&rig).await;
    let c = rig.counts().await;
    println!(
        "5 answers under a 1,000-byte cap: {bytes} bytes in {} entries, {} evicted",
        entries.len(),
        count(&c, "cache_evictions")
    );
    assert!(bytes <= 1_000 && bytes > 0, "{bytes}");
    assert!(count(&c, "cache_evictions") >= 3);
    assert!(entries.len() <= 2 && !entries.is_empty(), "{entries:?}");

    // The job's own size limit: an answer over it is not stored.
    let tiny = |body| {
        let mut job = NewJob::post("q", "mock", "/v1/chat/completions", body).with_cache(TTL);
        if let Some(c) = job.cache.as_mut() {
            c.max_bytes = 10;
        }
        job
    };
    let calls = rig.mock.stats(false).calls;
    for _ in 0..2 {
        completed(&producer, &mut events, tiny(question("tiny"))).await;
    }
    assert_eq!(
        rig.mock.stats(false).calls,
        calls + 2,
        "a big answer was cached"
    );
}

/// `sluice cache purge --queue q --upstream mock2` deletes that upstream's answers only: the
/// next identical request to it is called again, the other upstream's is still a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_one_upstreams_answers_leaves_the_others() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut options = rig.options();
    options.extra = format!("\n[upstreams.mock2]\nbase_url = \"{}\"\n", rig.mock.url());
    let _worker = sluice_tests::worker_process::WorkerProcess::spawn("w", &options);
    let mut events = rig.events().await;
    let to = |upstream: &str| {
        NewJob::post("q", upstream, "/v1/chat/completions", question("m")).with_cache(TTL)
    };
    for upstream in ["mock", "mock2"] {
        let id = rig.enqueue(vec![to(upstream)]).await.remove(0);
        assert!(events.until(BOUND, |s| s.job(&id, "completed") == 1).await);
    }
    assert_eq!(rig.mock.stats(false).calls, 2);
    let purge = |extra: &[&str]| {
        let mut args = vec!["cache", "purge", "--queue", "q"];
        args.extend_from_slice(extra);
        rig.cli(&args)
    };
    assert_eq!(
        purge(&["--upstream", "mock2"]),
        "purged 1 cached answers of upstream mock2 from q"
    );
    let hit = rig.producer.enqueue(to("mock")).await.expect("enqueue");
    assert_eq!(
        hit.state,
        Some(JobState::Completed),
        "mock's answer is still cached"
    );
    let again = rig.producer.enqueue(to("mock2")).await.expect("enqueue");
    assert_eq!(
        again.state,
        Some(JobState::Queued),
        "mock2's answer was purged"
    );
    assert!(
        events
            .until(BOUND, |s| s.job(&again.id, "completed") == 1)
            .await
    );
    assert_eq!(rig.mock.stats(false).calls, 3);
    assert_eq!(purge(&[]), "purged 2 cached answers from q");
    assert!(cache_entries(&rig).await.is_empty());
}

/// The cache asked for from outside Rust: `sluice enqueue --cache-ttl` and the HTTP API's
/// `cache_ttl_ms`. The second identical job of each is completed by its enqueue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_http_api_ask_for_the_cache() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut events = rig.events().await;
    let _worker = rig.spawn("w");
    let body = r#"{"model": "m", "messages": [{"role": "user", "content": "from the CLI"}]}"#;
    let enqueue = || {
        rig.cli(&[
            "enqueue",
            "--queue",
            "q",
            "--upstream",
            "mock",
            "--cache-ttl",
            "10m",
            "--body",
            body,
        ])
    };
    let first = enqueue();
    assert!(first.ends_with("(queued)"), "{first}");
    assert!(events.until(BOUND, |s| s.count("completed") >= 1).await);
    let second = enqueue();
    assert!(second.ends_with("(completed)"), "{second}");

    let api = sluice_tests::api_process::ApiProcess::start(
        &rig.url(),
        "",
        &sluice_tests::api_process::key_toml("a", "key-a", &["q"], "", ""),
    );
    let http = reqwest::Client::new();
    let submit = || {
        http.post(format!("{}/v1/queues/q/jobs", api.base))
            .bearer_auth("key-a")
            .json(&json!({"upstream": "mock", "cache_ttl_ms": 600000, "body": question("api")}))
            .send()
    };
    let r: serde_json::Value = submit().await.expect("POST").json().await.expect("JSON");
    assert_eq!(r["state"], "queued", "{r}");
    let id = r["id"].as_str().expect("id").to_string();
    assert!(events.until(BOUND, |s| s.job(&id, "completed") == 1).await);
    let r: serde_json::Value = submit().await.expect("POST").json().await.expect("JSON");
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(
        rig.mock.stats(false).calls,
        2,
        "one call each for the CLI and the API"
    );
}
