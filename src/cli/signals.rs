//! Signal plumbing: SIGINT/SIGTERM become cancellation, SIGHUP a reload
//! request. Handlers run as tasks on the one runtime; the library sees only
//! tokens and a channel (`daemon::Signals`), never a signal.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Linux (and POSIX) numbers of the two stop signals, for exit codes.
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// First SIGINT/SIGTERM: stop taking work and finish cleanly (`stop`).
/// A second one cancels `abandon`, if given: stop waiting at once.
/// Returns the first signal's number once one came, 0 before.
pub fn spawn_signal_handler(
    stop: CancellationToken,
    abandon: Option<CancellationToken>,
) -> Arc<AtomicI32> {
    use tokio::signal::unix::{signal, SignalKind};
    let received = Arc::new(AtomicI32::new(0));
    let seen = received.clone();
    tokio::spawn(async move {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot listen for SIGTERM and SIGINT: {e}");
                return;
            }
        };
        let signal = tokio::select! {
            _ = int.recv() => SIGINT,
            _ = term.recv() => SIGTERM,
        };
        seen.store(signal, Ordering::Relaxed);
        tracing::warn!(
            signal,
            "signal received: finishing in-flight versions, then stopping"
        );
        stop.cancel();
        let Some(abandon) = abandon else { return };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: not waiting for the run in flight");
        abandon.cancel();
    });
    received
}

/// Every SIGHUP becomes a message; while one waits, more add nothing.
pub fn spawn_reload_handler() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    Ok(rx)
}
