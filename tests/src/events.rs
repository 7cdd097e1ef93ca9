//! Watching a queue's events stream from a test: every state change of every job, read with
//! blocking XREAD so a test awaits the states it expects instead of sleeping.

use std::collections::HashMap;
use std::time::Duration;

use sluice_common::conn::{self, BlockingConn, Link};
use sluice_common::reply;
use tokio::time::Instant;

/// What the events stream said so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// job id → state → how many times.
    pub by_job: HashMap<String, HashMap<String, u32>>,
    /// state → events.
    pub totals: HashMap<String, u64>,
}

impl Seen {
    /// Jobs that reached any terminal state.
    pub fn terminal_jobs(&self) -> usize {
        self.by_job
            .values()
            .filter(|s| {
                ["completed", "dead", "cancelled"]
                    .iter()
                    .any(|t| s.contains_key(*t))
            })
            .count()
    }

    pub fn count(&self, state: &str) -> u64 {
        self.totals.get(state).copied().unwrap_or(0)
    }

    pub fn job(&self, id: &str, state: &str) -> u32 {
        self.by_job
            .get(id)
            .and_then(|s| s.get(state))
            .copied()
            .unwrap_or(0)
    }
}

/// Reads one queue's events from the beginning (on one Redis, or on a cluster for a
/// `redis+cluster://` URL: the read goes to the node that owns the queue).
pub struct Events {
    url: String,
    conn: BlockingConn,
    key: String,
    last: String,
    pub seen: Seen,
}

impl Events {
    pub async fn new(url: &str, queue: &str) -> Events {
        let conn = Self::connect(url).await.expect("connect for events");
        Events {
            url: url.to_string(),
            conn,
            key: format!("sluice:{{{queue}}}:events"),
            last: "0-0".into(),
            seen: Seen::default(),
        }
    }

    async fn connect(url: &str) -> redis::RedisResult<BlockingConn> {
        if conn::is_cluster_url(url) {
            let nodes = conn::cluster_nodes(url).expect("cluster url");
            let client = redis::cluster::ClusterClient::builder(nodes).build()?;
            let config = redis::cluster::ClusterConfig::new()
                .set_response_timeout(Duration::from_secs(30))
                .set_connection_timeout(Duration::from_secs(2));
            return Ok(Link::Cluster(
                client.get_async_connection_with_config(config).await?,
            ));
        }
        let client = redis::Client::open(url)?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(Link::Single(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        ))
    }

    /// Reads what has arrived, blocking up to `block`. While Redis is away (a test restarting
    /// it), a read comes back empty after a short pause and reconnects: the stream is read on
    /// from the last entry seen.
    pub async fn read(&mut self, block: Duration) {
        let r: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(10_000)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.last)
            .query_async(&mut self.conn)
            .await;
        let r = match r {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(conn) = Self::connect(&self.url).await {
                    self.conn = conn;
                }
                return;
            }
        };
        let entries = reply::read_entries(&r).unwrap_or_default();
        for (entry, f) in entries {
            self.last = entry;
            let Some(state) = f.get("state") else {
                continue;
            };
            // One job (`id`) or several that reached the state in one call (`ids`).
            let ids = f
                .get("id")
                .map(|id| vec![id.as_str()])
                .or_else(|| f.get("ids").map(|ids| ids.split(' ').collect()))
                .unwrap_or_default();
            for id in ids {
                *self
                    .seen
                    .by_job
                    .entry(id.to_string())
                    .or_default()
                    .entry(state.clone())
                    .or_default() += 1;
                *self.seen.totals.entry(state.clone()).or_default() += 1;
            }
        }
    }

    /// Reads until `done(seen)` holds or `timeout` passes; returns whether it held.
    pub async fn until(&mut self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.seen) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.read((deadline - now).min(Duration::from_millis(500)))
                .await;
        }
    }
}
