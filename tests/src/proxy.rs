//! A TCP proxy that injects network faults, for tests that put it between workers and Redis or
//! between workers and the mock.
//!
//! Every accepted connection is forwarded to the target. A test can then, at any time:
//! - `reset_all`: cut every live connection with a TCP RST (SO_LINGER 0), as a crashed
//!   middlebox or a peer reboot does;
//! - `set_stalled(true)`: stop moving bytes both ways while keeping the connections open (a
//!   black-holed link: nothing arrives, nothing errors) until `set_stalled(false)`;
//! - `set_refusing(true)`: close new connections at once (the target "down" from the client's
//!   side) until `set_refusing(false)`.
//!
//! Counters say what was done (connections accepted, reset, refused).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    pub accepted: u64,
    pub reset: u64,
    pub refused: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    reset: AtomicU64,
    refused: AtomicU64,
}

/// A running proxy; it stops (and drops its connections) when the handle drops.
pub struct FaultProxy {
    addr: SocketAddr,
    stalled: watch::Sender<bool>,
    refusing: watch::Sender<bool>,
    /// Bumped to cut every connection open at that moment.
    resets: watch::Sender<u64>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy's port");
        let addr = listener.local_addr().expect("proxy address");
        let (stalled, _) = watch::channel(false);
        let (refusing, _) = watch::channel(false);
        let (resets, _) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(
            listener,
            target,
            stalled.subscribe(),
            refusing.subscribe(),
            resets.clone(),
            counters.clone(),
        ));
        FaultProxy {
            addr,
            stalled,
            refusing,
            resets,
            counters,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every connection open now (new ones are accepted as before).
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Stops (true) or resumes (false) moving bytes on every connection.
    pub fn set_stalled(&self, on: bool) {
        self.stalled.send_replace(on);
    }

    /// Closes new connections at once (true) or forwards them again (false).
    pub fn set_refusing(&self, on: bool) {
        self.refusing.send_replace(on);
    }

    pub fn counts(&self) -> ProxyCounts {
        ProxyCounts {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            reset: self.counters.reset.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    stalled: watch::Receiver<bool>,
    refusing: watch::Receiver<bool>,
    resets: watch::Sender<u64>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *refusing.borrow() {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(forward(
            client,
            target,
            stalled.clone(),
            resets.subscribe(),
            counters.clone(),
        ));
    }
}

/// Moves bytes both ways until either side closes, or a reset cuts the connection.
async fn forward(
    client: TcpStream,
    target: SocketAddr,
    stalled: watch::Receiver<bool>,
    mut resets: watch::Receiver<u64>,
    counters: Arc<Counters>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // SO_LINGER 0: dropping the socket sends RST instead of FIN.
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    resets.mark_unchanged();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = pump(&mut cr, &mut sw, stalled.clone());
    let down = pump(&mut sr, &mut cw, stalled);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = resets.changed() => {
            counters.reset.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn pump<R, W>(from: &mut R, to: &mut W, mut stalled: watch::Receiver<bool>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A stalled link holds what it read until it is released.
        while *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
