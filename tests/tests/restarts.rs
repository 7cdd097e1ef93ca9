//! Redis restarts under load, with the append-only file on.
//!
//! - `appendfsync always`: Redis is killed (-9) and later shut down cleanly while producers enqueue
//!   and three workers run jobs. Workers and the producer reconnect by themselves; nothing a
//!   producer was told "enqueued" is lost, and every job completes exactly once.
//! - `appendfsync everysec`: a machine crash can lose the last second that was written but not
//!   yet fsynced. The test makes that loss happen for real — it copies the AOF as it stands on
//!   disk, lets the run go on, kills Redis and puts the copy back — and checks what
//!   docs/OPERATIONS.md says it implies: everything acknowledged before the copy is there; jobs
//!   enqueued after it may be gone (the producer re-enqueues them by id, which is idempotent);
//!   jobs completed after it run again (a duplicate call) yet end completed once; none is stuck.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_common::{JobState, reply};
use sluice_producer::Producer;
use sluice_tests::events::Events;
use sluice_tests::mock::MockConfig;
use sluice_tests::rig::{LONG_BOUND as BOUND, Rig, now_ms};
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};
use sluice_tests::{RedisServer, chat_job};

const BATCH: usize = 20;

fn job_id(i: usize) -> String {
    format!("j{i:06}")
}

/// A producer enqueuing `total` jobs with client-chosen ids, `BATCH` at a time every few ms; a
/// batch that fails (Redis away) is sent again, same ids, until Redis takes it.
struct Feed {
    acked: Arc<Mutex<Vec<String>>>,
    failed_calls: Arc<AtomicU64>,
    /// Longest stretch without an acknowledged batch while Redis was away.
    longest_outage_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    fn start(producer: Producer, total: usize, pause: Duration) -> Feed {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed_calls = Arc::new(AtomicU64::new(0));
        let longest_outage_ms = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (acked, failed, longest) = (
                acked.clone(),
                failed_calls.clone(),
                longest_outage_ms.clone(),
            );
            async move {
                let mut next = 0;
                let mut failing_since: Option<Instant> = None;
                while next < total {
                    let jobs = (next..(next + BATCH).min(total))
                        .map(|i| chat_job(i).with_id(job_id(i)))
                        .collect::<Vec<_>>();
                    let results = producer.enqueue_batch(jobs).await;
                    if results.iter().all(Result::is_ok) {
                        if let Some(since) = failing_since.take() {
                            let ms = since.elapsed().as_millis() as u64;
                            longest.fetch_max(ms, Ordering::Relaxed);
                        }
                        acked
                            .lock()
                            .expect("acked")
                            .extend(results.into_iter().flatten().map(|e| e.id));
                        next += BATCH;
                        tokio::time::sleep(pause).await;
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failing_since.get_or_insert_with(Instant::now);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Feed {
            acked,
            failed_calls,
            longest_outage_ms,
            task,
        }
    }

    fn acked(&self) -> Vec<String> {
        self.acked.lock().expect("acked").clone()
    }

    async fn finish(mut self) -> (Vec<String>, u64, u64) {
        (&mut self.task).await.expect("feed task");
        (
            self.acked(),
            self.failed_calls.load(Ordering::Relaxed),
            self.longest_outage_ms.load(Ordering::Relaxed),
        )
    }
}

/// The first `completed` event at or after `from_ms` (events entry ids carry Redis's clock).
async fn first_completion_after(redis: &RedisServer, from_ms: u64) -> Option<u64> {
    let mut r = redis.client().await;
    let v: redis::Value = redis::cmd("XRANGE")
        .arg("sluice:{q}:events")
        .arg(format!("{from_ms}-0"))
        .arg("+")
        .arg("COUNT")
        .arg(100_000)
        .query_async(&mut r)
        .await
        .ok()?;
    reply::stream_entries(&v)?
        .into_iter()
        .find(|(_, f)| f.get("state").map(String::as_str) == Some("completed"))
        .and_then(|(entry, _)| entry.split('-').next()?.parse().ok())
}

async fn counts(producer: &Producer) -> HashMap<String, i64> {
    sluice_tests::rig::counts(producer.store(), "q").await
}

/// A run under way on `redis`: the rig (the mock, a producer), a feed of `total` jobs at a steady
/// pace, three workers and a reader of the queue's events.
struct Run {
    rig: Rig,
    options: WorkerOptions,
    workers: Vec<WorkerProcess>,
    feed: Feed,
    events: Events,
}

impl Run {
    async fn start(redis: RedisServer, total: usize) -> Run {
        let rig = Rig::start_on(
            redis,
            MockConfig {
                latency_ms: 10,
                spread_ms: 10,
                ..MockConfig::default()
            },
        )
        .await;
        let mut options = rig.options();
        options.concurrency = 50;
        options.lease_ms = 2_000;
        let workers = rig.spawn_n(3, &options);
        let feed = Feed::start(rig.producer.clone(), total, Duration::from_millis(5));
        let events = rig.events().await;
        Run {
            rig,
            options,
            workers,
            feed,
            events,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aof_always_kill_9_and_clean_shutdown_mid_run_lose_nothing_acknowledged() {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let total = 6_000;
    // Every field bound: what a pattern leaves out is dropped (the workers killed) at once.
    let Run {
        rig: Rig {
            mut redis,
            mock: _mock,
            producer,
        },
        options: _options,
        workers,
        feed,
        mut events,
    } = Run::start(redis, total).await;

    let mut recoveries = Vec::new();
    for (i, step) in ["kill -9", "clean shutdown"].into_iter().enumerate() {
        // Let the run get going (well under way, with jobs in flight) before each restart.
        let want = 1_000 * (i as u64 + 1);
        let going = events.until(BOUND, |s| s.count("completed") >= want).await;
        assert!(going, "{step}: the run never reached {want} completed");
        let t_down = now_ms();
        if step == "kill -9" {
            redis.restart_hard();
        } else {
            redis.restart_clean();
        }
        let t_up = now_ms();
        recoveries.push((step, t_down, t_up));
    }
    let (acked, failed_calls, longest_outage) = feed.finish().await;
    assert_eq!(acked.len(), total, "the producer got every job in");
    let done = events
        .until(BOUND, |s| s.count("completed") >= total as u64)
        .await;
    let c = counts(&producer).await;
    assert!(
        done,
        "only {} completed: {c:?}",
        events.seen.count("completed")
    );

    let mut lost = 0;
    for id in &acked {
        match producer.status("q", id).await.expect("status") {
            Some(s) => assert_eq!(s.state, JobState::Completed, "job {id}"),
            None => lost += 1,
        }
        assert!(
            events.seen.job(id, "completed") <= 1,
            "job {id} completed twice"
        );
    }
    assert_eq!(lost, 0, "acknowledged jobs lost with appendfsync always");
    assert_eq!(c.get("completed").copied(), Some(total as i64), "{c:?}");
    assert_eq!(c.get("running").copied().unwrap_or(0), 0, "{c:?}");

    let mut report = Vec::new();
    for (step, t_down, t_up) in recoveries {
        let first = first_completion_after(&redis, t_up)
            .await
            .expect("completions resumed");
        report.push(format!(
            "{step}: Redis down→up {} ms, first completion {} ms after the restart began",
            t_up - t_down,
            first.saturating_sub(t_down)
        ));
    }
    for w in &workers {
        assert!(
            !w.log().contains("panicked"),
            "worker {} panicked: {}",
            w.name,
            w.log()
        );
    }
    println!(
        "aof always: {total} jobs, lost 0, completed twice 0, producer calls refused while down {failed_calls} \
         (longest {longest_outage} ms without an enqueue), completions refused as already done {}; {}",
        c.get("refused_completions").copied().unwrap_or(0),
        report.join("; ")
    );
}

/// Copies the data dir's AOF (`appendonlydir`) as it is on disk now.
fn snapshot_aof(dir: &Path, to: &Path) {
    let aof = dir.join("appendonlydir");
    std::fs::create_dir_all(to).expect("snapshot dir");
    for entry in std::fs::read_dir(&aof).expect("read appendonlydir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy an AOF file");
    }
}

fn restore_aof(from: &Path, dir: &Path) {
    let aof = dir.join("appendonlydir");
    std::fs::remove_dir_all(&aof).expect("remove appendonlydir");
    std::fs::create_dir_all(&aof).expect("recreate appendonlydir");
    for entry in std::fs::read_dir(from).expect("read snapshot") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), aof.join(entry.file_name())).expect("restore an AOF file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aof_everysec_losing_the_unsynced_second_loses_only_what_came_after_and_nothing_is_stuck() {
    let redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--auto-aof-rewrite-percentage",
        "0",
    ])
    .await;
    let total = 4_000;
    let Run {
        rig: Rig {
            mut redis,
            mock,
            producer,
        },
        options,
        workers: _workers,
        feed,
        mut events,
    } = Run::start(redis, total).await;
    let going = events.until(BOUND, |s| s.count("completed") >= 1_000).await;
    assert!(going, "the run never got going");

    // What a machine crash keeps: the file as it was up to about a second before.
    let saved = tempfile::tempdir().expect("temp dir");
    let data_dir = redis.dir().expect("a local redis-server").to_path_buf();
    let acked_before = feed.acked().len();
    let completed_before = events.seen.count("completed");
    snapshot_aof(&data_dir, saved.path());
    // The run goes on past the copy (what the crash will take away)...
    let more = events
        .until(BOUND, |s| s.count("completed") >= completed_before + 300)
        .await;
    assert!(more, "the run stopped after the copy");
    // ...then the machine "crashes": the second that never reached the disk is gone.
    redis.stop_hard();
    let acked_at_crash = feed.acked().len();
    restore_aof(saved.path(), &data_dir);
    redis.start_again();
    let (acked, _, _) = feed.finish().await;
    assert_eq!(acked.len(), total);

    // The producer's answer for jobs after the copy may be gone: re-enqueue the missing by id.
    let mut missing = Vec::new();
    for (i, id) in acked.iter().enumerate() {
        if producer.status("q", id).await.expect("status").is_none() {
            missing.push((i, id.clone()));
        }
    }
    for (i, _) in &missing {
        assert!(
            *i >= acked_before,
            "job {} acknowledged before the copy was lost",
            acked[*i]
        );
    }
    let redo: Vec<_> = missing
        .iter()
        .map(|(i, id)| chat_job(*i).with_id(id.clone()))
        .collect();
    for r in producer.enqueue_batch(redo).await {
        r.expect("re-enqueue a lost job");
    }

    // Everything ends completed, once, with nothing left running past the lease.
    let mut ended = false;
    let deadline = tokio::time::Instant::now() + BOUND;
    while tokio::time::Instant::now() < deadline {
        let c = counts(&producer).await;
        let live: i64 = ["queued", "running", "retrying", "scheduled"]
            .iter()
            .map(|k| c.get(*k).copied().unwrap_or(0))
            .sum();
        if live == 0 {
            ended = true;
            break;
        }
        events.read(Duration::from_millis(200)).await;
    }
    let c = counts(&producer).await;
    assert!(ended, "jobs still live after the crash: {c:?}");
    let mut completed = 0;
    for id in &acked {
        let s = producer
            .status("q", id)
            .await
            .expect("status")
            .expect("every job exists after the re-enqueue");
        assert_eq!(s.state, JobState::Completed, "job {id}");
        completed += 1;
    }
    assert_eq!(completed, total);
    // The gauge and the jobs agree (a rolled-back completion was counted once in the end).
    assert_eq!(c.get("completed").copied(), Some(total as i64), "{c:?}");
    let calls = mock.stats(true).jobs.expect("per-job calls");
    let called_again = acked
        .iter()
        .filter(|id| calls.get(*id).is_some_and(|c| c.len() > 1))
        .count();
    println!(
        "aof everysec: {total} jobs; the crash took away what came after the copy: {} of {} jobs \
         acknowledged after it were gone and re-enqueued, {} jobs were called again (their \
         completion was lost), lost 0, all {completed} completed; lease {} ms",
        missing.len(),
        acked_at_crash - acked_before,
        called_again,
        options.lease_ms,
    );
}
