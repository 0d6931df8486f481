//! The catalog's view of the log, shared by the follower (which changes it), the routes (which
//! read it, waiting for a position when a lookup asks for one) and the saver (which writes it to
//! the file behind the view).

use std::sync::Arc;
use std::time::Duration;

use bazaar_api::Epoch;
use bazaar_api::log::Position;
use bazaar_ledger::View;
use tokio::sync::watch;

/// The view as of one moment.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The stocks at a log position.
    pub view: View,
    /// The epoch of the leader the view came from (`None`: from no leader yet, e.g. from the
    /// file; the next leader sends a snapshot).
    pub epoch: Option<Epoch>,
    /// True while a leader's log is being followed.
    pub following: bool,
}

/// The shared view; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shared {
    current: watch::Sender<Arc<Current>>,
}

impl Shared {
    /// A view starting at `current`.
    #[must_use]
    pub fn new(current: Current) -> Self {
        Self {
            current: watch::Sender::new(Arc::new(current)),
        }
    }

    /// The view now.
    #[must_use]
    pub fn now(&self) -> Arc<Current> {
        self.current.borrow().clone()
    }

    /// Replaces the view.
    pub fn set(&self, current: Current) {
        self.current.send_replace(Arc::new(current));
    }

    /// Marks whether a leader is being followed.
    pub fn set_following(&self, following: bool) {
        self.current.send_if_modified(|c| {
            if c.following == following {
                return false;
            }
            let mut next = (**c).clone();
            next.following = following;
            *c = Arc::new(next);
            true
        });
    }

    /// The view once it reaches `position`, waiting at most `wait`; the view as it is when the
    /// wait runs out.
    pub async fn at_least(
        &self,
        position: Position,
        wait: Duration,
    ) -> Result<Arc<Current>, Arc<Current>> {
        let mut watching = self.current.subscribe();
        let reached = watching.wait_for(|c| c.view.position() >= position);
        match tokio::time::timeout(wait, reached).await {
            Ok(Ok(current)) => Ok(current.clone()),
            Ok(Err(_)) | Err(_) => Err(self.now()),
        }
    }

    /// Waits until the view changes.
    pub async fn changed(&self) {
        let mut watching = self.current.subscribe();
        let _ = watching.changed().await;
    }
}
