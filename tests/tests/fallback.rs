//! Fallback chains (issue 21), end to end: real Redis, real worker processes, two mock
//! deployments (the primary and a secondary), the rules by class:
//! - a held primary (429, 60 s reset): the jobs complete on the secondary; after the first
//!   answers the primary gets no call until its reset, then traffic returns to it;
//! - quota on the primary: every job completes on the secondary, and the circuit-open alert's
//!   metric is raised for the primary;
//! - context too long: the configured larger model; without one, dead with `context_length`;
//! - a 400 on the primary: dead after one call, the secondary never called;
//! - an OpenAI-shaped job answered by an Anthropic-shaped deployment: an OpenAI-shaped result
//!   with the right usage (the mock's /v1/messages refuses what Anthropic would refuse);
//! - confinement: a chain outside the config is refused at enqueue, and dead-lettered by the
//!   worker when a foreign producer wrote it.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_common::{Config, JobState, NewJob};
use sluice_producer::Producer;
use sluice_tests::mock::{MockConfig, MockServer};
use sluice_tests::rig::{BOUND, Rig};
use sluice_tests::scrape::Scrape;
use sluice_tests::worker_process::WorkerProcess;
use sluice_tests::{chat_job, scripted_job};

/// `extra` for the workers: the mock's chain, and the secondary deployment.
fn chain_toml(secondary_url: &str, chain: &str) -> String {
    format!(
        "fallbacks = {chain}\nfallback_after_ms = 5000\n[upstreams.second]\nbase_url = \"{secondary_url}\"\ntimeout_ms = 10000\n"
    )
}

async fn answered_by(rig: &Rig, ids: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut by = std::collections::BTreeMap::new();
    for id in ids {
        let s = rig.status(id).await;
        assert_eq!(s.state, JobState::Completed, "{s:?}");
        *by.entry(s.answered_by.unwrap_or_default()).or_insert(0) += 1;
    }
    by
}

/// A rig whose mock (the primary, configured as `primary`) falls back to a second mock, and
/// one worker.
async fn with_secondary(primary: MockConfig) -> (Rig, MockServer, WorkerProcess) {
    let rig = Rig::start(primary).await;
    let secondary = MockServer::start(MockConfig::default()).await;
    let mut options = rig.options();
    options.extra = chain_toml(&secondary.url(), "[\"second\"]");
    let worker = WorkerProcess::spawn("w0", &options);
    (rig, secondary, worker)
}

/// `n` jobs through a primary configured as `primary`: every one completes on the secondary.
/// The worker's scrape afterwards (one worker, so it saw every move).
async fn all_on_the_secondary(primary: MockConfig, n: usize) -> Scrape {
    let (rig, _secondary, mut worker) = with_secondary(primary).await;
    let addr = worker.ready(BOUND).await.expect("worker ready");
    let ids = rig.enqueue((0..n).map(chat_job).collect()).await;
    await_terminal(&rig, n).await;
    let by = answered_by(&rig, &ids).await;
    assert_eq!(by.get("second"), Some(&n), "{by:?}");
    Scrape::fetch(addr).await
}

async fn await_terminal(rig: &Rig, n: usize) {
    let mut events = rig.events().await;
    assert!(
        events.until(BOUND, |s| s.terminal_jobs() >= n).await,
        "not every job ended: {:?}",
        rig.counts().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_primary_sends_its_jobs_to_the_secondary_until_its_reset() {
    const RESET_MS: u64 = 60_000;
    let rig = Rig::start(MockConfig {
        force_status: Some(429),
        rate_limit_reset_ms: RESET_MS,
        ..MockConfig::default()
    })
    .await;
    let secondary = MockServer::start(MockConfig::default()).await;
    let mut options = rig.options();
    options.extra = chain_toml(&secondary.url(), "[\"second\"]");
    let _workers = rig.spawn_n(2, &options);

    let ids = rig.enqueue((0..2000).map(chat_job).collect()).await;
    await_terminal(&rig, 2000).await;
    let by = answered_by(&rig, &ids).await;
    let on_secondary = by.get("second").copied().unwrap_or(0);
    println!("2,000 jobs answered by: {by:?}");
    assert!(on_secondary * 1000 >= 2000 * 999, "{by:?}");

    // The primary: what it got came before any worker had its first 429 back; nothing after.
    let primary = rig.mock.stats(true);
    let times = primary.call_times(0);
    let first = *times.first().expect("the primary was called at least once");
    let late: Vec<u64> = times
        .iter()
        .filter(|t| **t > first + 1000)
        .copied()
        .collect();
    println!(
        "primary: {} calls, all 429, the last {} ms after the first",
        times.len(),
        times.last().unwrap_or(&first) - first
    );
    assert_eq!(
        primary.by_status.get("200"),
        None,
        "{:?}",
        primary.by_status
    );
    assert!(
        late.is_empty(),
        "the primary was called while held: {late:?}"
    );

    // Its reset: traffic returns to the primary. (The wait is the provider's announced reset
    // itself: the condition under test, not a synchronisation.)
    rig.mock.set_config(MockConfig::default());
    let reset_at = first + RESET_MS + 500;
    let now = sluice_tests::rig::now_ms();
    if reset_at > now {
        tokio::time::sleep(Duration::from_millis(reset_at - now)).await;
    }
    let after: Vec<String> = rig.enqueue((5000..5020).map(chat_job).collect()).await;
    await_terminal(&rig, 2020).await;
    let back = answered_by(&rig, &after).await;
    println!("after the reset: {back:?}");
    assert_eq!(back.get("mock"), Some(&20), "{back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_on_the_primary_completes_everything_on_the_secondary_and_raises_the_alert() {
    let scrape = all_on_the_secondary(
        MockConfig {
            quota_429: 1.0,
            ..MockConfig::default()
        },
        200,
    )
    .await;
    // SluiceCircuitOpen: max by (upstream) (sluice_circuit_state) == 2.
    let state = scrape.sum("sluice_circuit_state", &[("upstream", "mock")]);
    let moved = scrape.sum(
        "sluice_fallbacks_total",
        &[("from", "mock"), ("to", "second")],
    );
    println!("primary circuit state {state}, fallbacks mock→second {moved}");
    assert_eq!(state, 2.0, "the primary's circuit is not open");
    assert_eq!(moved, 200.0, "each job moves once");
    assert!(
        scrape.sum("sluice_fallbacks_total", &[("class", "quota")]) >= 1.0,
        "no fallback counted as quota"
    );
}

/// A chat job for model `model` with a prompt of `chars` characters (the mock counts ÷ 4).
fn long_job(i: usize, model: &str, upstream: &str, chars: usize) -> NewJob {
    NewJob::post(
        "q",
        upstream,
        "/v1/chat/completions",
        json!({"model": model, "messages": [{"role": "user", "content": format!("{i} {}", "x".repeat(chars))}], "max_tokens": 16}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_too_long_goes_to_the_larger_model_or_dead_with_context_length() {
    let rig = Rig::start(MockConfig {
        context_windows: [("small".to_string(), 100)].into_iter().collect(),
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    // `mock` has a larger-context model; `plain` (the same deployment) has none.
    options.extra = format!(
        "context_fallback = {{ upstream = \"mock\", model_map = {{ \"small\" = \"large\" }} }}\n[upstreams.plain]\nbase_url = \"{}\"\n",
        rig.mock.url()
    );
    let _worker = WorkerProcess::spawn("w0", &options);
    let mut jobs: Vec<NewJob> = (0..10).map(|i| long_job(i, "small", "mock", 800)).collect();
    jobs.extend((10..20).map(|i| long_job(i, "small", "plain", 800)));
    // Short enough for the small model: stays there.
    jobs.push(long_job(20, "small", "mock", 40));
    let ids = rig.enqueue(jobs).await;
    await_terminal(&rig, 21).await;
    for id in &ids[..10] {
        let s = rig.status(id).await;
        assert_eq!(s.state, JobState::Completed, "{s:?}");
        assert_eq!(s.answered_by.as_deref(), Some("mock/large"), "{s:?}");
        let result: Value = serde_json::from_str(s.result.as_deref().unwrap_or("")).unwrap();
        assert_eq!(result["model"], json!("large"));
    }
    for id in &ids[10..20] {
        let s = rig.status(id).await;
        assert_eq!(s.state, JobState::Dead, "{s:?}");
        assert_eq!(s.dead_reason.as_deref(), Some("context_length"), "{s:?}");
        assert_eq!(s.attempts, 1, "{s:?}");
    }
    let short = rig.status(&ids[20]).await;
    assert_eq!(short.answered_by.as_deref(), Some("mock"), "{short:?}");
    // 10 refused + 10 on the large model, 10 refused on plain, 1 short: 31 calls.
    assert_eq!(rig.mock.stats(false).calls, 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_on_the_primary_is_dead_after_one_call_and_the_secondary_is_never_called() {
    let (rig, secondary, _worker) = with_secondary(MockConfig::default()).await;
    let ids = rig
        .enqueue((0..20).map(|i| scripted_job(i, &[400])).collect())
        .await;
    await_terminal(&rig, 20).await;
    for id in &ids {
        let s = rig.status(id).await;
        assert_eq!(s.state, JobState::Dead, "{s:?}");
        assert_eq!(s.dead_reason.as_deref(), Some("invalid"), "{s:?}");
        assert_eq!(s.attempts, 1, "{s:?}");
    }
    assert_eq!(rig.mock.stats(false).calls, 20);
    assert_eq!(secondary.stats(false).calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_job_answered_by_an_anthropic_deployment_gets_an_openai_result() {
    // The primary is out of quota; the chain goes to "claude", which speaks Anthropic's format.
    let rig = Rig::start(MockConfig {
        quota_429: 1.0,
        ..MockConfig::default()
    })
    .await;
    let anthropic = MockServer::start(MockConfig::default()).await;
    let mut options = rig.options();
    options.extra = format!(
        "fallbacks = [{{ upstream = \"claude\", model_map = {{ \"gpt-4o-mini\" = \"claude-sonnet-4\" }} }}]\n[upstreams.claude]\nbase_url = \"{}\"\nformat = \"anthropic\"\n",
        anthropic.url()
    );
    let _worker = WorkerProcess::spawn("w0", &options);
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is a queue?"}
        ],
        "max_tokens": 16,
        "temperature": 0.2,
        "stop": ["END"]
    });
    let ids = rig
        .enqueue(vec![NewJob::post(
            "q",
            "mock",
            "/v1/chat/completions",
            body,
        )])
        .await;
    await_terminal(&rig, 1).await;
    let s = rig.status(&ids[0]).await;
    assert_eq!(s.state, JobState::Completed, "{s:?}");
    assert_eq!(s.answered_by.as_deref(), Some("claude/claude-sonnet-4"));
    let result: Value = serde_json::from_str(s.result.as_deref().expect("a result")).unwrap();
    assert_eq!(result["object"], json!("chat.completion"), "{result}");
    assert_eq!(result["model"], json!("claude-sonnet-4"));
    assert_eq!(
        result["choices"][0]["message"],
        json!({"role": "assistant", "content": "This is a mock answer."})
    );
    assert_eq!(result["choices"][0]["finish_reason"], json!("stop"));
    // The mock's count: (prompt characters ÷ 4) input tokens, at most 16 output tokens.
    let chars = "Answer briefly.".len() + "What is a queue?".len();
    let prompt = (chars / 4) as u64;
    assert_eq!(
        result["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": 16, "total_tokens": prompt + 16})
    );
    // The stored usage (what the cache and the token limits read) is the answer's.
    let anthropic_stats = anthropic.stats(false);
    assert_eq!(anthropic_stats.calls, 1);
    assert_eq!(anthropic_stats.by_status.get("200"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_outside_the_config_is_refused_at_enqueue_and_by_the_worker() {
    let rig = Rig::start(MockConfig::default()).await;
    let secondary = MockServer::start(MockConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("producer.toml");
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"{}\"\n[upstreams.mock]\nbase_url = \"{}\"\n{}",
            rig.url(),
            rig.mock.url(),
            chain_toml(&secondary.url(), "[\"second\"]")
        ),
    )
    .expect("write config");
    let config = Config::load(Some(&path)).expect("config");
    let producer = Producer::from_config(&config).await.expect("producer");

    let outside = chat_job(1).with_fallbacks(["evil"]);
    let err = producer
        .enqueue(outside.clone())
        .await
        .expect_err("refused");
    println!("{err}");
    assert!(
        err.to_string().contains("\"evil\"") && err.to_string().contains("allowed: second"),
        "{err}"
    );
    // A producer that does not know the upstream's chain cannot vouch for it either.
    let err = rig
        .producer
        .enqueue(outside.clone())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("fallbacks"), "{err}");
    // Within the chain, or no chain at all: accepted.
    producer
        .enqueue(chat_job(2).with_fallbacks(["second"]))
        .await
        .expect("within the chain");
    producer
        .enqueue(chat_job(3).with_fallbacks(Vec::<String>::new()))
        .await
        .expect("no fallback");

    // The CLI, with the same config: `--fallbacks` is checked the same way.
    let cli = |chain: &str| {
        std::process::Command::new(sluice_tests::bins::cargo_bin("sluice-producer", "sluice"))
            .arg("--config")
            .arg(&path)
            .args([
                "enqueue",
                "--queue",
                "q",
                "--upstream",
                "mock",
                "--fallbacks",
                chain,
            ])
            .args([
                "--body",
                r#"{"model": "m", "messages": [{"role": "user", "content": "cli"}]}"#,
            ])
            .env_remove("SLUICE_REDIS_URL")
            .env_remove("SLUICE_CONFIG")
            .output()
            .expect("run sluice")
    };
    let refused = cli("evil");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("\"evil\""),
        "{stderr}"
    );
    let accepted = cli("second");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );

    // A foreign producer (straight to the library) can write it; the worker refuses it.
    let prepared = outside
        .with_id("foreign")
        .prepare(rig.producer.limits())
        .expect("valid on its own");
    rig.store()
        .enqueue_batch(&[prepared])
        .await
        .expect("enqueued around the producer");
    let mut options = rig.options();
    options.extra = chain_toml(&secondary.url(), "[\"second\"]");
    let _worker = WorkerProcess::spawn("w0", &options);
    await_terminal(&rig, 4).await;
    let s = rig.status("foreign").await;
    assert_eq!(s.state, JobState::Dead, "{s:?}");
    assert_eq!(s.dead_reason.as_deref(), Some("invalid"));
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("\"evil\"")),
        "{s:?}"
    );
    assert_eq!(secondary.stats(false).calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_retry_the_same_deployment_first_then_the_next() {
    // Every call to the primary is a 503; two tries there (the default), then the secondary.
    let (rig, secondary, _worker) = with_secondary(MockConfig {
        fail_503: 1.0,
        ..MockConfig::default()
    })
    .await;
    // Five jobs: ten failed calls, under the circuit's minimum of 20, so it stays closed.
    let ids = rig.enqueue((0..5).map(chat_job).collect()).await;
    await_terminal(&rig, 5).await;
    for id in &ids {
        let s = rig.status(id).await;
        assert_eq!(s.state, JobState::Completed, "{s:?}");
        assert_eq!(s.answered_by.as_deref(), Some("second"), "{s:?}");
        // Attempts count across the chain: two on the primary, the third on the secondary.
        assert_eq!(s.attempts, 3, "{s:?}");
    }
    let primary = rig.mock.stats(true);
    let per_job: Vec<usize> = primary
        .jobs
        .as_ref()
        .expect("per-job record")
        .values()
        .map(Vec::len)
        .collect();
    assert_eq!(per_job, vec![2; 5], "calls per job on the primary");
    assert_eq!(secondary.stats(false).calls, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_refusal_moves_on_and_opens_the_primarys_circuit() {
    let scrape = all_on_the_secondary(
        MockConfig {
            auth_401: 1.0,
            ..MockConfig::default()
        },
        50,
    )
    .await;
    let opened = scrape.sum(
        "sluice_circuit_changes_total",
        &[("upstream", "mock"), ("to", "opened")],
    );
    let auth = scrape.sum("sluice_fallbacks_total", &[("class", "auth")]);
    println!("primary circuit opened {opened} times; {auth} moves for auth");
    assert!(opened >= 1.0, "the primary's circuit never opened");
    assert!(auth >= 1.0, "no move counted as auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_takes_a_jobs_own_chain_within_the_key_and_the_config() {
    use sluice_producer::api::auth::sha256_hex;
    use sluice_tests::api_process::{ApiProcess, error_message};
    let rig = Rig::start(MockConfig::default()).await;
    let url = rig.mock.url();
    // Key `wide` may name mock, second and third; key `narrow` only mock. mock's configured
    // chain is [second]; third is configured but in no chain.
    let config = format!(
        "[api.keys.wide]\nsha256 = \"{}\"\nqueues = [\"q\"]\nupstreams = [\"mock\", \"second\", \"third\"]\n\
         [api.keys.narrow]\nsha256 = \"{}\"\nqueues = [\"q\"]\nupstreams = [\"mock\"]\n\
         [upstreams.mock]\nbase_url = \"{url}\"\nfallbacks = [\"second\"]\n\
         [upstreams.second]\nbase_url = \"{url}\"\n[upstreams.third]\nbase_url = \"{url}\"\n",
        sha256_hex("key-wide"),
        sha256_hex("key-narrow")
    );
    let api = ApiProcess::start(&rig.url(), "", &config);
    let http = reqwest::Client::new();
    let submit = |key: &'static str, chain: Value| {
        let http = http.clone();
        let url = format!("{}/v1/queues/q/jobs", api.base);
        async move {
            let r = http
                .post(&url)
                .bearer_auth(key)
                .json(&json!({"upstream": "mock", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "fallbacks": chain}))
                .send()
                .await
                .expect("POST");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("JSON"))
        }
    };
    let (ok, body) = submit("key-wide", json!(["second"])).await;
    assert_eq!(ok, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let spec: Value = serde_json::from_str(&rig.spec(&id).await).expect("spec");
    assert_eq!(spec["fallbacks"], json!(["second"]));
    let (outside, body) = submit("key-wide", json!(["third"])).await;
    println!(
        "outside the configured chain: {outside} {}",
        error_message(&body)
    );
    assert_eq!(outside, 422, "{body}");
    assert!(
        error_message(&body).contains("not in the fallbacks"),
        "{body}"
    );
    let (not_the_keys, body) = submit("key-narrow", json!(["second"])).await;
    println!(
        "an upstream not the key's: {not_the_keys} {}",
        error_message(&body)
    );
    assert_eq!(not_the_keys, 422, "{body}");
    assert!(error_message(&body).contains("second"), "{body}");
}
