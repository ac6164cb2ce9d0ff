//! Signals → graceful shutdown, the same way in every process: the first
//! SIGINT or SIGTERM cancels the token (finish what is in flight), a second
//! one exits at once.

use tokio_util::sync::CancellationToken;

/// Waits for signals forever: cancels `shutdown` on the first, exits the
/// process (status 130) on the second. `finishing` says what the process
/// does before it stops, for the log line.
pub async fn stop_on_signals(shutdown: CancellationToken, finishing: &'static str) {
    wait_for_signal().await;
    tracing::info!("shutdown requested; {finishing} (signal again to exit at once)");
    shutdown.cancel();
    wait_for_signal().await;
    tracing::warn!("second signal; exiting now");
    std::process::exit(130);
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
