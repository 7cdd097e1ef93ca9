//! Errors from the store: what Redis or the function library refused, and whether trying again
//! can help (`StoreError::is_transient`).

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
    Redis(redis::RedisError),
    /// The queue's consumer group does not exist (`NOGROUP`: the stream was deleted, or a
    /// fresh Redis): create it and read again.
    #[error("no consumer group: {0}")]
    NoGroup(String),
    /// A Lua runtime error inside the function library (`SLUICE_BUG`): a defect to report.
    #[error("the sluice library failed (SLUICE_BUG): {0}")]
    LibraryBug(String),
    /// This process is stopping and no longer takes the call (the completer after shutdown).
    #[error("the worker is stopping: {0}")]
    Stopping(&'static str),
    /// The function library refused the call (`SLUICE_INVALID`).
    #[error("refused by the sluice library in Redis (SLUICE_INVALID): {0}")]
    Invalid(String),
    /// The job was over the library's size limit (`SLUICE_TOO_LARGE`).
    #[error("refused by the sluice library in Redis (SLUICE_TOO_LARGE): {0}")]
    TooLarge(String),
    /// An argument this process checked before sending anything (a queue name, say).
    #[error("invalid {0}")]
    Argument(#[from] crate::validate::InvalidJob),
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
                    || super::missing_library(e)
            }
            _ => false,
        }
    }

    /// Sorts a Redis error by its code (the first word of an error reply): the library's
    /// `SLUICE_*` refusals, `NOPERM`, `NOGROUP`; anything else stays a Redis error.
    pub(super) fn from_redis(e: redis::RedisError) -> Self {
        let detail = || e.detail().unwrap_or("").to_string();
        match e.code() {
            Some("SLUICE_INVALID") => StoreError::Invalid(detail()),
            Some("SLUICE_TOO_LARGE") => StoreError::TooLarge(detail()),
            Some("SLUICE_BUG") => StoreError::LibraryBug(detail()),
            Some("SLUICE_DENIED") | Some("NOPERM") => StoreError::Denied(e.to_string()),
            Some("NOGROUP") => StoreError::NoGroup(detail()),
            _ => StoreError::Redis(e),
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::from_redis(e)
    }
}
