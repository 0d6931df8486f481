//! Ctrl-C and SIGTERM: the first cancels the returned token (graceful shutdown); a second one
//! exits at once, for an operator who does not want to wait for draining.
//!
//! A service started by `bazaar up` (or any other supervisor using `bazaar_cluster`) also
//! stops when its supervisor is gone: `up` names itself in `BAZAAR_SUPERVISOR_PID`, and a
//! service whose parent is no longer that process shuts down as on SIGTERM. A supervisor that
//! was SIGKILLed (or crashed) thus leaves no service running on with nobody to stop it, holding
//! its ports and database locks so that the next `up` fails. A service started by hand from
//! `cluster.json`'s command has no such variable and runs until it is told to stop.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How often a supervised service checks that its supervisor is still its parent.
const SUPERVISOR_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// A token cancelled by the first Ctrl-C or SIGTERM, or when the supervisor is gone.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            tracing::warn!("cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            cancel.cancel();
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            () = cancel.cancelled() => {}
        }
        tracing::info!("shutting down (send the signal again to exit at once)");
        cancel.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    if let Some(supervisor) = supervisor_pid() {
        let cancel = token.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SUPERVISOR_CHECK_INTERVAL);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let parent = nix::unistd::getppid().as_raw();
                if i64::from(parent) != i64::from(supervisor) {
                    tracing::warn!(
                        supervisor,
                        parent,
                        "the supervising process is gone; stopping"
                    );
                    cancel.cancel();
                    return;
                }
            }
        });
    }
    token
}

/// The supervisor named in the environment, if any.
fn supervisor_pid() -> Option<u32> {
    std::env::var(bazaar_cluster::SUPERVISOR_PID_ENV)
        .ok()?
        .parse()
        .ok()
}
