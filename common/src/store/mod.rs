//! The one module that talks to Redis: the function library and a typed call for each of its
//! functions, plus the few plain reads (status, stats, dead-letter listing).
//!
//! A [`Store`] holds a multiplexed, self-reconnecting connection: many tasks share it and their
//! commands are pipelined on one socket. Blocking reads (`XREAD BLOCK`, `XREADGROUP BLOCK`) must
//! not run on it, because they would stall every other command; callers give those their own
//! connection from [`Store::blocking_pool`].
//!
//! One file per caller and role; every state change is one function of the Lua library
//! (`lua/sluice.lua`), called from one file:
//!
//! | file | functions and commands |
//! |---|---|
//! | `library.rs` | `FUNCTION LOAD`, `FCALL_RO sluice_version` |
//! | `enqueue.rs` | `sluice_enqueue_many` (producers) |
//! | `lookup.rs` | `sluice_cancel`; `HGETALL` of a job, the events stream for `wait` |
//! | `listing.rs` | `sluice_jobs` (a page of a queue's jobs); which queue holds a job |
//! | `lifecycle.rs` | `sluice_fetch`, `sluice_start`, `sluice_complete`, `sluice_retry`, `sluice_dead`, `sluice_promote`, `sluice_release` |
//! | `delivery.rs` | consumer groups of every lane, `XREADGROUP BLOCK`, `XAUTOCLAIM`, `XCLAIM`; `sluice_beat`, `sluice_takeover`, `sluice_leave` |
//! | `limits.rs` | `sluice_admit`, `sluice_report`; the upstreams' state |
//! | `admin.rs` | `sluice_redrive`, `sluice_purge`, `sluice_cache_purge`; stats, dead-letter listing, pause, consumers |
//! | `decode.rs` | replies of untrusted shape, decoded (fuzzed) |
//! | `error.rs`, `settings.rs` | the error type; retention, caps, TLS |
//!
//! This file holds the [`Store`] and its connections, and the call wrapper that reloads a lost
//! library.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use crate::conn::{self, BlockingPool, Conn, Target, Timeouts};

use crate::job::{PreparedJob, Schedule};
use crate::keys::{self, QueueKeys};
use crate::reply::{self, array, int, text};
use crate::state::{JobState, JobStatus};

mod admin;
mod decode;
mod delivery;
mod enqueue;
mod error;
mod library;
mod lifecycle;
mod limits;
mod listing;
mod lookup;
mod settings;
mod tenants;

pub use admin::*;
pub use decode::*;
pub use enqueue::*;
pub use error::*;
pub use lifecycle::*;
pub use limits::*;
pub use listing::*;
pub use lookup::*;
pub use settings::*;
pub use tenants::*;

/// The function library's source; `__SLUICE_LIB_VERSION__` is replaced by a hash of it.
const LIBRARY: &str = include_str!("../lua/sluice.lua");

/// The longest a blocking read (XREAD/XREADGROUP BLOCK) through [`Store::blocking_pool`] may block.
pub const LONGEST_BLOCK: Duration = Duration::from_secs(5);

/// Handle on Redis for one Sluice process. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    target: Target,
    url: String,
    settings: StoreSettings,
    /// Queues already registered in `sluice:queues` by this process.
    known_queues: Arc<Mutex<HashSet<String>>>,
}

impl Store {
    /// Connects (to one server, or to a cluster for a `redis+cluster://` URL), and loads the
    /// function library if Redis lacks this version of it.
    pub async fn connect(url: &str, settings: StoreSettings) -> Result<Store, StoreError> {
        let shown = redact_url(url);
        let unreachable = |source| StoreError::Unreachable {
            url: shown.clone(),
            source,
        };
        // A URL the client cannot use is a config error, not an outage to wait out.
        let target = Self::target(url, &settings)?.map_err(|e| StoreError::Url(e.to_string()))?;
        if let Some(hint) = target.plain_port_hint(Duration::from_secs(3)).await {
            return Err(StoreError::Url(format!("{shown}: {hint}")));
        }
        let conn = target
            .connect(Timeouts {
                connect: Duration::from_secs(5),
                response: settings.command_timeout,
            })
            .await
            .map_err(|e| {
                // Reached, but this user may not (a cluster client first runs CLUSTER SLOTS).
                if e.code() == Some("NOPERM") {
                    StoreError::Denied(format!("{shown}: {e}"))
                } else {
                    unreachable(e)
                }
            })?;
        let store = Store {
            conn,
            target,
            url: shown.clone(),
            settings,
            known_queues: Arc::default(),
        };
        store.load_library().await.map_err(|e| match e {
            StoreError::Redis(source) if source.is_io_error() || source.is_timeout() => {
                StoreError::Unreachable { url: shown, source }
            }
            other => other,
        })?;
        Ok(store)
    }

    fn target(
        url: &str,
        settings: &StoreSettings,
    ) -> Result<redis::RedisResult<Target>, StoreError> {
        let tls = &settings.tls;
        if conn::is_cluster_url(url) {
            #[cfg(feature = "tls")]
            let certs = {
                if url.starts_with("rediss") {
                    install_tls_provider();
                }
                if tls.is_empty() {
                    None
                } else {
                    Some(tls.load()?)
                }
            };
            #[cfg(not(feature = "tls"))]
            if url.starts_with("rediss") || !tls.is_empty() {
                return Err(no_tls());
            }
            let timeouts = Timeouts {
                connect: Duration::from_secs(5),
                response: settings.command_timeout,
            };
            return Target::cluster(
                url,
                timeouts,
                #[cfg(feature = "tls")]
                certs,
            )
            .map_err(StoreError::Url);
        }
        Ok(Self::client(url, tls)?.map(Target::Single))
    }

    #[cfg(feature = "tls")]
    fn client(url: &str, tls: &TlsFiles) -> Result<redis::RedisResult<redis::Client>, StoreError> {
        if url.starts_with("rediss://") {
            install_tls_provider();
        }
        Ok(if tls.is_empty() {
            redis::Client::open(url)
        } else {
            redis::Client::build_with_tls(url, tls.load()?)
        })
    }

    #[cfg(not(feature = "tls"))]
    fn client(url: &str, tls: &TlsFiles) -> Result<redis::RedisResult<redis::Client>, StoreError> {
        if url.starts_with("rediss://") || !tls.is_empty() {
            return Err(no_tls());
        }
        Ok(redis::Client::open(url))
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// The URL, with any password hidden, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// The shared connection, for callers that pipeline their own reads.
    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// A pool of dedicated connections for blocking reads (which block at most `LONGEST_BLOCK`):
    /// their response timeout is that block plus the command timeout, so a link that went
    /// silent (a black-holed connection) is given up instead of waited on forever. On a cluster
    /// each is a cluster connection, so a read goes to the node that owns the queue.
    pub fn blocking_pool(&self, size: usize) -> Result<BlockingPool, StoreError> {
        self.target
            .blocking_pool(
                size,
                Timeouts {
                    connect: Duration::from_secs(5),
                    response: LONGEST_BLOCK + self.settings.command_timeout,
                },
            )
            .map_err(StoreError::Pool)
    }

    /// A connection of its own for blocking reads of `queue` (a worker's intake loop): on a
    /// cluster, to the primary that owns the queue's slot now (`CLUSTER SLOTS`); after a
    /// failover or a reshard the read fails (an error or `MOVED`) and the caller asks again.
    pub async fn reader(&self, queue: &str) -> Result<conn::BlockingConn, StoreError> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            response: LONGEST_BLOCK + self.settings.command_timeout,
        };
        let node = match &self.target {
            Target::Single(_) => None,
            Target::Cluster { .. } => self.owner_of(&keys_for(queue)?.stream()).await?,
        };
        Ok(self.target.dedicated(node.as_deref(), timeouts).await?)
    }

    /// The `host:port` of the primary serving `key`'s slot; `None` when the cluster does not say
    /// (an empty endpoint), and the caller falls back to a cluster connection.
    async fn owner_of(&self, key: &str) -> Result<Option<String>, StoreError> {
        let slot = i64::from(keys::slot(key));
        let mut conn = self.conn.clone();
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await?;
        for range in array(&slots).unwrap_or_default() {
            let Some(r) = array(range) else { continue };
            let (Some(start), Some(end)) = (r.first().and_then(int), r.get(1).and_then(int)) else {
                continue;
            };
            if !(start..=end).contains(&slot) {
                continue;
            }
            let primary = r.get(2).and_then(array).unwrap_or_default();
            let host = primary.first().and_then(text).unwrap_or_default();
            let port = primary.get(1).and_then(int).unwrap_or(0);
            return Ok(
                (!host.is_empty() && host != "?" && port > 0).then(|| format!("{host}:{port}"))
            );
        }
        Ok(None)
    }

    pub(super) fn fcall(name: &str, keys: &QueueKeys) -> redis::Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(name).arg(1).arg(keys.prefix());
        cmd
    }
}

/// A function call that survives the library's loss: if Redis answers that the function does
/// not exist (a restart without persistence, a new cluster primary that took over slots), the
/// library is loaded and the call sent once more.
trait Run {
    fn run<'a, T: redis::FromRedisValue + Send + 'a>(
        &'a self,
        store: &'a Store,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'a;
}

impl Run for redis::Cmd {
    async fn run<'a, T: redis::FromRedisValue + Send + 'a>(
        &'a self,
        store: &'a Store,
    ) -> Result<T, StoreError> {
        let mut conn = store.conn.clone();
        match self.query_async(&mut conn).await {
            Err(e) if missing_library(&e) => {
                store.load_library().await?;
                self.query_async(&mut conn)
                    .await
                    .map_err(StoreError::from_redis)
            }
            r => r.map_err(StoreError::from_redis),
        }
    }
}

/// Whether Redis said the called function does not exist. Redis gives this no code of its own
/// (`ERR Function not found`): the one place the text is read.
fn missing_library(e: &redis::RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail()
            .is_some_and(|d| d.starts_with("Function not found"))
}

/// With more than one rustls provider compiled in (ring through a dependency, say), rustls cannot
/// pick one itself and would panic at the first handshake.
#[cfg(feature = "tls")]
fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(not(feature = "tls"))]
fn no_tls() -> StoreError {
    StoreError::Tls("this build of sluice-common has no TLS (feature `tls`)".into())
}

/// The keys of a queue whose name has been checked (it goes inside the `{…}` hash tag).
/// A partition's name (`Q#i`) is accepted where a queue's is.
pub(super) fn keys_for(queue: &str) -> Result<QueueKeys, StoreError> {
    crate::validate::queue_name(keys::base_queue(queue))?;
    Ok(QueueKeys::new(queue))
}

/// Hides the password of a Redis URL (`redis://user:secret@host` → `redis://user:***@host`).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{}{}{}", &url[..scheme_end + 3], masked, &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact_url("redis://worker:s3cret@10.0.0.1:6379/0"),
            "redis://worker:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:pw@host"),
            "rediss://:***@host".to_string()
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn library_version_is_stamped_into_the_source() {
        let src = Store::library_source();
        assert!(src.contains(&Store::library_version()));
        assert!(!src.contains("__SLUICE_LIB_VERSION__"));
    }
}
