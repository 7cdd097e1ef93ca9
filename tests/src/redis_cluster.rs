//! A real Redis Cluster for one test: cluster-enabled `redis-server` processes on free loopback
//! ports (three masters with one replica each, unless asked otherwise), joined by
//! `redis-cli --cluster create`, each with its own data dir, all killed when the handle drops.
//! With `SLUICE_TEST_SERVER=valkey`, `valkey-server` processes joined by `valkey-cli`.
//!
//! Ready means every node reports `cluster_state:ok` and sees all 16384 slots assigned; the
//! harness waits for that state (bounded), then hands out a `redis+cluster://` URL.

use std::process::Command;
use std::time::Duration;

use crate::RedisServer;

/// A cluster that belongs to one test.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// How long forming the cluster or a failover may take before the harness gives up.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Starts three masters and three replicas; `extra` goes to every `redis-server`
    /// (`["--appendonly", "yes"]`, say).
    pub async fn start(extra: &[&str]) -> RedisCluster {
        Self::start_shape(3, 1, extra).await
    }

    /// Starts `masters` masters with `replicas` replicas each.
    pub async fn start_shape(masters: usize, replicas: usize, extra: &[&str]) -> RedisCluster {
        if std::env::var("SLUICE_TEST_REDIS").as_deref() == Ok("docker") {
            panic!("the cluster tests need local redis-server processes (no docker backend)");
        }
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            // The cluster bus needs a port of its own: an ephemeral one, not port + 10000
            // (which can pass 65535).
            let bus = crate::redis_server::free_port().to_string();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                &bus,
                // A replica may take over however stale it is (the harness kills masters).
                "--cluster-replica-validity-factor",
                "0",
            ];
            args.extend_from_slice(extra);
            nodes.push(RedisServer::start_with(&args).await);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let cli = crate::server_kind::ServerKind::current().cli_binary();
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("run {} --cluster create: {e}", cli.display()));
        assert!(
            out.status.success(),
            "{} --cluster create failed:\n{}\n{}",
            cli.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(&[]).await;
        cluster
    }

    /// `redis+cluster://` with every node, for Sluice's config.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Waits until every live node (all but the indexes in `down`) reports the cluster ok with
    /// all slots served, and every replica has finished syncing with its master.
    pub async fn wait_ok(&self, down: &[usize]) {
        let deadline = tokio::time::Instant::now() + FORM_TIMEOUT;
        loop {
            let mut ok = true;
            for (i, node) in self.nodes.iter().enumerate() {
                if down.contains(&i) {
                    continue;
                }
                let info = node_cmd(node, &["CLUSTER", "INFO"])
                    .await
                    .unwrap_or_default();
                if !(info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")) {
                    ok = false;
                    break;
                }
                // A replica that has not finished its first sync holds nothing (not even the
                // function library): promoted, it would serve an empty slot range.
                let role = node_cmd(node, &["ROLE"]).await.unwrap_or_default();
                let replication = node_cmd(node, &["INFO", "replication"])
                    .await
                    .unwrap_or_default();
                if role == "slave" && !replication.contains("master_link_status:up") {
                    ok = false;
                    break;
                }
            }
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cluster not ok after {FORM_TIMEOUT:?}"
            );
            // CLUSTER INFO has no blocking form: poll it, briefly.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Indexes of the nodes that are masters now.
    pub async fn masters(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let role = node_cmd(node, &["ROLE"]).await.unwrap_or_default();
            if role.starts_with("master") {
                out.push(i);
            }
        }
        out
    }

    /// The index of the master that serves `key`'s slot (the others answer MOVED).
    pub async fn master_of(&self, key: &str) -> usize {
        for i in self.masters().await {
            let mut conn = self.nodes[i].client().await;
            let probe: redis::RedisResult<redis::Value> =
                redis::cmd("EXISTS").arg(key).query_async(&mut conn).await;
            if probe.is_ok() {
                return i;
            }
        }
        panic!("no master serves {key}");
    }

    /// Starts node `i` again on its port and data dir (it rejoins, as a replica of the master
    /// that replaced it), and waits until the cluster is ok with it.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].start_again();
        self.wait_ok(&[]).await;
    }

    /// Kills master `i` with SIGKILL and waits until its replica has taken over (the cluster
    /// is ok again without it).
    pub async fn fail_master(&mut self, i: usize) {
        self.nodes[i].stop_hard();
        self.wait_ok(&[i]).await;
    }
}

/// Runs one command on one node and renders the reply as text (`ROLE` → its first word).
async fn node_cmd(node: &RedisServer, args: &[&str]) -> Option<String> {
    let client = redis::Client::open(node.url()).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_connection_timeout(Some(Duration::from_secs(2)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let v: redis::Value = cmd.query_async(&mut conn).await.ok()?;
    Some(render(&v))
}

fn render(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::Array(items) => items.first().map(render).unwrap_or_default(),
        _ => String::new(),
    }
}
