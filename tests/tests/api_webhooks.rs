//! Webhooks end to end: a job submitted over HTTP with a webhook on the key's allowlist runs on a
//! real worker; its delivery (a job of its own, made in the call that completed the job) reaches
//! a receiver that fails twice and then accepts. The three deliveries carry one `webhook-id`, and
//! each is verified by the `standardwebhooks` PyPI package (a tampered copy is refused by it). A
//! webhook to a host off the allowlist is refused at submit with 422. A queued job cancelled
//! before any worker ran still gets its webhook (its spec lived in its stream entry alone).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use sluice_tests::api_process::{ApiProcess, error_message, key_toml};
use sluice_tests::bins::workspace_root;
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::{BOUND, Rig};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A receiver that answers 500 to its first `fail` calls, then 200; every call is sent on.
async fn receiver(
    fail: usize,
) -> (
    String,
    mpsc::UnboundedReceiver<(HashMap<String, String>, String)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (tx, seen) = (tx.clone(), seen.clone());
            async move {
                let headers = headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                    .collect();
                let _ = tx.send((headers, body));
                if seen.fetch_add(1, Ordering::SeqCst) < fail {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

fn verify(deliveries: &[(HashMap<String, String>, String)]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deliveries.json");
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|(h, b)| json!({"headers": h, "body": b}))
        .collect();
    std::fs::write(
        &file,
        json!({"secret": SECRET, "deliveries": deliveries}).to_string(),
    )
    .expect("write");
    let script = workspace_root().join("tests/py/verify_webhook.py");
    sluice_tests::python::run(&script, &[file.to_str().expect("UTF-8 path")], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_twice_is_delivered_signed_and_verified_by_standardwebhooks() {
    let rig = Rig::start(MockConfig::default()).await;
    let (url, mut received) = receiver(2).await;
    let hooks = format!("webhook_hosts = [\"127.0.0.1\"]\nwebhook_secret = \"{SECRET}\"");
    let keys = key_toml("a", "key-a", &["q"], "a", &hooks);
    let api = ApiProcess::start(&rig.url(), "", &keys);
    // The workers sign and check the allowlist: they read the same [api.keys] (docs/API.md).
    let mut options = rig.options();
    options.extra = keys.clone();
    let worker = sluice_tests::worker_process::WorkerProcess::spawn("w", &options);

    let http = reqwest::Client::new();
    let submit = |webhook: &str| {
        http.post(format!("{}/v1/queues/q/jobs", api.base))
            .bearer_auth("key-a")
            .json(&json!({"upstream": "mock", "webhook": webhook,
                "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}))
            .send()
    };
    let r = submit("https://evil.example.com/hook").await.expect("POST");
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("JSON");
    let message = error_message(&body);
    assert!(
        message.starts_with("webhook: host \"evil.example.com\""),
        "{body}"
    );

    let r = submit(&url).await.expect("POST");
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let mut deliveries = Vec::new();
    while deliveries.len() < 3 {
        let Ok(Some(d)) = tokio::time::timeout(BOUND, received.recv()).await else {
            let job = rig.store().status("q", &id).await;
            panic!(
                "delivery {} not received within the bound; job: {job:?}\nworker log:\n{}",
                deliveries.len() + 1,
                worker.log()
            );
        };
        deliveries.push(d);
    }
    let ids: Vec<&str> = deliveries
        .iter()
        .map(|(h, _)| h["webhook-id"].as_str())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one webhook-id for every retry: {ids:?}"
    );

    let mut tampered = deliveries[2].clone();
    tampered.1 = tampered.1.replace("completed", "dead");
    let mut all = deliveries.clone();
    all.push(tampered);
    let checked = verify(&all);
    println!("3 deliveries (2 refused with 500, 1 accepted) + 1 tampered: {checked}");
    for i in 0..3 {
        let payload = &checked["verified"][i];
        assert_eq!(payload["type"], "job.completed", "{checked}");
        assert_eq!(payload["data"]["id"], id.as_str(), "{checked}");
        assert_eq!(payload["data"]["state"], "completed", "{checked}");
        assert!(
            payload["data"]["result"]["body"]["choices"].is_array(),
            "{checked}"
        );
    }
    assert!(
        checked["verified"][3].is_null(),
        "a tampered body must fail: {checked}"
    );

    // The delivery is a job of the queue: completed on the third attempt.
    let delivery = rig
        .store()
        .status("q", ids[0])
        .await
        .expect("status")
        .expect("the delivery job");
    assert_eq!(delivery.state, sluice_common::JobState::Completed);
    assert_eq!(delivery.attempts, 3);
}

/// A queued job's spec lives in its stream entry only (docs/PROTOCOL.md): cancelling it removes
/// the entry, and the webhook (in the spec) must still be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_cancelled_before_any_worker_still_gets_its_webhook() {
    let rig = Rig::start(MockConfig::default()).await;
    let (url, mut received) = receiver(0).await;
    let hooks = format!("webhook_hosts = [\"127.0.0.1\"]\nwebhook_secret = \"{SECRET}\"");
    let keys = key_toml("a", "key-a", &["q"], "a", &hooks);
    let api = ApiProcess::start(&rig.url(), "", &keys);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/queues/q/jobs", api.base))
        .bearer_auth("key-a")
        .json(&json!({"upstream": "mock", "webhook": url,
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // No worker yet: the job is queued, its spec in its entry alone.
    let r = http
        .post(format!("{}/v1/queues/q/jobs/{id}/cancel", api.base))
        .bearer_auth("key-a")
        .send()
        .await
        .expect("POST cancel");
    assert_eq!(r.status(), 200);

    let mut options = rig.options();
    options.extra = keys.clone();
    let worker = sluice_tests::worker_process::WorkerProcess::spawn("w", &options);
    let Ok(Some((_, body))) = tokio::time::timeout(BOUND, received.recv()).await else {
        panic!(
            "no delivery within the bound\nworker log:\n{}",
            worker.log()
        );
    };
    let payload: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(payload["type"], "job.cancelled", "{payload}");
    assert_eq!(payload["data"]["id"], id.as_str(), "{payload}");
    assert_eq!(
        rig.mock.stats(false).calls,
        0,
        "a cancelled job makes no call"
    );
}
