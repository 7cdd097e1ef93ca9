//! The mock model API's server: routes, answers, failure injection and the call record.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::listen::{self, Wire};
use super::quota::Bucket;

/// How the mock behaves. Rates are probabilities per call (0.0–1.0), drawn independently in the
/// order listed; a call that draws none succeeds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Fixed latency of every answer.
    pub latency_ms: u64,
    /// Extra latency, uniform in [0, spread].
    pub spread_ms: u64,
    pub fail_500: f64,
    pub fail_502: f64,
    pub fail_503: f64,
    /// 429 `rate_limit_exceeded` with reset headers (`rate_limit_reset_ms` ahead).
    pub rate_limit_429: f64,
    /// 429 `insufficient_quota`.
    pub quota_429: f64,
    pub auth_401: f64,
    pub bad_400: f64,
    /// Hang for `hang_ms` before answering (past a client's timeout).
    pub hang: f64,
    /// Cut the connection in the middle of the answer.
    pub reset: f64,
    pub hang_ms: u64,
    pub rate_limit_reset_ms: u64,
    /// Enforced requests per minute (token bucket, `burst_secs` of burst).
    pub rpm: Option<u64>,
    /// Enforced tokens per minute (prompt characters / 4 + max_tokens per request).
    pub tpm: Option<u64>,
    pub burst_secs: f64,
    /// Answer every call with this status (an outage), before anything else.
    pub force_status: Option<u16>,
    /// Also send OpenAI's `x-ratelimit-reset-requests|tokens` on every answer: the time until
    /// the bucket is *full* (~60 s at remaining 0 with a minute's burst), as OpenAI does.
    pub reset_headers: bool,
    /// Context windows by model, in the mock's tokens (prompt characters ÷ 4 + `max_tokens`):
    /// a longer request is answered 400 `context_length_exceeded` (Anthropic's "prompt is too
    /// long" on `/v1/messages`), as providers do. Models not listed take anything.
    pub context_windows: BTreeMap<String, u64>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency_ms: 0,
            spread_ms: 0,
            fail_500: 0.0,
            fail_502: 0.0,
            fail_503: 0.0,
            rate_limit_429: 0.0,
            quota_429: 0.0,
            auth_401: 0.0,
            bad_400: 0.0,
            hang: 0.0,
            reset: 0.0,
            hang_ms: 30_000,
            rate_limit_reset_ms: 1000,
            rpm: None,
            tpm: None,
            burst_secs: 1.0,
            force_status: None,
            reset_headers: false,
            context_windows: BTreeMap::new(),
        }
    }
}

/// One call as the mock saw it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Call {
    /// Arrival, Unix ms.
    pub t_ms: u64,
    /// Status answered; 0 for a hang, 1 for a reset connection.
    pub status: u16,
    /// Tokens the answer used (`usage.total_tokens`), 0 for a failure.
    #[serde(default)]
    pub tokens: u64,
}

/// What `GET /stats` answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub calls: u64,
    pub by_status: BTreeMap<String, u64>,
    /// Calls for a job that arrived before the reset its previous 429 announced.
    pub early_calls: u64,
    /// Rate-limit 429s answered (injected or enforced).
    pub rate_limited: u64,
    /// `GET /v1/models` calls (a worker's cheap circuit probes), not counted in `calls`.
    #[serde(default)]
    pub models_calls: u64,
    /// Calls being answered right now (arrived, answer not yet sent): the concurrency the
    /// callers achieve.
    #[serde(default)]
    pub in_flight: u64,
    /// Connections accepted since the mock started.
    #[serde(default)]
    pub connections: u64,
    /// Requests (any route) that came over HTTP/2 since the mock started.
    #[serde(default)]
    pub http2_requests: u64,
    /// Per job id (the idempotency header): its calls in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<HashMap<String, Vec<Call>>>,
}

impl Stats {
    /// Asserts that at most 0.5% of the calls were answered 429 (the bound the issues set for a
    /// limiter that keeps to the quota).
    pub fn assert_few_429s(&self) {
        assert!(
            self.rate_limited * 200 <= self.calls,
            "{} of {} calls were 429s",
            self.rate_limited,
            self.calls
        );
    }

    /// Arrival times (Unix ms, sorted) of every recorded call at or after `from_ms`
    /// (needs the per-job record: `stats(true)`).
    pub fn call_times(&self, from_ms: u64) -> Vec<u64> {
        let mut times: Vec<u64> = self
            .jobs
            .iter()
            .flat_map(|jobs| jobs.values().flatten())
            .filter(|c| c.t_ms >= from_ms)
            .map(|c| c.t_ms)
            .collect();
        times.sort_unstable();
        times
    }

    /// The most calls in any sliding 1-second window of sorted arrival times.
    pub fn busiest_second(times: &[u64]) -> usize {
        let (mut busiest, mut lo) = (0, 0);
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= 1000 {
                lo += 1;
            }
            busiest = busiest.max(hi - lo + 1);
        }
        busiest
    }
}

#[derive(Default)]
struct JobRecord {
    calls: Vec<Call>,
    /// A call before this (Unix ms) is early.
    reset_until_ms: u64,
}

#[derive(Default)]
struct Record {
    calls: u64,
    by_status: BTreeMap<u16, u64>,
    early: u64,
    rate_limited: u64,
    models_calls: u64,
    jobs: HashMap<String, JobRecord>,
}

struct Buckets {
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
}

struct State {
    config: Mutex<MockConfig>,
    buckets: Mutex<Buckets>,
    record: Mutex<Record>,
    /// Calls being answered now (see [`Stats::in_flight`]).
    in_flight: AtomicU64,
    /// Connections and HTTP/2 requests (listen.rs).
    wire: Arc<Wire>,
    started: Instant,
}

/// Counts one call in flight for as long as it lives (a dropped, cut-off answer included).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl State {
    fn new(config: MockConfig) -> Self {
        let buckets = Buckets {
            rpm: config.rpm.map(|r| Bucket::new(r, config.burst_secs)),
            tpm: config.tpm.map(|t| Bucket::new(t, config.burst_secs)),
        };
        State {
            config: Mutex::new(config),
            buckets: Mutex::new(buckets),
            record: Mutex::new(Record::default()),
            in_flight: AtomicU64::new(0),
            wire: Arc::default(),
            started: Instant::now(),
        }
    }
}

/// A running mock on a loopback port; stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts on a free loopback port.
    pub async fn start(config: MockConfig) -> MockServer {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .expect("bind the mock model API on loopback")
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockServer> {
        Self::start_with_streams(addr, config, listen::DEFAULT_MAX_STREAMS).await
    }

    /// Starts on `addr`, allowing at most `max_streams` calls at once on one HTTP/2 connection
    /// (a provider's front end allows 100–256).
    pub async fn start_with_streams(
        addr: SocketAddr,
        config: MockConfig,
        max_streams: u32,
    ) -> std::io::Result<MockServer> {
        let state = Arc::new(State::new(config));
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let wire = state.wire.clone();
        let task = tokio::spawn(listen::serve(listener, app, wire, max_streams));
        Ok(MockServer { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self, with_jobs: bool) -> Stats {
        stats(&self.state, with_jobs)
    }

    pub fn set_config(&self, config: MockConfig) {
        set_config(&self.state, config);
    }

    /// Waits (checking every 10 ms) until at least `n` calls are being answered at once, for at
    /// most `timeout`; whether they were.
    pub async fn until_in_flight(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.state.in_flight.load(Ordering::Relaxed) < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Serves until the process ends (the binary's main loop).
    pub async fn serve_forever(self) {
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn set_config(state: &State, config: MockConfig) {
    let mut b = lock(&state.buckets);
    b.rpm = config.rpm.map(|r| Bucket::new(r, config.burst_secs));
    b.tpm = config.tpm.map(|t| Bucket::new(t, config.burst_secs));
    *lock(&state.config) = config;
}

fn stats(state: &State, with_jobs: bool) -> Stats {
    let r = lock(&state.record);
    Stats {
        calls: r.calls,
        by_status: r
            .by_status
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        early_calls: r.early,
        rate_limited: r.rate_limited,
        models_calls: r.models_calls,
        in_flight: state.in_flight.load(Ordering::Relaxed),
        connections: state.wire.connections.load(Ordering::Relaxed),
        http2_requests: state.wire.http2_requests.load(Ordering::Relaxed),
        jobs: with_jobs.then(|| {
            r.jobs
                .iter()
                .map(|(k, v)| (k.clone(), v.calls.clone()))
                .collect()
        }),
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route("/stats", get(get_stats))
        .route("/control", post(control))
        .route("/reset", post(reset))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            state.wire.clone(),
            listen::count_version,
        ))
        .with_state(state)
}

#[derive(Deserialize)]
struct StatsQuery {
    #[serde(default)]
    jobs: Option<u8>,
}

async fn get_stats(AxState(state): AxState<Arc<State>>, q: Query<StatsQuery>) -> Json<Stats> {
    Json(stats(&state, q.jobs.unwrap_or(0) == 1))
}

async fn control(
    AxState(state): AxState<Arc<State>>,
    Json(config): Json<MockConfig>,
) -> &'static str {
    set_config(&state, config);
    "ok"
}

async fn reset(AxState(state): AxState<Arc<State>>) -> &'static str {
    *lock(&state.record) = Record::default();
    "ok"
}

/// What a call will be answered with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    Status(u16),
    RateLimited(Duration),
    Quota,
    Hang,
    Reset,
}

fn scripted(body: &Value, n: usize) -> Option<Answer> {
    let code = body
        .get("mock")?
        .get("script")?
        .as_array()?
        .get(n)?
        .as_u64()? as u16;
    Some(match code {
        0 => Answer::Hang,
        1 => Answer::Reset,
        200 => Answer::Ok,
        429 => Answer::RateLimited(Duration::ZERO),
        s => Answer::Status(s),
    })
}

fn token_cost(body: &Value) -> f64 {
    let chars: usize = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .map(str::len)
                .sum()
        })
        .or_else(|| body.get("input").and_then(Value::as_str).map(str::len))
        .unwrap_or(0)
        // Anthropic's system prompt sits beside the messages, and counts as input too.
        + body.get("system").and_then(Value::as_str).map_or(0, str::len);
    let max = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    (chars / 4).max(1) as f64 + max as f64
}

fn choose(state: &State, body: &Value, n: usize) -> Answer {
    if let Some(a) = scripted(body, n) {
        return a;
    }
    let config = lock(&state.config).clone();
    if let Some(s) = config.force_status {
        return match s {
            200 => Answer::Ok,
            429 => Answer::RateLimited(Duration::from_millis(config.rate_limit_reset_ms)),
            s => Answer::Status(s),
        };
    }
    {
        let now = Instant::now();
        let mut b = lock(&state.buckets);
        if let Some(rpm) = b.rpm.as_mut()
            && let Err(wait) = rpm.take(1.0, now)
        {
            return Answer::RateLimited(wait);
        }
        let cost = token_cost(body);
        if let Some(tpm) = b.tpm.as_mut()
            && let Err(wait) = tpm.take(cost, now)
        {
            return Answer::RateLimited(wait);
        }
    }
    let mut rng = rand::rng();
    let draws = [
        (config.fail_500, Answer::Status(500)),
        (config.fail_502, Answer::Status(502)),
        (config.fail_503, Answer::Status(503)),
        (
            config.rate_limit_429,
            Answer::RateLimited(Duration::from_millis(config.rate_limit_reset_ms)),
        ),
        (config.quota_429, Answer::Quota),
        (config.auth_401, Answer::Status(401)),
        (config.bad_400, Answer::Status(400)),
        (config.hang, Answer::Hang),
        (config.reset, Answer::Reset),
    ];
    for (p, answer) in draws {
        if p > 0.0 && rng.random::<f64>() < p {
            return answer;
        }
    }
    Answer::Ok
}

/// The model list: what a worker's cheap probe asks after a 401/403. Answers the forced status
/// (an auth outage) like every other route, else the list; spends no quota.
async fn models(AxState(state): AxState<Arc<State>>, headers: HeaderMap) -> Response {
    lock(&state.record).models_calls += 1;
    let (forced, latency) = {
        let c = lock(&state.config);
        (c.force_status, c.latency_ms)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match forced {
        Some(s) if s != 200 => {
            let credential = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim_start_matches("Bearer ").to_string())
                .unwrap_or_default();
            (
                StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Json(error_body(s, &credential)),
            )
                .into_response()
        }
        _ => Json(json!({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "owned_by": "mock"}
        ]}))
        .into_response(),
    }
}

async fn chat(AxState(state): AxState<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(state, headers, body, Kind::Chat).await
}

async fn embeddings(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(state, headers, body, Kind::Embeddings).await
}

/// Anthropic's Messages API: the same answers in Anthropic's shapes, and its request rules
/// (`max_tokens` required; no `system` role among the messages; no OpenAI-only fields).
async fn messages(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(state, headers, body, Kind::Messages).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Embeddings,
    Messages,
}

/// What Anthropic would refuse in a Messages request (an OpenAI body sent as is, say).
fn messages_request_problem(body: &Value) -> Option<String> {
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Some("max_tokens: Field required".into());
    }
    for field in ["stop", "n", "max_completion_tokens", "response_format"] {
        if body.get(field).is_some() {
            return Some(format!("{field}: Extra inputs are not permitted"));
        }
    }
    let messages = body.get("messages").and_then(Value::as_array)?;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Some(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
    }
    None
}

/// A provider's error body. A 401 echoes the credential it was given, as careless gateways do
/// (OpenAI masks most of it), so tests can prove the worker never stores or logs it.
fn error_body(status: u16, credential: &str) -> Value {
    match status {
        400 => {
            json!({"error": {"message": "Invalid value for 'temperature': expected a number between 0 and 2.", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}})
        }
        401 => {
            json!({"error": {"message": format!("Incorrect API key provided: {credential}."), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
        }
        404 => {
            json!({"error": {"message": "The model does not exist", "type": "invalid_request_error", "param": null, "code": "model_not_found"}})
        }
        _ => {
            json!({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}})
        }
    }
}

async fn answer(state: Arc<State>, headers: HeaderMap, body: Bytes, kind: Kind) -> Response {
    let arrival = now_ms();
    let _in_flight = InFlight::enter(&state.in_flight);
    let credential = headers
        .get("authorization")
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_string())
        .unwrap_or_default();
    let job = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": "We could not parse the JSON body of your request.", "type": "invalid_request_error", "code": null}})),
            )
                .into_response();
        }
    };
    let n = {
        let mut r = lock(&state.record);
        let rec = r.jobs.entry(job.clone()).or_default();
        let early = !job.is_empty() && arrival < rec.reset_until_ms;
        let n = rec.calls.len();
        if early {
            r.early += 1;
        }
        n
    };
    // A request the provider would refuse as it stands: checked before anything else.
    let refusal = refusal(&state, &parsed, kind);
    let mut chosen = if refusal.is_some() {
        Answer::Status(400)
    } else {
        choose(&state, &parsed, n)
    };
    let (latency, spread, hang_ms, reset_ms) = {
        let c = lock(&state.config);
        (c.latency_ms, c.spread_ms, c.hang_ms, c.rate_limit_reset_ms)
    };
    if chosen == Answer::RateLimited(Duration::ZERO) {
        chosen = Answer::RateLimited(Duration::from_millis(reset_ms));
    }
    let extra = if spread > 0 {
        rand::rng().random_range(0..=spread)
    } else {
        0
    };
    let code = match chosen {
        Answer::Ok => 200,
        Answer::Status(s) => s,
        Answer::RateLimited(_) | Answer::Quota => 429,
        Answer::Hang => 0,
        Answer::Reset => 1,
    };
    let used_tokens = usage_of(&parsed).2;
    let record = |state: &State, job: String| {
        let answered = now_ms();
        let mut r = lock(&state.record);
        r.calls += 1;
        *r.by_status.entry(code).or_default() += 1;
        if let Answer::RateLimited(_) = chosen {
            r.rate_limited += 1;
        }
        let rec = r.jobs.entry(job).or_default();
        rec.calls.push(Call {
            t_ms: arrival,
            status: code,
            tokens: if code == 200 { used_tokens } else { 0 },
        });
        if let Answer::RateLimited(wait) = chosen {
            rec.reset_until_ms = answered + wait.as_millis() as u64;
        }
    };
    // A hang is recorded as it starts: the client gives up and the answer is never sent.
    let delay = match chosen {
        Answer::Hang => {
            record(&state, job.clone());
            hang_ms
        }
        _ => latency + extra,
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if chosen != Answer::Hang {
        record(&state, job);
    }
    if chosen == Answer::Ok {
        refund_unused(&state, &parsed);
    }
    let mut response = match chosen {
        Answer::Ok => ok_body(&state, &parsed, kind).into_response(),
        Answer::Status(s) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(refusal.unwrap_or_else(|| error_body(s, &credential))),
        )
            .into_response(),
        Answer::RateLimited(wait) => rate_limited(wait),
        Answer::Quota => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})),
        )
            .into_response(),
        Answer::Hang => ok_body(&state, &parsed, kind).into_response(),
        Answer::Reset => reset_connection(),
    };
    let h = response.headers_mut();
    let id = format!("req_{:x}", rand::rng().random::<u64>());
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    remaining_headers(&state, h);
    response
}

/// The 400 body for a request this provider refuses as it stands: a Messages request outside
/// Anthropic's rules, or a request longer than its model's context window.
fn refusal(state: &State, body: &Value, kind: Kind) -> Option<Value> {
    let anthropic = |message: String| json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
    if kind == Kind::Messages
        && let Some(problem) = messages_request_problem(body)
    {
        return Some(anthropic(problem));
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let window = *lock(&state.config).context_windows.get(model)?;
    let tokens = token_cost(body) as u64;
    if tokens <= window {
        return None;
    }
    Some(if kind == Kind::Messages {
        anthropic(format!(
            "prompt is too long: {tokens} tokens > {window} maximum"
        ))
    } else {
        json!({"error": {"message": format!("This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens."), "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
    })
}

/// Like Anthropic's output-token limit, the bucket is charged `max_tokens` at admission and
/// refunded what the answer did not use (the mock answers at most 16 tokens).
fn refund_unused(state: &State, body: &Value) {
    let max = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let unused = max.saturating_sub(max.min(16));
    if unused > 0
        && let Some(tpm) = lock(&state.buckets).tpm.as_mut()
    {
        tpm.refund(unused as f64);
    }
}

fn remaining_headers(state: &State, h: &mut HeaderMap) {
    let (rpm, tpm, resets) = {
        let c = lock(&state.config);
        (c.rpm, c.tpm, c.reset_headers)
    };
    let reset = |h: &mut HeaderMap, name: &'static str, bucket: &Bucket| {
        let secs = bucket.until_full().as_secs_f64();
        if let Ok(v) = HeaderValue::from_str(&format!("{secs:.3}s")) {
            h.insert(name, v);
        }
    };
    let b = lock(&state.buckets);
    if let (Some(limit), Some(bucket)) = (rpm, b.rpm.as_ref()) {
        h.insert("x-ratelimit-limit-requests", HeaderValue::from(limit));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from(bucket.remaining()),
        );
        if resets {
            reset(h, "x-ratelimit-reset-requests", bucket);
        }
    }
    if let (Some(limit), Some(bucket)) = (tpm, b.tpm.as_ref()) {
        h.insert("x-ratelimit-limit-tokens", HeaderValue::from(limit));
        h.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from(bucket.remaining()),
        );
        if resets {
            reset(h, "x-ratelimit-reset-tokens", bucket);
        }
    }
}

fn rate_limited(wait: Duration) -> Response {
    let ms = wait.as_millis().max(1) as u64;
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"error": {"message": "Rate limit reached for requests. Please try again later.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert("retry-after-ms", HeaderValue::from(ms));
    h.insert("retry-after", HeaderValue::from(ms.div_ceil(1000)));
    h.insert("x-ratelimit-remaining-requests", HeaderValue::from(0u64));
    if let Ok(v) = HeaderValue::from_str(&format!("{}s", ms as f64 / 1000.0)) {
        h.insert("x-ratelimit-reset-requests", v);
    }
    r
}

/// An answer whose body breaks off: the client sees the connection cut mid-response.
fn reset_connection() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"id\": \"chatcmpl-")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "mock: connection reset",
        )),
    ];
    let mut r = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    r.headers_mut()
        .insert("content-length", HeaderValue::from(4096u64));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// (prompt, completion, total) tokens of the mock's answer to `body`.
fn usage_of(body: &Value) -> (u64, u64, u64) {
    let max = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64);
    let prompt = (token_cost(body) as u64).saturating_sub(max.unwrap_or(0));
    let completion = max.unwrap_or(16).min(16);
    (prompt, completion, prompt + completion)
}

/// The answer's text: a short sentence, or `mock.answer_bytes` of it for tests of big answers.
fn answer_text(body: &Value) -> String {
    let text = "This is a mock answer.";
    match body
        .get("mock")
        .and_then(|m| m.get("answer_bytes"))
        .and_then(Value::as_u64)
    {
        Some(n) => text.chars().cycle().take(n as usize).collect(),
        None => text.to_string(),
    }
}

fn ok_body(state: &State, body: &Value, kind: Kind) -> Json<Value> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-4o-mini")
        .to_string();
    let (prompt, completion, _) = usage_of(body);
    let created = state.started.elapsed().as_secs() + now_ms() / 1000;
    match kind {
        Kind::Messages => Json(json!({
            "id": format!("msg_{:x}", rand::rng().random::<u64>()),
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": answer_text(body)}],
            "model": model,
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": prompt, "output_tokens": completion}
        })),
        Kind::Chat => Json(json!({
            "id": format!("chatcmpl-{:x}", rand::rng().random::<u64>()),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer_text(body)},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        })),
        Kind::Embeddings => Json(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093, 0.0159, -0.0042, 0.0107, 0.0011, -0.0201, 0.0088]}],
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}
        })),
    }
}
