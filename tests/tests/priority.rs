//! Priority lanes: `high` jobs start before `normal` ones and `normal` before `low`; a share of
//! the quota kept for `high` lets 100 high jobs through a limiter saturated by 10,000 low ones
//! within a second; and aging starts a low job that waited the bound before the high ones.

use sluice_common::job::Priority;
use sluice_common::{JobState, JobStatus, NewJob};
use sluice_tests::chat_job;
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::{BOUND, Rig};

fn job(i: usize, p: Priority) -> NewJob {
    chat_job(i).with_priority(p)
}

async fn statuses(rig: &Rig, ids: &[String]) -> Vec<JobStatus> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(rig.status(id).await);
    }
    out
}

fn started(s: &JobStatus) -> u64 {
    s.started_ms.expect("started")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_starts_high_then_normal_then_low_whatever_the_enqueue_order() {
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        ..MockConfig::default()
    })
    .await;
    // Enqueued before any worker runs: low first, high last.
    let mut ids = Vec::new();
    for (k, p) in [Priority::Low, Priority::Normal, Priority::High]
        .into_iter()
        .enumerate()
    {
        ids.push(
            rig.enqueue((0..30).map(|i| job(k * 100 + i, p)).collect())
                .await,
        );
    }
    let stats = rig.store().stats("q").await.expect("stats");
    let lanes: Vec<_> = stats
        .lanes
        .iter()
        .map(|l| (l.lane.as_str(), l.stream_len))
        .collect();
    assert_eq!(lanes, [("high", 30), ("low", 30)], "{stats:?}");
    assert_eq!(stats.stream_len, 90);

    let mut options = rig.options();
    options.concurrency = 1;
    let _worker = rig.spawn_n(1, &options);
    let mut events = rig.events().await;
    let done = events.until(BOUND, |s| s.count("completed") >= 90).await;
    assert!(done, "only {} completed", events.seen.count("completed"));
    let [low, normal, high] = [&ids[0], &ids[1], &ids[2]];
    let (low, normal, high) = (
        statuses(&rig, low).await,
        statuses(&rig, normal).await,
        statuses(&rig, high).await,
    );
    for s in low.iter().chain(&normal).chain(&high) {
        assert_eq!(s.state, JobState::Completed, "{}", s.id);
    }
    let last_high = high.iter().map(started).max();
    let first_normal = normal.iter().map(started).min();
    let last_normal = normal.iter().map(started).max();
    let first_low = low.iter().map(started).min();
    println!(
        "high started up to {last_high:?}, normal {first_normal:?}..{last_normal:?}, low from {first_low:?}"
    );
    assert!(
        last_high <= first_normal,
        "a normal job started before a high one"
    );
    assert!(
        last_normal <= first_low,
        "a low job started before a normal one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_10k_low_jobs_saturating_the_limiter_100_high_jobs_start_within_a_second() {
    let rig = Rig::start(MockConfig {
        latency_ms: 5,
        rpm: Some(6000),
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    // Enough slots that, without the reserve, the low jobs in memory hold the limiter's whole
    // 2 s horizon (the test fails then: p99 ~2 s).
    options.concurrency = 200;
    options.extra = "rpm = 6000\nhigh_reserve = 0.2\n".into();
    let _workers = rig.spawn_ready(2, &options).await;
    let n_low = 10_000;
    rig.enqueue((0..n_low).map(|i| job(i, Priority::Low)).collect())
        .await;
    let mut events = rig.events().await;
    // Saturated: the limiter has paced a few seconds of low jobs.
    let busy = events.until(BOUND, |s| s.count("completed") >= 300).await;
    assert!(busy, "the low jobs never got going");
    let high = rig
        .enqueue((0..100).map(|i| job(n_low + i, Priority::High)).collect())
        .await;
    let done = events
        .until(BOUND, |s| high.iter().all(|id| s.job(id, "completed") == 1))
        .await;
    assert!(done, "not every high job completed");
    let mut waits: Vec<u64> = statuses(&rig, &high)
        .await
        .iter()
        .map(|s| started(s).saturating_sub(s.created_ms.expect("created")))
        .collect();
    waits.sort_unstable();
    let p99 = waits[98];
    let low_done = events.seen.count("completed") as usize - high.len();
    let stats = rig.mock.stats(false);
    println!(
        "100 high behind {n_low} low at 6000 rpm (20% kept for high): wait p50 {} ms, p99 {p99} ms, \
         max {} ms; {low_done} low completed meanwhile; mock: {} calls, {} 429s",
        waits[49], waits[99], stats.calls, stats.rate_limited
    );
    assert!(p99 <= 1000, "high jobs' p99 wait {p99} ms is over 1 s");
    stats.assert_few_429s();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_job_that_waited_the_aging_bound_starts_before_the_high_backlog() {
    let rig = Rig::start(MockConfig {
        latency_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let aging_ms = 1500;
    let mut options = rig.options();
    options.concurrency = 4;
    options
        .env
        .push(("SLUICE__QUEUES__AGING_MS".into(), aging_ms.to_string()));
    let _worker = rig.spawn_ready(1, &options).await;
    // ~10 s of high work for 4 slots at 20 ms a call, then one low and one normal job.
    let n_high = 2000;
    let high = rig
        .enqueue((0..n_high).map(|i| job(i, Priority::High)).collect())
        .await;
    let late = rig
        .enqueue(vec![
            job(n_high, Priority::Low),
            job(n_high + 1, Priority::Normal),
        ])
        .await;
    let mut events = rig.events().await;
    let done = events
        .until(BOUND, |s| late.iter().all(|id| s.job(id, "completed") == 1))
        .await;
    assert!(done, "the low and normal jobs never completed");
    let high_done = events.seen.count("completed") as usize - late.len();
    for s in statuses(&rig, &late).await {
        let waited = started(&s) - s.created_ms.expect("created");
        println!(
            "{}: started after {waited} ms (aging {aging_ms} ms), {high_done} of {n_high} high jobs done by then",
            s.id
        );
        assert!(waited >= aging_ms, "started before it aged: {waited} ms");
    }
    // Not behind the whole high backlog: most of it still waited when these started.
    assert!(
        high_done < n_high / 2,
        "{high_done} high jobs completed first"
    );
    let done = events
        .until(BOUND, |s| s.count("completed") >= high.len() as u64 + 2)
        .await;
    assert!(done, "the high jobs did not all complete");
}
