//! `sluice-api` as a real process over real HTTP, on a real Redis, with real workers and the mock:
//! one job for 1,000 concurrent submits with one `Idempotency-Key` (and one upstream call), 409 for
//! the same key with another request, 422 naming the field, 413 over the body cap, 401 without a
//! configured key, and a key that never sees another key's queue or tenant.

use std::collections::HashSet;

use serde_json::{Value, json};
use sluice_tests::api_process::{ApiProcess, error_message, get_json, key_toml};
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::{BOUND, Rig};

/// Keys: `key-a` (queue q, upstream mock, tenant a), `key-b` (queues q and other, tenant b).
fn start_api(rig: &Rig) -> ApiProcess {
    let keys =
        key_toml("a", "key-a", &["q"], "a", "") + &key_toml("b", "key-b", &["q", "other"], "b", "");
    ApiProcess::start(&rig.url(), "max_body_bytes = 65536", &keys)
}

fn chat(n: u32) -> Value {
    json!({"upstream": "mock", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("hello {n}")}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_submits_with_one_idempotency_key_make_one_job_and_one_call() {
    let rig = Rig::start(MockConfig::default()).await;
    let api = start_api(&rig);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/queues/q/jobs", api.base);
    let answers = futures::future::join_all((0..1000).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(&url)
                .bearer_auth("key-a")
                .header("Idempotency-Key", "upload-4711")
                .json(&chat(1))
                .send()
                .await
                .expect("POST");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("JSON");
            (status, body["id"].as_str().unwrap_or_default().to_string())
        }
    }))
    .await;
    let ids: HashSet<&str> = answers.iter().map(|(_, id)| id.as_str()).collect();
    let created = answers.iter().filter(|(s, _)| *s == 202).count();
    let again = answers.iter().filter(|(s, _)| *s == 200).count();
    println!(
        "1000 concurrent submits, one key: {created} × 202, {again} × 200, {} distinct ids",
        ids.len()
    );
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!((created, again), (1, 999));
    let id = ids.into_iter().next().expect("id").to_string();

    // A worker runs it: one upstream call.
    let mut events = rig.events().await;
    let _worker = rig.spawn("w");
    assert!(events.until(BOUND, |s| s.count("completed") >= 1).await);
    assert_eq!(rig.mock.stats(false).calls, 1, "one upstream call");
    let job = get_json(&http, &format!("{url}/{id}"), "key-a").await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"]["status"], 200, "{job}");
    assert!(job["result"]["body"]["choices"].is_array(), "{job}");
    assert!(job.get("needs_attention").is_none(), "{job}");

    // The same key with another request: 409 naming the existing job.
    let r = http
        .post(&url)
        .bearer_auth("key-a")
        .header("Idempotency-Key", "upload-4711")
        .json(&chat(2))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 409);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["job"]["id"], id.as_str(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_keys_and_tenants_get_the_status_that_names_the_problem() {
    let rig = Rig::start(MockConfig::default()).await;
    let api = start_api(&rig);
    let http = reqwest::Client::new();
    let jobs = |q: &str| format!("{}/v1/queues/{q}/jobs", api.base);
    let post =
        |q: &str, key: &str, body: Value| http.post(jobs(q)).bearer_auth(key).json(&body).send();

    // No key, an unknown key: 401.
    let r = http
        .post(jobs("q"))
        .json(&chat(1))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 401);
    let r = post("q", "key-zzz", chat(1)).await.expect("POST");
    assert_eq!(r.status().as_u16(), 401);
    // A field missing, an unknown field, an upstream not the key's: 422 naming it.
    let r = post("q", "key-a", json!({"body": {}})).await.expect("POST");
    assert_eq!(r.status().as_u16(), 422);
    let e: Value = r.json().await.expect("JSON");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("upstream")),
        "{e}"
    );
    let r = post(
        "q",
        "key-a",
        json!({"upstream": "mock", "body": {}, "urgency": 9}),
    )
    .await
    .expect("POST");
    assert_eq!(r.status().as_u16(), 422);
    let e: Value = r.json().await.expect("JSON");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("urgency")),
        "{e}"
    );
    let r = post("q", "key-a", json!({"upstream": "openai", "body": {}}))
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 422);
    let e: Value = r.json().await.expect("JSON");
    assert!(
        !e.to_string().contains("key-b") && !e.to_string().contains("other"),
        "{e}"
    );
    // Over the 64 KiB body cap: 413.
    let big = json!({"upstream": "mock", "body": {"text": "x".repeat(100_000)}});
    let r = post("q", "key-a", big).await.expect("POST");
    assert_eq!(r.status().as_u16(), 413);
    // A queue that is not the key's: 404, as if absent.
    let r = post("other", "key-a", chat(1)).await.expect("POST");
    assert_eq!(r.status().as_u16(), 404);

    // Key a's job is invisible to key b, although both may use queue q (tenants differ).
    let r = post("q", "key-a", chat(3)).await.expect("POST");
    assert_eq!(r.status().as_u16(), 202);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    let get = |key: &str| {
        http.get(format!("{}{location}", api.base))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(get("key-a").await.expect("GET").status().as_u16(), 200);
    assert_eq!(get("key-b").await.expect("GET").status().as_u16(), 404);
    let cancel = |key: &str| {
        http.post(format!("{}{location}/cancel", api.base))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(cancel("key-b").await.expect("POST").status().as_u16(), 404);
    let r = cancel("key-a").await.expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    let job: Value = get("key-a").await.expect("GET").json().await.expect("JSON");
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(cancel("key-a").await.expect("POST").status().as_u16(), 409);

    // The queue's stats, for its keys only.
    let stats = |key: &str| {
        http.get(format!("{}/v1/queues/q", api.base))
            .bearer_auth(key)
            .send()
    };
    let s: Value = stats("key-a")
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(s["counts"]["cancelled"], 1, "{s}");
    let r = http
        .get(format!("{}/v1/queues/other", api.base))
        .bearer_auth("key-a")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 404);
    // Probes and metrics.
    let ready = http
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(ready.status().as_u16(), 200);
    let metrics = http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("sluice_api_requests_total{route=\"submit\",status=\"413\"} 1"),
        "{metrics}"
    );
}

/// One SSE event: its id, its type, its data.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: String,
    event: String,
    data: Value,
}

/// Reads up to `max` events from an open SSE response, or fewer if `idle` passes without one;
/// the second value says whether the server ended the stream.
async fn read_events(
    r: &mut reqwest::Response,
    buf: &mut String,
    max: usize,
    idle: std::time::Duration,
) -> (Vec<SseEvent>, bool) {
    let mut out = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_string();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !event.is_empty() {
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                out.push(SseEvent { id, event, data });
                if out.len() >= max {
                    return (out, false);
                }
            }
        }
        match tokio::time::timeout(idle, r.chunk()).await {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) | Ok(Err(_)) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumed_with_last_event_id_over_a_retrying_job_loses_and_repeats_nothing() {
    let rig = Rig::start(MockConfig::default()).await;
    let api = start_api(&rig);
    let http = reqwest::Client::new();
    // 20 answers of 503, then a 200: about 60 state changes, 200 ms apart.
    let mut script = vec![503u16; 20];
    script.push(200);
    let r = http
        .post(format!("{}/v1/queues/q/jobs", api.base))
        .bearer_auth("key-a")
        .json(&json!({"upstream": "mock", "max_attempts": 50, "body": {"model": "m", "messages": [], "mock": {"script": script}}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    let id = location.rsplit('/').next().expect("id").to_string();
    let url = format!("{}{location}/events", api.base);

    let mut snapshot: Option<SseEvent> = None;
    let mut changes: Vec<SseEvent> = Vec::new();
    let mut last_id: Option<String> = None;
    let mut connections = 0;
    let mut workers = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ended: {} changes",
            changes.len()
        );
        let mut req = http.get(&url).bearer_auth("key-a");
        if let Some(l) = &last_id {
            req = req.header("Last-Event-ID", l);
        }
        let mut r = req.send().await.expect("GET events");
        assert_eq!(r.status().as_u16(), 200);
        connections += 1;
        if connections == 2 {
            // The worker starts once the stream is followed: every change happens under it.
            let mut options = rig.options();
            options.base_ms = 200;
            options.cap_ms = 200;
            // Twenty 503s in a row are this test's script, not an outage.
            options.extra = "circuit_min_calls = 1000\n".into();
            workers.push(sluice_tests::worker_process::WorkerProcess::spawn(
                "w", &options,
            ));
        }
        let mut buf = String::new();
        // One event per connection, or a short idle wait: then drop it and resume.
        let (got, ended) =
            read_events(&mut r, &mut buf, 1, std::time::Duration::from_millis(30)).await;
        drop(r);
        for e in got {
            last_id = Some(e.id.clone());
            if e.event == "job" {
                assert!(snapshot.is_none(), "a second snapshot: {e:?}");
                snapshot = Some(e);
            } else {
                changes.push(e);
            }
        }
        // Past the end, resuming from the terminal event must give nothing and end at once; it
        // goes on until 100 connections, however fast this machine ran the job.
        if ended && connections >= 100 {
            break;
        }
    }
    let snapshot = snapshot.expect("the first event is the job");
    assert_eq!(snapshot.data["state"], "queued");
    let last = changes.last().expect("changes");
    assert_eq!(last.data["state"], "completed");

    // What the queue's events stream holds for this job after the snapshot, in order.
    let mut conn = rig.redis.client().await;
    let all: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("sluice:{q}:events")
        .arg(format!("({}", snapshot.id))
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    let want: Vec<String> = all
        .ids
        .iter()
        .filter(|e| {
            let f = |k: &str| {
                e.map
                    .get(k)
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            };
            f("id").as_deref() == Some(id.as_str())
                || f("ids").is_some_and(|ids| ids.split(' ').any(|i| i == id))
        })
        .map(|e| e.id.clone())
        .collect();
    let got: Vec<String> = changes.iter().map(|e| e.id.clone()).collect();
    println!(
        "SSE over a job retried 20 times: {} connections (each resumed with Last-Event-ID), {} state changes received, {} in the events stream",
        connections,
        got.len(),
        want.len()
    );
    assert_eq!(got, want, "every change once, in order");
}

/// `/openapi.json` documents every route from the handlers (and the job's schema); a request with
/// headers over `api.max_header_bytes` gets 431; a key's own body cap gives 413 where another
/// key's does not; a key's event streams are capped at
/// `api.max_streams_per_key` (429 beyond), and a closed stream frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_headers_and_streams_are_capped_per_key() {
    let rig = Rig::start(MockConfig::default()).await;
    let keys = key_toml("a", "key-a", &["q"], "a", "")
        + &key_toml("small", "key-small", &["q"], "a", "max_body_bytes = 2000");
    let api = ApiProcess::start(
        &rig.url(),
        "max_streams_per_key = 2\nmax_header_bytes = 4096",
        &keys,
    );
    let http = reqwest::Client::new();

    let doc: Value = http
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    for path in [
        "/v1/queues/{queue}/jobs",
        "/v1/queues/{queue}/jobs/{id}",
        "/v1/queues/{queue}/jobs/{id}/cancel",
        "/v1/queues/{queue}/jobs/{id}/events",
        "/v1/queues/{queue}",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/responses",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing: {doc}");
    }
    for schema in ["JobView", "Submit", "Created", "ErrorBody", "JobState"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let r = http
        .get(format!("{}/v1/queues/q", api.base))
        .bearer_auth("key-a")
        .header("x-padding", "p".repeat(5000))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 431);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");

    // A key's own body cap, below the global one.
    let big = json!({"upstream": "mock", "body": {"text": "x".repeat(3000)}});
    let post = |key: &str| {
        http.post(format!("{}/v1/queues/q/jobs", api.base))
            .bearer_auth(key)
            .json(&big)
            .send()
    };
    let r = post("key-small").await.expect("POST");
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.expect("JSON");
    assert!(
        error_message(&body).contains("this key's limit of 2000"),
        "{body}"
    );
    assert_eq!(post("key-a").await.expect("POST").status().as_u16(), 202);

    // No worker runs: the job stays queued and its streams stay open.
    let mut job = sluice_common::NewJob::post("q", "mock", "/v1/chat/completions", json!({"x": 1}));
    job.spec.metadata.insert("tenant".into(), json!("a"));
    let id = rig.enqueue(vec![job]).await.remove(0);
    let open = || {
        http.get(format!("{}/v1/queues/q/jobs/{id}/events", api.base))
            .bearer_auth("key-a")
            .send()
    };
    let first = open().await.expect("GET");
    let second = open().await.expect("GET");
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.expect("GET");
    assert_eq!(third.status().as_u16(), 429);
    let body: Value = third.json().await.expect("JSON");
    assert!(
        error_message(&body).contains("max_streams_per_key"),
        "{body}"
    );
    drop(first);
    // The server sees the closed connection at its next write (a keep-alive comment); until
    // then the place is taken, so ask until it is free.
    let started = std::time::Instant::now();
    let mut freed = false;
    while started.elapsed() < BOUND {
        let r = open().await.expect("GET");
        if r.status().as_u16() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(freed, "a closed stream's place was never given back");
    println!(
        "a closed stream's place was free again after {:?}",
        started.elapsed()
    );
}

/// Waiting costs no Redis connection per waiter: 500 SSE streams wait on jobs of a quiet queue
/// (scheduled an hour ahead: no event for them), and meanwhile 100 requests to the
/// OpenAI-compatible endpoint on another queue, served by a worker, all get their answers
/// within the bound; then the 500 jobs are cancelled and every stream gets its `cancelled` and
/// ends. (When each waiter held one of 16 pooled blocking connections for reads of up to 5 s,
/// the requests queued behind the quiet streams: about 500 / 16 × 5 s = 156 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_waiting_on_a_quiet_queue_do_not_hold_up_requests_on_another() {
    const STREAMS: usize = 500;
    const RELAYS: usize = 100;
    let rig = Rig::start(MockConfig::default()).await;
    let api = ApiProcess::start(
        &rig.url(),
        "relay_wait_ms = 110000",
        &key_toml("a", "key-a", &["q", "idle"], "a", ""),
    );
    let _worker = rig.spawn("w");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()
        .expect("client");
    let ids: Vec<String> = futures::future::join_all((0..STREAMS).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/queues/idle/jobs", api.base);
        let mut body = chat(i as u32);
        body["delay_ms"] = json!(3_600_000);
        async move {
            let r = http
                .post(url)
                .bearer_auth("key-a")
                .json(&body)
                .send()
                .await
                .expect("POST");
            r.json::<Value>().await.expect("JSON")["id"]
                .as_str()
                .expect("id")
                .to_string()
        }
    }))
    .await;

    // Each stream: read until it ends (saying so once its first event has come); what it saw.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::unbounded_channel();
    let streams: Vec<_> = ids
        .iter()
        .map(|id| {
            let (http, open_tx) = (http.clone(), open_tx.clone());
            let url = format!("{}/v1/queues/idle/jobs/{id}/events", api.base);
            tokio::spawn(async move {
                let mut r = http
                    .get(url)
                    .bearer_auth("key-a")
                    .send()
                    .await
                    .expect("GET");
                assert_eq!(r.status().as_u16(), 200);
                let mut text = String::new();
                while let Some(chunk) = r.chunk().await.expect("chunk") {
                    if text.is_empty() {
                        let _ = open_tx.send(());
                    }
                    text.push_str(&String::from_utf8_lossy(&chunk));
                }
                text
            })
        })
        .collect();
    for _ in 0..STREAMS {
        tokio::time::timeout(BOUND, open_rx.recv())
            .await
            .expect("streams open within the bound");
    }

    let relays = futures::future::join_all((0..RELAYS).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/chat/completions", api.base);
        async move {
            let r = http
                .post(url)
                .bearer_auth("key-a")
                .header("Idempotency-Key", format!("relay-{i}"))
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": format!("r{i}")}]}))
                .send()
                .await
                .expect("POST");
            r.status().as_u16()
        }
    }));
    let answers = tokio::time::timeout(BOUND, relays)
        .await
        .expect("every request answered within the bound, beside 500 waiting streams");
    let ok = answers.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, RELAYS, "{answers:?}");

    // The quiet jobs end (cancelled): every stream gets it and ends.
    futures::future::join_all(ids.iter().map(|id| {
        http.post(format!("{}/v1/queues/idle/jobs/{id}/cancel", api.base))
            .bearer_auth("key-a")
            .send()
    }))
    .await;
    let ended = async {
        let mut cancelled = 0;
        for s in streams {
            if s.await
                .expect("stream task")
                .contains("\"state\":\"cancelled\"")
            {
                cancelled += 1;
            }
        }
        cancelled
    };
    let cancelled = tokio::time::timeout(BOUND, ended)
        .await
        .expect("every stream ended within the bound");
    println!(
        "{ok} of {RELAYS} requests answered 200 beside {STREAMS} waiting streams; {cancelled} streams saw cancelled and ended"
    );
    assert_eq!(cancelled, STREAMS);
}
