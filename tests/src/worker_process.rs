//! `sluice-worker` as a real process for tests: a config file written for the test's Redis and
//! mock, a log file, SIGTERM and SIGKILL.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::bins::cargo_bin;

/// Settings a test may change; the rest are fast defaults for tests.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub redis_url: String,
    pub mock_url: String,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub lease_ms: u64,
    pub grace_ms: u64,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub base_ms: u64,
    pub factor: f64,
    pub cap_ms: u64,
    pub quota_wait_ms: u64,
    pub events_maxlen: u64,
    /// `log.filter` (RUST_LOG syntax); SLUICE_TEST_WORKER_LOG replaces it.
    pub log_filter: String,
    /// Log JSON lines instead of human ones.
    pub log_json: bool,
    /// Environment variables for the process (secrets named by `auth_env`, say).
    pub env: Vec<(String, String)>,
    /// Extra TOML appended to the config.
    pub extra: String,
}

impl WorkerOptions {
    pub fn new(redis_url: &str, mock_url: &str) -> Self {
        WorkerOptions {
            redis_url: redis_url.into(),
            mock_url: mock_url.into(),
            queues: vec!["q".into()],
            concurrency: 50,
            lease_ms: 60_000,
            grace_ms: 5_000,
            timeout_ms: 10_000,
            max_attempts: 5,
            base_ms: 20,
            factor: 2.0,
            cap_ms: 200,
            quota_wait_ms: 60_000,
            events_maxlen: 1_000_000,
            log_filter: "warn,sluice_worker::http=info".into(),
            log_json: false,
            env: Vec::new(),
            extra: String::new(),
        }
    }

    fn toml(&self, name: &str) -> String {
        let queues: Vec<String> = self.queues.iter().map(|q| format!("{q:?}")).collect();
        format!(
            r#"[redis]
url = "{redis}"

[queues]
events_maxlen = {events}

[worker]
queues = [{queues}]
concurrency = {concurrency}
consumer = "{name}"
lease_ms = {lease}
grace_ms = {grace}
http_listen = "127.0.0.1:0"

[log]
format = "{format}"
filter = "{filter}"

[retry]
max_attempts = {attempts}
base_ms = {base}
factor = {factor}
cap_ms = {cap}
quota_wait_ms = {quota}

[upstreams.mock]
base_url = "{mock}"
timeout_ms = {timeout}
{extra}
"#,
            redis = self.redis_url,
            events = self.events_maxlen,
            queues = queues.join(", "),
            concurrency = self.concurrency,
            lease = self.lease_ms,
            grace = self.grace_ms,
            attempts = self.max_attempts,
            base = self.base_ms,
            factor = self.factor,
            cap = self.cap_ms,
            quota = self.quota_wait_ms,
            mock = self.mock_url,
            timeout = self.timeout_ms,
            format = if self.log_json { "json" } else { "human" },
            filter = self.log_filter,
            extra = self.extra,
        )
    }
}

/// A running worker process; killed when dropped.
pub struct WorkerProcess {
    child: Child,
    pub name: String,
    dir: tempfile::TempDir,
}

impl WorkerProcess {
    pub fn spawn(name: &str, options: &WorkerOptions) -> WorkerProcess {
        let dir = tempfile::Builder::new()
            .prefix("sluice-worker-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("worker.toml");
        std::fs::write(&config, options.toml(name)).expect("write worker config");
        let log = std::fs::File::create(dir.path().join("worker.log")).expect("log file");
        let mut cmd = Command::new(cargo_bin("sluice-worker", "sluice-worker"));
        cmd.arg("--config").arg(&config).env_remove("RUST_LOG");
        if let Ok(filter) = std::env::var("SLUICE_TEST_WORKER_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let child = cmd
            .env_remove("SLUICE_REDIS_URL")
            .env_remove("SLUICE_CONFIG")
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("spawn sluice-worker");
        WorkerProcess {
            child,
            name: name.into(),
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGTERM: graceful shutdown.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL: the process dies at once, as in a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, up to `timeout` (a bound; exits are awaited, not slept on).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address of the worker's HTTP server, from the line it logs once listening (`None`
    /// if it has not said within `timeout`, or exited).
    pub async fn http_addr(&mut self, timeout: Duration) -> Option<std::net::SocketAddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for line in self.log().lines() {
                if !line.contains("http server listening") {
                    continue;
                }
                let rest = line
                    .split_once("addr=")
                    .or_else(|| line.split_once("\"addr\":\""))
                    .map(|(_, r)| r)?;
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                return addr.parse().ok();
            }
            if tokio::time::Instant::now() >= deadline
                || matches!(self.child.try_wait(), Ok(Some(_)))
            {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The worker's HTTP address once it has started (`/readyz` answers 200: Redis reached,
    /// groups made, library loaded); `None` if not within `timeout`. The server listens before
    /// Redis is reached, so [`Self::http_addr`] alone does not mean started.
    pub async fn ready(&mut self, timeout: Duration) -> Option<std::net::SocketAddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        let addr = self.http_addr(timeout).await?;
        loop {
            if crate::scrape::get(addr, "/readyz").await.0 == 200 {
                return Some(addr);
            }
            if tokio::time::Instant::now() >= deadline
                || matches!(self.child.try_wait(), Ok(Some(_)))
            {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the worker logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("worker.log")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
