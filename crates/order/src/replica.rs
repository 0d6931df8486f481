//! What the rest of the service sees of a replica, whichever replication mode runs it. The
//! public routes and the trade saga talk to this, never to a mode directly, so a second mode
//! sits beside the first without touching them.

use bazaar_api::replica::{OrderEntry, OrderTrade, ReplicaStatus};
use bazaar_api::{Epoch, Order, RequestId, TxnNumber};

use crate::error::{Error, Result};
use crate::raft::RaftReplica;
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
    /// Raft consensus.
    Raft(RaftReplica),
}

impl Replica {
    /// `GET /health`.
    #[must_use]
    pub fn status(&self) -> ReplicaStatus {
        match self {
            Self::PrimaryBackup(r) => r.status(),
            Self::Raft(r) => r.status(),
        }
    }

    /// The epoch this replica leads, which fences the catalog calls it makes.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotReady`].
    pub fn leader_epoch(&self) -> Result<Epoch> {
        match self {
            Self::PrimaryBackup(r) => r.leader_epoch(),
            Self::Raft(r) => r.leader_epoch(),
        }
    }

    /// The error for "not the leader", naming the leader if known.
    #[must_use]
    pub fn not_leader(&self) -> Error {
        match self {
            Self::PrimaryBackup(r) => r.not_leader(),
            Self::Raft(r) => r.not_leader(),
        }
    }

    /// Numbers and durably replicates an order.
    ///
    /// # Errors
    /// See [`CommitFailure`].
    pub async fn commit(&self, trade: OrderTrade) -> Result<TxnNumber, CommitFailure> {
        match self {
            Self::PrimaryBackup(r) => r.commit(trade).await,
            Self::Raft(r) => r.commit(trade).await,
        }
    }

    /// An order by number (leader only).
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::UnknownOrder`].
    pub async fn order_get(&self, number: TxnNumber) -> Result<Order> {
        match self {
            Self::PrimaryBackup(r) => r.order_get(number).await,
            Self::Raft(r) => r.order_get(number).await,
        }
    }

    /// The number of the committed order holding `request_id`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn find_request(&self, request_id: RequestId) -> Result<Option<TxnNumber>> {
        match self {
            Self::PrimaryBackup(r) => r.find_request(request_id).await,
            Self::Raft(r) => r.find_request(request_id).await,
        }
    }

    /// A page of the local order log (`GET /internal/orders`), served in every role.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn page(&self, from: TxnNumber, limit: u32) -> Result<Vec<OrderEntry>> {
        match self {
            Self::PrimaryBackup(r) => r.page(from, limit).await,
            Self::Raft(r) => r.page(from, limit).await,
        }
    }

    /// The primary-backup replica behind a route of that mode.
    ///
    /// # Errors
    /// [`Error::WrongMode`] in raft mode.
    pub fn primary_backup(&self, route: impl FnOnce() -> String) -> Result<&Replicator> {
        match self {
            Self::PrimaryBackup(r) => Ok(r),
            Self::Raft(r) => Err(Error::WrongMode {
                me: r.id(),
                mode: "raft",
                route: route(),
            }),
        }
    }

    /// The Raft node behind a route of that mode.
    ///
    /// # Errors
    /// [`Error::WrongMode`] in primary-backup mode.
    pub fn raft(&self, route: impl FnOnce() -> String) -> Result<&crate::raft::types::Raft> {
        match self {
            Self::Raft(r) => Ok(r.raft()),
            Self::PrimaryBackup(r) => Err(Error::WrongMode {
                me: r.id(),
                mode: "primary-backup",
                route: route(),
            }),
        }
    }
}
