//! One test rig: a real `redis-server` on a free port, the mock model API and a producer, with
//! the workers a test spawns as real processes; and the helpers every integration test shares
//! (`BOUND`, `now_ms`, `eventually`, `counts`). A test writes `let rig = Rig::start(mock).await`
//! and never spells that set-up out again.

use std::collections::HashMap;
use std::time::Duration;

use sluice_common::NewJob;
use sluice_producer::Producer;

use crate::RedisServer;
use crate::events::Events;
use crate::mock::{MockConfig, MockServer};
use crate::worker_process::{WorkerOptions, WorkerProcess};

/// How long a test waits for something that should happen (a bound on a wait for an event,
/// never a sleep); generous, so a slow CI machine does not fail a correct test.
pub const BOUND: Duration = Duration::from_secs(120);

/// The bound of the long fault runs (kill -9 loops, network faults, Redis restarts).
pub const LONG_BOUND: Duration = Duration::from_secs(240);

pub use crate::eventually;

/// The Redis, the mock and a producer of one test (all torn down when dropped).
pub struct Rig {
    pub redis: RedisServer,
    pub mock: MockServer,
    pub producer: Producer,
}

impl Rig {
    /// A fresh Redis, the mock configured as `mock`, and a producer keeping a long events stream.
    pub async fn start(mock: MockConfig) -> Rig {
        Rig::start_on(RedisServer::start().await, mock).await
    }

    /// The rig on a Redis the test started itself (with persistence flags, say, to restart it).
    pub async fn start_on(redis: RedisServer, mock: MockConfig) -> Rig {
        let mock = MockServer::start(mock).await;
        let producer = crate::test_producer(&redis.url()).await;
        Rig {
            redis,
            mock,
            producer,
        }
    }

    pub fn url(&self) -> String {
        self.redis.url()
    }

    pub fn store(&self) -> &sluice_common::Store {
        self.producer.store()
    }

    /// Runs the `sluice` CLI on the rig's Redis with `args`; its standard output, trimmed (the
    /// command must succeed).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(crate::bins::cargo_bin("sluice-producer", "sluice"))
            .args(["--redis", &self.url()])
            .args(args)
            .env_remove("SLUICE_REDIS_URL")
            .env_remove("SLUICE_CONFIG")
            .output()
            .expect("run sluice");
        assert!(
            out.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Worker options for this Redis and this mock (queue `q`), to adjust before spawning.
    pub fn options(&self) -> WorkerOptions {
        WorkerOptions::new(&self.redis.url(), &self.mock.url())
    }

    /// A worker with the default options.
    pub fn spawn(&self, name: &str) -> WorkerProcess {
        WorkerProcess::spawn(name, &self.options())
    }

    /// `n` workers (`w0`, `w1`, …) with `options`.
    pub fn spawn_n(&self, n: usize, options: &WorkerOptions) -> Vec<WorkerProcess> {
        (0..n)
            .map(|i| WorkerProcess::spawn(&format!("w{i}"), options))
            .collect()
    }

    /// `n` worker processes, each ready (its health probe answers) before this returns: for tests
    /// that measure from the first call on, with the whole fleet running.
    pub async fn spawn_ready(&self, n: usize, options: &WorkerOptions) -> Vec<WorkerProcess> {
        let mut workers = self.spawn_n(n, options);
        for w in &mut workers {
            assert!(
                w.ready(BOUND).await.is_some(),
                "worker {} never ready",
                w.name
            );
        }
        workers
    }

    /// Enqueues `jobs` in one batch; their ids (the test fails on any refusal).
    pub async fn enqueue(&self, jobs: Vec<NewJob>) -> Vec<String> {
        crate::enqueue_all(&self.producer, jobs).await
    }

    /// Job `id` of queue `q` as it is now (the test fails if it is absent).
    pub async fn status(&self, id: &str) -> sluice_common::JobStatus {
        self.producer
            .status("q", id)
            .await
            .expect("status")
            .unwrap_or_else(|| panic!("no job {id} in queue q"))
    }

    /// Job `id`'s spec where it is kept (the test fails if there is none).
    pub async fn spec(&self, id: &str) -> String {
        self.producer
            .store()
            .spec("q", id)
            .await
            .expect("spec")
            .unwrap_or_else(|| panic!("no spec kept for job {id} in queue q"))
    }

    /// A reader of queue `q`'s events from now on.
    pub async fn events(&self) -> Events {
        Events::new(&self.redis.url(), "q").await
    }

    /// Queue `q`'s counts by state (gauges and totals).
    pub async fn counts(&self) -> HashMap<String, i64> {
        counts(self.producer.store(), "q").await
    }
}

/// `queue`'s counts by state (gauges and totals), as `sluice stats` reads them.
pub async fn counts(store: &sluice_common::Store, queue: &str) -> HashMap<String, i64> {
    let stats = store.stats(queue).await.expect("stats");
    stats.counts.into_iter().collect()
}

/// Writes `n` raw dead letters to `queue` (malformed stream entries with no job behind them,
/// raw `n=<i>`), all at once: a dead-letter stream to list, page and re-drive.
pub async fn raw_dead_letters(store: &sluice_common::Store, queue: &str, n: usize) {
    use sluice_common::store::DeadLetter;
    store.create_group(queue).await.expect("group");
    let letters = (0..n).map(|i| async move {
        let raw = format!("n={i}");
        let letter = DeadLetter {
            reason: "malformed",
            error: "garbage",
            raw: &raw,
            ..DeadLetter::default()
        };
        store.dead_letter(queue, &letter).await
    });
    for r in futures::future::join_all(letters).await {
        r.expect("dead letter");
    }
}

/// A count from `counts`, 0 when absent.
pub fn count(c: &HashMap<String, i64>, k: &str) -> i64 {
    c.get(k).copied().unwrap_or(0)
}

/// Now, in Unix milliseconds (the test machine's clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
