//! Retention, caps, timeouts and TLS files the store applies to every call.

use super::*;

/// Retention and caps applied by the functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Approximate cap of each queue's events stream.
    pub events_maxlen: u64,
    /// Approximate cap of each queue's dead-letter stream.
    pub dead_maxlen: u64,
    /// How long a normal or low job waits before it starts ahead of high ones.
    pub aging: Duration,
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
    /// How often workers beat (`worker.heartbeat_ms`): a worker whose last beat is older than
    /// three of these is not counted live.
    pub heartbeat: Duration,
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
    pub(super) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// Reads the files; the error names the file that could not be read.
    #[cfg(feature = "tls")]
    pub(super) fn load(&self) -> Result<redis::TlsCertificates, StoreError> {
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
    /// The built-in defaults (`config/default.toml`), as a worker or producer without a config
    /// file has them.
    fn default() -> Self {
        crate::Config::defaults().store_settings()
    }
}
