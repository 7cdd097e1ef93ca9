//! `scope = "process"` limits: each worker paces an upstream in memory through `governor`, so
//! three workers with 10 requests/s each call at ~30 requests/s together, and no admission or
//! report ever reaches Redis (watched with MONITOR).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use sluice_tests::chat_job;
use sluice_tests::mock::{MockConfig, Stats};
use sluice_tests::rig::{BOUND, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_a_process_limit_of_10_per_second_call_30_per_second_without_redis() {
    let rig = Rig::start(MockConfig::default()).await;
    // Every command Redis runs from here on, as MONITOR prints it.
    let client = redis::Client::open(rig.url()).expect("client");
    let monitor = client.get_async_monitor().await.expect("MONITOR");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let lines = seen.clone();
    tokio::spawn(async move {
        let mut stream = monitor.into_on_message::<String>();
        while let Some(line) = stream.next().await {
            if let Ok(mut l) = lines.lock() {
                l.push(line);
            }
        }
    });

    let mut options = rig.options();
    options.concurrency = 20;
    options.extra = "scope = \"process\"\nrpm = 600\n".into();
    let _workers = rig.spawn_ready(3, &options).await;
    let n = 150;
    rig.enqueue((0..n).map(chat_job).collect()).await;
    let mut events = rig.events().await;
    let done = events
        .until(BOUND, |s| s.count("completed") >= n as u64)
        .await;
    assert!(done, "only {} completed", events.seen.count("completed"));

    let times = rig.mock.stats(true).call_times(0);
    assert_eq!(times.len(), n, "every job called once");
    let span = (times[n - 1] - times[0]) as f64 / 1000.0;
    let rate = (n - 1) as f64 / span.max(0.001);
    let busiest = Stats::busiest_second(&times);
    let lines = seen.lock().map(|l| l.clone()).unwrap_or_default();
    let admits = lines
        .iter()
        .filter(|l| l.contains("\"sluice_admit\""))
        .count();
    let reports = lines
        .iter()
        .filter(|l| l.contains("\"sluice_report\""))
        .count();
    let fetches = lines
        .iter()
        .filter(|l| l.contains("\"sluice_fetch\""))
        .count();
    println!(
        "3 workers, 10/s each in process: {n} calls in {span:.2} s = {rate:.1}/s, busiest 1 s \
         window {busiest}; Redis saw {admits} admissions, {reports} reports, {fetches} fetches"
    );
    assert!(fetches > 0, "MONITOR saw the workers' fetches");
    assert_eq!(admits + reports, 0, "no limiter call reached Redis");
    // Each worker's bucket lets at most 10 a second plus its burst of one through.
    assert!(
        busiest <= 33,
        "{busiest} calls in one second: over 3 × 10/s"
    );
    // Per process, not per fleet: one shared 10/s would take 15 s for 150 calls.
    assert!(
        rate >= 20.0,
        "{rate:.1} calls/s: the limit was not per process"
    );
}
