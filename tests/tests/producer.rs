//! The producer and the function library on a real Redis: enqueue, dedupe, delay, cancel,
//! dead-letter re-drive, wait, and refusal of bad input.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::json;
use sluice_common::store::{CancelOutcome, Spend, Started, Transition};
use sluice_common::store::{DeadLetter, Sleep};
use sluice_common::{JobSpec, JobState, NewJob, Schedule};
use sluice_producer::{Producer, ProducerError};
use sluice_tests::RedisServer;

fn chat(queue: &str, n: u64) -> NewJob {
    NewJob::post(
        queue,
        "mock",
        "/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("hello {n}")}]}),
    )
}

async fn setup() -> (RedisServer, Producer) {
    let redis = RedisServer::start().await;
    let producer = Producer::connect(&redis.url()).await.expect("connect");
    (redis, producer)
}

async fn dbsize(redis: &RedisServer) -> u64 {
    let mut c = redis.client().await;
    redis::cmd("DBSIZE")
        .query_async(&mut c)
        .await
        .expect("DBSIZE")
}

/// Starts the oldest undelivered jobs as a worker would: XREADGROUP, then the start function.
async fn start_next(redis: &RedisServer, producer: &Producer, queue: &str) -> Vec<Started> {
    let mut c = redis.client().await;
    let stream = format!("sluice:{{{queue}}}:stream");
    let _: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("sluice")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await;
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("sluice")
        .arg("test-worker")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .expect("XREADGROUP");
    let entries: Vec<(String, String)> = reply
        .keys
        .iter()
        .flat_map(|k| k.ids.iter())
        .map(|e| (e.id.clone(), e.get::<String>("id").expect("id field")))
        .collect();
    producer
        .store()
        .start(queue, "test-consumer", &entries)
        .await
        .expect("start")
}

fn run_entry(s: &Started) -> (String, String) {
    match s {
        Started::Run { entry, id, .. } => (entry.clone(), id.clone()),
        other => panic!("expected a job to run, got {other:?}"),
    }
}

#[tokio::test]
async fn enqueue_returns_an_id_and_the_job_is_in_the_stream_and_its_hash() {
    let (redis, producer) = setup().await;
    let e = producer.enqueue(chat("q", 1)).await.expect("enqueue");
    assert!(e.created);
    assert_eq!(e.state, Some(JobState::Queued));

    let mut c = redis.client().await;
    let entries: redis::streams::StreamRangeReply =
        c.xrange_all("sluice:{q}:stream").await.expect("XRANGE");
    assert_eq!(entries.ids.len(), 1);
    assert_eq!(entries.ids[0].get::<String>("id"), Some(e.id.clone()));
    // The entry holds the spec, the job hash none (docs/PROTOCOL.md, `spec`).
    let held: String = entries.ids[0]
        .get("spec")
        .expect("the entry holds the spec");
    let spec: JobSpec = serde_json::from_str(&held).expect("spec is a JobSpec");
    assert_eq!(spec, chat("q", 1).spec);
    let in_hash: Option<String> = c
        .hget(format!("sluice:{{q}}:job:{}", e.id), "spec")
        .await
        .expect("HGET");
    assert_eq!(in_hash, None);
    // So the waiting job's hash holds only short values: Redis keeps it compact (a listpack,
    // not a hashtable; docs/OPERATIONS.md, "Memory").
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(format!("sluice:{{q}}:job:{}", e.id))
        .query_async(&mut c)
        .await
        .expect("OBJECT ENCODING");
    assert_eq!(encoding, "listpack");

    let status = producer
        .status("q", &e.id)
        .await
        .expect("status")
        .expect("job exists");
    assert_eq!(status.state, JobState::Queued);
    assert_eq!(status.attempts, 0);
    let queues = producer.store().queues().await.expect("queues");
    assert_eq!(queues, vec!["q".to_string()]);
}

#[tokio::test]
async fn a_thousand_concurrent_enqueues_over_a_hundred_keys_make_a_hundred_jobs() {
    let (redis, producer) = setup().await;
    let results = futures::stream::iter(0..1000u64)
        .map(|i| {
            let p = producer.clone();
            async move {
                let key = format!("user-action-{}", i % 100);
                let r = p.enqueue(chat("q", i).with_dedupe_key(key.clone())).await;
                (key, r.expect("enqueue"))
            }
        })
        .buffer_unordered(200)
        .collect::<Vec<_>>()
        .await;

    let created: Vec<_> = results.iter().filter(|(_, e)| e.created).collect();
    assert_eq!(created.len(), 100, "exactly one job per dedupe key");
    let owner: std::collections::HashMap<&str, &str> = created
        .iter()
        .map(|(k, e)| (k.as_str(), e.id.as_str()))
        .collect();
    for (key, e) in &results {
        assert_eq!(
            owner[key.as_str()],
            e.id,
            "every duplicate gets the owner's id"
        );
    }
    let mut c = redis.client().await;
    let len: u64 = c.xlen("sluice:{q}:stream").await.expect("XLEN");
    assert_eq!(len, 100);
    let stats = producer.store().stats("q").await.expect("stats");
    assert_eq!(stats.counts.get("queued"), Some(&100));
    assert_eq!(stats.counts.get("deduplicated"), Some(&900));
}

#[tokio::test]
async fn enqueue_batch_pipelines_and_dedupes_inside_one_batch() {
    let (redis, producer) = setup().await;
    let jobs: Vec<NewJob> = (0..5000u64)
        .map(|i| chat("q", i).with_dedupe_key(format!("k{}", i % 2500)))
        .collect();
    let results = producer.enqueue_batch(jobs).await;
    let created = results
        .iter()
        .filter(|r| r.as_ref().expect("enqueued").created)
        .count();
    assert_eq!(created, 2500);
    let mut c = redis.client().await;
    let len: u64 = c.xlen("sluice:{q}:stream").await.expect("XLEN");
    assert_eq!(len, 2500);
}

#[tokio::test]
async fn after_the_dedupe_window_expires_a_new_job_is_created() {
    let (redis, producer) = setup().await;
    // Await the dedupe key's expiry as an event (keyspace notification), not by sleeping.
    let mut c = redis.client().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Ex")
        .query_async(&mut c)
        .await
        .expect("CONFIG SET");
    let client = redis::Client::open(redis.url()).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe("__keyevent@0__:expired")
        .await
        .expect("subscribe");

    let mut job = chat("q", 1).with_dedupe_key("once");
    job.dedupe_window = Some(Duration::from_millis(300));
    let first = producer.enqueue(job.clone()).await.expect("first");
    let second = producer.enqueue(job.clone()).await.expect("second");
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(second.id, first.id);

    let mut messages = pubsub.on_message();
    let expired = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = messages.next().await {
            let key: String = msg.get_payload().expect("payload");
            if key == "sluice:{q}:dedupe:once" {
                return;
            }
        }
    })
    .await;
    assert!(expired.is_ok(), "the dedupe key never expired");
    drop(messages);

    let third = producer.enqueue(job).await.expect("third");
    assert!(third.created, "a new job after the window");
    assert_ne!(third.id, first.id);
}

#[tokio::test]
async fn a_delayed_enqueue_lands_in_the_zset_with_its_due_score() {
    let (redis, producer) = setup().await;
    let mut c = redis.client().await;
    let time = |t: (u64, u64)| t.0 * 1000 + t.1 / 1000;
    let before: (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.expect("TIME");
    let e = producer
        .enqueue(chat("q", 1).with_schedule(Schedule::After(Duration::from_secs(90))))
        .await
        .expect("enqueue");
    let after: (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.expect("TIME");
    assert_eq!(e.state, Some(JobState::Scheduled));

    let score: Option<f64> = c.zscore("sluice:{q}:delayed", &e.id).await.expect("ZSCORE");
    let score = score.expect("job is in the delayed ZSET") as u64;
    assert!(
        (time(before) + 90_000..=time(after) + 90_000).contains(&score),
        "score {score} not within the enqueue's window + 90 s"
    );
    let len: u64 = c.xlen("sluice:{q}:stream").await.expect("XLEN");
    assert_eq!(len, 0, "a scheduled job is not ready");

    // An absolute time works the same way.
    let at = time(after) + 3_600_000;
    let e2 = producer
        .enqueue(chat("q", 2).with_schedule(Schedule::At(at)))
        .await
        .expect("enqueue at");
    let score2: Option<f64> = c
        .zscore("sluice:{q}:delayed", &e2.id)
        .await
        .expect("ZSCORE");
    assert_eq!(score2.map(|s| s as u64), Some(at));
}

#[tokio::test]
async fn due_jobs_are_promoted_once_into_the_stream() {
    let (redis, producer) = setup().await;
    let store = producer.store();
    let mut ids = HashSet::new();
    // Due 3 s on: the 50 enqueues must end before the first is due (100 ms was too short on a
    // loaded CI machine, where the first promote found 3 due).
    for i in 0..50 {
        let e = producer
            .enqueue(chat("q", i).with_schedule(Schedule::After(Duration::from_secs(3))))
            .await
            .expect("enqueue");
        ids.insert(e.id);
    }
    let (n, mut next) = store.promote("q", 1000).await.expect("promote");
    assert_eq!(n, 0, "nothing is due yet");
    let mut c = redis.client().await;
    let mut promoted = 0;
    for _ in 0..1000 {
        if promoted == 50 {
            break;
        }
        // Sleep until the due time Redis reported: that is the scheduler's own timer.
        let due = next.expect("jobs left, so a next due time");
        let now: (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.expect("TIME");
        let now_ms = now.0 * 1000 + now.1 / 1000;
        tokio::time::sleep(Duration::from_millis(due.saturating_sub(now_ms))).await;
        let (n, n_next) = store.promote("q", 7).await.expect("promote");
        promoted += n;
        next = n_next;
    }
    assert_eq!(promoted, 50);
    let (n, next) = store.promote("q", 1000).await.expect("promote");
    assert_eq!((n, next), (0, None), "each job promoted once");
    let entries: redis::streams::StreamRangeReply =
        c.xrange_all("sluice:{q}:stream").await.expect("XRANGE");
    let streamed: HashSet<String> = entries
        .ids
        .iter()
        .map(|e| e.get::<String>("id").expect("id"))
        .collect();
    assert_eq!(entries.ids.len(), 50);
    assert_eq!(streamed, ids);
}

#[tokio::test]
async fn cancel_works_only_from_queued_scheduled_or_retrying() {
    let (redis, producer) = setup().await;
    let store = producer.store();
    let mut c = redis.client().await;

    let queued = producer.enqueue(chat("q", 1)).await.expect("enqueue");
    let scheduled = producer
        .enqueue(chat("q", 2).with_schedule(Schedule::After(Duration::from_secs(600))))
        .await
        .expect("enqueue");
    assert_eq!(
        producer.cancel("q", &queued.id).await.expect("cancel"),
        CancelOutcome::Cancelled(JobState::Queued)
    );
    let len: u64 = c.xlen("sluice:{q}:stream").await.expect("XLEN");
    assert_eq!(len, 0, "a cancelled queued job leaves the stream");
    assert_eq!(
        producer.cancel("q", &scheduled.id).await.expect("cancel"),
        CancelOutcome::Cancelled(JobState::Scheduled)
    );
    let delayed: u64 = c.zcard("sluice:{q}:delayed").await.expect("ZCARD");
    assert_eq!(delayed, 0, "a cancelled scheduled job leaves the ZSET");

    // running → refused; retrying → cancellable; completed → refused.
    let a = producer.enqueue(chat("q", 3)).await.expect("enqueue");
    let b = producer.enqueue(chat("q", 4)).await.expect("enqueue");
    let started = start_next(&redis, &producer, "q").await;
    assert_eq!(started.len(), 2);
    assert_eq!(
        producer.cancel("q", &a.id).await.expect("cancel"),
        CancelOutcome::Refused(JobState::Running)
    );
    let (entry_a, _) = run_entry(&started[0]);
    let (entry_b, _) = run_entry(&started[1]);
    let t = store
        .retry(
            "q",
            &Sleep {
                id: &b.id,
                entry: &entry_b,
                delay: Duration::from_secs(60),
                class: "transient",
                error: "503",
                http_status: Some(503),
                spend: Spend::Attempt,
            },
        )
        .await
        .expect("retry");
    assert_eq!(t, Transition::Done);
    assert_eq!(
        producer.cancel("q", &b.id).await.expect("cancel"),
        CancelOutcome::Cancelled(JobState::Retrying)
    );
    let t = store
        .complete("q", &a.id, &entry_a, "{\"ok\":true}", 200, &[])
        .await
        .expect("complete");
    assert_eq!(t, Transition::Done);
    assert_eq!(
        producer.cancel("q", &a.id).await.expect("cancel"),
        CancelOutcome::Refused(JobState::Completed)
    );
    assert_eq!(
        producer.cancel("q", "no-such-job").await.expect("cancel"),
        CancelOutcome::NotFound
    );
    let stats = store.stats("q").await.expect("stats");
    for live in ["queued", "scheduled", "running", "retrying"] {
        assert_eq!(stats.counts.get(live), Some(&0), "{live} gauge back to 0");
    }
    assert_eq!(stats.counts.get("cancelled"), Some(&3));
    assert_eq!(stats.counts.get("completed"), Some(&1));
}

#[tokio::test]
async fn a_second_completion_of_a_terminal_job_is_refused_and_counted() {
    let (redis, producer) = setup().await;
    let store = producer.store();
    let e = producer.enqueue(chat("q", 1)).await.expect("enqueue");
    let started = start_next(&redis, &producer, "q").await;
    let (entry, id) = run_entry(&started[0]);
    assert_eq!(id, e.id);
    let first = store
        .complete("q", &id, &entry, "{\"n\":1}", 200, &[])
        .await
        .expect("complete");
    let second = store
        .complete("q", &id, &entry, "{\"n\":2}", 200, &[])
        .await
        .expect("complete");
    assert_eq!(first, Transition::Done);
    assert_eq!(second, Transition::Refused("completed".into()));
    let status = producer
        .status("q", &id)
        .await
        .expect("status")
        .expect("job");
    assert_eq!(
        status.result.as_deref(),
        Some("{\"n\":1}"),
        "first result kept"
    );
    let stats = store.stats("q").await.expect("stats");
    assert_eq!(stats.counts.get("refused_completions"), Some(&1));
    assert_eq!(stats.counts.get("completed"), Some(&1));
    assert_eq!(
        stats.stream_len, 1,
        "an acked entry stays until the scheduler trims"
    );
    // The scheduler's promote trims acknowledged entries.
    store.promote("q", 10).await.expect("promote");
    let stats = store.stats("q").await.expect("stats");
    assert_eq!(stats.stream_len, 0, "completed entries leave the stream");
}

#[tokio::test]
async fn redrive_puts_dead_jobs_back_with_attempts_reset_and_history_kept() {
    let (redis, producer) = setup().await;
    let store = producer.store();
    let e = producer.enqueue(chat("q", 1)).await.expect("enqueue");
    let other = producer.enqueue(chat("q", 2)).await.expect("enqueue");
    let started = start_next(&redis, &producer, "q").await;
    let (entry, _) = run_entry(&started[0]);
    let (entry2, _) = run_entry(&started[1]);
    // Attempt 1 fails transiently, attempt 2 is hopeless.
    store
        .retry(
            "q",
            &Sleep {
                id: &e.id,
                entry: &entry,
                delay: Duration::ZERO,
                class: "transient",
                error: "HTTP 503",
                http_status: Some(503),
                spend: Spend::Attempt,
            },
        )
        .await
        .expect("retry");
    assert_eq!(store.promote("q", 10).await.expect("promote").0, 1);
    let started = start_next(&redis, &producer, "q").await;
    let (entry, _) = run_entry(&started[0]);
    store
        .dead_letter(
            "q",
            &DeadLetter {
                id: &e.id,
                entry: &entry,
                reason: "invalid",
                error: "HTTP 400: context_length_exceeded",
                http_status: Some(400),
                raw: "",
            },
        )
        .await
        .expect("dead");
    store
        .dead_letter(
            "q",
            &DeadLetter {
                id: &other.id,
                entry: &entry2,
                reason: "exhausted",
                error: "HTTP 503",
                http_status: Some(503),
                raw: "",
            },
        )
        .await
        .expect("dead");

    let dead = store.dead_list("q", None, 10).await.expect("list");
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].id, e.id);
    assert_eq!(dead[0].reason, "invalid");
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].status, "400");
    let before = producer.status("q", &e.id).await.expect("s").expect("job");
    assert_eq!(before.state, JobState::Dead);

    // Re-drive by filter: only the `invalid` one.
    let picked: Vec<String> = dead
        .iter()
        .filter(|d| d.reason == "invalid")
        .map(|d| d.entry.clone())
        .collect();
    let r = store.redrive("q", &picked).await.expect("redrive");
    assert_eq!((r.redriven, r.kept, r.skipped), (1, 0, 0));

    let after = producer.status("q", &e.id).await.expect("s").expect("job");
    assert_eq!(after.state, JobState::Queued);
    assert_eq!(after.attempts, 0, "attempts reset");
    assert_eq!(after.total_attempts, 2, "all attempts remembered");
    assert_eq!(after.redrives, 1);
    let history = after.history.expect("history kept");
    assert!(
        history.contains("context_length_exceeded") && history.contains("after 2 attempts"),
        "{history}"
    );
    let left = store.dead_list("q", None, 10).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, other.id);
    let started = start_next(&redis, &producer, "q").await;
    assert_eq!(run_entry(&started[0]).1, e.id, "re-driven job runs again");

    // Purge removes the other entry and its dead job.
    let removed = store
        .purge("q", &[left[0].entry.clone()])
        .await
        .expect("purge");
    assert_eq!(removed, 1);
    assert!(producer.status("q", &other.id).await.expect("s").is_none());
}

#[tokio::test]
async fn redrive_never_removes_a_dead_letter_it_cannot_redrive() {
    let (_redis, producer) = setup().await;
    let store = producer.store();
    store.create_group("q").await.expect("group");
    // A raw dead letter (garbage in the stream: no job hash behind it).
    store
        .dead_letter(
            "q",
            &DeadLetter {
                id: "",
                entry: "",
                reason: "malformed",
                error: "stream entry is not {id}",
                http_status: None,
                raw: "foo=bar",
            },
        )
        .await
        .expect("dead");
    let dead = store.dead_list("q", None, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    let r = store
        .redrive("q", &[dead[0].entry.clone()])
        .await
        .expect("redrive");
    assert_eq!((r.redriven, r.kept, r.skipped), (0, 1, 0));
    // Still there, with what it held, until purge.
    let left = store.dead_list("q", None, 10).await.expect("list");
    assert_eq!(left.len(), 1, "the raw dead letter was removed");
    assert_eq!(left[0].entry, dead[0].entry);
    assert_eq!(left[0].reason, "malformed");
    let removed = store
        .purge("q", &[left[0].entry.clone()])
        .await
        .expect("purge");
    assert_eq!(removed, 1);
    assert!(
        store
            .dead_list("q", None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn malformed_and_oversized_input_is_refused_and_nothing_is_written() {
    let (redis, producer) = setup().await;
    let huge = "x".repeat(2 * 1024 * 1024);
    let cases: Vec<(NewJob, &str)> = vec![
        (
            NewJob::post("q", "mock", "/v1/chat", json!({"prompt": huge})),
            "over the limit",
        ),
        (
            NewJob::post("q", "https://evil.example", "/v1", json!({"a": 1})),
            "upstream",
        ),
        (
            NewJob::post("q", "mock", "https://evil.example/v1", json!({"a": 1})),
            "request.path",
        ),
        (
            NewJob::post("q", "mock", "/v1/%2e%2e/admin", json!({"a": 1})),
            "request.path",
        ),
        (
            NewJob::post("q", "mock", "/v1/chat", serde_json::Value::Null),
            "request.body",
        ),
        (
            NewJob::post("q", "mock", "/v1/chat", json!({"stream": true})),
            "request.body.stream",
        ),
        (
            NewJob::post("bad{queue}", "mock", "/v1/chat", json!({"a": 1})),
            "queue",
        ),
        (
            {
                let mut j = NewJob::post("q", "mock", "/v1/chat", json!({"a": 1}));
                j.spec
                    .request
                    .headers
                    .insert("Authorization".into(), "Bearer stolen".into());
                j
            },
            "Authorization",
        ),
        (
            {
                let mut j = NewJob::post("q", "mock", "/v1/chat", json!({"a": 1}));
                j.spec
                    .request
                    .headers
                    .insert("X-Note".into(), "a\r\nX-Evil: 1".into());
                j
            },
            "line break",
        ),
    ];
    for (job, names) in cases {
        match producer.enqueue(job).await {
            Err(ProducerError::Invalid(e)) => {
                assert!(e.to_string().contains(names), "{e} should name {names}")
            }
            other => panic!("expected a refusal naming {names}, got {other:?}"),
        }
    }
    assert_eq!(dbsize(&redis).await, 0, "nothing written for refused jobs");

    // A foreign client that skips validation still meets the library's own checks.
    let mut c = redis.client().await;
    for (spec, code) in [
        ("not json", "SLUICE_INVALID"),
        ("{\"request\": {\"path\": \"/x\"}}", "SLUICE_INVALID"),
        (huge.as_str(), "SLUICE_TOO_LARGE"),
    ] {
        let r: redis::RedisResult<redis::Value> = redis::cmd("FCALL")
            .arg("sluice_enqueue")
            .arg(1)
            .arg("sluice:{q}:")
            .arg("job-1")
            .arg(spec)
            .query_async(&mut c)
            .await;
        let err = r.expect_err("refused");
        assert_eq!(err.code(), Some(code), "{err}");
    }
    assert_eq!(
        dbsize(&redis).await,
        0,
        "nothing written for refused raw calls"
    );
}

#[tokio::test]
async fn wait_blocks_until_the_job_ends() {
    let (redis, producer) = setup().await;
    let e = producer.enqueue(chat("q", 1)).await.expect("enqueue");
    let waiter = {
        let p = producer.clone();
        let id = e.id.clone();
        tokio::spawn(async move { p.wait("q", &id, Duration::from_secs(30)).await })
    };
    let started = start_next(&redis, &producer, "q").await;
    let (entry, id) = run_entry(&started[0]);
    producer
        .store()
        .complete("q", &id, &entry, "{\"answer\":42}", 200, &[])
        .await
        .expect("complete");
    let status = waiter.await.expect("join").expect("wait");
    assert_eq!(status.state, JobState::Completed);
    assert_eq!(status.result.as_deref(), Some("{\"answer\":42}"));

    let missing = producer
        .wait("q", "nope", Duration::from_millis(10))
        .await
        .expect_err("no such job");
    assert!(matches!(missing, ProducerError::NotFound { .. }));
    let pending = producer.enqueue(chat("q", 2)).await.expect("enqueue");
    let timeout = producer
        .wait("q", &pending.id, Duration::from_millis(50))
        .await
        .expect_err("not done");
    assert!(matches!(timeout, ProducerError::Timeout { .. }));
}

#[tokio::test]
async fn a_client_chosen_id_is_idempotent() {
    let (_redis, producer) = setup().await;
    let first = producer
        .enqueue(chat("q", 1).with_id("order-7"))
        .await
        .expect("enqueue");
    let again = producer
        .enqueue(chat("q", 2).with_id("order-7"))
        .await
        .expect("enqueue");
    assert!(first.created && !again.created);
    assert_eq!(again.id, "order-7");
}

#[tokio::test]
async fn pause_and_resume_are_visible_in_stats() {
    let (_redis, producer) = setup().await;
    producer.enqueue(chat("q", 1)).await.expect("enqueue");
    let store = producer.store();
    store.set_paused("q", true).await.expect("pause");
    assert!(store.stats("q").await.expect("stats").paused);
    store.set_paused("q", false).await.expect("resume");
    assert!(!store.stats("q").await.expect("stats").paused);
}

#[tokio::test]
async fn enqueue_many_refuses_a_bad_job_alone_and_counts_once() {
    let (redis, producer) = setup().await;
    // Load the library through the producer, then call the function as a foreign client would.
    producer.enqueue(chat("q", 0)).await.expect("enqueue");
    let good = r#"{"upstream":"mock","request":{"path":"/v1/chat/completions"}}"#;
    let mut c = redis.client().await;
    let reply: redis::Value = redis::cmd("FCALL")
        .arg("sluice_enqueue_many")
        .arg(1)
        .arg("sluice:{q}:")
        .arg(1_048_576)
        .arg(10_000)
        .arg(&["a-1", good, "", "0", "0", "0"])
        .arg(&["a-2", "{not json", "", "0", "0", "0"])
        .arg(&["a-3", good, "k", "60000", "0", "0"])
        .arg(&["a-4", good, "k", "60000", "0", "0"])
        .query_async(&mut c)
        .await
        .expect("FCALL sluice_enqueue_many");
    let items: Vec<Vec<String>> = redis::from_redis_value(reply).expect("array of arrays");
    assert_eq!(items[0], vec!["created", "a-1", "queued"]);
    assert_eq!(items[1][0], "error");
    assert!(
        items[1][1].starts_with("SLUICE_INVALID spec"),
        "{:?}",
        items[1]
    );
    assert_eq!(items[2], vec!["created", "a-3", "queued"]);
    assert_eq!(
        items[3],
        vec!["duplicate", "a-3", "queued"],
        "same dedupe key"
    );
    let stats = producer.store().stats("q").await.expect("stats");
    assert_eq!(stats.counts.get("enqueued"), Some(&3));
    assert_eq!(stats.counts.get("queued"), Some(&3));
    assert_eq!(stats.counts.get("deduplicated"), Some(&1));
    let status = producer.status("q", "a-2").await.expect("status");
    assert!(status.is_none(), "the refused job wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_enqueues_share_calls_and_each_caller_gets_its_own_answer() {
    let (redis, producer) = setup().await;
    let calls = |p: Producer, i: u64| async move {
        let mut job = chat("q", i).with_dedupe_key(format!("key-{}", i % 150));
        job.id = Some(format!("c-{i}"));
        (i, p.enqueue(job).await.expect("enqueue"))
    };
    let answers =
        futures::future::join_all((0..300).map(|i| tokio::spawn(calls(producer.clone(), i)))).await;
    let mut owners: HashMap<u64, String> = HashMap::new();
    let mut created = 0;
    for a in answers {
        let (i, e) = a.expect("task");
        if e.created {
            created += 1;
            assert_eq!(e.id, format!("c-{i}"), "a caller got another job's answer");
        }
        // Both jobs of a dedupe key name the same owner, whichever came first.
        let owner = owners.entry(i % 150).or_insert_with(|| e.id.clone());
        assert_eq!(*owner, e.id, "job {i}");
    }
    assert_eq!(created, 150);
    let mut c = redis.client().await;
    let fcalls: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .expect("INFO");
    let calls: u64 = fcalls
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_fcall:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .expect("fcall calls");
    assert!(
        calls < 300,
        "300 enqueues took {calls} FCALLs: nothing was shared"
    );
}

#[tokio::test]
async fn a_library_lost_by_redis_is_loaded_again_by_the_next_call() {
    let (redis, producer) = setup().await;
    let mut c = redis.client().await;
    // A Redis restarted without persistence, or a cluster primary that never had it.
    let flush = || redis::cmd("FUNCTION").arg("FLUSH").clone();
    let _: () = flush().query_async(&mut c).await.expect("FUNCTION FLUSH");
    let first = producer.enqueue(chat("lost", 1)).await.expect("enqueue");
    assert!(first.created);
    let started = start_next(&redis, &producer, "lost").await;
    let (entry, id) = run_entry(&started[0]);
    assert_eq!(id, first.id);
    let _: () = flush().query_async(&mut c).await.expect("FUNCTION FLUSH");
    let done = producer
        .store()
        .complete("lost", &id, &entry, "{}", 200, &[])
        .await
        .expect("complete");
    assert_eq!(done, Transition::Done);
    let status = producer.status("lost", &id).await.expect("status");
    assert_eq!(status.map(|s| s.state), Some(JobState::Completed));
}

#[tokio::test]
async fn a_producer_configured_with_other_partitions_than_the_workers_is_refused() {
    let (redis, producer) = setup().await;
    let mut c = redis.client().await;
    // What workers configured with `[queues.partitions] hot = 3` record at start-up.
    let _: () = redis::cmd("HSET")
        .arg("sluice:partitions")
        .arg("hot")
        .arg(3)
        .query_async(&mut c)
        .await
        .expect("HSET");
    let before = dbsize(&redis).await;
    let refused = producer.enqueue(chat("hot", 1)).await;
    let message = refused
        .expect_err("P = 1 against the workers' 3")
        .to_string();
    assert!(
        message.contains("split into 3 partition(s)") && message.contains("says 1"),
        "{message}"
    );
    assert_eq!(dbsize(&redis).await, before, "nothing may be written");
    // Asked again, it is refused again (not let through once the queue is "known").
    assert!(producer.enqueue(chat("hot", 2)).await.is_err());

    let mut config = sluice_common::Config::defaults();
    config.redis.url = redis.url();
    config.queues.partitions.insert("hot".into(), 3);
    let agreeing = Producer::from_config(&config).await.expect("connect");
    let e = agreeing.enqueue(chat("hot", 3)).await.expect("enqueue");
    let status = agreeing
        .status("hot", &e.id)
        .await
        .expect("status")
        .expect("job");
    assert!(status.queue.starts_with("hot#"), "{}", status.queue);
    // Other queues are not affected.
    producer.enqueue(chat("other", 4)).await.expect("enqueue");
}

#[tokio::test]
async fn a_duplicate_with_another_request_is_a_conflict_in_the_reply() {
    let (_redis, producer) = setup().await;
    let job = |doc: u32| {
        let mut j = NewJob::post("q", "mock", "/v1/chat", json!({"doc": doc}));
        j.dedupe_key = Some("upload-7".into());
        j
    };
    let first = producer.enqueue(job(1)).await.expect("first");
    assert!(first.created && !first.conflict);
    let same = producer.enqueue(job(1)).await.expect("same");
    assert!(!same.created && !same.conflict, "{same:?}");
    assert_eq!(same.id, first.id);
    let other = producer.enqueue(job(2)).await.expect("other");
    assert!(!other.created && other.conflict, "{other:?}");
    assert_eq!(other.id, first.id);
    // The same id with another request is a conflict too.
    let mut again = NewJob::post("q", "mock", "/v1/chat", json!({"doc": 3}));
    again.id = Some(first.id.clone());
    let by_id = producer.enqueue(again).await.expect("by id");
    assert!(!by_id.created && by_id.conflict, "{by_id:?}");
}
