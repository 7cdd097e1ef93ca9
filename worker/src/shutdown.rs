//! Shutdown: SIGTERM or SIGINT stops fetching; in-flight calls get the grace period to finish;
//! then whatever is still running is abandoned and handed back to the queue. A second signal
//! ends the grace period at once (an operator who presses Ctrl-C twice means it).
//!
//! Two tokens carry this: `stop` (no new work) and `abandon` (give up in-flight calls).

use tokio_util::sync::CancellationToken;

/// The worker's shutdown signals.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled on SIGTERM/SIGINT: fetch, schedule and reclaim loops end.
    pub stop: CancellationToken,
    /// Cancelled when the grace period is over: in-flight calls are abandoned.
    pub abandon: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels `stop` on the first SIGTERM or SIGINT, and `abandon` on the second.
    pub fn listen_for_signals(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(
                "shutdown signal: no new jobs; finishing in-flight calls (a second signal hands them back now)"
            );
            me.stop.cancel();
            wait_for_signal().await;
            tracing::warn!("second shutdown signal: handing in-flight calls back now");
            me.abandon.cancel();
        });
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
