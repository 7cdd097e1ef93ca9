//! `sluice-api` as a real process over real HTTP, on a real Redis, with real workers and the mock:
//! one job for 1,000 concurrent submits with one `Idempotency-Key` (and one upstream call), 409 for
//! the same key with another request, 422 naming the field, 413 over the body cap, 401 without a
//! configured key, and a key that never sees another key's queue or tenant.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use sluice_producer::api::auth::sha256_hex;
use sluice_tests::bins::cargo_bin;
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::{BOUND, Rig};

/// A running `sluice-api` (killed when dropped) and its base URL.
struct ApiProcess {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys: `key-a` (queue q, upstream mock, tenant a), `key-b` (queues q and other, tenant b).
fn start_api(rig: &Rig) -> ApiProcess {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("api.toml");
    std::fs::write(
        &config,
        format!(
            r#"[redis]
url = "{url}"

[api]
listen = "127.0.0.1:0"
max_body_bytes = 65536

[api.keys.a]
sha256 = "{a}"
queues = ["q"]
upstreams = ["mock"]
tenant = "a"

[api.keys.b]
sha256 = "{b}"
queues = ["q", "other"]
upstreams = ["mock"]
tenant = "b"
"#,
            url = rig.url(),
            a = sha256_hex("key-a"),
            b = sha256_hex("key-b"),
        ),
    )
    .expect("write config");
    let mut child = Command::new(cargo_bin("sluice-producer", "sluice-api"))
        .arg("--config")
        .arg(&config)
        .env_remove("SLUICE_REDIS_URL")
        .env_remove("SLUICE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice-api");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let addr = line
        .trim()
        .strip_prefix("sluice-api listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    ApiProcess {
        child,
        base: format!("http://{addr}"),
        _dir: dir,
    }
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
    let job: Value = http
        .get(format!("{url}/{id}"))
        .bearer_auth("key-a")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
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
        json!({"upstream": "mock", "body": {}, "priority": 9}),
    )
    .await
    .expect("POST");
    assert_eq!(r.status().as_u16(), 422);
    let e: Value = r.json().await.expect("JSON");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("priority")),
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
