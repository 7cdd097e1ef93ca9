//! A real Redis (or Valkey, with `SLUICE_TEST_SERVER=valkey`: [`crate::server_kind`]) for one
//! test: started by the test, on a free loopback port, with its own temporary data directory, and
//! killed when the handle drops.
//!
//! Readiness is awaited from the server's own "Ready to accept connections" log line (both
//! servers print it), not by sleeping. With `SLUICE_TEST_REDIS=docker` the server is
//! testcontainers' `redis:7` (or `valkey/valkey:8`) image instead, for machines with Docker and
//! no server binary.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};

use crate::server_kind::{ServerKind, extra_server_args};

/// How long a starting server may take before the harness gives up (a bound, not a wait).
const START_TIMEOUT: Duration = Duration::from_secs(20);

enum Backend {
    Local {
        child: Child,
        dir: tempfile::TempDir,
    },
    /// Kept for its drop, which removes the container.
    Docker(#[allow(dead_code)] Box<ContainerAsync<GenericImage>>),
}

/// A running Redis that belongs to one test.
pub struct RedisServer {
    backend: Backend,
    port: u16,
    extra_args: Vec<String>,
}

/// A port free on loopback just now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener
        .local_addr()
        .expect("local address of the ephemeral listener")
        .port()
}

impl RedisServer {
    /// Starts a Redis with default settings (no persistence).
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// Starts a Redis with extra `redis-server` arguments (`["--appendonly", "yes"]`); `{port}`
    /// in an argument stands for the port chosen (for `--port 0 --tls-port {port}`).
    pub async fn start_with(args: &[&str]) -> RedisServer {
        let mut extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        extra_args.extend(extra_server_args());
        if std::env::var("SLUICE_TEST_REDIS").as_deref() == Ok("docker") {
            return Self::start_docker(extra_args).await;
        }
        let dir = tempfile::Builder::new()
            .prefix("sluice-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server");
        // A port can be taken between choosing and binding it; try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn_local(dir.path(), port, &extra_args) {
                Ok(child) => {
                    return RedisServer {
                        backend: Backend::Local { child, dir },
                        port,
                        extra_args,
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    async fn start_docker(extra_args: Vec<String>) -> RedisServer {
        let kind = ServerKind::current();
        let mut cmd = vec![format!("{}-server", kind.name())];
        cmd.extend(extra_args.iter().cloned());
        let (name, tag) = kind.docker_image();
        let image = GenericImage::new(name, tag)
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"));
        let container = testcontainers::ImageExt::with_cmd(image, cmd)
            .start()
            .await
            .unwrap_or_else(|e| {
                panic!("start testcontainers' {name}:{tag} (SLUICE_TEST_REDIS=docker): {e}")
            });
        let port = container
            .get_host_port_ipv4(6379.tcp())
            .await
            .expect("mapped redis port");
        RedisServer {
            backend: Backend::Docker(Box::new(container)),
            port,
            extra_args,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory of a local server (None under Docker).
    pub fn dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local { dir, .. } => Some(dir.path()),
            Backend::Docker(_) => None,
        }
    }

    /// Kills the server at once (SIGKILL), as a crash does; `start_again` brings it back.
    pub fn stop_hard(&mut self) {
        let child = self.local_child("stop_hard");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server cleanly (SIGTERM: Redis fsyncs its AOF and exits, as `SHUTDOWN` does).
    pub fn stop_clean(&mut self) {
        let child = self.local_child("stop_clean");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }

    /// Starts a stopped server again on the same port and data dir (its AOF is loaded).
    pub fn start_again(&mut self) {
        let port = self.port;
        let args = self.extra_args.clone();
        if let Backend::Local { child, dir } = &mut self.backend {
            *child = spawn_local(dir.path(), port, &args)
                .unwrap_or_else(|e| panic!("restart redis-server: {e}"));
        }
    }

    /// Kills the server at once (SIGKILL) and starts it again on the same port and data dir.
    pub fn restart_hard(&mut self) {
        self.stop_hard();
        self.start_again();
    }

    /// Stops the server cleanly and starts it again on the same port and data dir.
    pub fn restart_clean(&mut self) {
        self.stop_clean();
        self.start_again();
    }

    fn local_child(&mut self, what: &str) -> &mut Child {
        match &mut self.backend {
            Backend::Local { child, .. } => child,
            Backend::Docker(_) => panic!("{what} needs a local redis-server"),
        }
    }

    /// A plain client connection for assertions.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test's redis")
    }
}

fn spawn_local(dir: &Path, port: u16, extra: &[String]) -> Result<Child, String> {
    let kind = ServerKind::current();
    let bin = kind.server_binary(extra.iter().any(|a| a == "--tls-port"));
    let mut child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--save", "", "--appendonly", "no", "--logfile", ""])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        // `{port}` in an extra argument is the chosen port (`--port 0 --tls-port {port}`).
        .args(extra.iter().map(|a| a.replace("{port}", &port.to_string())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: {e} (install it: {})",
                bin.display(),
                kind.install_hint()
            )
        })?;
    let stdout = child.stdout.take().ok_or("no stdout from redis-server")?;
    let (tx, rx) = mpsc::channel();
    // Reads the log until ready, then keeps draining it so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut log = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(t) = &tx {
                if line.contains("Ready to accept connections") {
                    let _ = t.send(Ok(()));
                    tx = None;
                } else {
                    log.push(line);
                }
            }
        }
        if let Some(t) = tx {
            let _ = t.send(Err(log.join("\n")));
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(())) => Ok(child),
        Ok(Err(log)) => {
            let _ = child.wait();
            Err(format!("redis-server exited on port {port}:\n{log}"))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("redis-server not ready after {START_TIMEOUT:?}"))
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Backend::Local { child, .. } = &mut self.backend {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
