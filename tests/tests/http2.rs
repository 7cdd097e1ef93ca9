//! Which HTTP a worker speaks to an upstream (`http`, `http2_connections`): HTTP/1.1 to a plain
//! http:// upstream by default, HTTP/2 with prior knowledge (h2c) when asked, many calls on one
//! connection, and more connections to get past a server's stream limit — against the mock,
//! which speaks both on one port and limits streams per connection as providers do.

use std::net::SocketAddr;

use sluice_common::JobState;
use sluice_tests::events::Events;
use sluice_tests::mock::{MockConfig, MockServer};
use sluice_tests::proxy::FaultProxy;
use sluice_tests::rig::{BOUND, Rig, count};
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};
use sluice_tests::{RedisServer, chat_job};

/// Calls the mock allows at once on one HTTP/2 connection.
const STREAMS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_carries_many_calls_per_connection_and_more_connections_pass_the_stream_limit() {
    let mock = MockServer::start_with_streams(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        MockConfig {
            latency_ms: 1_500,
            ..MockConfig::default()
        },
        STREAMS,
    )
    .await
    .expect("mock");
    let redis = RedisServer::start().await;
    let producer = sluice_tests::test_producer(&redis.url()).await;
    let rig = Rig {
        redis,
        mock,
        producer,
    };

    // The default (`http = "auto"`) speaks HTTP/1.1 to a plain http:// upstream.
    let mut options = rig.options();
    options.concurrency = 12;
    let worker = WorkerProcess::spawn("h1", &options);
    let mut events = rig.events().await;
    let first = rig.enqueue((0..4).map(chat_job).collect()).await;
    assert!(events.until(BOUND, |s| s.terminal_jobs() >= 4).await);
    drop(worker);
    let h1 = rig.mock.stats(false);
    assert_eq!(h1.calls, 4);
    assert_eq!(h1.http2_requests, 0, "HTTP/1.1 by default on http://");

    // HTTP/2 on three connections: 12 calls in flight at once where one connection allows 4.
    options.extra = "http = \"http2\"\nhttp2_connections = 3\n".into();
    let _worker = WorkerProcess::spawn("h2", &options);
    let ids = rig.enqueue((100..112).map(chat_job).collect()).await;
    assert!(
        rig.mock.until_in_flight(12, BOUND).await,
        "12 calls were never in flight at once: {:?}",
        rig.mock.stats(false)
    );
    // The events reader reads from the stream's start: the first 4 and these 12.
    assert!(events.until(BOUND, |s| s.terminal_jobs() >= 16).await);
    let h2 = rig.mock.stats(false);
    assert_eq!(h2.calls, 16);
    assert_eq!(
        h2.http2_requests, 12,
        "every call of the http2 worker over HTTP/2"
    );
    assert!(
        h2.connections - h1.connections <= 3,
        "12 calls on at most 3 connections, not one each: {} opened",
        h2.connections - h1.connections
    );
    for id in first.iter().chain(&ids) {
        assert_eq!(rig.status(id).await.state, JobState::Completed, "job {id}");
    }
    assert_eq!(count(&rig.counts().await, "completed"), 16);
}

/// A worker speaking h2c to the mock (answers after `latency_ms`) through a fault proxy, with
/// `n` jobs enqueued and at least `in_flight` calls under way; `tune` adjusts its options.
async fn h2c_through_a_proxy(
    latency_ms: u64,
    n: usize,
    in_flight: u64,
    tune: impl FnOnce(&mut WorkerOptions),
) -> (Rig, FaultProxy, WorkerProcess, Events, Vec<String>) {
    let rig = Rig::start(MockConfig {
        latency_ms,
        ..MockConfig::default()
    })
    .await;
    let proxy = FaultProxy::start(rig.mock.addr()).await;
    let mut options = WorkerOptions::new(&rig.redis.url(), &format!("http://{}", proxy.addr()));
    tune(&mut options);
    let worker = WorkerProcess::spawn("h2", &options);
    let events = rig.events().await;
    let ids = rig.enqueue((0..n).map(chat_job).collect()).await;
    assert!(
        rig.mock.until_in_flight(in_flight, BOUND).await,
        "calls never got going: {:?}",
        rig.mock.stats(false)
    );
    (rig, proxy, worker, events, ids)
}

/// Every job ends completed, each exactly once.
async fn all_completed_once(rig: &Rig, events: &mut Events, ids: &[String]) {
    assert!(
        events
            .until(BOUND, |s| s.terminal_jobs() >= ids.len())
            .await
    );
    for id in ids {
        assert_eq!(rig.status(id).await.state, JobState::Completed, "job {id}");
        assert_eq!(
            events.seen.job(id, "completed"),
            1,
            "job {id} completed once"
        );
    }
}

/// h2c connections cut mid-call (a TCP reset, as a restarted model server gives) are opened
/// again: the calls on them fail as transient, are retried on new connections, and every job
/// completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_connections_cut_mid_call_are_opened_again_and_no_job_is_lost() {
    let (rig, proxy, _worker, mut events, ids) = h2c_through_a_proxy(400, 40, 10, |o| {
        o.concurrency = 20;
        // The cut fails every call in flight at once, which rightly opens the circuit: a
        // short cool-off keeps the test short.
        o.extra = "http = \"http2\"\nhttp2_connections = 2\ncircuit_cooloff_ms = 500\n".into();
    })
    .await;
    let before = proxy.counts();
    proxy.reset_all();
    all_completed_once(&rig, &mut events, &ids).await;
    let after = proxy.counts();
    assert!(after.reset >= 1, "the cut reached no connection: {after:?}");
    assert!(
        after.accepted > before.accepted,
        "no connection was opened again after the cut: {before:?} then {after:?}"
    );
    // At least the 10 calls in flight at the cut failed and were retried.
    assert!(
        events.seen.count("retrying") >= 10,
        "{} retries after cutting 10 or more calls",
        events.seen.count("retrying")
    );
}

/// An h2c connection whose peer stops answering without a reset (a black-holed link) is pinged,
/// closed when the ping goes unanswered, and replaced by a new one: without pings it would hold
/// its calls until TCP gives up, many minutes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_connection_that_stops_answering_is_pinged_closed_and_replaced() {
    let (rig, proxy, _worker, mut events, ids) = h2c_through_a_proxy(300, 60, 5, |o| {
        o.concurrency = 10;
        // Pings every second (half the call timeout), unanswered for a second closes.
        o.timeout_ms = 2_000;
        o.max_attempts = 20;
        o.extra = "http = \"http2\"\ncircuit_cooloff_ms = 500\n".into();
    })
    .await;
    let before = proxy.counts();
    proxy.set_stalled(true);
    // Nothing moves on the link; only a closed connection makes the worker open another.
    let reopened = sluice_tests::eventually(BOUND, || async {
        proxy.counts().accepted > before.accepted
    })
    .await;
    proxy.set_stalled(false);
    assert!(
        reopened,
        "the stalled connection was never replaced: {:?}",
        proxy.counts()
    );
    all_completed_once(&rig, &mut events, &ids).await;
}
