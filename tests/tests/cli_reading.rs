//! The CLI for finding and reading jobs (#16 item 3), against a real Redis and, where jobs must
//! run, a real worker and the mock: `sluice jobs` paging over 100,000 jobs, `status` without a
//! queue and `--result` for `jq`, `wait`'s exit codes and `wait --all`, `enqueue --ids-out`
//! re-runs, `--body-file` / `--body -`, and `sluice init` for a client in another language.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_common::{NewJob, Schedule};
use sluice_tests::bins::cargo_bin;
use sluice_tests::events::Events;
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::BOUND;
use sluice_tests::rig::Rig;
use sluice_tests::worker_process::WorkerProcess;
use sluice_tests::{RedisServer, enqueue_all, scripted_job};

fn run(url: &str, args: &[&str]) -> Output {
    run_with_stdin(url, args, "")
}

fn run_with_stdin(url: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(cargo_bin("sluice-producer", "sluice"))
        .arg("--redis")
        .arg(url)
        .args(args)
        .env_remove("SLUICE_REDIS_URL")
        .env_remove("SLUICE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("sluice output")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every page of a paged listing (`args` plus `--json`), following the `more: --cursor C` the
/// CLI prints on stderr until it prints none; at most `max_pages`.
fn all_pages(url: &str, args: &[&str], max_pages: usize) -> Vec<Vec<serde_json::Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut a: Vec<&str> = args.to_vec();
        a.push("--json");
        if let Some(c) = &cursor {
            a.extend(["--cursor", c.as_str()]);
        }
        let o = run(url, &a);
        assert!(o.status.success(), "{}", err(&o));
        pages.push(serde_json::from_slice(&o.stdout).expect("a JSON page"));
        cursor = err(&o)
            .lines()
            .find_map(|l| l.strip_prefix("more: --cursor "))
            .map(str::to_string);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < max_pages, "the cursor never ends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pages_over_100k_jobs_listing_each_once_and_filters_by_state() {
    let redis = RedisServer::start().await;
    let p = sluice_tests::test_producer(&redis.url()).await;
    let n = 100_000;
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            let job = scripted_job(i, &[200]);
            if i % 1000 == 0 {
                // 100 of them scheduled an hour ahead.
                job.with_schedule(Schedule::After(Duration::from_secs(3600)))
            } else {
                job
            }
        })
        .collect();
    let ids: HashSet<String> = enqueue_all(&p, jobs).await.into_iter().collect();
    assert_eq!(ids.len(), n);

    let listed = all_pages(&redis.url(), &["jobs", "-q", "q", "--limit", "5000"], 1000);
    let pages = listed.len();
    let rows: usize = listed.iter().map(Vec::len).sum();
    let seen: HashSet<String> = listed
        .iter()
        .flatten()
        .map(|row| row["id"].as_str().expect("id").to_string())
        .collect();
    println!(
        "sluice jobs: {n} jobs in {pages} pages of --limit 5000, {rows} rows, {} distinct",
        seen.len()
    );
    assert_eq!(seen, ids, "every job listed");
    assert!(rows - seen.len() <= n / 100, "{rows} rows for {n} jobs");

    let o = run(
        &redis.url(),
        &[
            "jobs",
            "-q",
            "q",
            "--state",
            "scheduled",
            "--limit",
            "10000",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let page: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).expect("JSON");
    // One call looks at up to 10 × limit keys: the whole queue here.
    assert_eq!(page.len(), 100, "{}", err(&o));
    assert!(page.iter().all(|r| r["state"] == "scheduled"));
    let o = run(&redis.url(), &["jobs", "-q", "q", "--state", "finished"]);
    assert_eq!(o.status.code(), Some(2), "a bad state is a usage error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_finds_the_queue_result_pipes_json_and_wait_exit_codes_say_how_jobs_ended() {
    let rig = Rig::start(MockConfig::default()).await;
    let mut options = rig.options();
    options.queues = vec!["q".into(), "other".into()];
    options.max_attempts = 1;
    let _w = WorkerProcess::spawn("w", &options);
    let mut events = Events::new(&rig.redis.url(), "other").await;
    let mut ok = scripted_job(1, &[200]);
    ok.queue = "other".into();
    let mut bad = scripted_job(2, &[400]);
    bad.queue = "other".into();
    let ids = rig.enqueue(vec![ok, bad]).await;
    assert!(events.until(BOUND, |s| s.terminal_jobs() >= 2).await);

    // No --queue: found in `other`.
    let o = run(&rig.redis.url(), &["status", &ids[0], "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(s["queue"], "other");
    assert_eq!(s["status"], 200, "the HTTP status is a number: {s}");
    // --result: the upstream's body alone, valid JSON.
    let o = run(&rig.redis.url(), &["status", &ids[0], "--result"]);
    assert!(o.status.success(), "{}", err(&o));
    let body: serde_json::Value = serde_json::from_slice(&o.stdout).expect("the body is JSON");
    assert!(body["choices"].is_array(), "{body}");
    let o = run(&rig.redis.url(), &["status", &ids[1], "--result"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("is dead: it has no result"), "{}", err(&o));
    let o = run(&rig.redis.url(), &["status", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no job nope in any queue"), "{}", err(&o));

    // wait: 0 completed, 4 dead, 5 cancelled, 6 timed out.
    assert_eq!(
        run(&rig.redis.url(), &["wait", &ids[0]]).status.code(),
        Some(0)
    );
    assert_eq!(
        run(&rig.redis.url(), &["wait", &ids[1]]).status.code(),
        Some(4)
    );
    let mut later =
        scripted_job(3, &[200]).with_schedule(Schedule::After(Duration::from_secs(3600)));
    later.queue = "other".into();
    let mut cancel_me =
        scripted_job(4, &[200]).with_schedule(Schedule::After(Duration::from_secs(3600)));
    cancel_me.queue = "other".into();
    let later = rig.enqueue(vec![later, cancel_me]).await;
    let o = run(&rig.redis.url(), &["wait", &later[0], "--timeout", "0.3"]);
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    assert!(err(&o).contains("not finished"), "{}", err(&o));
    rig.producer
        .cancel("other", &later[1])
        .await
        .expect("cancel");
    assert_eq!(
        run(&rig.redis.url(), &["wait", &later[1]]).status.code(),
        Some(5)
    );

    // wait --all: a batch of 200 on `q`, one of them dead: exit 4 once nothing is left. The
    // queue is paused until the wait has taken its first count, so every job ends under it.
    rig.producer
        .store()
        .set_paused("q", true)
        .await
        .expect("pause");
    let mut batch: Vec<NewJob> = (10..209).map(|i| scripted_job(i, &[200])).collect();
    batch.push(scripted_job(209, &[400]));
    rig.enqueue(batch).await;
    let mut child = Command::new(cargo_bin("sluice-producer", "sluice"))
        .args(["--redis", &rig.redis.url(), "wait", "--all", "-q", "q"])
        .env_remove("SLUICE_REDIS_URL")
        .env_remove("SLUICE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice wait --all");
    let stderr = child.stderr.take().expect("stderr");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read stderr");
    assert!(first.starts_with("following 200 job(s) of q"), "{first}");
    rig.producer
        .store()
        .set_paused("q", false)
        .await
        .expect("resume");
    let o = child.wait_with_output().expect("wait --all");
    assert_eq!(o.status.code(), Some(4), "{}", out(&o));
    assert!(
        out(&o).contains("completed 199, dead 1, cancelled 0"),
        "{}",
        out(&o)
    );
}

#[tokio::test]
async fn ids_out_makes_a_rerun_of_a_file_enqueue_nothing_twice_and_bodies_come_from_files() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = dir.path().join("jobs.jsonl");
    let ids = dir.path().join("ids.tsv");
    let mut text = String::new();
    for i in 1..=300 {
        if i == 7 {
            text.push_str("{broken\n");
        } else {
            text.push_str(&format!("{{\"body\": {{\"n\": {i}}}}}\n"));
        }
    }
    std::fs::write(&jobs, &text).expect("write");
    let (jobs_s, ids_s) = (jobs.to_str().expect("utf-8"), ids.to_str().expect("utf-8"));
    let args = [
        "enqueue",
        "--file",
        jobs_s,
        "-u",
        "mock",
        "--ids-out",
        ids_s,
    ];
    let first = run(&redis.url(), &args);
    assert_eq!(
        first.status.code(),
        Some(1),
        "line 7 is rejected: {}",
        err(&first)
    );
    assert!(
        out(&first).starts_with("enqueued 299, deduplicated 0"),
        "{}",
        out(&first)
    );
    let recorded = std::fs::read_to_string(&ids).expect("ids file");
    assert_eq!(recorded.lines().count(), 300);
    assert!(
        recorded
            .lines()
            .nth(6)
            .is_some_and(|l| l.starts_with("7\t\trejected: ")),
        "{recorded}"
    );

    // Line 7 mended, the file run again: 299 duplicates (same ids), 1 new job.
    std::fs::write(&jobs, text.replace("{broken", "{\"body\": {\"n\": 7}}")).expect("write");
    let again = run(&redis.url(), &args);
    assert!(again.status.success(), "{}", err(&again));
    assert!(
        out(&again).starts_with("enqueued 1, deduplicated 299"),
        "{}",
        out(&again)
    );
    let stats = run(&redis.url(), &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("JSON");
    assert_eq!(stats["queues"][0]["counts"]["queued"], 300, "{stats}");
    let rows: Vec<&str> = std::fs::read_to_string(&ids)
        .expect("ids")
        .leak()
        .lines()
        .collect();
    assert_eq!(
        rows.iter().filter(|r| r.ends_with("\tduplicate")).count(),
        299
    );
    assert!(rows[6].ends_with("\tcreated"), "{}", rows[6]);

    // A 400 KB body: over what one argument may carry (128 KiB on Linux), fine from a file or stdin.
    let big = serde_json::json!({"model": "m", "text": "x".repeat(400_000)}).to_string();
    let body = dir.path().join("body.json");
    std::fs::write(&body, &big).expect("write");
    let o = run(
        &redis.url(),
        &[
            "enqueue",
            "-u",
            "mock",
            "--body-file",
            body.to_str().expect("utf-8"),
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let o = run_with_stdin(
        &redis.url(),
        &["enqueue", "-u", "mock", "--body", "-"],
        &big,
    );
    assert!(o.status.success(), "{}", err(&o));
    let o = run_with_stdin(
        &redis.url(),
        &["enqueue", "-u", "mock", "--body", "-"],
        "{oops",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("the body on stdin is not JSON"),
        "{}",
        err(&o)
    );
}

#[tokio::test]
async fn sluice_init_loads_the_library_for_a_client_that_sends_an_empty_id() {
    let redis = RedisServer::start().await;
    let o = run(&redis.url(), &["init"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).starts_with("sluice library 1."), "{}", out(&o));
    let o = run(&redis.url(), &["init", "--print-library"]);
    assert!(out(&o).starts_with("#!lua name=sluice"), "{}", out(&o));

    // A foreign client: FCALL only, an empty id, no registration of its own.
    let mut conn = redis.client().await;
    let spec = r#"{"upstream":"mock","request":{"method":"POST","path":"/v1/chat/completions","body":{}}}"#;
    let reply: Vec<String> = redis::cmd("FCALL")
        .arg("sluice_enqueue")
        .arg(1)
        .arg("sluice:{foreign}:")
        .arg("")
        .arg(spec)
        .arg("")
        .arg(0)
        .arg(0)
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("enqueue");
    assert_eq!(reply[0], "created");
    assert!(reply[1].starts_with("j-"), "a generated id: {reply:?}");
    let o = run(&redis.url(), &["stats"]);
    assert!(
        out(&o).contains("foreign"),
        "the function registered the queue: {}",
        out(&o)
    );
    let o = run(&redis.url(), &["status", &reply[1]]);
    assert!(out(&o).contains("queued"), "{}{}", out(&o), err(&o));
}

#[tokio::test]
async fn dlq_list_pages_through_every_dead_letter_once() {
    let redis = RedisServer::start().await;
    let store = sluice_common::Store::connect(&redis.url(), Default::default())
        .await
        .expect("store");
    let n = 250;
    sluice_tests::rig::raw_dead_letters(&store, "q", n).await;
    let listed = all_pages(
        &redis.url(),
        &["dlq", "list", "-q", "q", "--limit", "100"],
        10,
    );
    let pages = listed.len();
    let mut seen = HashSet::new();
    for e in listed.iter().flatten() {
        assert!(
            seen.insert(e["entry"].as_str().expect("entry").to_string()),
            "listed twice: {e}"
        );
    }
    assert_eq!(seen.len(), n, "in {pages} pages");
    assert_eq!(pages, 3);
}
