//! Which server the tests run on: Redis (the default) or Valkey, chosen by
//! `SLUICE_TEST_SERVER=redis|valkey`, and where each one's binaries are.
//!
//! - Redis: `SLUICE_REDIS_SERVER`, else `redis-server` on PATH; `redis-cli` for clusters.
//! - Valkey: `SLUICE_VALKEY_SERVER`, else `valkey-server` on PATH; `SLUICE_VALKEY_CLI`, else
//!   `valkey-cli`. A server started with `--tls-port` runs `SLUICE_VALKEY_TLS_SERVER` when that is
//!   set: tests/install-valkey.sh points it at a TLS-capable build, because the PyPI wheel's
//!   `valkey-server` is built without TLS.
//!
//! Extra arguments for every server a test starts come from `SLUICE_TEST_SERVER_ARGS`
//! (whitespace-separated, e.g. `--io-threads 2` for the benchmark).

use std::path::PathBuf;

/// The server family under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Redis,
    Valkey,
}

impl ServerKind {
    /// The kind `SLUICE_TEST_SERVER` names (Redis when unset); any other value stops the test
    /// with a message naming it, rather than silently testing the wrong server.
    pub fn current() -> ServerKind {
        match std::env::var("SLUICE_TEST_SERVER") {
            Err(_) => ServerKind::Redis,
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "redis" => ServerKind::Redis,
                "valkey" => ServerKind::Valkey,
                other => panic!("SLUICE_TEST_SERVER={other:?}: expected redis or valkey"),
            },
        }
    }

    /// `redis` or `valkey`.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Redis => "redis",
            ServerKind::Valkey => "valkey",
        }
    }

    /// The server binary; `tls` when the server is started with a TLS port.
    pub fn server_binary(self, tls: bool) -> PathBuf {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        match self {
            ServerKind::Redis => env("SLUICE_REDIS_SERVER"),
            ServerKind::Valkey if tls => {
                env("SLUICE_VALKEY_TLS_SERVER").or_else(|| env("SLUICE_VALKEY_SERVER"))
            }
            ServerKind::Valkey => env("SLUICE_VALKEY_SERVER"),
        }
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("{}-server", self.name())))
    }

    /// The CLI that creates clusters (`--cluster create`).
    pub fn cli_binary(self) -> PathBuf {
        let var = match self {
            ServerKind::Redis => "SLUICE_REDIS_CLI",
            ServerKind::Valkey => "SLUICE_VALKEY_CLI",
        };
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("{}-cli", self.name())))
    }

    /// testcontainers' image and tag for `SLUICE_TEST_REDIS=docker`.
    pub fn docker_image(self) -> (&'static str, &'static str) {
        match self {
            ServerKind::Redis => ("redis", "7"),
            ServerKind::Valkey => ("valkey/valkey", "8"),
        }
    }

    /// How to get the server when its binary is missing.
    pub fn install_hint(self) -> &'static str {
        match self {
            ServerKind::Redis => "apt-get install redis-server",
            ServerKind::Valkey => {
                "run tests/run.sh with SLUICE_TEST_SERVER=valkey (tests/install-valkey.sh), or set \
                 SLUICE_VALKEY_SERVER"
            }
        }
    }
}

/// `SLUICE_TEST_SERVER_ARGS`, split on whitespace.
pub fn extra_server_args() -> Vec<String> {
    std::env::var("SLUICE_TEST_SERVER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
