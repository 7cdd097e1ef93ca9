//! Sluice on a real three-master Redis Cluster (one replica each, formed by
//! `redis-cli --cluster create`): the full job cycle, a partitioned queue spread over all three
//! masters, and the failover of a master during a run.

use std::collections::HashMap;
use std::time::Duration;

use sluice_common::keys::{QueueKeys, partition};
use sluice_common::{Config, JobState, NewJob};
use sluice_producer::Producer;
use sluice_tests::events::Events;
use sluice_tests::mock::{MockConfig, MockServer};
use sluice_tests::redis_cluster::RedisCluster;
use sluice_tests::rig::BOUND;
use sluice_tests::scrape::Scrape;
use sluice_tests::worker_process::{WorkerOptions, WorkerProcess};
use sluice_tests::{chat_job, scripted_job};

fn config(url: &str, partitions: &[(&str, u32)], wait_replicas: u32) -> Config {
    let mut config = Config::defaults();
    config.redis.url = url.to_string();
    config.redis.wait_replicas = wait_replicas;
    config.queues.events_maxlen = 1_000_000;
    config.queues.partitions = partitions
        .iter()
        .map(|(q, p)| (q.to_string(), *p))
        .collect();
    config
}

async fn producer(config: &Config) -> Producer {
    Producer::from_config(config)
        .await
        .expect("connect a producer to the cluster")
}

fn on(queue: &str, mut job: NewJob) -> NewJob {
    job.queue = queue.to_string();
    job
}

/// Counts of a queue (summed over its partitions).
async fn counts(producer: &Producer, queue: &str) -> HashMap<String, i64> {
    producer
        .store()
        .stats(queue)
        .await
        .expect("stats")
        .counts
        .into_iter()
        .collect()
}

/// A queue name whose `p` partitions' slots are served by `p` different masters.
async fn spread_name(cluster: &RedisCluster, p: u32) -> String {
    for i in 0.. {
        let name = format!("hot{i}");
        let mut masters = Vec::new();
        for k in 0..p {
            let stream = QueueKeys::new(&partition(&name, k)).stream();
            masters.push(cluster.master_of(&stream).await);
        }
        masters.sort();
        masters.dedup();
        if masters.len() == p as usize {
            return name;
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycle_on_a_three_master_cluster_dedupe_retries_dead_letters_and_reclaim() {
    let cluster = RedisCluster::start(&[]).await;
    let mock = MockServer::start(MockConfig {
        latency_ms: 150,
        ..MockConfig::default()
    })
    .await;
    let config = config(&cluster.url(), &[], 0);
    let producer = producer(&config).await;
    assert!(producer.store().is_cluster());
    let mut options = WorkerOptions::new(&cluster.url(), &mock.url());
    options.concurrency = 40;
    options.lease_ms = 1_000;
    // The fleet-wide limiter and circuit run too (their keys are the upstream's own slot).
    options.extra = "rpm = 30000\n".into();
    let mut w1 = WorkerProcess::spawn("w1", &options);
    let mut w2 = WorkerProcess::spawn("w2", &options);

    // Dedupe: 300 keyed jobs, then the same 300 keys again.
    let keyed = |i: usize| {
        let mut j = chat_job(i);
        j.dedupe_key = Some(format!("key-{i}"));
        j
    };
    let first = producer.enqueue_batch((0..300).map(keyed).collect()).await;
    let again = producer.enqueue_batch((0..300).map(keyed).collect()).await;
    let mut ids = Vec::new();
    for (a, b) in first.into_iter().zip(again) {
        let (a, b) = (a.expect("enqueue"), b.expect("enqueue again"));
        assert!(
            a.created && !b.created,
            "the second enqueue of a key is a duplicate"
        );
        assert_eq!(a.id, b.id, "a duplicate names the first job");
        ids.push(a.id);
    }
    // Retries through the delayed ZSET (500, 503, then 200) and dead letters (400).
    let retried: Vec<String> = sluice_tests::enqueue_all(
        &producer,
        (0..8)
            .map(|i| scripted_job(1000 + i, &[500, 503, 200]))
            .collect(),
    )
    .await;
    let invalid: Vec<String> = sluice_tests::enqueue_all(
        &producer,
        (0..20).map(|i| scripted_job(2000 + i, &[400])).collect(),
    )
    .await;

    // Kill one worker while its calls are in flight: the other reclaims them after the lease.
    let mut events = Events::new(&cluster.url(), "q").await;
    assert!(
        events.until(BOUND, |s| s.count("completed") >= 60).await,
        "no progress on the cluster"
    );
    w1.kill9();
    let total = ids.len() + retried.len() + invalid.len();
    assert!(
        events.until(BOUND, |s| s.terminal_jobs() >= total).await,
        "only {} of {total} jobs ended",
        events.seen.terminal_jobs()
    );

    let c = counts(&producer, "q").await;
    let count = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(
        count("completed"),
        (ids.len() + retried.len()) as i64,
        "{c:?}"
    );
    assert_eq!(count("dead"), invalid.len() as i64, "{c:?}");
    for live in ["queued", "running", "retrying", "scheduled"] {
        assert_eq!(count(live), 0, "{live}: {c:?}");
    }
    let record = mock.stats(true).jobs.expect("per-job calls");
    for id in ids.iter().chain(&retried) {
        assert_eq!(events.seen.job(id, "completed"), 1, "job {id}");
    }
    let addr = w2
        .http_addr(Duration::from_secs(10))
        .await
        .expect("w2's /metrics");
    let reclaimed = Scrape::fetch(addr)
        .await
        .sum("sluice_jobs_reclaimed_total", &[]);
    for id in &retried {
        assert_eq!(
            record.get(id).map_or(0, Vec::len),
            3,
            "job {id}: 500, 503, 200"
        );
        assert!(events.seen.job(id, "retrying") >= 2, "job {id}");
    }
    for id in &invalid {
        let status = producer
            .status("q", id)
            .await
            .expect("status")
            .expect("job");
        assert_eq!(status.state, JobState::Dead);
    }
    let dead = producer
        .store()
        .dead_list("q", None, 100)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), invalid.len());
    assert!(dead.iter().all(|d| d.reason == "invalid"), "{dead:?}");
    assert!(
        reclaimed > 0.0,
        "the killed worker's in-flight jobs were not reclaimed by the other"
    );
    let stats = producer.store().stats("q").await.expect("stats");
    assert_eq!(stats.pending, 0, "entries left pending: {stats:?}");
    let mut conn = producer.store().connection();
    let limiter_keys: i64 = redis::cmd("EXISTS")
        .arg("sluice:{u:mock}:rpm")
        .query_async(&mut conn)
        .await
        .expect("EXISTS on the limiter's slot");
    assert_eq!(
        limiter_keys, 1,
        "the limiter's bucket is not on the cluster"
    );
    let upstreams = producer.store().upstream_states().await.expect("upstreams");
    let mock_state = upstreams
        .iter()
        .find(|u| u.upstream == "mock")
        .expect("mock registered");
    assert_eq!(mock_state.circuit, "closed", "{mock_state:?}");
    println!(
        "cluster full cycle: {total} jobs (300 keyed, each enqueued twice: 300 duplicates \
         refused; 8 retried twice; 20 dead), completed {}, dead {}, reclaimed after kill -9: \
         {reclaimed}",
        count("completed"),
        count("dead"),
    );
    // The response cache on the cluster (its keys are in the queue's slot): three identical
    // jobs in one batch make one call (a leader and two followers), a fourth is a hit.
    let calls = mock.stats(false).calls;
    let ask = || {
        NewJob::post(
            "q",
            "mock",
            "/v1/chat/completions",
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "cached on a cluster"}]}),
        )
        .with_cache(Duration::from_secs(600))
    };
    let flight = sluice_tests::enqueue_all(&producer, (0..3).map(|_| ask()).collect()).await;
    assert!(
        events
            .until(BOUND, |s| flight
                .iter()
                .all(|id| s.job(id, "completed") == 1))
            .await
    );
    let hit = producer.enqueue(ask()).await.expect("enqueue");
    assert_eq!(hit.state, Some(JobState::Completed), "a hit at enqueue");
    assert_eq!(mock.stats(false).calls, calls + 1, "one call for four jobs");
    let c = counts(&producer, "q").await;
    assert_eq!(
        (
            c.get("cache_followers").copied(),
            c.get("cache_hits").copied()
        ),
        (Some(2), Some(1)),
        "{c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_spreads_over_all_three_masters_and_completes_every_job_once() {
    let cluster = RedisCluster::start(&[]).await;
    let mock = MockServer::start(MockConfig {
        latency_ms: 5,
        ..MockConfig::default()
    })
    .await;
    let queue = spread_name(&cluster, 3).await;
    let config = config(&cluster.url(), &[(&queue, 3)], 0);
    let producer = producer(&config).await;
    let mut options = WorkerOptions::new(&cluster.url(), &mock.url());
    options.queues = vec![queue.clone()];
    options.extra = format!("\n[queues.partitions]\n{queue} = 3\n");
    let _workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn(&format!("p{i}"), &options))
        .collect();

    // Half keyed (enqueued twice: the second time all duplicates), half by id.
    let n = 3000;
    let job = |i: usize| {
        let mut j = on(&queue, chat_job(i));
        if i.is_multiple_of(2) {
            j.dedupe_key = Some(format!("order-{i}"));
        }
        j
    };
    let ids = sluice_tests::enqueue_all(&producer, (0..n).map(job).collect()).await;
    // And 30 the upstream refuses (400) on their first call: dead letters spread over the
    // partitions (a re-driven one completes on its second call).
    let invalid = 30;
    let dead_ids = sluice_tests::enqueue_all(
        &producer,
        (0..invalid)
            .map(|i| on(&queue, scripted_job(10_000 + i, &[400])))
            .collect(),
    )
    .await;
    let again = producer
        .enqueue_batch((0..n).step_by(2).map(job).collect())
        .await;
    for r in again {
        assert!(
            !r.expect("enqueue again").created,
            "a keyed job enqueued twice"
        );
    }

    let mut events = Vec::new();
    for k in 0..3 {
        events.push(Events::new(&cluster.url(), &partition(&queue, k)).await);
    }
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let ended: usize = events.iter().map(|e| e.seen.terminal_jobs()).sum();
        if ended >= n + invalid {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {ended} of {} ended",
            n + invalid
        );
        for e in &mut events {
            e.read(Duration::from_millis(100)).await;
        }
    }

    let record = mock.stats(true).jobs.expect("per-job calls");
    let mut per_partition = Vec::new();
    for (k, e) in events.iter().enumerate() {
        let part = partition(&queue, k as u32);
        let mine = ids
            .iter()
            .filter(|id| e.seen.job(id, "completed") == 1)
            .count();
        per_partition.push(mine);
        let stats = producer.store().stats(&part).await.expect("stats");
        assert_eq!(stats.pending, 0, "{part}: {stats:?}");
        assert_eq!(
            stats.counts.get("completed").copied(),
            Some(mine as i64),
            "{part}"
        );
    }
    for id in &ids {
        let completions: u32 = events.iter().map(|e| e.seen.job(id, "completed")).sum();
        assert_eq!(completions, 1, "job {id} completed {completions} times");
        assert_eq!(
            record.get(id).map_or(0, Vec::len),
            1,
            "job {id} called once"
        );
    }
    assert!(
        per_partition.iter().all(|&m| m > n / 6),
        "uneven spread {per_partition:?}"
    );
    let sum = producer.store().stats(&queue).await.expect("stats");
    assert_eq!(sum.partitions, 3);
    let mut conn = producer.store().connection();
    let recorded: Option<u32> = redis::cmd("HGET")
        .arg("sluice:partitions")
        .arg(&queue)
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(
        recorded,
        Some(3),
        "the workers record the queue's partition count"
    );
    assert_eq!(sum.counts.get("completed").copied(), Some(n as i64));
    assert_eq!(
        sum.counts.get("deduplicated").copied(),
        Some((n / 2) as i64)
    );
    // A keyed job is found by id in whichever partition holds it.
    let status = producer.status(&queue, &ids[0]).await.expect("status");
    assert_eq!(status.map(|s| s.state), Some(JobState::Completed));

    // `sluice stats` on the cluster sums the partitions.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sluice.toml");
    std::fs::write(
        &file,
        format!(
            "[redis]\nurl = \"{}\"\n[queues.partitions]\n{queue} = 3\n",
            cluster.url()
        ),
    )
    .expect("write config");
    // `sluice --config FILE …`: its output, and its stdout once it succeeded.
    let run = |args: &[&str]| {
        std::process::Command::new(sluice_tests::bins::cargo_bin("sluice-producer", "sluice"))
            .arg("--config")
            .arg(&file)
            .args(args)
            .env_remove("SLUICE_REDIS_URL")
            .output()
            .expect("run sluice")
    };
    let cli = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json: serde_json::Value =
        serde_json::from_str(&cli(&["stats", "--json", &queue])).expect("stats json");
    assert_eq!(json["queues"][0]["counts"]["completed"], n as i64);
    assert_eq!(json["queues"][0]["counts"]["dead"], invalid as i64);
    assert_eq!(json["queues"][0]["partitions"], 3);

    // `sluice dlq` takes the partitions in turn: every dead letter listed (with its partition),
    // then purged.
    let listed = cli(&["dlq", "list", "-q", &queue, "--limit", "100"]);
    let rows: Vec<&str> = listed.lines().filter(|l| l.contains(" invalid ")).collect();
    assert_eq!(rows.len(), invalid, "{listed}");
    for k in 0..3 {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!("{queue}#{k} "))),
            "no dead letter listed from partition {k}: {listed}"
        );
    }
    // As JSON each entry names its partition.
    let json: serde_json::Value = serde_json::from_str(&cli(&[
        "dlq", "list", "-q", &queue, "--limit", "100", "--json",
    ]))
    .expect("dlq list --json");
    let in_json: Vec<&str> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["queue"].as_str().expect("queue field"))
        .collect();
    assert_eq!(in_json.len(), invalid);
    assert!(
        in_json.iter().all(|q| q.starts_with(&format!("{queue}#"))),
        "{in_json:?}"
    );

    // An entry id on the whole partitioned queue is refused (ids are unique per partition only).
    let entry = rows[0].split_whitespace().nth(1).expect("entry id column");
    let out = run(&["dlq", "purge", "-q", &queue, "--entry", entry]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "queue {queue} has 3 partitions and an entry id is only unique within one"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Re-drive names single partitions (#0 and #1): their dead jobs run again and complete,
    // once; then purge --all takes what is left, all of it in #2.
    let dead_in = |k: usize| -> Vec<&String> {
        dead_ids
            .iter()
            .filter(|id| events[k].seen.job(id, "dead") == 1)
            .collect()
    };
    let redrive: Vec<&String> = dead_in(0).into_iter().chain(dead_in(1)).collect();
    let rest = dead_in(2).len();
    assert_eq!(
        redrive.len() + rest,
        invalid,
        "every dead job seen dead once"
    );
    let mut redriven = 0;
    for k in 0..2 {
        let out = cli(&["dlq", "redrive", "-q", &partition(&queue, k), "--all"]);
        redriven += dead_in(k as usize).len();
        assert_eq!(
            out.trim(),
            format!(
                "re-driven {}, not re-drivable (no job hash; kept until purge) 0, skipped 0",
                dead_in(k as usize).len()
            ),
            "partition {k}"
        );
    }
    let done = |events: &[Events]| {
        redrive.iter().all(|id| {
            events
                .iter()
                .map(|e| e.seen.job(id, "completed"))
                .sum::<u32>()
                == 1
        })
    };
    let deadline = tokio::time::Instant::now() + BOUND;
    while !done(&events) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "re-driven jobs did not complete"
        );
        for e in &mut events {
            e.read(Duration::from_millis(100)).await;
        }
    }
    let record = mock.stats(true).jobs.expect("per-job calls");
    for id in &redrive {
        assert_eq!(
            record.get(*id).map_or(0, Vec::len),
            2,
            "re-driven job {id}: its 400, then its 200"
        );
        let status = producer.status(&queue, id).await.expect("status");
        assert_eq!(status.map(|s| s.state), Some(JobState::Completed), "{id}");
    }
    let purged = cli(&["dlq", "purge", "-q", &queue, "--all"]);
    assert_eq!(purged.trim(), format!("purged {rest}"));
    let left = cli(&["dlq", "list", "-q", &queue, "--limit", "100"]);
    assert!(
        !left.lines().any(|l| l.contains(" invalid ")),
        "dead letters left after redrive and purge: {left}"
    );
    let sum = producer.store().stats(&queue).await.expect("stats");
    assert_eq!(
        sum.counts.get("completed").copied(),
        Some((n + redriven) as i64)
    );
    println!(
        "cluster partitions: {n} jobs on {queue}#0..2 (three masters), per partition \
         {per_partition:?}, completed once each, {} duplicates refused; {invalid} dead letters \
         listed from all three partitions by `sluice dlq list`; {redriven} re-driven from #0 and \
         #1 (completed once each), {rest} purged from #2",
        n / 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_of_a_master_during_a_run_loses_no_acknowledged_job() {
    let mut cluster = RedisCluster::start(&[]).await;
    let mock = MockServer::start(MockConfig {
        latency_ms: 20,
        spread_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let queue = spread_name(&cluster, 3).await;
    // Enqueues wait for one replica (WAIT 1): what a producer was told is stored is on two nodes.
    let config = config(&cluster.url(), &[(&queue, 3)], 1);
    let producer = producer(&config).await;
    let mut options = WorkerOptions::new(&cluster.url(), &mock.url());
    options.queues = vec![queue.clone()];
    options.lease_ms = 1_500;
    options.extra = format!("\n[queues.partitions]\n{queue} = 3\n");
    let _workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn(&format!("f{i}"), &options))
        .collect();
    let victim = cluster
        .master_of(&QueueKeys::new(&partition(&queue, 0)).stream())
        .await;

    // Enqueue 6000 jobs in batches of 200 while the master of partition 0 is killed after the
    // 10th batch. Its replica takes over with no replica of its own, so enqueues to partition 0
    // are refused as not replicated (WAIT 1 answers 0) until the killed node is restarted and
    // rejoins as the new master's replica; a refused job is sent again with the same id (safe).
    let n = 6000;
    let mut acked: Vec<String> = Vec::new();
    let mut refused = 0;
    let mut failover_ms = 0;
    let mut down = false;
    for b in 0..n / 200 {
        if b == 10 {
            let t = std::time::Instant::now();
            cluster.fail_master(victim).await;
            failover_ms = t.elapsed().as_millis();
            down = true;
        }
        let mut batch: Vec<NewJob> = (b * 200..(b + 1) * 200)
            .map(|i| {
                let mut j = on(&queue, chat_job(i));
                j.id = Some(sluice_common::JobId::generate().0);
                j
            })
            .collect();
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let results = producer.enqueue_batch(batch.clone()).await;
            let mut failed = Vec::new();
            for (job, r) in batch.into_iter().zip(results) {
                match r {
                    Ok(e) => acked.push(e.id),
                    Err(e) => {
                        if refused == 0 {
                            println!("first refusal after the failover: {e}");
                        }
                        refused += 1;
                        failed.push(job);
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let last = producer.enqueue_batch(failed).await;
                panic!(
                    "enqueue never recovered: {:?}",
                    last.iter().find_map(|r| r.as_ref().err())
                );
            }
            if down {
                cluster.restart(victim).await;
                down = false;
            }
            batch = failed;
        }
    }
    assert_eq!(acked.len(), n);

    // Every acknowledged job ends completed.
    let deadline = tokio::time::Instant::now() + BOUND;
    let completed = loop {
        let c = counts(&producer, &queue).await;
        let done = c.get("completed").copied().unwrap_or(0);
        if done >= n as i64 {
            break done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {n} completed: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(completed, n as i64, "completed more than once in Redis");
    let mut lost = 0;
    for id in &acked {
        match producer.status(&queue, id).await.expect("status") {
            Some(s) if s.state == JobState::Completed => {}
            _ => lost += 1,
        }
    }
    assert_eq!(lost, 0, "acknowledged jobs lost in the failover");
    let c = counts(&producer, &queue).await;
    for live in ["queued", "running", "retrying", "scheduled", "dead"] {
        assert_eq!(c.get(live).copied().unwrap_or(0), 0, "{live}: {c:?}");
    }
    let record = mock.stats(true).jobs.expect("per-job calls");
    let called_again = acked
        .iter()
        .filter(|id| record.get(*id).map_or(0, Vec::len) > 1)
        .count();
    println!(
        "cluster failover: {n} jobs acknowledged (WAIT 1), master of {queue}#0 killed after \
         2000, replica serving after {failover_ms} ms, {refused} enqueues refused until the \
         node rejoined (then sent again), \
         lost {lost}, completed {completed} (once each), {called_again} jobs called again \
         ({:.2}%)",
        100.0 * called_again as f64 / n as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_acl_users_run_a_job_cycle_on_a_cluster() {
    let acl_dir = tempfile::tempdir().expect("temp dir");
    let (acl, password) = sluice_tests::certs::acl_file(acl_dir.path());
    let cluster = RedisCluster::start(&["--aclfile", acl.to_str().expect("path")]).await;
    let url_of = |user: &str| {
        cluster.url().replace(
            "redis+cluster://",
            &format!("redis+cluster://{user}:{password}@"),
        )
    };
    let mock = MockServer::start(MockConfig::default()).await;
    // The worker user loads the library on every primary, finds each queue's primary
    // (CLUSTER SLOTS) and runs the cycle, the limiter included.
    let mut options = WorkerOptions::new(&url_of("sluice-worker"), &mock.url());
    options.extra = "rpm = 60000\n".into();
    let mut worker = WorkerProcess::spawn("acl-w", &options);
    // The producer user may not load the library: the worker (up once it serves /metrics) has.
    worker
        .ready(BOUND)
        .await
        .unwrap_or_else(|| panic!("worker did not start:\n{}", worker.log()));
    let producer = producer(&config(&url_of("sluice-producer"), &[], 0)).await;
    let mut jobs: Vec<NewJob> = (0..5).map(|i| scripted_job(i, &[200])).collect();
    jobs.push(scripted_job(5, &[503, 200]));
    jobs.push(scripted_job(6, &[400]));
    let ids = sluice_tests::enqueue_all(&producer, jobs).await;
    // The producer user waits on the events (a pooled cluster connection) and reads status.
    for (i, id) in ids.iter().enumerate() {
        let done = producer.wait("q", id, BOUND).await;
        let done = done.unwrap_or_else(|e| panic!("job {i}: {e}\n{}", worker.log()));
        let want = if i == 6 {
            JobState::Dead
        } else {
            JobState::Completed
        };
        assert_eq!(done.state, want, "job {i}");
    }
    let c = counts(&producer, "q").await;
    assert_eq!(c.get("completed").copied(), Some(6), "{c:?}");
    assert_eq!(c.get("dead").copied(), Some(1), "{c:?}");
}
