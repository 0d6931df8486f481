//! Following the leader's log: ask the leader for what was released after the view's position
//! (a long poll), apply it, repeat. A new leader, or a catalog that fell behind what the leader
//! keeps, gets a snapshot instead. The follower never decides anything: it applies what the
//! leader's ledger decided, and only what the leader released (every front-end has heard of
//! it), so a catalog never shows a change a front-end could contradict from its cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::ErrorKind;
use bazaar_api::client::{ClientError, ReplicaClient, find_leader};
use bazaar_api::log::{LogFollow, LogFollowQuery};
use bazaar_ledger::View;
use tokio_util::sync::CancellationToken;

use crate::view::{Current, Shared};

/// How long the leader may hold one follow request open.
pub const FOLLOW_WAIT: Duration = Duration::from_millis(1000);

/// How much longer than [`FOLLOW_WAIT`] the catalog waits for an answer.
const FOLLOW_SLACK: Duration = Duration::from_millis(1000);

/// First and longest pause before looking for a leader again.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

/// Who the catalog follows; shared with the restock loop.
#[derive(Debug, Clone, Default)]
pub struct Leader(Arc<Mutex<Option<ReplicaClient>>>);

impl Leader {
    /// The leader being followed, if any.
    #[must_use]
    pub fn get(&self) -> Option<ReplicaClient> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, leader: Option<ReplicaClient>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = leader;
    }
}

/// Follows whichever replica leads until `stop`.
pub async fn run(
    replicas: Vec<ReplicaClient>,
    shared: Shared,
    leader: Leader,
    stop: CancellationToken,
) {
    let mut pause = RETRY_PAUSE_MIN;
    loop {
        let found = match leader.get() {
            Some(known) => Some(known),
            None => tokio::select! {
                () = stop.cancelled() => return,
                found = find_leader(&replicas) => found,
            },
        };
        let Some(current_leader) = found else {
            shared.set_following(false);
            leader.set(None);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
            continue;
        };
        leader.set(Some(current_leader.clone()));
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = follow_one(&current_leader, &shared) => next,
        };
        match next {
            Ok(()) => pause = RETRY_PAUSE_MIN,
            Err(Next::Wait) => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY_PAUSE_MIN) => {}
                }
            }
            Err(Next::Follow(hint)) => {
                shared.set_following(false);
                leader.set(hint.and_then(|id| replicas.iter().find(|r| r.id() == id).cloned()));
            }
            Err(Next::Rediscover) => {
                shared.set_following(false);
                leader.set(None);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
        }
    }
}

/// What to do after a failed follow request.
enum Next {
    /// The leader has nothing released yet (its handover): ask again shortly.
    Wait,
    /// Another replica leads (this one says so).
    Follow(Option<bazaar_api::ReplicaId>),
    /// Look for the leader again.
    Rediscover,
}

/// One follow request, applied.
async fn follow_one(leader: &ReplicaClient, shared: &Shared) -> Result<(), Next> {
    let current = shared.now();
    let query = LogFollowQuery {
        from: current.view.position(),
        epoch: current.epoch,
        wait_ms: Some(u64::try_from(FOLLOW_WAIT.as_millis()).unwrap_or(u64::MAX)),
    };
    let answer = leader
        .with_timeout(FOLLOW_WAIT + FOLLOW_SLACK)
        .log_follow(&query)
        .await
        .map_err(|e| match e {
            ClientError::Rejected {
                kind: ErrorKind::NotLeader,
                leader,
                ..
            } => Next::Follow(leader.map(|l| l.id)),
            ClientError::Rejected {
                kind: ErrorKind::NotReady,
                ..
            } => Next::Wait,
            other => {
                tracing::debug!(error = %other, "cannot follow the leader's log");
                Next::Rediscover
            }
        })?;
    shared.set_following(true);
    match answer {
        LogFollow::Snapshot { epoch, snapshot } => {
            let position = snapshot.position;
            shared.set(Current {
                view: View::from_snapshot(snapshot),
                epoch: Some(epoch),
                following: true,
            });
            tracing::info!(%epoch, %position, "took the leader's snapshot");
        }
        LogFollow::Entries {
            epoch,
            from,
            entries,
        } => {
            if from != current.view.position() || Some(epoch) != current.epoch {
                // An answer to another question (the view moved, or another leader answered):
                // ask again.
                return Ok(());
            }
            if entries.is_empty() {
                return Ok(());
            }
            let mut view = current.view.clone();
            for entry in &entries {
                if let Err(e) = view.apply(entry) {
                    // The leader's entries do not fit this view: start over from a snapshot.
                    tracing::warn!(error = %e, "the leader's log does not fit this catalog's view; rebuilding");
                    shared.set(Current {
                        view: current.view.clone(),
                        epoch: None,
                        following: true,
                    });
                    return Ok(());
                }
            }
            shared.set(Current {
                view,
                epoch: Some(epoch),
                following: true,
            });
        }
    }
    Ok(())
}
