//! What the rest of the service sees of a replica, whichever replication mode runs it. The
//! public routes and the trade saga talk to this, never to a mode directly, so a second mode
//! sits beside the first without touching them.

use bazaar_api::replica::{OrderTrade, ReplicaStatus};
use bazaar_api::{Epoch, Order, RequestId, TxnNumber};

use crate::error::{Error, Result};
use crate::replication::Replicator;

/// Why a commit failed, and whether the order may nevertheless be in some replica's log.
#[derive(Debug, Clone)]
pub struct CommitFailure {
    /// What went wrong.
    pub error: Error,
    /// False only when nothing was written anywhere (the replica refused before numbering):
    /// then, and only then, the saga may cancel the reservation at once. Otherwise the outcome
    /// is settled by a retry or by the leader's reconciliation, which see the authoritative log.
    pub maybe_committed: bool,
}

impl CommitFailure {
    /// Nothing was written.
    #[must_use]
    pub fn refused(error: Error) -> Self {
        Self {
            error,
            maybe_committed: false,
        }
    }

    /// Something may have been written.
    #[must_use]
    pub fn uncertain(error: Error) -> Self {
        Self {
            error,
            maybe_committed: true,
        }
    }
}

/// A replica in one of the replication modes.
#[derive(Debug, Clone)]
pub enum Replica {
    /// Primary-backup (the default).
    PrimaryBackup(Replicator),
}

impl Replica {
    /// `GET /health`.
    #[must_use]
    pub fn status(&self) -> ReplicaStatus {
        match self {
            Self::PrimaryBackup(r) => r.status(),
        }
    }

    /// The epoch this replica leads, which fences the catalog calls it makes.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotReady`].
    pub fn leader_epoch(&self) -> Result<Epoch> {
        match self {
            Self::PrimaryBackup(r) => r.leader_epoch(),
        }
    }

    /// The error for "not the leader", naming the leader if known.
    #[must_use]
    pub fn not_leader(&self) -> Error {
        match self {
            Self::PrimaryBackup(r) => r.not_leader(),
        }
    }

    /// Numbers and durably replicates an order.
    ///
    /// # Errors
    /// See [`CommitFailure`].
    pub async fn commit(&self, trade: OrderTrade) -> Result<TxnNumber, CommitFailure> {
        match self {
            Self::PrimaryBackup(r) => r.commit(trade).await,
        }
    }

    /// An order by number (leader only).
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::UnknownOrder`].
    pub async fn order_get(&self, number: TxnNumber) -> Result<Order> {
        match self {
            Self::PrimaryBackup(r) => r.order_get(number).await,
        }
    }

    /// The number of the committed order holding `request_id`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn find_request(&self, request_id: RequestId) -> Result<Option<TxnNumber>> {
        match self {
            Self::PrimaryBackup(r) => r.find_request(request_id).await,
        }
    }
}
