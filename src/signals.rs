//! The process's SIGTERM and SIGINT: the first starts a graceful shutdown, the second aborts it.
//! `serve` drains its connections on the first; the controller releases its Lease.

use std::io;

use tokio_util::sync::CancellationToken;

/// A second SIGTERM or SIGINT arrived before the drain finished: the process should exit at once
/// (status 1), for an operator who does not want to wait.
#[derive(Debug, thiserror::Error)]
#[error("second signal received, exiting without draining")]
pub struct Aborted;

/// The process's SIGTERM and SIGINT, from [`spawn_signal_handler`].
#[derive(Debug)]
pub struct Signals {
    /// Cancelled on the first signal: flip `/readyz` to 503 and start the command's graceful shutdown.
    pub shutdown: CancellationToken,
    second: CancellationToken,
}

impl Signals {
    /// Resolves on the second signal.
    pub async fn aborted(&self) -> Aborted {
        self.second.cancelled().await;
        Aborted
    }
}

/// Installs the handlers for SIGTERM and SIGINT; see [`Signals`].
pub fn spawn_signal_handler() -> io::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let signals = Signals {
        shutdown: CancellationToken::new(),
        second: CancellationToken::new(),
    };
    let (first, second) = (signals.shutdown.clone(), signals.second.clone());
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down; send the signal again to exit at once"
        );
        first.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal, exiting without draining");
        second.cancel();
    });
    Ok(signals)
}
