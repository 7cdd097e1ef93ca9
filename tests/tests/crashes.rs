//! Worker crashes under load: `kill -9` of random `sluice-worker` processes every few seconds
//! while 20,000 jobs run through four of them (each killed worker replaced by a new process).
//!
//! Nothing may be lost and nothing may complete twice; the mock's per-job call record gives the
//! duplicate-call rate, and every second call of a job must have a kill between it and the call
//! before (a live worker's job is never taken over: leases and heartbeats hold).

use std::collections::HashMap;
use std::time::Duration;

use rand::RngExt;
use sluice_common::JobState;
use sluice_tests::chat_job;
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::Rig;
use sluice_tests::rig::{LONG_BOUND as BOUND, now_ms};
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_every_few_seconds_during_20k_jobs_loses_none_and_completes_none_twice() {
    let rig = Rig::start(MockConfig {
        latency_ms: 20,
        spread_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 60;
    options.lease_ms = 1_500;
    let mut spawned = 0;
    let mut spawn = |options: &WorkerOptions| {
        spawned += 1;
        WorkerProcess::spawn(&format!("w{spawned}"), options)
    };
    let mut workers: Vec<WorkerProcess> = (0..4).map(|_| spawn(&options)).collect();

    let n = 20_000;
    let ids = rig.enqueue((0..n).map(chat_job).collect()).await;
    let mut events = rig.events().await;
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut kills: Vec<u64> = Vec::new();
    // A random worker is killed each time another ~1/12 of the jobs has ended (a random point
    // in each twelfth), so the kills spread over the whole run however fast this machine
    // drains it.
    let step = n / 12;
    let mut next_kill = rand::rng().random_range(step / 2..step) as u64;
    while events.seen.terminal_jobs() < n && tokio::time::Instant::now() < deadline {
        events.read(Duration::from_millis(200)).await;
        let ended = events.seen.terminal_jobs() as u64;
        if ended >= next_kill && ended < n as u64 {
            let victim = rand::rng().random_range(0..workers.len());
            kills.push(now_ms());
            workers[victim].kill9();
            workers[victim] = spawn(&options);
            next_kill = ended + rand::rng().random_range(step / 2..step + step / 2) as u64;
        }
    }
    assert_eq!(
        events.seen.terminal_jobs(),
        n,
        "jobs never ended after {} kills",
        kills.len()
    );
    assert!(kills.len() >= 3, "only {} kills happened", kills.len());

    // Every job completed, exactly once, in the events and in its hash.
    let stats = rig.producer.store().stats("q").await.expect("stats");
    let c: HashMap<String, i64> = stats.counts.into_iter().collect();
    let count = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(count("completed"), n as i64, "{c:?}");
    for live in ["queued", "running", "retrying", "scheduled", "dead"] {
        assert_eq!(count(live), 0, "{live}: {c:?}");
    }
    let record = rig.mock.stats(true).jobs.expect("per-job calls");
    let mut duplicate_calls = 0usize;
    let mut jobs_called_twice = 0usize;
    for id in &ids {
        assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
        let calls = record.get(id).map(Vec::as_slice).unwrap_or_default();
        assert!(!calls.is_empty(), "job {id} completed without a call");
        if calls.len() > 1 {
            jobs_called_twice += 1;
            duplicate_calls += calls.len() - 1;
        }
        // A job is called again only after a kill: the call before was its dead worker's.
        for pair in calls.windows(2) {
            assert!(
                kills
                    .iter()
                    .any(|&k| pair[0].t_ms <= k && k <= pair[1].t_ms),
                "job {id} was called again at {} after {} with no kill between: {kills:?}",
                pair[1].t_ms,
                pair[0].t_ms
            );
        }
    }
    let status = rig
        .producer
        .status("q", &ids[n - 1])
        .await
        .expect("status")
        .expect("job");
    assert_eq!(status.state, JobState::Completed);
    assert_eq!(count("refused_completions"), 0, "{c:?}");
    println!(
        "crashes: {n} jobs, {} workers started, {} kill -9, completed {}, lost 0, completed twice 0, \
         duplicate calls {duplicate_calls} on {jobs_called_twice} jobs ({:.2}% of jobs; at most {} were in flight per kill)",
        spawned,
        kills.len(),
        count("completed"),
        100.0 * jobs_called_twice as f64 / n as f64,
        options.concurrency,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_jobs_run_again_when_its_heartbeat_lapses_not_after_the_lease() {
    let rig = Rig::start(MockConfig {
        latency_ms: 400,
        ..MockConfig::default()
    })
    .await;
    let mut options = rig.options();
    options.concurrency = 20;
    // The lease is a minute: only the heartbeat can bring the jobs back sooner.
    options.lease_ms = 60_000;
    let mut a = WorkerProcess::spawn("a", &options);
    let n = 20;
    let ids = rig.enqueue((0..n).map(chat_job).collect()).await;
    // All 20 calls are out at worker a when it is killed.
    assert!(
        rig.mock.until_in_flight(n as u64, BOUND).await,
        "a never ran 20 calls"
    );
    a.kill9();
    let killed_ms = now_ms();
    let _b = WorkerProcess::spawn("b", &options);
    let mut events = rig.events().await;
    assert!(
        events
            .until(BOUND, |s| s.count("completed") >= n as u64)
            .await,
        "only {} of {n} completed",
        events.seen.count("completed")
    );
    let jobs = rig.mock.stats(true).jobs.expect("per-job calls");
    let mut delays = Vec::new();
    for id in &ids {
        let s = rig
            .producer
            .status("q", id)
            .await
            .expect("status")
            .expect("job");
        assert_eq!(s.state, JobState::Completed);
        assert_eq!(events.seen.job(id, "completed"), 1);
        let again = jobs[id]
            .iter()
            .find(|c| c.t_ms >= killed_ms)
            .map(|c| c.t_ms - killed_ms)
            .expect("the job was called again after the kill");
        delays.push(again);
    }
    delays.sort_unstable();
    let last = delays.last().copied().unwrap_or(0);
    println!(
        "takeover after kill -9 during 400 ms calls: {n} jobs called again {} to {last} ms after \
         the kill (heartbeat 1 s, taken for dead after 3 s; the lease is 60 s)",
        delays.first().copied().unwrap_or(0)
    );
    // Far inside the lease: the jobs came back through the heartbeat, not the lease.
    assert!(last < 20_000, "the jobs waited {last} ms");
}
