//! The one wait for "stop now" that both binaries select on.

/// Resolves on SIGTERM (systemd, podman stop) or SIGINT (a terminal's ^C). Where
/// the unix handlers cannot be installed, ^C alone still works.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
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
