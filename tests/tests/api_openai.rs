//! The official `openai` Python SDK (tests/py/openai_sdk.py, in the tests' venv) with `base_url`
//! set to `sluice-api`: chat completions run as jobs through a real worker fleet against the mock,
//! which enforces a low quota (2 requests of burst, 2 a second) that 20 concurrent calls overrun.
//! The SDK gets typed answers and never a 429 (it runs with `max_retries=0`, so one would
//! surface): the workers pace the calls to the limits the mock announces, and ride out any 429
//! it answers. Each job is called to success exactly once.
//! A call given up by its client (a timeout before any worker ran) is not cancelled: the same
//! `Idempotency-Key` later returns its result, made by one upstream call.

use std::collections::HashSet;

use sluice_tests::api_process::{ApiProcess, error_message, get_json, key_toml};
use sluice_tests::bins::workspace_root;
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::Rig;

const CALLS: usize = 20;

fn sdk(base: &str, mode: &str) -> serde_json::Value {
    let script = workspace_root().join("tests/py/openai_sdk.py");
    let n = CALLS.to_string();
    sluice_tests::python::run(
        &script,
        &[mode, "--base", base, "--key", "key-a", "--n", &n],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openai_sdk_gets_typed_answers_and_no_429_under_a_saturated_quota() {
    // 120 requests a minute with one second of burst: 20 concurrent calls overrun it.
    let rig = Rig::start(MockConfig {
        rpm: Some(120),
        burst_secs: 1.0,
        ..MockConfig::default()
    })
    .await;
    let api = ApiProcess::start(&rig.url(), "", &key_toml("a", "key-a", &["q"], "a", ""));

    // No worker yet: the client gives up after 1 s; its job stays queued.
    let gone = tokio::task::spawn_blocking({
        let base = api.base.clone();
        move || sdk(&base, "gone")
    })
    .await
    .expect("join");
    assert_eq!(gone["timed_out"], true, "{gone}");
    let counts = rig.counts().await;
    assert_eq!(
        sluice_tests::rig::count(&counts, "queued"),
        1,
        "the given-up call's job is still queued: {counts:?}"
    );

    let mut options = rig.options();
    options.max_attempts = 5;
    let _workers = rig.spawn_n(2, &options);
    let out = tokio::task::spawn_blocking({
        let base = api.base.clone();
        move || sdk(&base, "calls")
    })
    .await
    .expect("join");

    let answers = out["answers"].as_array().expect("answers");
    assert_eq!(answers.len(), CALLS);
    let ids: HashSet<&str> = answers.iter().filter_map(|a| a["job"].as_str()).collect();
    assert_eq!(ids.len(), CALLS, "one job per call, each named: {out}");
    assert!(answers.iter().all(|a| a["status"] == 200), "{out}");
    assert!(
        answers
            .iter()
            .all(|a| a["tokens"].as_u64().unwrap_or(0) > 0),
        "{out}"
    );
    assert_eq!(out["gone_again"]["status"], 200, "{out}");
    assert_eq!(out["async"]["status"], 202, "{out}");
    let async_id = out["async"]["job"].as_str().expect("Sluice-Job-Id");
    assert_eq!(out["async"]["body"]["id"], async_id);
    assert_eq!(
        out["async"]["location"],
        format!("/v1/queues/q/jobs/{async_id}").as_str()
    );
    // Its Sluice-Priority put it in the high lane (the job's hash names a lane other than normal).
    let mut r = rig.redis.client().await;
    let lane: Option<String> = redis::cmd("HGET")
        .arg(format!("sluice:{{q}}:job:{async_id}"))
        .arg("lane")
        .query_async(&mut r)
        .await
        .expect("HGET");
    assert_eq!(lane.as_deref(), Some("high"), "the async call's lane");

    let stats = rig.mock.stats(true);
    println!(
        "{CALLS} SDK calls + 1 given up + 1 async: mock answered {} calls, {} of them 429 (rate limited)",
        stats.calls, stats.rate_limited
    );
    let gone_job = out["gone_again"]["job"].as_str().expect("Sluice-Job-Id");
    let successes = |id: &str| {
        stats
            .jobs
            .as_ref()
            .and_then(|j| j.get(id))
            .map_or(0, |calls| calls.iter().filter(|c| c.status == 200).count())
    };
    assert_eq!(
        successes(gone_job),
        1,
        "the given-up job was called once to success"
    );
}

/// What the endpoint answers besides a result: 504 with the job's id when the wait runs out
/// (`api.relay_wait_ms`), 422 for a streamed request or a body that is not a JSON object, and a
/// dead job's upstream status with an OpenAI-shaped error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_names_the_job_and_a_dead_job_answers_the_upstream_status() {
    let rig = Rig::start(MockConfig::default()).await;
    let api = ApiProcess::start(
        &rig.url(),
        "relay_wait_ms = 300",
        &key_toml("a", "key-a", &["q"], "a", ""),
    );
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", api.base);
    let post = |body: serde_json::Value, key: &str| {
        http.post(&url)
            .bearer_auth("key-a")
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let chat = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    // No worker: the wait runs out.
    let r = post(chat.clone(), "k1").await.expect("POST");
    assert_eq!(r.status(), 504);
    let id = r.headers()["sluice-job-id"]
        .to_str()
        .expect("id")
        .to_string();
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "still_running", "{body}");
    assert!(error_message(&body).contains(&id), "{body}");

    // A priority that is not a lane's name is refused, naming the header.
    let r = http
        .post(&url)
        .bearer_auth("key-a")
        .header("Sluice-Priority", "urgent")
        .json(&chat)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert!(
        error_message(&body).starts_with("Sluice-Priority: \"urgent\" is not a priority"),
        "{body}"
    );

    let mut streamed = chat.clone();
    streamed["stream"] = true.into();
    let r = post(streamed, "k2").await.expect("POST");
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert!(error_message(&body).starts_with("stream:"), "{body}");
    let r = http
        .post(&url)
        .bearer_auth("key-a")
        .body("[1, 2")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 422);

    // The upstream refuses the request (400): the job is dead, the answer is the 400.
    rig.mock.set_config(MockConfig {
        bad_400: 1.0,
        ..MockConfig::default()
    });
    let _worker = rig.spawn("w");
    let r = http
        .post(&url)
        .bearer_auth("key-a")
        .header("Idempotency-Key", "k1")
        .json(&chat)
        .send()
        .await
        .expect("POST");
    assert_eq!(
        r.headers()["sluice-job-id"].to_str().ok(),
        Some(id.as_str())
    );
    let status = r.status();
    let body: serde_json::Value = r.json().await.expect("JSON");
    // relay_wait_ms is 300: ask again until the job has ended (the worker may take longer).
    let (status, body) = if status == 504 {
        let mut last = (status, body);
        for _ in 0..100 {
            let r = post(chat.clone(), "k1").await.expect("POST");
            last = (r.status(), r.json().await.expect("JSON"));
            if last.0 != 504 {
                break;
            }
        }
        last
    } else {
        (status, body)
    };
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// Nothing of the config reaches an answer: with an upstream that echoes the credential it was
/// sent (401s, as careless gateways do), every answer a key gets (the relay's 504, the job with
/// its last error and `needs_attention`, its events, the queue's stats, another key's 404s)
/// carries neither the upstream's secret nor its URL, nor another key's name, tenant or hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_carries_an_upstream_credential_or_another_keys_config() {
    const SECRET: &str = "sk-upstream-secret-4711";
    let rig = Rig::start(MockConfig {
        auth_401: 1.0,
        ..MockConfig::default()
    })
    .await;
    let keys = key_toml("a", "key-a", &["q"], "tenant-a", "")
        + &key_toml("b", "key-b", &["q"], "tenant-b", "");
    let api = ApiProcess::start(&rig.url(), "relay_wait_ms = 1500", &keys);
    let mut options = rig.options();
    options.extra = "auth_env = \"MOCK_KEY\"\n".into();
    options.env = vec![("MOCK_KEY".into(), SECRET.into())];
    let worker = sluice_tests::worker_process::WorkerProcess::spawn("w", &options);

    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    let r = http
        .post(format!("{}/v1/chat/completions", api.base))
        .bearer_auth("key-a")
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("POST");
    let location = r.headers()["location"]
        .to_str()
        .expect("Location")
        .to_string();
    answers.push(r.text().await.expect("text"));
    // The job is held behind the open circuit: needs_attention says why, in the view.
    let view: serde_json::Value = loop {
        let v = get_json(&http, &format!("{}{location}", api.base), "key-a").await;
        if v["last_error"].is_object() {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(view["needs_attention"]["reason"], "upstream_auth", "{view}");
    answers.push(view.to_string());
    let mut events = http
        .get(format!("{}{location}/events", api.base))
        .bearer_auth("key-a")
        .send()
        .await
        .expect("GET");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), events.chunk())
        .await
        .expect("an event")
        .expect("chunk")
        .expect("bytes");
    answers.push(String::from_utf8_lossy(&first).into_owned());
    for (path, key) in [
        ("/v1/queues/q".to_string(), "key-a"),
        (location.clone(), "key-b"),
        (format!("{location}/events"), "key-b"),
        ("/v1/queues/other".to_string(), "key-a"),
    ] {
        let r = http
            .get(format!("{}{path}", api.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET");
        answers.push(r.text().await.expect("text"));
    }
    let mock_addr = rig.mock.url().trim_start_matches("http://").to_string();
    let forbidden = [
        SECRET.to_string(),
        mock_addr,
        "key-b".to_string(),
        "tenant-b".to_string(),
        sluice_producer::api::auth::sha256_hex("key-a"),
        sluice_producer::api::auth::sha256_hex("key-b"),
    ];
    for a in &answers {
        for f in &forbidden {
            assert!(!a.contains(f.as_str()), "an answer carries {f:?}: {a}");
        }
    }
    assert!(
        rig.mock
            .stats(false)
            .by_status
            .get("401")
            .copied()
            .unwrap_or(0)
            > 0,
        "the mock never echoed the credential: {}",
        worker.log()
    );
}
