//! A non-Rust service can use Sluice: the shipped Python package (producer/python, `sluice-client`,
//! installed by tests/run.sh into its venv; else imported from its source with the system's
//! redis-py) enqueues with dedupe, conflicts and generated ids, cancels, gets errors as
//! exceptions and waits for the result; the Rust side runs the job.

use std::time::Duration;

use sluice_common::store::Started;
use sluice_common::{JobSpec, JobState, Store, StoreSettings};
use sluice_tests::RedisServer;
use sluice_tests::bins::workspace_root;

fn python(args: &[&str]) -> serde_json::Value {
    let package = workspace_root().join("producer/python");
    let src = package.join("src");
    let src = src.to_str().expect("UTF-8 path");
    sluice_tests::python::run(
        &package.join("tests/check_protocol.py"),
        args,
        &[("PYTHONPATH", src)],
    )
}

#[tokio::test]
async fn a_python_service_enqueues_with_dedupe_and_reads_the_result() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let store = Store::connect(&url, StoreSettings::default())
        .await
        .expect("connect");

    let enq = tokio::task::spawn_blocking({
        let url = url.clone();
        move || python(&["enqueue", "--url", &url])
    })
    .await
    .expect("join");
    let id = enq["id"].as_str().expect("id").to_string();

    // The job a Python service wrote is a valid Sluice job.
    let status = store.status("py", &id).await.expect("status").expect("job");
    assert_eq!(status.state, JobState::Queued);
    let held = store
        .spec("py", &id)
        .await
        .expect("spec")
        .expect("a spec kept");
    let spec: JobSpec = serde_json::from_str(&held).expect("a JobSpec");
    sluice_common::validate::spec(&spec).expect("passes the worker's validation");

    // Python waits on the events stream while the Rust side runs the job.
    let waiter = tokio::task::spawn_blocking({
        let (url, id) = (url.clone(), id.clone());
        move || python(&["wait", "--url", &url, "--id", &id])
    });
    let mut c = redis.client().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("sluice:{py}:stream")
        .arg("sluice")
        .arg("0")
        .query_async(&mut c)
        .await
        .expect("XGROUP CREATE");
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("sluice")
        .arg("t")
        .arg("STREAMS")
        .arg("sluice:{py}:stream")
        .arg(">")
        .query_async(&mut c)
        .await
        .expect("XREADGROUP");
    let e = &reply.keys[0].ids[0];
    let started = store
        .start("py", "test-consumer", &[(e.id.clone(), id.clone())])
        .await
        .expect("start");
    assert!(matches!(&started[0], Started::Run { attempt: 1, .. }));
    // Complete only once Python is blocked in XREAD, so the blocking path is what is proven.
    let mut blocked = false;
    for _ in 0..1000 {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut c)
            .await
            .expect("CLIENT LIST");
        if clients.contains("cmd=xread") {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        blocked,
        "the Python client never blocked on the events stream"
    );
    store
        .complete("py", &id, &e.id, "{\"choices\":[]}", 200, &[])
        .await
        .expect("complete");

    let done = waiter.await.expect("join");
    assert_eq!(done["state"], "completed");
    assert_eq!(done["result"], serde_json::json!({"choices": []}));
    assert_eq!(done["status"], 200);
}
