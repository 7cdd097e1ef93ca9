//! Which HTTP a worker speaks to an upstream (`http`, `http2_connections`): HTTP/1.1 to a plain
//! http:// upstream by default, HTTP/2 with prior knowledge (h2c) when asked, many calls on one
//! connection, and more connections to get past a server's stream limit — against the mock,
//! which speaks both on one port and limits streams per connection as providers do.

use std::net::SocketAddr;

use sluice_common::JobState;
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

/// h2c connections cut mid-call (a TCP reset, as a restarted model server gives) are opened
/// again: the calls on them fail as transient, are retried on new connections, and every job
/// completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_connections_cut_mid_call_are_opened_again_and_no_job_is_lost() {
    let rig = Rig::start(MockConfig {
        latency_ms: 400,
        ..MockConfig::default()
    })
    .await;
    let proxy = FaultProxy::start(rig.mock.addr()).await;
    let mut options = WorkerOptions::new(&rig.redis.url(), &format!("http://{}", proxy.addr()));
    options.concurrency = 20;
    // The cut fails every call in flight at once, which rightly opens the circuit: a short
    // cool-off keeps the test short.
    options.extra = "http = \"http2\"\nhttp2_connections = 2\ncircuit_cooloff_ms = 500\n".into();
    let _worker = WorkerProcess::spawn("h2", &options);
    let mut events = rig.events().await;
    let n = 40;
    let ids = rig.enqueue((0..n).map(chat_job).collect()).await;
    assert!(
        rig.mock.until_in_flight(10, BOUND).await,
        "calls never got going: {:?}",
        rig.mock.stats(false)
    );
    let before = proxy.counts();
    proxy.reset_all();
    assert!(events.until(BOUND, |s| s.terminal_jobs() >= n).await);
    let after = proxy.counts();
    assert!(after.reset >= 1, "the cut reached no connection: {after:?}");
    assert!(
        after.accepted > before.accepted,
        "no connection was opened again after the cut: {before:?} then {after:?}"
    );
    for id in &ids {
        assert_eq!(rig.status(id).await.state, JobState::Completed, "job {id}");
        assert_eq!(
            events.seen.job(id, "completed"),
            1,
            "job {id} completed once"
        );
    }
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
    let rig = Rig::start(MockConfig {
        latency_ms: 300,
        ..MockConfig::default()
    })
    .await;
    let proxy = FaultProxy::start(rig.mock.addr()).await;
    let mut options = WorkerOptions::new(&rig.redis.url(), &format!("http://{}", proxy.addr()));
    options.concurrency = 10;
    // Pings every second (half the call timeout), unanswered for a second closes.
    options.timeout_ms = 2_000;
    options.max_attempts = 20;
    options.extra = "http = \"http2\"\ncircuit_cooloff_ms = 500\n".into();
    let _worker = WorkerProcess::spawn("h2", &options);
    let mut events = rig.events().await;
    let n = 60;
    let ids = rig.enqueue((0..n).map(chat_job).collect()).await;
    assert!(
        rig.mock.until_in_flight(5, BOUND).await,
        "calls never got going: {:?}",
        rig.mock.stats(false)
    );
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
    assert!(events.until(BOUND, |s| s.terminal_jobs() >= n).await);
    for id in &ids {
        assert_eq!(rig.status(id).await.state, JobState::Completed, "job {id}");
        assert_eq!(
            events.seen.job(id, "completed"),
            1,
            "job {id} completed once"
        );
    }
}
