//! The `sluice` CLI as an operator runs it: a real process against a real Redis.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

use sluice_tests::RedisServer;
use sluice_tests::bins::cargo_bin;

fn sluice() -> PathBuf {
    cargo_bin("sluice-producer", "sluice")
}

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(sluice())
        .arg("--redis")
        .arg(url)
        .args(args)
        .env_remove("SLUICE_REDIS_URL")
        .env_remove("SLUICE_CONFIG")
        .output()
        .expect("run sluice")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn enqueue_from_a_file_reports_every_rejected_line_and_dedupes_a_rerun() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jobs.jsonl");
    let mut f = std::fs::File::create(&path).expect("create");
    for i in 1..=2000 {
        let line = match i {
            5 => "{not json".to_string(),
            10 => r#"{"request": {"path": "/v1/../admin", "body": {"a": 1}}}"#.to_string(),
            20 => r#"{"body": {"a": 1}, "urgency": 9}"#.to_string(),
            _ => format!(r#"{{"dedupe_key": "row-{i}", "body": {{"model": "m", "n": {i}}}}}"#),
        };
        writeln!(f, "{line}").expect("write");
    }
    drop(f);
    let file = path.to_str().expect("utf-8 path");

    let out = run(
        &redis.url(),
        &["enqueue", "--file", file, "-u", "mock", "-q", "batch"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "rejected lines make exit 1: {}",
        stderr(&out)
    );
    let summary = stdout(&out);
    assert!(
        summary.contains("enqueued 1,997, deduplicated 0, rejected 3"),
        "{summary}"
    );
    let errors = stderr(&out);
    assert!(errors.contains("line 5: not a job"), "{errors}");
    assert!(
        errors.contains("line 10:") && errors.contains("request.path"),
        "{errors}"
    );
    assert!(
        errors.contains("line 20:") && errors.contains("urgency"),
        "{errors}"
    );

    let rerun = run(
        &redis.url(),
        &["enqueue", "--file", file, "-u", "mock", "-q", "batch"],
    );
    assert!(
        stdout(&rerun).contains("enqueued 0, deduplicated 1,997, rejected 3"),
        "{}",
        stdout(&rerun)
    );

    let stats = run(&redis.url(), &["stats", "batch", "--json"]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
    let q = &stats["queues"][0];
    assert_eq!(q["stream_len"], 1997);
    assert_eq!(q["counts"]["queued"], 1997);
    assert_eq!(q["counts"]["deduplicated"], 1997);
}

#[tokio::test]
async fn a_single_job_can_be_enqueued_looked_up_and_cancelled() {
    let redis = RedisServer::start().await;
    let out = run(
        &redis.url(),
        &[
            "enqueue",
            "-u",
            "mock",
            "--body",
            r#"{"model": "m", "messages": []}"#,
            "--id",
            "job-1",
            "--delay-ms",
            "60000",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("enqueued job-1 in default (scheduled)"),
        "{}",
        stdout(&out)
    );

    let status = run(&redis.url(), &["status", "job-1", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["state"], "scheduled");
    assert_eq!(status["upstream"], "mock");

    let cancel = run(&redis.url(), &["cancel", "job-1"]);
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let again = run(&redis.url(), &["cancel", "job-1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("is cancelled"),
        "{}",
        stderr(&again)
    );

    let missing = run(&redis.url(), &["status", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing).trim(),
        "sluice: no job nope in any queue (give --queue if its queue is not in `sluice stats`)"
    );
    let missing = run(&redis.url(), &["status", "nope", "-q", "default"]);
    assert_eq!(
        stderr(&missing).trim(),
        "sluice: no job nope in queue default"
    );

    let paused = run(&redis.url(), &["pause", "default"]);
    assert!(paused.status.success());
    let stats = run(&redis.url(), &["stats"]);
    assert!(
        stdout(&stats).contains("default  (paused)"),
        "{}",
        stdout(&stats)
    );
    let dlq = run(&redis.url(), &["dlq", "list"]);
    assert!(stdout(&dlq).contains("is empty"), "{}", stdout(&dlq));
    let no_selector = run(&redis.url(), &["dlq", "redrive"]);
    assert_eq!(no_selector.status.code(), Some(1));
}

#[test]
fn an_unreachable_redis_is_one_line_naming_the_url() {
    // A port nothing listens on: bound and released by this test.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let out = run(&url, &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("sluice: Redis unreachable at {url}")),
        "{err}"
    );
}

#[tokio::test]
async fn rediss_to_a_plain_port_asks_whether_it_is_a_tls_port() {
    let redis = RedisServer::start().await;
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let out = run(&url, &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is this a TLS port?"), "{err}");
}

#[test]
fn worker_and_cli_errors_are_one_line_each_cause_once_and_local_checks_say_so() {
    // A URL the client cannot parse is a config error: the worker ends at once (no waiting for
    // a Redis that cannot come), printing one line.
    let out = Command::new(cargo_bin("sluice-worker", "sluice-worker"))
        .args(["--redis", "bogus://x"])
        .env_remove("SLUICE_REDIS_URL")
        .env_remove("SLUICE_CONFIG")
        .env("SLUICE__WORKER__HTTP_LISTEN", "")
        .output()
        .expect("run sluice-worker");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("sluice-worker: Redis URL"), "{err}");
    // A refused connection: the cause once, not once in the message and again below it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = run(&format!("redis://127.0.0.1:{port}"), &["stats"]);
    let err = stderr(&out);
    assert_eq!(err.matches("refused").count(), 1, "{err}");
}

#[tokio::test]
async fn a_bad_queue_name_is_refused_here_not_by_redis() {
    let redis = RedisServer::start().await;
    let out = run(&redis.url(), &["status", "x", "--queue", "a b"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("sluice: invalid queue:"), "{err}");
    assert!(!err.contains("Redis"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_bad_config_names_the_key() {
    let out = run("redis://127.0.0.1:1", &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[producer]\nbatch_size = \"lots\"\n").expect("write");
    let out = Command::new(sluice())
        .arg("--config")
        .arg(&path)
        .arg("stats")
        .env_remove("SLUICE_REDIS_URL")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("batch_size"), "{}", stderr(&out));

    let out = Command::new(sluice())
        .arg("stats")
        .env("SLUICE__WORKER__CONCURRENCY", "0")
        .env_remove("SLUICE_REDIS_URL")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("worker.concurrency"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_dedupe_key_reused_for_another_request_is_reported_as_a_conflict() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let enqueue = |body: &str, extra: &[&str]| {
        let mut args = vec![
            "enqueue",
            "-q",
            "q",
            "-u",
            "mock",
            "--dedupe-key",
            "upload-7",
            "--body",
            body,
        ];
        args.extend_from_slice(extra);
        run(&url, &args)
    };
    let first = enqueue(r#"{"model": "m", "doc": 1}"#, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let id = stdout(&first)
        .split_whitespace()
        .nth(1)
        .expect("enqueued <id>")
        .to_string();

    // The same request again: a plain duplicate.
    let same = enqueue(r#"{"model": "m", "doc": 1}"#, &["--on-conflict", "error"]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert_eq!(
        stdout(&same).trim(),
        format!("duplicate of {id} in q (queued)")
    );

    // Another request under the same key: a conflict, exit 0 by default, 3 with --on-conflict error.
    let other = enqueue(r#"{"model": "m", "doc": 2}"#, &[]);
    assert_eq!(other.status.code(), Some(0), "{}", stderr(&other));
    assert_eq!(
        stdout(&other).trim(),
        format!("duplicate of {id} in q (queued) — its request differs from this one")
    );
    let refused = enqueue(r#"{"model": "m", "doc": 2}"#, &["--on-conflict", "error"]);
    assert_eq!(refused.status.code(), Some(3), "{}", stdout(&refused));
    assert!(stdout(&refused).contains("its request differs"));
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_cli_quietly() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let redis = RedisServer::start().await;
    let store = sluice_common::Store::connect(&redis.url(), Default::default())
        .await
        .expect("store");
    // Enough dead letters that the listing outlasts the pipe's buffer.
    sluice_tests::rig::raw_dead_letters(&store, "q", 2_000).await;
    let mut child = Command::new(sluice())
        .args([
            "--redis",
            &redis.url(),
            "dlq",
            "list",
            "-q",
            "q",
            "--limit",
            "2000",
        ])
        .env_remove("SLUICE_REDIS_URL")
        .env_remove("SLUICE_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    // `| head -1`: one line read, then the pipe closed.
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .expect("one line");
    assert!(!first.is_empty());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success() || out.status.signal() == Some(libc_sigpipe()),
        "ended {:?}: {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(stderr(&out), "", "a closed pipe is not an error to report");
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}
