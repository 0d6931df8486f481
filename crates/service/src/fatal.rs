//! A fault the service cannot recover from (a failed durable write). The part that hits it
//! raises it; `serve` sees it, stops the service and returns it, and the binary exits non-zero.
//! Crash recovery on restart is what makes this safe.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Shared handle: cheap to clone, raised at most once (the first reason wins).
#[derive(Debug, Clone, Default)]
pub struct Fatal {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Fatal {
    /// A handle nobody has raised yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `reason` (if it is the first) and wakes every waiter.
    pub fn raise(&self, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::error!(%reason, "fatal error; the service stops");
        let mut slot = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(reason);
        drop(slot);
        self.token.cancel();
    }

    /// Whether it has been raised.
    #[must_use]
    pub fn is_raised(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits until raised and returns the reason.
    pub async fn raised(&self) -> String {
        self.token.cancelled().await;
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }
}

/// Cancels `stop` when `fatal` is raised; ends when `stop` is cancelled for any reason.
pub async fn stop_on(fatal: Fatal, stop: CancellationToken) {
    tokio::select! {
        _ = fatal.raised() => stop.cancel(),
        () = stop.cancelled() => {}
    }
}
