//! `sluice-api` as a real process for tests: a config file with the test's Redis and keys, the
//! address it prints on start, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use sluice_producer::api::auth::sha256_hex;

use crate::bins::cargo_bin;

/// A running `sluice-api` and its base URL.
pub struct ApiProcess {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[api.keys.NAME]` for the secret `key` with its queues, upstreams and tenant, plus `extra`
/// lines (webhook hosts, a body cap).
pub fn key_toml(name: &str, key: &str, queues: &[&str], tenant: &str, extra: &str) -> String {
    format!(
        "[api.keys.{name}]\nsha256 = \"{}\"\nqueues = {queues:?}\nupstreams = [\"mock\"]\ntenant = \"{tenant}\"\n{extra}\n",
        sha256_hex(key)
    )
}

impl ApiProcess {
    /// The process id (for its CPU and memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `sluice-api` on a free port for `redis_url`, with `[api]` settings `api` (TOML
    /// lines, e.g. `max_body_bytes = 65536`) and the key tables `keys`.
    pub fn start(redis_url: &str, api: &str, keys: &str) -> ApiProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("api.toml");
        std::fs::write(
            &config,
            format!(
                "[redis]\nurl = \"{redis_url}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n{api}\n\n{keys}"
            ),
        )
        .expect("write config");
        let mut child = Command::new(cargo_bin("sluice-producer", "sluice-api"))
            .arg("--config")
            .arg(&config)
            .env_remove("SLUICE_REDIS_URL")
            .env_remove("SLUICE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sluice-api");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let addr = line
            .trim()
            .strip_prefix("sluice-api listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        ApiProcess {
            child,
            base: format!("http://{addr}"),
            _dir: dir,
        }
    }
}

/// The `error.message` of an API error answer ("" when there is none).
pub fn error_message(body: &serde_json::Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

/// GET `url` with bearer `key` and its JSON body.
pub async fn get_json(http: &reqwest::Client, url: &str, key: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}
