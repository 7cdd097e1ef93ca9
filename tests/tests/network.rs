//! Network faults: a TCP proxy between the workers and Redis, and another between the workers
//! and the mock, that reset every connection, stall them (bytes stop, nothing errors) and refuse
//! new ones, again and again while jobs run. The fleet must recover by itself: every job ends
//! completed exactly once, and once the faults stop and a lease passes no job is left running
//! and no entry is left pending.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;
use sluice_tests::events::Events;
use sluice_tests::mock::MockConfig;
use sluice_tests::proxy::FaultProxy;
use sluice_tests::rig::{LONG_BOUND as BOUND, Rig};
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};
use sluice_tests::{chat_job, enqueue_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_stalls_and_refusals_on_both_links_lose_nothing_and_leave_nothing_running() {
    let rig = Rig::start(MockConfig {
        latency_ms: 20,
        spread_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let (redis, mock) = (&rig.redis, &rig.mock);
    let redis_link =
        FaultProxy::start(format!("127.0.0.1:{}", redis.port()).parse().expect("addr")).await;
    let mock_link = FaultProxy::start(mock.addr()).await;
    let producer = rig.producer.clone();

    let mut options = WorkerOptions::new(
        &format!("redis://{}", redis_link.addr()),
        &format!("http://{}", mock_link.addr()),
    );
    options.concurrency = 50;
    options.lease_ms = 2_000;
    options.timeout_ms = 1_500;
    options.max_attempts = 20;
    options.base_ms = 50;
    options.cap_ms = 500;
    // The mock's link failing opens the circuit (rightly); it is probed again after 1 s.
    options.extra = "circuit_cooloff_ms = 1000\n".into();
    // A stalled Redis link must time out a command rather than hang on it.
    options
        .env
        .push(("SLUICE__REDIS__COMMAND_TIMEOUT_MS".into(), "1500".into()));
    let workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&format!("w{i}"), &options))
        .collect();

    let n = 5_000;
    let ids = enqueue_all(&producer, (0..n).map(chat_job).collect()).await;
    let mut events = Events::new(&redis.url(), "q").await;
    let going = events.until(BOUND, |s| s.count("completed") >= 200).await;
    assert!(going, "the run never got going: {}", workers[0].log());

    // The menu in turn, each fault at least once, until the jobs are nearly all done (at most
    // each twice).
    let menu = [
        "redis reset",
        "redis stall 2.5 s",
        "redis refuse 1 s",
        "mock reset",
        "mock stall 2.5 s",
        "mock refuse 1 s",
    ];
    let mut injected: BTreeMap<&str, u32> = BTreeMap::new();
    let mut round = 0;
    while round < menu.len() || events.seen.terminal_jobs() < n * 9 / 10 {
        if round >= 2 * menu.len() {
            break;
        }
        let fault = menu[round % menu.len()];
        round += 1;
        *injected.entry(fault).or_default() += 1;
        match fault {
            "redis reset" => redis_link.reset_all(),
            "mock reset" => mock_link.reset_all(),
            "redis stall 2.5 s" | "mock stall 2.5 s" => {
                let link = if fault.starts_with("redis") {
                    &redis_link
                } else {
                    &mock_link
                };
                link.set_stalled(true);
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                link.set_stalled(false);
            }
            _ => {
                let link = if fault.starts_with("redis") {
                    &redis_link
                } else {
                    &mock_link
                };
                link.set_refusing(true);
                link.reset_all();
                tokio::time::sleep(Duration::from_millis(1_000)).await;
                link.set_refusing(false);
            }
        }
        // Between faults the fleet shows it is working again: more jobs end.
        let before = events.seen.terminal_jobs();

        let moved = events
            .until(BOUND, |s| {
                s.terminal_jobs() > before || s.terminal_jobs() >= n
            })
            .await;
        assert!(moved, "no job ended after {fault}");
    }

    let done = events.until(BOUND, |s| s.terminal_jobs() >= n).await;
    let stats = producer.store().stats("q").await.expect("stats");
    assert!(
        done,
        "only {} of {n} ended after {injected:?}: {:?}\n{}",
        events.seen.terminal_jobs(),
        stats.counts,
        workers[0].log()
    );
    for id in &ids {
        assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
    }
    let count = |k: &str| stats.counts.get(k).copied().unwrap_or(0);
    assert_eq!(count("completed"), n as i64, "{:?}", stats.counts);
    assert_eq!(count("running"), 0, "{:?}", stats.counts);
    assert_eq!(count("dead"), 0, "{:?}", stats.counts);

    // Nothing left pending in the group once the work is done: no orphan entry.
    let mut r = redis.client().await;
    let pending: redis::Value = r
        .xpending("sluice:{q}:stream", sluice_common::keys::GROUP)
        .await
        .expect("XPENDING");
    let pending_count = match &pending {
        redis::Value::Array(v) => v.first().and_then(sluice_common::reply::int).unwrap_or(-1),
        _ => -1,
    };
    assert_eq!(pending_count, 0, "entries left pending: {pending:?}");
    for w in &workers {
        assert!(!w.log().contains("panicked"), "{}: {}", w.name, w.log());
    }
    let calls = mock.stats(true).jobs.expect("per-job calls");
    let called_again = ids
        .iter()
        .filter(|id| calls.get(*id).is_some_and(|c| c.len() > 1))
        .count();
    let (rl, ml) = (redis_link.counts(), mock_link.counts());
    println!(
        "network: {n} jobs, faults {injected:?}; redis link: {} connections, {} reset, {} refused; \
         mock link: {} connections, {} reset, {} refused; completed {}, lost 0, completed twice 0, \
         jobs called more than once {called_again} ({:.2}%)",
        rl.accepted,
        rl.reset,
        rl.refused,
        ml.accepted,
        ml.reset,
        ml.refused,
        count("completed"),
        100.0 * called_again as f64 / n as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_redis_longer_than_the_lease_writes_what_it_holds_and_calls_nothing_twice()
 {
    let rig = Rig::start(MockConfig {
        latency_ms: 1_500,
        ..MockConfig::default()
    })
    .await;
    let (redis, mock) = (&rig.redis, &rig.mock);
    let redis_link =
        FaultProxy::start(format!("127.0.0.1:{}", redis.port()).parse().expect("addr")).await;
    let producer = rig.producer.clone();
    let mut options = WorkerOptions::new(&format!("redis://{}", redis_link.addr()), &mock.url());
    options.concurrency = 20;
    options.lease_ms = 2_000;
    options.log_filter = "info".into();
    options
        .env
        .push(("SLUICE__REDIS__COMMAND_TIMEOUT_MS".into(), "300".into()));
    let w = WorkerProcess::spawn("w", &options);
    let n = 20;
    let ids = enqueue_all(&producer, (0..n).map(chat_job).collect()).await;
    assert!(
        mock.until_in_flight(n as u64, BOUND).await,
        "the calls never went out"
    );
    // Redis out of reach for 30 s: fifteen leases, thirty beats, and longer than a short
    // outage's retries (which gave up after ~20 s, and the jobs were called again). The calls
    // finish meanwhile and their results wait in the worker.
    redis_link.set_refusing(true);
    redis_link.reset_all();
    tokio::time::sleep(Duration::from_millis(30_000)).await;
    redis_link.set_refusing(false);

    let mut events = Events::new(&redis.url(), "q").await;
    assert!(
        events
            .until(BOUND, |s| s.count("completed") >= n as u64)
            .await,
        "only {} of {n} completed\n{}",
        events.seen.count("completed"),
        w.log()
    );
    let calls = mock.stats(true).jobs.expect("per-job calls");
    for id in &ids {
        assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
        assert_eq!(calls[id].len(), 1, "job {id} was called again");
    }
    let log = w.log();
    // (An entry claimed at the moment its completion landed may be logged as reclaimed and then
    // skipped as completed: no call, and nothing calls this worker dead.)
    for wrong in ["took over", "dead worker"] {
        assert!(!log.contains(wrong), "the log says {wrong:?}:\n{log}");
    }
    println!(
        "cut off 30 s with a 2 s lease: {n} held results written, each job called once; the worker \
         kept its own entries {} time(s), wrote held outcomes after the outage: {}",
        log.matches("kept this worker's own in-flight entries")
            .count(),
        log.contains("a held outcome was written")
    );
}
