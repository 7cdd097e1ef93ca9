//! Connections to Redis — one server or a Redis Cluster — behind one type, so the rest of the
//! store never asks which.
//!
//! - [`Target`] is what a URL names: `redis://host:port` (one server) or
//!   `redis+cluster://host1:port1,host2:port2` (any reachable nodes of a cluster; `rediss+cluster://`
//!   with TLS). A plain URL listing several hosts separated by commas is a cluster too.
//! - [`Conn`] is the shared, multiplexed, self-reconnecting connection: a `ConnectionManager`, or
//!   the redis crate's async cluster connection, which routes every command to the node that owns
//!   its key's slot and follows `MOVED`/failovers by itself.
//! - Blocking reads (`XREADGROUP BLOCK`, `XREAD BLOCK`) must not stall the shared connection:
//!   [`Target::dedicated`] opens one for a worker's intake loop — on a cluster a plain connection
//!   to the node that owns the queue's slot (one socket, not one per node) — and
//!   [`BlockingPool`] hands out such connections to producers waiting on jobs (on a cluster,
//!   cluster connections of their own, since a wait can be on any queue).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

/// What a Redis URL names.
#[derive(Clone)]
// One per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    Single(redis::Client),
    Cluster {
        client: ClusterClient,
        nodes: NodeUrls,
    },
}

/// How to reach one node of a cluster by itself: the cluster URL's scheme, credentials and tail
/// around the node's `host:port`, with the cluster's TLS certificates.
#[derive(Clone)]
pub struct NodeUrls {
    scheme: String,
    userinfo: String,
    tail: String,
    #[cfg(feature = "tls")]
    certs: Option<redis::TlsCertificates>,
}

impl NodeUrls {
    /// A client for the node at `host_port`.
    pub fn client(&self, host_port: &str) -> redis::RedisResult<redis::Client> {
        let url = format!(
            "{}://{}{host_port}{}",
            self.scheme, self.userinfo, self.tail
        );
        #[cfg(feature = "tls")]
        if let Some(certs) = &self.certs {
            return redis::Client::build_with_tls(url, certs.clone());
        }
        redis::Client::open(url)
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Single(_) => "Target::Single",
            Target::Cluster { .. } => "Target::Cluster",
        })
    }
}

/// Whether `url` names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`, or several
/// comma-separated hosts).
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis+cluster://")
        || url.starts_with("rediss+cluster://")
        || url
            .split_once("://")
            .is_some_and(|(_, rest)| authority(rest).contains(','))
}

/// The part of `rest` (a URL after `scheme://`) before the path.
fn authority(rest: &str) -> &str {
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// The parts of a cluster URL: scheme (`redis` or `rediss`), `user:password@` (or empty), the
/// hosts, and what follows them (`/?protocol=resp3`).
fn cluster_parts(url: &str) -> Result<(&'static str, String, Vec<String>, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        "a cluster URL looks like redis+cluster://host:port,host:port".to_string()
    })?;
    let scheme = match scheme {
        "redis+cluster" | "redis" => "redis",
        "rediss+cluster" | "rediss" => "rediss",
        other => return Err(format!("{other}:// is not a Redis cluster scheme")),
    };
    let hosts_part = authority(rest);
    let tail = rest[hosts_part.len()..].to_string();
    let (userinfo, hosts) = match hosts_part.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), hosts_part),
    };
    let hosts: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if hosts.is_empty() {
        return Err("the cluster URL names no host".to_string());
    }
    Ok((scheme, userinfo, hosts, tail))
}

/// The node URLs of a cluster URL: `redis+cluster://user:pw@h1:1,h2:2/?x` becomes
/// `redis://user:pw@h1:1/?x` and `redis://user:pw@h2:2/?x`.
pub fn cluster_nodes(url: &str) -> Result<Vec<String>, String> {
    let (scheme, userinfo, hosts, tail) = cluster_parts(url)?;
    Ok(hosts
        .iter()
        .map(|h| format!("{scheme}://{userinfo}{h}{tail}"))
        .collect())
}

/// A connection to one server or to a cluster.
#[derive(Clone)]
pub enum Link<S, C> {
    Single(S),
    Cluster(C),
}

/// The shared connection: cheap to clone, every clone multiplexed on the same sockets.
pub type Conn = Link<ConnectionManager, ClusterConnection>;

/// One dedicated connection of a [`BlockingPool`].
pub type BlockingConn = Link<MultiplexedConnection, ClusterConnection>;

impl<S: ConnectionLike + Send, C: ConnectionLike + Send> ConnectionLike for Link<S, C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// Timeouts of the connections a [`Target`] opens.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl Target {
    /// Builds the cluster client for a cluster URL (TLS certificates in `certs`, if any).
    pub fn cluster(
        url: &str,
        timeouts: Timeouts,
        #[cfg(feature = "tls")] certs: Option<redis::TlsCertificates>,
    ) -> Result<redis::RedisResult<Target>, String> {
        let nodes = cluster_nodes(url)?;
        let (scheme, userinfo, _, tail) = cluster_parts(url)?;
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(timeouts.connect)
            .response_timeout(timeouts.response)
            // Enough tries to ride out a failover (node timeout plus an election), few enough
            // that a cluster that is down is reported within the command timeout.
            .retries(6)
            .min_retry_wait(50)
            .max_retry_wait(1000);
        #[cfg(feature = "tls")]
        if let Some(certs) = &certs {
            builder = builder.certs(certs.clone());
        }
        let nodes = NodeUrls {
            scheme: scheme.to_string(),
            userinfo,
            tail,
            #[cfg(feature = "tls")]
            certs,
        };
        Ok(builder
            .build()
            .map(|client| Target::Cluster { client, nodes }))
    }

    /// A connection of its own for blocking reads, answering within `timeouts.response`: to the
    /// server, or on a cluster to the node at `node` (`host:port`, the owner of the slot to be
    /// read); on a cluster without `node`, a cluster connection of its own.
    pub async fn dedicated(
        &self,
        node: Option<&str>,
        timeouts: Timeouts,
    ) -> redis::RedisResult<BlockingConn> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(timeouts.response))
            .set_connection_timeout(Some(timeouts.connect));
        match (self, node) {
            (Target::Single(client), _) => Ok(Link::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )),
            (Target::Cluster { nodes, .. }, Some(node)) => Ok(Link::Single(
                nodes
                    .client(node)?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )),
            (Target::Cluster { client, .. }, None) => Ok(Link::Cluster(
                client
                    .get_async_connection_with_config(
                        ClusterConfig::new()
                            .set_connection_timeout(timeouts.connect)
                            .set_response_timeout(timeouts.response),
                    )
                    .await?,
            )),
        }
    }

    /// Opens the shared connection.
    /// For a `rediss://` URL whose port accepts TCP but does not complete a TLS handshake within
    /// `within` (a plain Redis port waits for a line that never comes, and the client would wait
    /// out four connection timeouts), the hint to give instead. `None` otherwise.
    pub async fn plain_port_hint(&self, within: Duration) -> Option<String> {
        let Target::Single(client) = self else {
            return None;
        };
        let redis::ConnectionAddr::TcpTls { host, port, .. } = client.get_connection_info().addr()
        else {
            return None;
        };
        let tcp = tokio::net::TcpStream::connect((host.as_str(), *port));
        match tokio::time::timeout(within, tcp).await {
            Ok(Ok(_)) => {}
            _ => return None, // not reachable at all: the usual error says so
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(within))
            .set_response_timeout(Some(within));
        let handshake = client.get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(within + Duration::from_millis(500), handshake).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) if !(e.is_timeout() || e.is_io_error()) => None,
            _ => Some(format!(
                "{host}:{port} accepts connections but gave no TLS handshake within {} s: is this \
                 a TLS port? (rediss:// needs Redis's tls-port; redis:// is for a plain port)",
                within.as_secs()
            )),
        }
    }

    pub async fn connect(&self, timeouts: Timeouts) -> redis::RedisResult<Conn> {
        match self {
            Target::Single(client) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeouts.response))
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_number_of_retries(3);
                Ok(Link::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            Target::Cluster { client, .. } => {
                Ok(Link::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A pool of up to `size` dedicated connections for blocking reads, each answering within
    /// `response` (the longest block plus the command timeout), so a black-holed link is given up.
    pub fn blocking_pool(&self, size: usize, timeouts: Timeouts) -> Result<BlockingPool, String> {
        let manager = match self {
            Target::Single(client) => BlockingManager::Single(Box::new(
                deadpool_redis::Manager::new_with_config(
                    client.get_connection_info().clone(),
                    AsyncConnectionConfig::new()
                        .set_response_timeout(Some(timeouts.response))
                        .set_connection_timeout(Some(timeouts.connect)),
                )
                .map_err(|e| e.to_string())?,
            )),
            Target::Cluster { client, .. } => BlockingManager::Cluster(Box::new((
                client.clone(),
                ClusterConfig::new()
                    .set_connection_timeout(timeouts.connect)
                    .set_response_timeout(timeouts.response),
            ))),
        };
        deadpool::managed::Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map(BlockingPool)
            .map_err(|e| e.to_string())
    }
}

/// Makes the dedicated connections of a [`BlockingPool`].
pub enum BlockingManager {
    Single(Box<deadpool_redis::Manager>),
    Cluster(Box<(ClusterClient, ClusterConfig)>),
}

impl std::fmt::Debug for BlockingManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlockingManager::Single(_) => "BlockingManager::Single",
            BlockingManager::Cluster(_) => "BlockingManager::Cluster",
        })
    }
}

impl deadpool::managed::Manager for BlockingManager {
    type Type = BlockingConn;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<BlockingConn, redis::RedisError> {
        match self {
            BlockingManager::Single(m) => Ok(Link::Single(
                deadpool::managed::Manager::create(&**m).await?,
            )),
            BlockingManager::Cluster(c) => {
                let (client, config) = &**c;
                Ok(Link::Cluster(
                    client
                        .get_async_connection_with_config(config.clone())
                        .await?,
                ))
            }
        }
    }

    async fn recycle(
        &self,
        conn: &mut BlockingConn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<redis::RedisError> {
        let pong: String = redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(deadpool::managed::RecycleError::message(
                "unexpected answer to PING",
            ))
        }
    }
}

/// Dedicated connections for blocking reads (see [`Target::blocking_pool`]).
#[derive(Clone)]
pub struct BlockingPool(deadpool::managed::Pool<BlockingManager>);

/// A connection taken from a [`BlockingPool`] (a [`BlockingConn`] through `DerefMut`); it goes
/// back when dropped.
pub type Blocking = deadpool::managed::Object<BlockingManager>;

impl BlockingPool {
    pub async fn get(&self) -> Result<Blocking, deadpool::managed::PoolError<redis::RedisError>> {
        self.0.get().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_are_recognised_and_split_into_nodes() {
        assert!(is_cluster_url("redis+cluster://a:1,b:2"));
        assert!(is_cluster_url("redis://a:1,b:2/"));
        assert!(!is_cluster_url("redis://a:1/?x=1,2"));
        assert!(!is_cluster_url("redis://127.0.0.1:6379"));
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p@a:1,b:2/?protocol=resp3").as_deref(),
            Ok(&[
                "rediss://u:p@a:1/?protocol=resp3".to_string(),
                "rediss://u:p@b:2/?protocol=resp3".to_string()
            ][..])
        );
        assert!(cluster_nodes("redis+cluster://").is_err());
        assert!(cluster_nodes("http://a:1,b:2").is_err());
    }
}
