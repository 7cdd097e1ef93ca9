//! Tenants sharing one upstream's token quota (docs/OPERATIONS.md, "Tenants"): a tenant that
//! arrives behind another's 10,000 jobs gets half the tokens at once (and its jobs wait about
//! twice what they wait alone), weights 3:1 give 75% / 25% of the tokens, the limiter keeps the
//! total within the quota, and a budget parks a tenant's jobs, none lost, until it is raised.
//!
//! Shares are measured where the quota is spent: the mock records every call's tokens (its
//! `usage`) and time, by job.

use std::collections::{HashMap, HashSet};

use sluice_common::store::{TenantChange, TenantStats};
use sluice_common::{JobState, NewJob};
use sluice_tests::mock::{Call, MockConfig};
use sluice_tests::rig::{BOUND, Rig};
use sluice_tests::scrape::Scrape;
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};

/// The quota the mock enforces: 1,000 tokens a second.
const TPM: u64 = 60_000;
/// The workers' limiter, as an operator sets it: 1% under the provider's quota. At exactly the
/// quota both buckets sit empty once saturated, so a call that reaches the mock a few ms later
/// than the next one (network, scheduling) likely finds no tokens: one 429 in these ~160 calls, seen
/// once in ~7 runs, is over the 0.5% bound. 1% (10 tokens a second) absorbs that jitter.
const LIMITER_TPM: u64 = TPM * 99 / 100;

/// A job of `tenant` whose call costs about `tokens` tokens (prompt characters ÷ 4, plus 16 for
/// the answer: the mock answers 16 tokens, so its `usage` is what the job was estimated at).
fn job(tenant: &str, i: usize, tokens: usize) -> NewJob {
    let prompt = format!("{tenant} {i} {}", "x".repeat(4 * tokens.saturating_sub(18)));
    NewJob::post(
        "q",
        "mock",
        "/v1/chat/completions",
        serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}),
    )
    .with_tenant(tenant)
}

/// Two workers with `concurrency` slots each; at most `prefetch` of each one's jobs sleep at the
/// limiter (0: any), the rest wait in Redis in fair order.
async fn rig_and_workers(concurrency: usize, prefetch: usize) -> (Rig, Vec<WorkerProcess>) {
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        tpm: Some(TPM),
        ..MockConfig::default()
    })
    .await;
    let mut options: WorkerOptions = rig.options();
    options.concurrency = concurrency;
    options.extra = format!("tpm = {LIMITER_TPM}\n");
    options
        .env
        .push(("SLUICE__WORKER__PREFETCH".into(), prefetch.to_string()));
    let workers = rig.spawn_ready(2, &options).await;
    (rig, workers)
}

/// Every successful call's (arrival ms, tokens, job id).
fn calls(rig: &Rig) -> Vec<(u64, u64, String)> {
    let jobs: HashMap<String, Vec<Call>> = rig.mock.stats(true).jobs.unwrap_or_default();
    let mut out: Vec<(u64, u64, String)> = jobs
        .into_iter()
        .flat_map(|(id, calls)| {
            calls
                .into_iter()
                .filter(|c| c.status == 200)
                .map(move |c| (c.t_ms, c.tokens, id.clone()))
        })
        .collect();
    out.sort();
    out
}

/// The p95 of `ids`' waits from enqueue to their first call (ms).
async fn p95_wait(rig: &Rig, ids: &[String], calls: &[(u64, u64, String)]) -> u64 {
    let mut first: HashMap<&str, u64> = HashMap::new();
    for (t, _, id) in calls {
        first.entry(id.as_str()).or_insert(*t);
    }
    let mut waits = Vec::with_capacity(ids.len());
    for id in ids {
        let created = rig.status(id).await.created_ms.expect("created");
        let called = *first.get(id.as_str()).expect("every job was called");
        waits.push(called.saturating_sub(created));
    }
    waits.sort_unstable();
    waits[(waits.len() * 95).div_ceil(100) - 1]
}

/// Tokens of `of`'s calls and of all calls from `from` to `to` (ms, inclusive).
fn tokens_in(calls: &[(u64, u64, String)], of: &HashSet<String>, from: u64, to: u64) -> (u64, u64) {
    calls
        .iter()
        .filter(|(t, _, _)| (from..=to).contains(t))
        .fold((0, 0), |(mine, all), (_, tokens, id)| {
            (
                mine + if of.contains(id) { tokens } else { &0 },
                all + tokens,
            )
        })
}

/// A's jobs cost 120 tokens and B's 40: a share by jobs would give B three times A's tokens.
const A_TOKENS: usize = 120;
const B_TOKENS: usize = 40;

/// Jobs past the fair selection that a tenant arriving now finds ahead of it, whatever it does,
/// in the fair-share test: those the workers hold (2 slots on each of 2 workers) plus the fair
/// window (jobs moved to the lane, not yet fetched: 2). With more slots than `prefetch` the
/// count is not exact (a fetch may take up to the room left while others are on their way to
/// the limiter): 50 slots with `prefetch = 2` measured 1.87-1.92x against 6 held here.
const HELD: u64 = 6;

/// Tenant B's 100 jobs, enqueued once `saturate` calls of `first` (a tenant's jobs of 120
/// tokens) have completed, waited on. -> B's ids
async fn b_after(rig: &Rig, first: &str, n_first: usize, saturate: u64) -> Vec<String> {
    let mut events = rig.events().await;
    rig.enqueue((0..n_first).map(|i| job(first, i, A_TOKENS)).collect())
        .await;
    let saturated = events
        .until(BOUND, |s| s.count("completed") >= saturate)
        .await;
    assert!(saturated, "{first}'s jobs never ran");
    let b = rig
        .enqueue((0..100).map(|i| job("B", i, B_TOKENS)).collect())
        .await;
    let done = events
        .until(BOUND, |s| b.iter().all(|id| s.job(id, "completed") == 1))
        .await;
    assert!(done, "not every job of B completed");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_behind_10k_jobs_of_another_gets_half_the_tokens_at_once() {
    // B alone: it arrives at the limiter as it does behind A — saturated (20 calls of 120
    // tokens are 2.4 s of quota; 1 s is burst) and with the jobs the workers hold and the fair
    // window already past the selection — but no other tenant has a backlog: warm-up tenant W
    // has 20 + HELD jobs, and B comes after 20 of them completed.
    let alone = {
        let (rig, _workers) = rig_and_workers(2, 2).await;
        let b = b_after(&rig, "W", 20 + HELD as usize, 20).await;
        let calls = calls(&rig);
        p95_wait(&rig, &b, &calls).await
    };

    let (rig, _workers) = rig_and_workers(2, 2).await;
    let b = b_after(&rig, "A", 10_000, 20).await;
    let calls = calls(&rig);
    let together = p95_wait(&rig, &b, &calls).await;
    let b_set: HashSet<String> = b.iter().cloned().collect();
    // Both backlogged: from B's first call to its last.
    let b_times: Vec<u64> = calls
        .iter()
        .filter(|(_, _, id)| b_set.contains(id))
        .map(|(t, _, _)| *t)
        .collect();
    let (from, to) = (b_times[0], b_times[b_times.len() - 1]);
    let (b_tokens, all) = tokens_in(&calls, &b_set, from, to);
    let share = b_tokens as f64 / all as f64;
    let secs = (to - from) as f64 / 1000.0;
    let rate = all as f64 / secs;
    let stats = rig.mock.stats(false);
    println!(
        "B's p95 wait: alone {alone} ms, behind A's 10,000 {together} ms ({:.2}x); while both were \
         backlogged ({secs:.1} s) B had {:.1}% of {all} tokens, {rate:.0} tokens/s (quota {}/s); \
         mock: {} calls, {} 429s",
        together as f64 / alone as f64,
        100.0 * share,
        TPM / 60,
        stats.calls,
        stats.rate_limited
    );
    assert!(
        (0.4..=0.6).contains(&share),
        "B's share of the tokens was {:.1}%",
        100.0 * share
    );
    assert!(
        together <= 2 * alone,
        "B's p95 wait behind A ({together} ms) is over twice its wait alone ({alone} ms)"
    );
    // The quota over the window, plus one call's tokens for where the window's edges fall.
    assert!(
        all as f64 <= 1.02 * secs * (TPM / 60) as f64 + A_TOKENS as f64,
        "{rate:.0} tokens/s over a quota of {}/s",
        TPM / 60
    );
    stats.assert_few_429s();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_3_to_1_give_75_and_25_percent_of_the_tokens() {
    let (rig, _workers) = rig_and_workers(50, 2).await;
    let weight = |w: f64| TenantChange {
        weight: Some(Some(w)),
        ..TenantChange::default()
    };
    let store = rig.store();
    store
        .set_tenant("q", "H", &weight(3.0))
        .await
        .expect("weight");
    store
        .set_tenant("q", "L", &weight(1.0))
        .await
        .expect("weight");
    // H's jobs are a third of L's size: by jobs, H would get nine times L's calls.
    let mut jobs: Vec<NewJob> = Vec::new();
    for i in 0..1000 {
        jobs.push(job("L", i, A_TOKENS));
        jobs.push(job("H", i, B_TOKENS));
    }
    let ids = rig.enqueue(jobs).await;
    let h: HashSet<String> = ids.iter().skip(1).step_by(2).cloned().collect();
    let mut events = rig.events().await;
    // 1 s of burst, then ~6 s of shares, both backlogged throughout (each has ~40 s of work).
    let done = events.until(BOUND, |s| s.count("completed") >= 150).await;
    assert!(done, "the jobs never got going");
    let calls = calls(&rig);
    let (from, to) = (calls[20].0, calls[calls.len() - 1].0);
    let (h_tokens, all) = tokens_in(&calls, &h, from, to);
    let share = h_tokens as f64 / all as f64;
    let h_calls = calls[20..]
        .iter()
        .filter(|(_, _, id)| h.contains(id))
        .count();
    println!(
        "weights 3:1 over {:.1} s: H {:.1}% of {all} tokens ({h_calls} of {} calls)",
        (to - from) as f64 / 1000.0,
        100.0 * share,
        calls.len() - 20
    );
    assert!(
        (0.65..=0.85).contains(&share),
        "H's share was {:.1}%",
        100.0 * share
    );
}

/// Waits (checking every 50 ms) until `tenant` of queue `q` is in the state `done` accepts
/// (given the queue's counts too).
async fn until_tenant(
    rig: &Rig,
    tenant: &str,
    done: impl Fn(&TenantStats, &HashMap<String, i64>) -> bool,
) -> TenantStats {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        // The counts first: a job running then could end before the tenants are read, never
        // one that was not.
        let counts = rig.counts().await;
        let rows = rig.store().tenants("q").await.expect("tenants");
        if let Some(t) = rows.into_iter().find(|t| t.tenant == tenant)
            && (done(&t, &counts) || tokio::time::Instant::now() >= deadline)
        {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tenant {tenant} never seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What a budget test limits: tokens, or dollars at the workers' `[prices]`.
#[derive(Clone, Copy, PartialEq)]
enum Limit {
    Tokens,
    Dollars,
}

/// The price in the dollar test: $1,000 a million tokens in ($0.001 a token), $3,000 out.
const PRICE_IN: f64 = 0.001;
const PRICE_OUT: f64 = 0.003;

/// The workers' `[prices]` of the dollar tests.
fn prices() -> String {
    format!(
        "\n[prices.\"gpt-4o-mini\"]\ninput_per_mtok = {}\noutput_per_mtok = {}\n",
        PRICE_IN * 1e6,
        PRICE_OUT * 1e6
    )
}

/// Job `i` of tenant T in the budget tests: estimated at ~100 tokens (36 of prompt, max_tokens
/// 64), using ~52 (the mock answers 16).
fn budget_job(i: usize) -> NewJob {
    let prompt = format!("T {i} {}", "x".repeat(4 * 30));
    NewJob::post(
        "q",
        "mock",
        "/v1/chat/completions",
        serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}),
    )
    .with_tenant("T")
}

/// A tenant's spend in the test's unit (tokens, or dollars).
fn spent(t: &TenantStats, limit: Limit) -> f64 {
    match limit {
        Limit::Tokens => t.spent as f64,
        Limit::Dollars => t.spent_dollars,
    }
}

/// Every completed job's (usage tokens in, out, `cost` field) as its hash holds them.
async fn completed_usage(rig: &Rig, ids: &[String]) -> Vec<(u64, u64, Option<f64>)> {
    let client = redis::Client::open(rig.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut out = Vec::new();
    for id in ids {
        let (state, usage, cost): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(format!("sluice:{{q}}:job:{id}"))
                .arg("state")
                .arg("usage")
                .arg("cost")
                .query_async(&mut conn)
                .await
                .expect("HMGET");
        if state.as_deref() != Some("completed") {
            continue;
        }
        let u: serde_json::Value =
            serde_json::from_str(usage.as_deref().unwrap_or("")).expect("usage is JSON");
        let n = |k: &str| u[k].as_u64().expect("usage tokens");
        out.push((
            n("prompt_tokens"),
            n("completion_tokens"),
            cost.and_then(|c| c.parse().ok()),
        ));
    }
    out
}

/// 50 jobs of tenant T against a budget of `limit`: the jobs that fit run, spend ends at most
/// one job's estimate over the budget and equals what the calls used, the rest are parked
/// (held: budget), none lost; raising the budget runs each of them once.
async fn budget_parks_and_resumes(limit: Limit) {
    let rig = Rig::start(MockConfig {
        latency_ms: 50,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 25;
    if limit == Limit::Dollars {
        options.extra = prices();
    }
    let mut workers = rig.spawn_ready(2, &options).await;
    // Each job is estimated at ~100 tokens (36 of prompt, max_tokens 64) and uses ~52 (the mock
    // answers 16): spend is reserved at the estimate and corrected to the usage. In dollars the
    // estimate is $0.228 (36 in, 64 out) and the use ~$0.084.
    let (budget, estimate, flag) = match limit {
        Limit::Tokens => (1000.0, 36.0 + 64.0 + 2.0, "--tokens"),
        Limit::Dollars => (2.0, 38.0 * PRICE_IN + 64.0 * PRICE_OUT, "--dollars"),
    };
    rig.cli(&[
        "budget",
        "set",
        "T",
        flag,
        &budget.to_string(),
        "--period",
        "day",
        "-q",
        "q",
    ]);
    // A second tenant the queue knows (by its weight) and the one-tenant read must pass over.
    rig.cli(&["weight", "set", "U", "2", "-q", "q"]);
    let ids = rig.enqueue((0..50).map(budget_job).collect()).await;
    // Settled: parked, nothing running or moved to the lane (every queued job is in the list),
    // and no room left for another job's estimate.
    let t = until_tenant(&rig, "T", |t, counts| {
        let n = |k: &str| counts.get(k).copied().unwrap_or(0);
        t.parked
            && n("running") == 0
            && n("queued") == t.backlog as i64
            && spent(t, limit) + estimate > budget
    })
    .await;
    // Settled, so the one-tenant read (what `sluice budget set` prints) agrees with the list.
    let one = rig.store().tenant("q", "T").await.expect("tenant");
    assert_eq!(one.as_ref(), Some(&t), "the one-tenant read");
    let counts = rig.counts().await;
    let completed = counts.get("completed").copied().unwrap_or(0);
    let used = completed_usage(&rig, &ids).await;
    let calls_spent: f64 = match limit {
        Limit::Tokens => calls(&rig).iter().map(|c| c.1 as f64).sum(),
        Limit::Dollars => used
            .iter()
            .map(|&(i, o, _)| i as f64 * PRICE_IN + o as f64 * PRICE_OUT)
            .sum(),
    };
    println!(
        "budget {budget} ({flag}): {completed} of 50 jobs completed, spent {} (the calls used \
         {calls_spent}), {} parked with state held (budget)",
        spent(&t, limit),
        t.backlog
    );
    assert!(t.parked, "{t:?}");
    assert!(
        spent(&t, limit) <= budget + estimate,
        "spent {} over a budget of {budget}",
        spent(&t, limit)
    );
    assert!(
        (spent(&t, limit) - calls_spent).abs() < 1e-6,
        "spend {} is not corrected to what the calls used ({calls_spent})",
        spent(&t, limit)
    );
    assert_eq!(used.len() as i64, completed);
    if limit == Limit::Dollars {
        // Each completion carries the cost its worker priced: it is what corrected the spend.
        for &(i, o, cost) in &used {
            let priced = i as f64 * PRICE_IN + o as f64 * PRICE_OUT;
            assert!(
                cost.is_some_and(|c| (c - priced).abs() < 1e-9),
                "cost {cost:?} for {i} in, {o} out"
            );
        }
    }
    assert_eq!(t.backlog as i64, 50 - completed, "{t:?}");
    assert!(completed > 0 && completed < 50, "{completed} completed");
    let held: Vec<_> = {
        let mut v = Vec::new();
        for id in &ids {
            let s = rig.status(id).await;
            if s.state == JobState::Queued {
                v.push(s.held);
            }
        }
        v
    };
    assert_eq!(held.len() as i64, 50 - completed);
    assert!(
        held.iter().all(|h| h.as_deref() == Some("budget")),
        "{held:?}"
    );
    // What an alert would watch: the share of the budget spent, in the workers' metrics.
    let unit = match limit {
        Limit::Tokens => "tokens",
        Limit::Dollars => "dollars",
    };
    // And the jobs it has parked.
    let want = spent(&t, limit) / budget;
    let addr = workers[0].http_addr(BOUND).await.expect("metrics address");
    let deadline = tokio::time::Instant::now() + BOUND;
    let (seen, parked) = loop {
        // Workers read them from Redis at most every 5 s, when scraped.
        let m = Scrape::fetch(addr).await;
        let seen = m.sum(
            "sluice_tenant_budget_used_ratio",
            &[("queue", "q"), ("tenant", "T"), ("unit", unit)],
        );
        let parked = m.sum(
            "sluice_tenant_parked_jobs",
            &[("queue", "q"), ("tenant", "T")],
        );
        let right = (seen - want).abs() < 1e-9 && parked == t.backlog as f64;
        if right || tokio::time::Instant::now() >= deadline {
            break (seen, parked);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        (seen - want).abs() < 1e-9,
        "budget used ratio {seen}, spent ÷ budget {want}"
    );
    assert_eq!(parked, t.backlog as f64, "parked jobs in the metric");

    // Raised: the parked jobs run, each once.
    let raised = match limit {
        Limit::Tokens => "100000",
        Limit::Dollars => "100",
    };
    let out = rig.cli(&["budget", "set", "T", flag, raised, "-q", "q"]);
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("T ")),
        "{out}"
    );
    let mut events = rig.events().await;
    let done = events
        .until(BOUND, |s| ids.iter().all(|id| s.job(id, "completed") == 1))
        .await;
    assert!(done, "not every job completed after the budget was raised");
    let by_job = rig.mock.stats(true).jobs.unwrap_or_default();
    assert!(
        ids.iter().all(|id| by_job.get(id).map(Vec::len) == Some(1)),
        "a job was called twice or never"
    );
    let out = rig.cli(&["stats", "q", "--tenants"]);
    println!("{out}");
    assert!(out.contains("T "), "{out}");
    if limit == Limit::Dollars {
        assert!(out.contains("/ $100.00 a day"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_budget_is_parked_and_resumes_when_it_is_raised() {
    budget_parks_and_resumes(Limit::Tokens).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_budget_in_dollars_is_parked_and_resumes_when_it_is_raised() {
    budget_parks_and_resumes(Limit::Dollars).await;
}

/// A call that starts in one budget period and ends in the next: the new period started at 0
/// without its reservation, so it is charged what the call used (tokens and dollars), not
/// usage − estimate (which would leave spend below zero, room the budget never had).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_ends_in_a_new_period_is_charged_what_it_used() {
    // The call takes 1.5 s: the period is turned while it is out.
    let rig = Rig::start(MockConfig {
        latency_ms: 1500,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.extra = prices();
    let _workers = rig.spawn_ready(1, &options).await;
    rig.cli(&[
        "budget",
        "set",
        "T",
        "--tokens",
        "100000",
        "--dollars",
        "100",
        "--period",
        "day",
        "-q",
        "q",
    ]);
    let mut events = rig.events().await;
    let id = rig.enqueue(vec![budget_job(0)]).await.remove(0);
    assert!(events.until(BOUND, |s| s.job(&id, "running") == 1).await);
    // What a move in the next period does first: spend back to 0 under the new period's id.
    let client = redis::Client::open(rig.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let budget_key = "sluice:{q}:budget:T";
    let () = redis::cmd("HSET")
        .arg(budget_key)
        .arg("spent")
        .arg("0")
        .arg("dspent")
        .arg("0")
        .arg("pid")
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    assert!(events.until(BOUND, |s| s.job(&id, "completed") == 1).await);
    let (spent, dspent): (i64, f64) = redis::cmd("HMGET")
        .arg(budget_key)
        .arg("spent")
        .arg("dspent")
        .query_async(&mut conn)
        .await
        .expect("HMGET");
    let used = completed_usage(&rig, std::slice::from_ref(&id)).await;
    let (i, o, cost) = used[0];
    println!(
        "the call used {i} + {o} tokens, cost {cost:?}; the new period's spend: {spent} tokens, ${dspent}"
    );
    assert_eq!(spent, (i + o) as i64, "tokens charged to the new period");
    let cost = cost.expect("the call's cost");
    assert!(
        (dspent - cost).abs() < 1e-9,
        "dollars charged to the new period: {dspent}, the call cost {cost}"
    );
}

/// Tenants that come and go leave no place in the fair order behind: 200 tenants with one job
/// each, and once they have run no saved tag is left (`tidle`), though each one's tokens are
/// still counted (`tused`). Before, every tenant the queue ever had kept its tag for good (~77
/// bytes each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_that_come_and_go_leave_no_saved_places_behind() {
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 20;
    let _workers = rig.spawn_ready(1, &options).await;
    let n = 200;
    let jobs = (0..n).map(|i| job(&format!("t{i:03}"), i, B_TOKENS));
    rig.enqueue(jobs.collect()).await;
    let mut events = rig.events().await;
    let done = events
        .until(BOUND, |s| s.count("completed") >= n as u64)
        .await;
    assert!(done, "only {} completed", events.seen.count("completed"));
    let mut r = rig.redis.client().await;
    let saved: u64 = redis::cmd("ZCARD")
        .arg("sluice:{q}:tidle")
        .query_async(&mut r)
        .await
        .expect("ZCARD");
    let counted: u64 = redis::cmd("HLEN")
        .arg("sluice:{q}:tused")
        .query_async(&mut r)
        .await
        .expect("HLEN");
    println!(
        "{n} tenants of one job each: {saved} saved tags left, {counted} tenants' tokens counted"
    );
    assert_eq!(counted, n as u64);
    assert_eq!(saved, 0, "saved tags left behind");
}
