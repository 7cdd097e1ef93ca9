//! The one module that talks to Redis: the function library and a typed call for each of its
//! functions, plus the few plain reads (status, stats, dead-letter listing).
//!
//! A [`Store`] holds a multiplexed, self-reconnecting connection: many tasks share it and their
//! commands are pipelined on one socket. Blocking reads (`XREAD BLOCK`, `XREADGROUP BLOCK`) must
//! not run on it, because they would stall every other command; callers give those their own
//! connection from [`Store::blocking_pool`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use crate::conn::{self, BlockingPool, Conn, Target, Timeouts};

use crate::job::{PreparedJob, Schedule};
use crate::keys::{self, QueueKeys};
use crate::reply::{self, array, int, text};
use crate::state::{JobState, JobStatus};

/// The function library's source; `__SLUICE_LIB_VERSION__` is replaced by a hash of it.
const LIBRARY: &str = include_str!("lua/sluice.lua");

/// Errors from the store. Server-side refusals keep the function's reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("Redis unreachable at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The function library refused the job (`SLUICE_INVALID`).
    #[error("refused by Redis: {0}")]
    Invalid(String),
    /// The job was over the size limit (`SLUICE_TOO_LARGE`).
    #[error("refused by Redis: {0}")]
    TooLarge(String),
    /// A reply that does not have the shape the protocol promises.
    #[error("unexpected reply from Redis for {0}")]
    Protocol(&'static str),
    #[error("connection pool: {0}")]
    Pool(String),
    /// A Redis URL that cannot be used.
    #[error("Redis URL: {0}")]
    Url(String),
    /// A TLS certificate or key file could not be read.
    #[error("Redis TLS: {0}")]
    Tls(String),
    /// The queue's workers split it into another number of partitions than this process's
    /// `queues.partitions` says: enqueueing would write to partitions nobody reads.
    #[error(
        "queue {queue} is split into {workers} partition(s) by its workers, but this process's \
         config says {ours} (queues.partitions): give producers and workers the same value"
    )]
    Partitions {
        queue: String,
        workers: u32,
        ours: u32,
    },
    /// Fewer replicas than `redis.wait_replicas` confirmed the write in time: it is on the
    /// primary, but a failover now could lose it. Enqueueing again is safe (same id or dedupe key).
    #[error("only {acked} of {wanted} replicas confirmed the write within the wait timeout")]
    NotReplicated { acked: u64, wanted: u32 },
    /// The caller's Redis user may not do this (`NOPERM`, or `SLUICE_DENIED` from the library).
    #[error("denied by Redis: {0}")]
    Denied(String),
    /// The function library is missing or of another version, and this user may not load it.
    #[error(
        "the sluice function library in Redis is missing or of another version ({found}), and this \
         Redis user may not load it (FUNCTION LOAD): start a worker of this version, or run a \
         `sluice` command as the operator user, before producers connect"
    )]
    LibraryMissing { found: String },
}

impl StoreError {
    /// Whether trying the same call again may succeed: Redis unreachable or not answering, a
    /// dropped connection, a server loading, busy or failing over. A refusal, a reply of the
    /// wrong shape or a permanent Redis error (WRONGTYPE, a script error) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unreachable { .. } | StoreError::Pool(_) => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.code(),
                        Some(
                            "LOADING"
                                | "BUSY"
                                | "TRYAGAIN"
                                | "CLUSTERDOWN"
                                | "MASTERDOWN"
                                | "MOVED"
                                | "ASK"
                                | "READONLY"
                                | "NOSCRIPT"
                        )
                    )
                    || e.to_string().contains("Function not found")
            }
            _ => false,
        }
    }

    fn from_redis(e: redis::RedisError) -> Self {
        match e.code() {
            Some("SLUICE_INVALID") => StoreError::Invalid(e.detail().unwrap_or("").to_string()),
            Some("SLUICE_TOO_LARGE") => StoreError::TooLarge(e.detail().unwrap_or("").to_string()),
            Some("SLUICE_DENIED") | Some("NOPERM") => StoreError::Denied(e.to_string()),
            _ => StoreError::Redis(e),
        }
    }
}

/// Retention and caps applied by the functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Approximate cap of each queue's events stream.
    pub events_maxlen: u64,
    /// Approximate cap of each queue's dead-letter stream.
    pub dead_maxlen: u64,
    /// How long a completed or cancelled job's hash is kept.
    pub retention: Duration,
    /// How long a dead job's hash is kept (it can be re-driven until then).
    pub dead_retention: Duration,
    /// Largest spec the library accepts (the producer checks first).
    pub max_job_bytes: usize,
    /// Most time a non-blocking command may take before it counts as failed.
    pub command_timeout: Duration,
    /// Certificates for `rediss://` beyond the system's trust store.
    pub tls: TlsFiles,
    /// Queues split into partitions (`Q#0 … Q#P-1`), by name; absent or 1: not partitioned.
    pub partitions: BTreeMap<String, u32>,
    /// Replicas that must hold an enqueue before it is acknowledged (`WAIT`); 0: do not wait.
    pub wait_replicas: u32,
    /// Longest an enqueue waits for those replicas.
    pub wait_timeout: Duration,
}

/// PEM files for a TLS connection to Redis (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA that signed the server's certificate.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// Reads the files; the error names the file that could not be read.
    #[cfg(feature = "tls")]
    fn load(&self) -> Result<redis::TlsCertificates, StoreError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| StoreError::Tls(format!("{}: {e}", path.display())))
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Tls(
                    "a client certificate needs both a cert and a key file".into(),
                ));
            }
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert: self.ca.as_deref().map(read).transpose()?,
        })
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            events_maxlen: 10_000,
            dead_maxlen: 100_000,
            retention: Duration::from_secs(24 * 3600),
            dead_retention: Duration::from_secs(14 * 24 * 3600),
            max_job_bytes: 1024 * 1024,
            command_timeout: Duration::from_secs(10),
            tls: TlsFiles::default(),
            partitions: BTreeMap::new(),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

/// What enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The id of the job that now owns this work: the new job, or the earlier one on a duplicate.
    pub id: String,
    /// False when the dedupe key (or the id) already belonged to a job.
    pub created: bool,
    /// A duplicate whose owner was enqueued with another request (its spec's SHA-1 differs):
    /// the same key reused for different work. Never true when `created`.
    pub conflict: bool,
    /// The owning job's state; `None` when its hash has expired but its dedupe key has not.
    pub state: Option<JobState>,
}

/// What cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled from this state.
    Cancelled(JobState),
    /// Not cancellable in this state (running or terminal).
    Refused(JobState),
    NotFound,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Waited {
    /// The job reached a terminal state.
    Done(Box<JobStatus>),
    TimedOut,
    /// No such job (never enqueued, or its hash expired).
    NotFound,
}

/// What the start function says of one delivered entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// Run it: the spec as stored and the attempt number in this life.
    Run {
        entry: String,
        id: String,
        spec: String,
        attempt: u32,
        /// Waits (rate limit, quota, auth) so far in this life.
        waits: u32,
        /// When the job became runnable (enqueued, or its scheduled time), Unix ms; 0 if unknown.
        ready_ms: u64,
    },
    /// Terminal, cancelled or stale: acked and removed already.
    Skip { entry: String, id: String },
    /// No such job: left pending for the caller to dead-letter as malformed.
    Missing { entry: String, id: String },
    /// An entry that names no job (from `fetch`): left pending for the caller to dead-letter,
    /// with an excerpt of its fields.
    Malformed { entry: String, raw: String },
    /// The queue is paused: nothing was started; a delivered job was handed back (queued again
    /// under a new entry). From `fetch`, entry and id are empty.
    Paused { entry: String, id: String },
    /// The job's key holds something that is not a job (another type: Redis said WRONGTYPE):
    /// left pending for the caller to dead-letter as `corrupt`, the key left alone.
    Corrupt {
        entry: String,
        id: String,
        error: String,
    },
}

/// An entry read from a queue's stream: its id and its fields (normally just `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub entry: String,
    pub fields: HashMap<String, String>,
}

/// What a promote call did, with the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    pub promoted: u64,
    pub next_due_ms: Option<u64>,
    pub now_ms: u64,
}

/// What a retry spends: a call that failed spends an attempt; a rate-limit or quota answer
/// spends a wait; a job deferred before its call (limiter, hold, open circuit) spends neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    Attempt,
    Wait,
    Neither,
}

impl Spend {
    fn wire(self) -> &'static str {
        match self {
            Spend::Attempt => "1",
            Spend::Wait => "0",
            Spend::Neither => "n",
        }
    }
}

/// Limits the admit function applies (0 = none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdmitRequest<'a> {
    pub rpm: u64,
    pub tpm: u64,
    pub tokens: u64,
    /// Burst window in ms: no window of this length carries more than its share plus this.
    pub burst_ms: u64,
    /// Burst window of the token buckets, in ms.
    pub token_burst_ms: u64,
    /// Longest wait reserved; beyond it the caller is told `Busy` and nothing is reserved.
    pub horizon_ms: u64,
    /// How long a half-open probe may take before another is allowed.
    pub probe_ms: u64,
    pub model: &'a str,
    pub model_rpm: u64,
    pub model_tpm: u64,
    /// `rpm` is a ceiling and the fleet's rate follows the provider (AIMD).
    pub adaptive: bool,
}

/// The fleet-wide limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A slot is reserved: start after this wait.
    Reserved(Duration),
    /// Go now as the circuit's half-open probe.
    Probe,
    /// Be the circuit's half-open probe with the upstream's cheap request (no tokens spent),
    /// not the job's: the circuit was opened by a 401/403.
    CheapProbe,
    /// The provider asked everyone to wait this long.
    Hold(Duration),
    /// The circuit is open for this long.
    Open(Duration),
    /// Another probe is in flight; ask again later.
    HalfOpen(Duration),
    /// The next free slot is further away than the horizon.
    Busy(Duration),
}

/// What a call's answer tells the fleet-wide limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Successes to count in the failure-rate window (sent with this worker's first success
    /// after a failure of its own).
    Ok,
    /// The probe succeeded: close the circuit.
    ProbeOk,
    /// The probe failed: open the circuit again, with a fresh cool-off.
    ProbeFailed,
    /// A transient failure: counts towards opening the circuit.
    Soft,
    /// Quota: open the circuit now.
    Hard,
    /// Auth (401/403): open the circuit now; its probes are the upstream's cheap request.
    Auth,
    /// A 429 rate limit: an adaptive upstream slows down.
    Limited,
    /// Nothing for the circuit (token correction or hold only).
    None,
}

/// A report after a call.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitReport<'a> {
    pub verdict: Verdict,
    /// Hold the upstream for everyone this long from now (server clock); 0 = none.
    pub hold_ms: u64,
    pub cooloff_ms: u64,
    /// Calls in the window before the failure rate counts.
    pub min_calls: u64,
    pub window_ms: u64,
    pub tpm: u64,
    /// Actual minus estimated tokens.
    pub delta_tokens: i64,
    pub model: &'a str,
    pub model_tpm: u64,
    /// Successful calls of this worker not yet counted in the window.
    pub ok_calls: u64,
    /// Failure rate that opens the circuit, in percent (1..=100).
    pub failure_pct: u64,
}

/// An upstream's fleet-wide state for `sluice stats`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct UpstreamState {
    pub upstream: String,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    /// Milliseconds until the circuit's cool-off ends (open) .
    pub open_for_ms: Option<u64>,
    /// Milliseconds of provider hold left.
    pub hold_for_ms: Option<u64>,
    pub opens: u64,
    /// The fleet's current request rate of an adaptive upstream (requests per minute).
    pub adaptive_rpm: Option<f64>,
}

/// What complete, retry or dead-letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Done,
    /// The job was not running (already terminal, or never started): nothing was changed.
    Refused(String),
}

/// A finished job to record as completed (see [`Store::complete_many`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub id: String,
    /// The stream entry it was delivered as (acknowledged by the completion).
    pub entry: String,
    /// The answer's body.
    pub result: String,
    pub http_status: u16,
    /// More fields stored with the result (`usage`, `headers`, `called_ms`).
    pub fields: Vec<(String, String)>,
}

/// One entry of the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadEntry {
    /// Entry id in the dead stream (what re-drive and purge take).
    pub entry: String,
    pub id: String,
    pub reason: String,
    pub status: String,
    pub attempts: u32,
    pub error: String,
    pub upstream: String,
    pub at_ms: u64,
    /// Raw fields of a malformed stream entry that had no job.
    pub raw: String,
}

/// Re-drive counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Redriven {
    pub redriven: u64,
    /// No job hash (a raw dead letter, or its hash expired): nothing to re-drive; the entry is
    /// kept until `purge`.
    pub kept: u64,
    /// Not dead any more (its entry is kept), or no such entry.
    pub skipped: u64,
}

/// A queue's numbers for `sluice stats`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Partitions summed here (1: not partitioned).
    pub partitions: u32,
    /// Entries in the ready stream (delivered or not).
    pub stream_len: u64,
    /// Entries not yet delivered to any worker (consumer-group lag).
    pub lag: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    pub consumers: u64,
    pub delayed: u64,
    pub dead_len: u64,
    pub paused: bool,
    /// Gauges for live states, totals for terminal ones, plus `deduplicated` and friends.
    pub counts: BTreeMap<String, i64>,
}

/// The longest a blocking read (XREAD/XREADGROUP BLOCK) through [`Store::blocking_pool`] may block.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);

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
        let target = Self::target(url, &settings)?.map_err(unreachable)?;
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

    /// A pool of dedicated connections for blocking reads (which block at most `MAX_BLOCK`):
    /// their response timeout is that block plus the command timeout, so a link that went
    /// silent (a black-holed connection) is given up instead of waited on forever. On a cluster
    /// each is a cluster connection, so a read goes to the node that owns the queue.
    pub fn blocking_pool(&self, size: usize) -> Result<BlockingPool, StoreError> {
        self.target
            .blocking_pool(
                size,
                Timeouts {
                    connect: Duration::from_secs(5),
                    response: MAX_BLOCK + self.settings.command_timeout,
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
            response: MAX_BLOCK + self.settings.command_timeout,
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

    /// The library version this build carries.
    pub fn library_version() -> String {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in LIBRARY.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("1.{h:016x}")
    }

    /// The library source as it is loaded (for foreign clients and tests).
    pub fn library_source() -> String {
        LIBRARY.replace("__SLUICE_LIB_VERSION__", &Self::library_version())
    }

    /// Whether Redis answers and holds this build's library (for readiness probes).
    pub async fn ready(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let have: String = redis::cmd("FCALL_RO")
            .arg("sluice_version")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        if have == Self::library_version() {
            Ok(())
        } else {
            Err(StoreError::Protocol(
                "Redis holds another version of the sluice library",
            ))
        }
    }

    async fn load_library(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let want = Self::library_version();
        if self.is_cluster() {
            // A version check would ask one random node; loading (REPLACE, on every primary)
            // is idempotent and leaves no primary behind. A user that may not load checks.
            let loaded = redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(Self::library_source())
                .query_async::<Value>(&mut conn)
                .await;
            return match loaded {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("NOPERM") => match self.ready().await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::LibraryMissing {
                        found: e.to_string(),
                    }),
                },
                Err(e) => Err(e.into()),
            };
        }
        let have: Result<String, _> = redis::cmd("FCALL_RO")
            .arg("sluice_version")
            .arg(0)
            .query_async(&mut conn)
            .await;
        match have {
            Ok(v) if v == want => Ok(()),
            Err(e) if e.is_io_error() || e.is_timeout() => Err(StoreError::Redis(e)),
            other => {
                let loaded = redis::cmd("FUNCTION")
                    .arg("LOAD")
                    .arg("REPLACE")
                    .arg(Self::library_source())
                    .query_async::<String>(&mut conn)
                    .await;
                match loaded {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("NOPERM") => Err(StoreError::LibraryMissing {
                        found: match other {
                            Ok(v) => format!("version {v}, this build wants {want}"),
                            Err(e) => e.to_string(),
                        },
                    }),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    fn fcall(name: &str, keys: &QueueKeys) -> redis::Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(name).arg(1).arg(keys.prefix());
        cmd
    }

    /// One `sluice_enqueue_many` call for `jobs` (all of one queue).
    fn enqueue_many_cmd(&self, queue: &str, jobs: &[&PreparedJob]) -> redis::Cmd {
        let keys = QueueKeys::new(queue);
        let mut cmd = Self::fcall("sluice_enqueue_many", &keys);
        cmd.arg(self.settings.max_job_bytes)
            .arg(self.settings.events_maxlen);
        for job in jobs {
            let (dkey, dttl) = match &job.dedupe {
                Some((k, ttl)) => (k.as_str(), *ttl),
                None => ("", 0),
            };
            let (delay_ms, run_at_ms) = match job.schedule {
                Schedule::Now => (0, 0),
                Schedule::After(d) => (d.as_millis() as u64, 0),
                Schedule::At(ms) => (0, ms),
            };
            cmd.arg(job.id.as_str())
                .arg(&job.spec_json)
                .arg(dkey)
                .arg(dttl)
                .arg(delay_ms)
                .arg(run_at_ms);
        }
        cmd
    }

    /// Queues of `jobs` not yet registered in `sluice:queues` by this process.
    fn unregistered<'a>(&self, queues: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut known = self
            .known_queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queues
            .filter(|q| known.insert(q.to_string()))
            .map(str::to_string)
            .collect()
    }

    /// Lets a later call register these queues again (their registration failed).
    fn forget_queues(&self, queues: &[String]) {
        let mut known = self
            .known_queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for q in queues {
            known.remove(q);
        }
    }

    /// Enqueues one job (one round trip, plus a one-time registration of its queue).
    pub async fn enqueue(&self, job: &PreparedJob) -> Result<Enqueued, StoreError> {
        let mut results = self.enqueue_batch(std::slice::from_ref(job)).await?;
        results
            .pop()
            .ok_or(StoreError::Protocol("sluice_enqueue"))?
    }

    /// Enqueues many jobs in one pipeline (on a cluster: one call per queue slot, all sent at
    /// once). The outer error is a failure of the whole round trip; each job has its own result
    /// (a refusal of one does not affect the others).
    pub async fn enqueue_batch(
        &self,
        jobs: &[PreparedJob],
    ) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        // Each job's queue, or the partition its dedupe key (else its id) maps to.
        let routed: Vec<String> = jobs.iter().map(|j| self.route(j)).collect();
        let new_queues = self.unregistered(jobs.iter().map(|j| j.queue.as_str()));
        if !new_queues.is_empty()
            && let Err(e) = self.check_partitions(&new_queues).await
        {
            self.forget_queues(&new_queues);
            return Err(e);
        }
        let mut cmds = Vec::new();
        if !new_queues.is_empty() {
            let mut sadd = redis::cmd("SADD");
            sadd.arg(keys::QUEUES).arg(&new_queues);
            cmds.push(sadd);
        }
        // One call per queue, jobs in input order within it.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, queue) in routed.iter().enumerate() {
            match groups.iter_mut().find(|(q, _)| *q == queue.as_str()) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((queue.as_str(), vec![i])),
            }
        }
        for (queue, idx) in &groups {
            let group: Vec<&PreparedJob> = idx.iter().map(|&i| &jobs[i]).collect();
            cmds.push(self.enqueue_many_cmd(queue, &group));
        }
        let mut replies = match self.send_all(&cmds).await {
            Ok(r) if r.len() == cmds.len() => r,
            other => {
                self.forget_queues(&new_queues);
                return Err(match other {
                    Err(e) => e,
                    Ok(_) => StoreError::Protocol("sluice_enqueue_many"),
                });
            }
        };
        if !new_queues.is_empty()
            && let Err(e) = replies.remove(0)
            && !matches!(e, StoreError::Denied(_))
        {
            // The jobs are in; let a later call register their queues (unless this user may
            // not: then it would only be refused again).
            self.forget_queues(&new_queues);
        }
        let mut results: Vec<Option<Result<Enqueued, StoreError>>> =
            (0..jobs.len()).map(|_| None).collect();
        for ((_, idx), reply) in groups.iter().zip(replies) {
            match reply {
                Ok(Value::Array(items)) if items.len() == idx.len() => {
                    for (&i, item) in idx.iter().zip(items) {
                        results[i] = Some(parse_enqueued(item));
                    }
                }
                Ok(_) => return Err(StoreError::Protocol("sluice_enqueue_many")),
                // The whole call failed (no library, denied, not replicated, …): every job of
                // it says why.
                Err(e) => {
                    for &i in idx {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Protocol("sluice_enqueue_many"))))
            .collect())
    }

    /// Sends writes in one round trip and returns each one's reply. On one server they go as one
    /// pipeline; on a cluster each goes to the primary of its slot, all at once. With
    /// `wait_replicas`, each is followed by a `WAIT` on the same node, and a write that too few
    /// replicas confirmed is an error. The outer error is a failure of the whole round trip.
    async fn send_all(
        &self,
        cmds: &[redis::Cmd],
    ) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let mut replies = self.send_all_once(cmds).await?;
        // Redis lost the library (see `Run`): load it and send what it refused once more.
        let refused: Vec<usize> = (0..replies.len())
            .filter(|&i| matches!(&replies[i], Err(StoreError::Redis(e)) if missing_library(e)))
            .collect();
        if !refused.is_empty() {
            self.load_library().await?;
            let again: Vec<redis::Cmd> = refused.iter().map(|&i| cmds[i].clone()).collect();
            for (i, r) in refused.into_iter().zip(self.send_all_once(&again).await?) {
                replies[i] = r;
            }
        }
        Ok(replies)
    }

    async fn send_all_once(
        &self,
        cmds: &[redis::Cmd],
    ) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let wait = self.settings.wait_replicas;
        let wait_cmd = || {
            let mut c = redis::cmd("WAIT");
            c.arg(wait)
                .arg(self.settings.wait_timeout.as_millis() as u64);
            c
        };
        let checked = |reply: Value, acked: Option<&Value>| -> Result<Value, StoreError> {
            if let Value::ServerError(e) = reply {
                return Err(StoreError::from_redis(e.into()));
            }
            if let Some(Value::ServerError(e)) = acked {
                // WAIT itself was refused (an ACL user without it, say): say that, not "0 replicas".
                return Err(StoreError::from_redis(e.clone().into()));
            }
            match acked.map(|a| int(a).unwrap_or(0).max(0) as u64) {
                Some(acked) if acked < u64::from(wait) => Err(StoreError::NotReplicated {
                    acked,
                    wanted: wait,
                }),
                _ => Ok(reply),
            }
        };
        match &self.conn {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                if wait > 0 {
                    pipe.add_command(wait_cmd());
                }
                let mut replies: Vec<Value> = pipe.query_async(&mut c.clone()).await?;
                let acked = (wait > 0).then(|| replies.pop()).flatten();
                Ok(replies
                    .into_iter()
                    .map(|r| checked(r, acked.as_ref()))
                    .collect())
            }
            Conn::Cluster(c) => {
                let sent = cmds.iter().map(|cmd| {
                    let mut c = c.clone();
                    let mut pipe = redis::pipe();
                    pipe.ignore_errors().add_command(cmd.clone());
                    if wait > 0 {
                        // No key: the pipeline goes to the node of the write before it.
                        pipe.add_command(wait_cmd());
                    }
                    async move {
                        let mut replies: Vec<Value> = pipe
                            .query_async(&mut c)
                            .await
                            .map_err(StoreError::from_redis)?;
                        let acked = (wait > 0).then(|| replies.pop()).flatten();
                        let reply = replies
                            .pop()
                            .ok_or(StoreError::Protocol("cluster pipeline"))?;
                        checked(reply, acked.as_ref())
                    }
                });
                Ok(futures::future::join_all(sent).await)
            }
        }
    }

    /// The partition count of `queue` in this process's config (1: not partitioned).
    fn partition_count(&self, queue: &str) -> u32 {
        self.settings
            .partitions
            .get(queue)
            .copied()
            .unwrap_or(1)
            .max(1)
    }

    /// Refuses queues whose workers recorded another partition count than ours (one round trip,
    /// the first time this process enqueues to a queue).
    async fn check_partitions(&self, queues: &[String]) -> Result<(), StoreError> {
        // HGETs, not one HMGET: the shipped producer ACL user has HGET (docs/PROTOCOL.md, ACLs).
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("HGET").arg(keys::PARTITIONS).arg(q);
        }
        let mut conn = self.conn.clone();
        let recorded: Vec<Option<u32>> = match pipe.query_async(&mut conn).await {
            Ok(r) => r,
            // A user that may not read the registry enqueues unchecked, as before it existed.
            Err(e) if e.code() == Some("NOPERM") => return Ok(()),
            Err(e) => return Err(StoreError::from_redis(e)),
        };
        for (queue, workers) in queues.iter().zip(recorded) {
            let ours = self.partition_count(queue);
            if let Some(workers) = workers
                && workers != ours
            {
                return Err(StoreError::Partitions {
                    queue: queue.clone(),
                    workers,
                    ours,
                });
            }
        }
        Ok(())
    }

    /// Records the partition count of each queue a worker consumes whole (`hot`, not `hot#3`);
    /// returns the queues whose count was recorded otherwise before (another worker's config),
    /// with that count.
    pub async fn record_partitions(
        &self,
        queues: &[String],
    ) -> Result<Vec<(String, u32)>, StoreError> {
        let whole: Vec<&String> = queues
            .iter()
            .filter(|q| keys::split_partition(q).is_none())
            .collect();
        if whole.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let before: Vec<Option<u32>> = redis::cmd("HMGET")
            .arg(keys::PARTITIONS)
            .arg(&whole)
            .query_async(&mut conn)
            .await?;
        let mut set = redis::cmd("HSET");
        set.arg(keys::PARTITIONS);
        for q in &whole {
            set.arg(q.as_str()).arg(self.partition_count(q));
        }
        set.query_async::<()>(&mut conn).await?;
        Ok(whole
            .into_iter()
            .zip(before)
            .filter_map(|(q, b)| {
                b.filter(|&b| b != self.partition_count(q))
                    .map(|b| (q.clone(), b))
            })
            .collect())
    }

    /// The queue a job goes to: its own, or for a partitioned queue the partition its dedupe key
    /// (else its id) maps to.
    fn route(&self, job: &PreparedJob) -> String {
        match self.partition_count(&job.queue) {
            1 => job.queue.clone(),
            p => {
                let key = job.dedupe.as_ref().map_or(job.id.0.as_str(), |(k, _)| k);
                keys::partition(&job.queue, keys::partition_of(key, p))
            }
        }
    }

    /// The queues that hold `queue`'s jobs: its partitions `Q#0 … Q#P-1`, or itself.
    pub fn partitions_of(&self, queue: &str) -> Vec<String> {
        match self.partition_count(queue) {
            1 => vec![queue.to_string()],
            p => (0..p).map(|i| keys::partition(queue, i)).collect(),
        }
    }

    /// The queue to act on for job `id`: its partition when `queue` is partitioned (found by
    /// `locate`; `None` if no partition has it), else `queue` itself, unread.
    async fn holding(&self, queue: &str, id: &str) -> Result<Option<String>, StoreError> {
        if self.partitions_of(queue).len() > 1 {
            Ok(self.locate(queue, id).await?.map(|(part, _)| part))
        } else {
            Ok(Some(queue.to_string()))
        }
    }

    /// The partition of `queue` that holds job `id` (the queue itself when not partitioned),
    /// with the job's status; `None` if no partition has it.
    async fn locate(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<(String, JobStatus)>, StoreError> {
        let parts = self.partitions_of(queue);
        // All partitions at once: one round trip's wait however many there are.
        let found =
            futures::future::try_join_all(parts.iter().map(|p| self.status_in(p, id))).await?;
        Ok(parts
            .into_iter()
            .zip(found)
            .find_map(|(part, status)| status.map(|s| (part, s))))
    }

    /// The job's status, or `None` if no such job (never enqueued, or expired). On a
    /// partitioned queue, every partition is asked (at once).
    pub async fn status(&self, queue: &str, id: &str) -> Result<Option<JobStatus>, StoreError> {
        Ok(self.locate(queue, id).await?.map(|(_, status)| status))
    }

    /// The job's status in one queue (or partition).
    async fn status_in(&self, queue: &str, id: &str) -> Result<Option<JobStatus>, StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.job(id))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        JobStatus::from_fields(queue, fields)
            .map(Some)
            .map_err(|_| StoreError::Protocol("job hash state"))
    }

    /// Waits until the job is terminal and returns its status.
    ///
    /// Blocks on the queue's events stream (XREAD BLOCK) over `blocking`, a dedicated connection,
    /// rather than polling. The state and the stream's last id are read in one MULTI, so no event
    /// can fall between them. If the capped stream might have been trimmed past an event, the
    /// job's state is read once more directly.
    pub async fn wait_terminal<C: redis::aio::ConnectionLike + Send>(
        &self,
        blocking: &mut C,
        queue: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Waited, StoreError> {
        const READ_COUNT: usize = 1000;
        let Some(part) = self.holding(queue, id).await? else {
            return Ok(Waited::NotFound);
        };
        let queue = part.as_str();
        let keys = keys_for(queue)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut conn = self.conn.clone();
        let (state, last): (Option<String>, Value) = redis::pipe()
            .atomic()
            .cmd("HGET")
            .arg(keys.job(id))
            .arg("state")
            .cmd("XREVRANGE")
            .arg(keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let terminal = |s: Option<&str>| {
            s.and_then(|s| s.parse::<JobState>().ok())
                .is_some_and(JobState::is_terminal)
        };
        if state.is_none() || terminal(state.as_deref()) {
            return Ok(match self.status_in(queue, id).await? {
                Some(status) => Waited::Done(Box::new(status)),
                None => Waited::NotFound,
            });
        }
        let mut last = reply::stream_entries(&last)
            .and_then(|e| e.into_iter().next())
            .map(|(entry, _)| entry)
            .unwrap_or_else(|| "0-0".to_string());
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Waited::TimedOut);
            }
            let block_ms = (deadline - now).min(MAX_BLOCK).as_millis().max(1) as u64;
            let reply: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(keys.events())
                .arg(&last)
                .query_async(blocking)
                .await?;
            let entries = reply::read_entries(&reply).unwrap_or_default();
            let full = entries.len() >= READ_COUNT;
            let mut seen = false;
            for (entry, fields) in entries {
                last = entry;
                if names(&fields, id) && terminal(fields.get("state").map(String::as_str)) {
                    seen = true;
                }
            }
            if seen || full {
                match self.status_in(queue, id).await? {
                    Some(status) if status.state.is_terminal() => {
                        return Ok(Waited::Done(Box::new(status)));
                    }
                    Some(_) => {}
                    None => return Ok(Waited::NotFound),
                }
            }
        }
    }

    /// Cancels a job that has not started (queued, scheduled or retrying).
    pub async fn cancel(&self, queue: &str, id: &str) -> Result<CancelOutcome, StoreError> {
        let Some(part) = self.holding(queue, id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        let queue = part.as_str();
        let keys = keys_for(queue)?;
        let reply: Vec<String> = Self::fcall("sluice_cancel", &keys)
            .arg(keys::GROUP)
            .arg(id)
            .arg(self.settings.retention.as_millis() as u64)
            .arg(self.settings.events_maxlen)
            .run(self)
            .await?;
        let state = |s: &str| s.parse().map_err(|_| StoreError::Protocol("sluice_cancel"));
        match reply.as_slice() {
            [o, prev] if o == "cancelled" => Ok(CancelOutcome::Cancelled(state(prev)?)),
            [o, st] if o == "refused" => Ok(CancelOutcome::Refused(state(st)?)),
            [o, _] if o == "missing" => Ok(CancelOutcome::NotFound),
            _ => Err(StoreError::Protocol("sluice_cancel")),
        }
    }

    /// Reads up to `count` new entries of the queue for `consumer` without blocking and starts
    /// them, in one round trip (empty when there are none).
    pub async fn fetch(
        &self,
        queue: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Started>, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_fetch", &keys);
        cmd.arg(keys::GROUP)
            .arg(self.settings.events_maxlen)
            .arg(consumer)
            .arg(count);
        self.started(cmd, "sluice_fetch").await
    }

    /// Marks delivered entries running by `consumer` (one call for the whole batch).
    pub async fn start(
        &self,
        queue: &str,
        consumer: &str,
        entries: &[(String, String)],
    ) -> Result<Vec<Started>, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_start", &keys);
        cmd.arg(keys::GROUP)
            .arg(self.settings.events_maxlen)
            .arg(consumer);
        for (entry, id) in entries {
            cmd.arg(entry).arg(id);
        }
        self.started(cmd, "sluice_start").await
    }

    async fn started(
        &self,
        cmd: redis::Cmd,
        name: &'static str,
    ) -> Result<Vec<Started>, StoreError> {
        let reply: Value = cmd.run(self).await?;
        decode_started(&reply, name)
    }

    /// Stores a result and completes a running job; refused if it is not running.
    pub async fn complete(
        &self,
        queue: &str,
        id: &str,
        entry: &str,
        result: &str,
        http_status: u16,
        extra: &[(&str, &str)],
    ) -> Result<Transition, StoreError> {
        let one = Completion {
            id: id.to_string(),
            entry: entry.to_string(),
            result: result.to_string(),
            http_status,
            fields: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut t = self
            .complete_many(queue, std::slice::from_ref(&one))
            .await?;
        t.pop().ok_or(StoreError::Protocol("sluice_complete"))
    }

    /// Completes many running jobs of one queue in one call; one transition per job, in order.
    pub async fn complete_many(
        &self,
        queue: &str,
        jobs: &[Completion],
    ) -> Result<Vec<Transition>, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_complete", &keys);
        cmd.arg(keys::GROUP)
            .arg(self.settings.retention.as_millis() as u64)
            .arg(self.settings.events_maxlen);
        for j in jobs {
            cmd.arg(&j.id)
                .arg(&j.entry)
                .arg(&j.result)
                .arg(j.http_status)
                .arg(j.fields.len());
            for (field, value) in &j.fields {
                cmd.arg(field).arg(value);
            }
        }
        let reply: Vec<String> = cmd.run(self).await?;
        if reply.len() != jobs.len() {
            return Err(StoreError::Protocol("sluice_complete"));
        }
        Ok(reply
            .into_iter()
            .map(|r| match r.strip_prefix("refused:") {
                Some(state) => Transition::Refused(state.to_string()),
                None => Transition::Done,
            })
            .collect())
    }

    /// Puts a running job to sleep in the delayed ZSET for `delay`.
    #[allow(clippy::too_many_arguments)]
    pub async fn retry(
        &self,
        queue: &str,
        id: &str,
        entry: &str,
        delay: Duration,
        class: &str,
        error: &str,
        http_status: Option<u16>,
        spend: Spend,
    ) -> Result<Transition, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_retry", &keys);
        cmd.arg(keys::GROUP)
            .arg(id)
            .arg(entry)
            .arg(delay.as_millis() as u64)
            .arg(class)
            .arg(error)
            .arg(http_status.map(|s| s.to_string()).unwrap_or_default())
            .arg(spend.wire())
            .arg(self.settings.events_maxlen);
        self.transition(cmd, "sluice_retry").await
    }

    /// Dead-letters a job (or, with an empty or unknown id, a raw stream entry).
    #[allow(clippy::too_many_arguments)]
    pub async fn dead_letter(
        &self,
        queue: &str,
        id: &str,
        entry: &str,
        reason: &str,
        error: &str,
        http_status: Option<u16>,
        raw: &str,
    ) -> Result<Transition, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_dead", &keys);
        cmd.arg(keys::GROUP)
            .arg(id)
            .arg(entry)
            .arg(reason)
            .arg(error)
            .arg(http_status.map(|s| s.to_string()).unwrap_or_default())
            .arg(self.settings.dead_retention.as_millis() as u64)
            .arg(self.settings.dead_maxlen)
            .arg(self.settings.events_maxlen)
            .arg(raw);
        self.transition(cmd, "sluice_dead").await
    }

    /// Runs a complete, retry or dead-letter call.
    async fn transition(
        &self,
        cmd: redis::Cmd,
        name: &'static str,
    ) -> Result<Transition, StoreError> {
        let reply: Vec<String> = cmd.run(self).await?;
        match reply.first().map(String::as_str) {
            Some("completed" | "retrying" | "dead") => Ok(Transition::Done),
            Some("refused") => Ok(Transition::Refused(
                reply.get(1).cloned().unwrap_or_default(),
            )),
            _ => Err(StoreError::Protocol(name)),
        }
    }

    /// Moves up to `limit` due jobs to the stream; returns how many, and when the next is due.
    pub async fn promote(&self, queue: &str, limit: u32) -> Result<(u64, Option<u64>), StoreError> {
        let p = self.promote_timed(queue, limit, true).await?;
        Ok((p.promoted, p.next_due_ms))
    }

    /// Like `promote`, also returning the server's clock (to sleep until the next due time);
    /// with `trim`, also trims acknowledged entries from the stream.
    pub async fn promote_timed(
        &self,
        queue: &str,
        limit: u32,
        trim: bool,
    ) -> Result<Promoted, StoreError> {
        let keys = keys_for(queue)?;
        let (n, next, now): (i64, i64, i64) = Self::fcall("sluice_promote", &keys)
            .arg(limit)
            .arg(self.settings.events_maxlen)
            .arg(if trim { keys::GROUP } else { "" })
            .run(self)
            .await?;
        Ok(Promoted {
            promoted: n.max(0) as u64,
            next_due_ms: (next >= 0).then_some(next as u64),
            now_ms: now.max(0) as u64,
        })
    }

    /// Hands running jobs back to the queue (shutdown): `(entry, id)` pairs; returns how many.
    pub async fn release(
        &self,
        queue: &str,
        entries: &[(String, String)],
    ) -> Result<u64, StoreError> {
        let keys = keys_for(queue)?;
        let mut cmd = Self::fcall("sluice_release", &keys);
        cmd.arg(keys::GROUP).arg(self.settings.events_maxlen);
        for (entry, id) in entries {
            cmd.arg(entry).arg(id);
        }
        cmd.run(self).await
    }

    /// Creates the queue's consumer group (and stream) if missing, reading from the start.
    pub async fn create_group(&self, queue: &str) -> Result<(), StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys.stream())
            .arg(keys::GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(StoreError::Redis(e)),
            _ => Ok(()),
        }
    }

    /// Reads up to `count` new entries for `consumer`, blocking up to `block_ms`, over `blocking`
    /// (a dedicated connection: a blocking read must not stall the shared one).
    pub async fn read_group<C: redis::aio::ConnectionLike + Send>(
        &self,
        blocking: &mut C,
        queue: &str,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<Delivered>, StoreError> {
        let keys = keys_for(queue)?;
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(keys::GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(keys.stream())
            .arg(">")
            .query_async(blocking)
            .await?;
        decode_delivered(&reply)
    }

    /// Takes over entries idle longer than `min_idle` (a dead worker's), with their delivery
    /// counts. Entries deleted while pending are dropped from the pending list by Redis.
    pub async fn autoclaim(
        &self,
        queue: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<(Delivered, u64)>, StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(keys.stream())
            .arg(keys::GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let claimed = array(&reply)
            .and_then(|r| r.get(1))
            .and_then(reply::stream_entries)
            .ok_or(StoreError::Protocol("XAUTOCLAIM"))?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // Delivery counts of what we now own (XAUTOCLAIM counted this delivery).
        let first = claimed.first().map(|(e, _)| e.clone()).unwrap_or_default();
        let last = claimed.last().map(|(e, _)| e.clone()).unwrap_or_default();
        let pending: Value = redis::cmd("XPENDING")
            .arg(keys.stream())
            .arg(keys::GROUP)
            .arg(&first)
            .arg(&last)
            .arg(claimed.len() * 2 + 10)
            .arg(consumer)
            .query_async(&mut conn)
            .await?;
        let counts: HashMap<String, u64> = array(&pending)
            .unwrap_or_default()
            .iter()
            .filter_map(|row| {
                let row = array(row)?;
                Some((text(row.first()?)?, int(row.get(3)?)?.max(0) as u64))
            })
            .collect();
        Ok(claimed
            .into_iter()
            .map(|(entry, fields)| {
                let n = counts.get(&entry).copied().unwrap_or(1);
                (Delivered { entry, fields }, n)
            })
            .collect())
    }

    /// Records that `consumer` is alive on `queue` (`sluice_beat`, the server's clock).
    pub async fn beat(&self, queue: &str, consumer: &str) -> Result<(), StoreError> {
        let keys = keys_for(queue)?;
        let _: Value = Self::fcall("sluice_beat", &keys)
            .arg(consumer)
            .run(self)
            .await?;
        Ok(())
    }

    /// Takes up to `count` pending entries of consumers whose beats stopped more than
    /// `dead_after` ago (`sluice_takeover`), with their delivery counts (this one included).
    pub async fn takeover(
        &self,
        queue: &str,
        consumer: &str,
        dead_after: Duration,
        count: usize,
    ) -> Result<Vec<(Delivered, u64)>, StoreError> {
        let keys = keys_for(queue)?;
        let reply: Value = Self::fcall("sluice_takeover", &keys)
            .arg(keys::GROUP)
            .arg(consumer)
            .arg(dead_after.as_millis().max(1) as u64)
            .arg(count.max(1))
            .run(self)
            .await?;
        decode_takeover(&reply)
    }

    /// Resets the idle time of our in-flight entries so no one reclaims a live, slow call.
    pub async fn heartbeat(
        &self,
        queue: &str,
        consumer: &str,
        entries: &[String],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("XCLAIM")
            .arg(keys.stream())
            .arg(keys::GROUP)
            .arg(consumer)
            .arg(0)
            .arg(entries)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Asks the fleet-wide limiter of `upstream` for a slot (one call, one round trip).
    pub async fn admit(
        &self,
        upstream: &str,
        r: &AdmitRequest<'_>,
    ) -> Result<Admission, StoreError> {
        let (wait, kind): (f64, String) = redis::cmd("FCALL")
            .arg("sluice_admit")
            .arg(1)
            .arg(keys::upstream_prefix(upstream))
            .arg(r.rpm)
            .arg(r.tpm)
            .arg(r.tokens)
            .arg(r.burst_ms)
            .arg(r.horizon_ms)
            .arg(r.probe_ms)
            .arg(r.model)
            .arg(r.model_rpm)
            .arg(r.model_tpm)
            .arg(if r.adaptive { "1" } else { "0" })
            .arg(r.token_burst_ms)
            .run(self)
            .await?;
        let wait = Duration::from_micros((wait.max(0.0) * 1000.0) as u64);
        Ok(match kind.as_str() {
            "ok" => Admission::Reserved(wait),
            "probe" => Admission::Probe,
            "probe_auth" => Admission::CheapProbe,
            "hold" => Admission::Hold(wait),
            "open" => Admission::Open(wait),
            "half_open" => Admission::HalfOpen(wait),
            "busy" => Admission::Busy(wait),
            _ => return Err(StoreError::Protocol("sluice_admit")),
        })
    }

    /// Tells the fleet-wide limiter of `upstream` what a call's answer means for everyone.
    /// Returns `opened` or `closed` when the circuit changed.
    pub async fn report(&self, upstream: &str, r: &LimitReport<'_>) -> Result<String, StoreError> {
        let kind = match r.verdict {
            Verdict::Ok => "ok",
            Verdict::ProbeOk => "probe_ok",
            Verdict::ProbeFailed => "probe_fail",
            Verdict::Soft => "soft",
            Verdict::Hard => "hard",
            Verdict::Auth => "auth",
            Verdict::Limited => "limited",
            Verdict::None => "none",
        };
        redis::cmd("FCALL")
            .arg("sluice_report")
            .arg(1)
            .arg(keys::upstream_prefix(upstream))
            .arg(kind)
            .arg(r.hold_ms)
            .arg(r.cooloff_ms)
            .arg(r.min_calls)
            .arg(r.window_ms)
            .arg(r.tpm)
            .arg(r.delta_tokens)
            .arg(r.model)
            .arg(r.model_tpm)
            .arg(r.ok_calls)
            .arg(r.failure_pct)
            .run(self)
            .await
    }

    /// Records the upstream names a worker serves (for `sluice stats`).
    pub async fn register_upstreams(&self, names: &[String]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("SADD")
            .arg(keys::UPSTREAMS)
            .arg(names)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The sorted members of a registry set (`sluice:queues`, `sluice:upstreams`).
    async fn members(&self, set: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(set)
            .query_async(&mut conn)
            .await?;
        names.sort();
        Ok(names)
    }

    /// Circuit and hold of every registered upstream.
    pub async fn upstream_states(&self) -> Result<Vec<UpstreamState>, StoreError> {
        let names = self.members(keys::UPSTREAMS).await?;
        self.upstream_states_of(&names).await
    }

    /// The fleet-wide state of the named upstreams (one pipelined round trip each).
    pub async fn upstream_states_of(
        &self,
        names: &[String],
    ) -> Result<Vec<UpstreamState>, StoreError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let p = keys::upstream_prefix(name);
            type Reply = (HashMap<String, String>, i64, (u64, u64), Option<String>);
            let (circuit, hold_ttl, now, rate): Reply = redis::pipe()
                .cmd("HGETALL")
                .arg(format!("{p}circuit"))
                .cmd("PTTL")
                .arg(format!("{p}hold"))
                .cmd("TIME")
                .cmd("HGET")
                .arg(format!("{p}adaptive"))
                .arg("rate")
                .query_async(&mut conn)
                .await?;
            let now_ms = now.0 * 1000 + now.1 / 1000;
            let until: u64 = circuit
                .get("until")
                .and_then(|u| u.parse().ok())
                .unwrap_or(0);
            let state = match circuit.get("state").map(String::as_str) {
                Some("open") if until > now_ms => "open",
                Some("open") => "half_open",
                _ => "closed",
            };
            out.push(UpstreamState {
                upstream: name.clone(),
                circuit: state.to_string(),
                open_for_ms: (state == "open").then(|| until - now_ms),
                hold_for_ms: (hold_ttl > 0).then_some(hold_ttl as u64),
                opens: circuit
                    .get("opens")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(0),
                adaptive_rpm: rate.and_then(|r| r.parse().ok()),
            });
        }
        Ok(out)
    }

    /// Whether the queue is paused.
    pub async fn is_paused(&self, queue: &str) -> Result<bool, StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        Ok(redis::cmd("EXISTS")
            .arg(keys.paused())
            .query_async::<i64>(&mut conn)
            .await?
            == 1)
    }

    /// Removes consumers with nothing pending that have been idle longer than `idle`
    /// (workers that are gone); returns how many.
    pub async fn tidy_consumers(&self, queue: &str, idle: Duration) -> Result<u64, StoreError> {
        let keys = keys_for(queue)?;
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(keys.stream())
            .arg(keys::GROUP)
            .query_async(&mut conn)
            .await?;
        let mut removed = 0;
        for c in array(&reply).unwrap_or_default() {
            let c = reply::map_values(c).unwrap_or_default();
            let pending = c.get("pending").and_then(int).unwrap_or(1);
            let idle_ms = c.get("idle").and_then(int).unwrap_or(0);
            if let Some(name) = c.get("name").and_then(text)
                && pending == 0
                && idle_ms as u128 > idle.as_millis()
            {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(keys.stream())
                    .arg(keys::GROUP)
                    .arg(&name)
                    .query_async(&mut conn)
                    .await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Reads up to `count` dead-letter entries after `after` (exclusive; `None` from the start).
    pub async fn dead_list(
        &self,
        queue: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadEntry>, StoreError> {
        let keys = keys_for(queue)?;
        let start = match after {
            Some(id) => format!("({id}"),
            None => "-".to_string(),
        };
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(keys.dead())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        reply::stream_entries(&reply)
            .ok_or(StoreError::Protocol("XRANGE dead"))
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|(entry, f)| {
                        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                        DeadEntry {
                            id: get("id"),
                            reason: get("reason"),
                            status: get("status"),
                            attempts: get("attempts").parse().unwrap_or(0),
                            error: get("error"),
                            upstream: get("upstream"),
                            at_ms: get("at_ms").parse().unwrap_or(0),
                            raw: get("raw"),
                            entry,
                        }
                    })
                    .collect()
            })
    }

    /// Re-drives dead-letter entries: their jobs are queued again with attempts reset.
    pub async fn redrive(&self, queue: &str, entries: &[String]) -> Result<Redriven, StoreError> {
        let keys = keys_for(queue)?;
        let (redriven, kept, skipped): (u64, u64, u64) = Self::fcall("sluice_redrive", &keys)
            .arg(self.settings.events_maxlen)
            .arg(entries)
            .run(self)
            .await?;
        Ok(Redriven {
            redriven,
            kept,
            skipped,
        })
    }

    /// Deletes dead-letter entries and their dead jobs; returns how many entries went.
    pub async fn purge(&self, queue: &str, entries: &[String]) -> Result<u64, StoreError> {
        let keys = keys_for(queue)?;
        Self::fcall("sluice_purge", &keys)
            .arg(entries)
            .run(self)
            .await
    }

    /// Pauses (workers stop fetching from the queue) or resumes it; every partition of a
    /// partitioned queue.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        for part in self.partitions_of(queue) {
            let keys = keys_for(&part)?;
            let mut conn = self.conn.clone();
            let cmd = if paused {
                let mut c = redis::cmd("SET");
                c.arg(keys.paused()).arg("1");
                c
            } else {
                let mut c = redis::cmd("DEL");
                c.arg(keys.paused());
                c
            };
            cmd.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    /// Every queue that a Sluice producer has enqueued to.
    pub async fn queues(&self) -> Result<Vec<String>, StoreError> {
        self.members(keys::QUEUES).await
    }

    /// A queue's numbers, read in one pipeline; a partitioned queue's are the sums over its
    /// partitions (consumers: the most any partition has).
    pub async fn stats(&self, queue: &str) -> Result<QueueStats, StoreError> {
        let parts = self.partitions_of(queue);
        if parts.len() == 1 {
            return self.stats_of(queue).await;
        }
        let each = futures::future::try_join_all(parts.iter().map(|p| self.stats_of(p))).await?;
        let mut sum = QueueStats {
            queue: queue.to_string(),
            partitions: parts.len() as u32,
            ..QueueStats::default()
        };
        for s in each {
            sum.stream_len += s.stream_len;
            sum.lag = match (sum.lag, s.lag) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            sum.pending += s.pending;
            sum.consumers = sum.consumers.max(s.consumers);
            sum.delayed += s.delayed;
            sum.dead_len += s.dead_len;
            sum.paused |= s.paused;
            for (k, v) in s.counts {
                *sum.counts.entry(k).or_default() += v;
            }
        }
        Ok(sum)
    }

    /// One queue's (or partition's) numbers, read in one pipeline.
    async fn stats_of(&self, queue: &str) -> Result<QueueStats, StoreError> {
        let keys = keys_for(queue)?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("XLEN")
            .arg(keys.stream())
            .cmd("ZCARD")
            .arg(keys.delayed())
            .cmd("XLEN")
            .arg(keys.dead())
            .cmd("EXISTS")
            .arg(keys.paused())
            .cmd("HGETALL")
            .arg(keys.counts())
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(keys.stream());
        let mut conn = self.conn.clone();
        let r: Vec<Value> = pipe.query_async(&mut conn).await?;
        let n = |i: usize| r.get(i).and_then(int).unwrap_or(0).max(0) as u64;
        let mut stats = QueueStats {
            queue: queue.to_string(),
            partitions: 1,
            stream_len: n(0),
            delayed: n(1),
            dead_len: n(2),
            paused: n(3) == 1,
            ..QueueStats::default()
        };
        if let Some(map) = r.get(4).and_then(reply::map) {
            stats.counts = map
                .into_iter()
                .map(|(k, v)| (k, v.parse().unwrap_or(0)))
                .collect();
        }
        if let Some(groups) = r.get(5).and_then(array) {
            for g in groups {
                let g = reply::map_values(g).unwrap_or_default();
                if g.get("name").and_then(text).as_deref() == Some(keys::GROUP) {
                    stats.pending = g.get("pending").and_then(int).unwrap_or(0).max(0) as u64;
                    stats.consumers = g.get("consumers").and_then(int).unwrap_or(0).max(0) as u64;
                    stats.lag = g.get("lag").and_then(int).map(|l| l.max(0) as u64);
                }
            }
        }
        Ok(stats)
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

/// Whether Redis said the called function does not exist.
fn missing_library(e: &redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
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

/// Decodes what `sluice_fetch` and `sluice_start` answer (`name` names the call in errors).
/// Untrusted bytes in, a clear error out: it never panics (fuzzed in tests/fuzz/).
pub fn decode_started(reply: &Value, name: &'static str) -> Result<Vec<Started>, StoreError> {
    let bad = || StoreError::Protocol(name);
    array(reply)
        .ok_or_else(bad)?
        .iter()
        .map(|item| {
            let f = array(item).ok_or_else(bad)?;
            let s = |i: usize| f.get(i).and_then(text).ok_or_else(bad);
            let (entry, id) = (s(0)?, s(1)?);
            Ok(match s(2)?.as_str() {
                "run" => Started::Run {
                    entry,
                    id,
                    spec: s(3)?,
                    attempt: f.get(4).and_then(int).unwrap_or(1) as u32,
                    waits: f.get(5).and_then(int).unwrap_or(0).max(0) as u32,
                    ready_ms: f.get(6).and_then(int).unwrap_or(0).max(0) as u64,
                },
                "skip" => Started::Skip { entry, id },
                "missing" => Started::Missing { entry, id },
                "malformed" => Started::Malformed {
                    entry,
                    raw: s(3).unwrap_or_default(),
                },
                "paused" => Started::Paused { entry, id },
                "corrupt" => Started::Corrupt {
                    entry,
                    id,
                    error: s(3).unwrap_or_default(),
                },
                _ => return Err(bad()),
            })
        })
        .collect()
}

/// Decodes `sluice_takeover`'s reply: `[[entry, [field, value, …], deliveries], …]`.
pub fn decode_takeover(reply: &Value) -> Result<Vec<(Delivered, u64)>, StoreError> {
    let bad = || StoreError::Protocol("sluice_takeover");
    array(reply)
        .ok_or_else(bad)?
        .iter()
        .map(|row| {
            let row = array(row).ok_or_else(bad)?;
            let entry = row.first().and_then(text).ok_or_else(bad)?;
            let fields = match row.get(1) {
                Some(Value::Nil) | None => HashMap::new(),
                Some(f) => reply::map(f).ok_or_else(bad)?,
            };
            let n = row.get(2).and_then(int).unwrap_or(1).max(1) as u64;
            Ok((Delivered { entry, fields }, n))
        })
        .collect()
}

/// Decodes an XREADGROUP reply into delivered entries (fuzzed in tests/fuzz/).
pub fn decode_delivered(reply: &Value) -> Result<Vec<Delivered>, StoreError> {
    let entries = reply::read_entries(reply).ok_or(StoreError::Protocol("XREADGROUP"))?;
    Ok(entries
        .into_iter()
        .map(|(entry, fields)| Delivered { entry, fields })
        .collect())
}

/// The keys of a queue whose name has been checked (it goes inside the `{…}` hash tag).
/// A partition's name (`Q#i`) is accepted where a queue's is.
fn keys_for(queue: &str) -> Result<QueueKeys, StoreError> {
    crate::validate::queue_name(keys::base_queue(queue))
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(QueueKeys::new(queue))
}

/// Whether an events-stream entry is about job `id`: its `id`, or one of its `ids` (an event for
/// several jobs that reached the same state in one call).
pub fn names(fields: &HashMap<String, String>, id: &str) -> bool {
    fields.get("id").map(String::as_str) == Some(id)
        || fields
            .get("ids")
            .is_some_and(|ids| ids.split(' ').any(|i| i == id))
}

/// A per-job refusal of `sluice_enqueue_many` ("SLUICE_INVALID why") as the error the
/// single-job call's error reply gives.
fn refusal(text: &str) -> StoreError {
    let (code, why) = text.split_once(' ').unwrap_or((text, ""));
    match code {
        "SLUICE_TOO_LARGE" => StoreError::TooLarge(why.to_string()),
        "SLUICE_INVALID" => StoreError::Invalid(why.to_string()),
        _ => StoreError::Invalid(text.to_string()),
    }
}

fn parse_enqueued(v: Value) -> Result<Enqueued, StoreError> {
    if let Value::ServerError(e) = v {
        return Err(StoreError::from_redis(e.into()));
    }
    let bad = || StoreError::Protocol("sluice_enqueue");
    let f = array(&v).ok_or_else(bad)?;
    let s = |i: usize| f.get(i).and_then(text).ok_or_else(bad);
    let (created, conflict) = match s(0)?.as_str() {
        "created" => (true, false),
        "duplicate" => (false, false),
        "conflict" => (false, true),
        // A refusal of this job alone, worded as the single-job call's error reply.
        "error" => return Err(refusal(&s(1)?)),
        _ => return Err(bad()),
    };
    Ok(Enqueued {
        id: s(1)?,
        created,
        conflict,
        state: s(2)?.parse().ok(),
    })
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
