//! What the routes see of a replica, whichever replication mode runs it: status, writes (decided
//! by the mode, then held until released), order queries. The routes talk to this, never to a
//! mode directly, except for the mode's own internal routes.

use std::time::Duration;

use bazaar_api::log::{Command, Position};
use bazaar_api::replica::{ReplicaStatus, TradeReceipt};
use bazaar_api::{Order, ReplicaId, TxnNumber};
use bazaar_ledger::Outcome;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::primary_backup::PrimaryBackup;
use crate::raft::RaftReplica;
use crate::release::{NotReleased, Release};

/// A replica in one of the replication modes.
#[derive(Debug, Clone)]
pub enum Replica {
    /// Primary-backup (the default).
    PrimaryBackup(PrimaryBackup),
    /// Raft consensus.
    Raft(RaftReplica),
}

/// A mode and the release gate in front of it; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    /// The mode.
    pub replica: Replica,
    /// The gate.
    pub release: Release,
    /// How long a decided write may wait to be released before it is answered "uncertain".
    pub release_deadline: Duration,
}

impl Replica {
    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> ReplicaId {
        match self {
            Self::PrimaryBackup(r) => r.status().id,
            Self::Raft(r) => r.id(),
        }
    }

    /// The primary-backup replica behind a route of that mode.
    ///
    /// # Errors
    /// [`Error::WrongMode`] in raft mode.
    pub fn primary_backup(&self, route: impl FnOnce() -> String) -> Result<&PrimaryBackup> {
        match self {
            Self::PrimaryBackup(r) => Ok(r),
            Self::Raft(r) => Err(Error::WrongMode {
                me: r.id(),
                mode: "raft",
                route: route(),
            }),
        }
    }

    /// The Raft node behind a raft route.
    ///
    /// # Errors
    /// [`Error::WrongMode`] in primary-backup mode.
    pub fn raft(&self, route: impl FnOnce() -> String) -> Result<&RaftReplica> {
        match self {
            Self::Raft(r) => Ok(r),
            Self::PrimaryBackup(r) => Err(Error::WrongMode {
                me: r.status().id,
                mode: "primary-backup",
                route: route(),
            }),
        }
    }
}

impl Writer {
    /// `GET /health`.
    #[must_use]
    pub fn status(&self) -> ReplicaStatus {
        let mut status = match &self.replica {
            Replica::PrimaryBackup(r) => r.status(),
            Replica::Raft(r) => r.status(),
        };
        status.visible = self.release.released().position;
        status.commits = (status.role == bazaar_api::replica::ReplicaRole::Leader)
            .then(|| self.release.vouches());
        status
    }

    /// Decides and replicates `command`, then waits until its position is released (every
    /// front-end told, the catalogs offered it). Returns the ledger's verdict and that position.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotReady`] when nothing was written; [`Error::Uncertain`]
    /// when the write may or may not stand.
    pub async fn write(&self, command: Command) -> Result<(Outcome, Position)> {
        let (outcome, position) = match &self.replica {
            Replica::PrimaryBackup(r) => r.write(command).await?,
            Replica::Raft(r) => r.write(command).await?,
        };
        let Some(epoch) = self.release.released().epoch else {
            return Err(Error::Uncertain(
                "this replica stopped leading before the write was released".into(),
            ));
        };
        let deadline = Instant::now() + self.release_deadline;
        match self.release.wait(epoch, position, deadline).await {
            Ok(()) => Ok((outcome, position)),
            Err(NotReleased::Resigned) => Err(Error::Uncertain(
                "this replica stopped leading before the write was released".into(),
            )),
            Err(NotReleased::Timeout) => Err(Error::Uncertain(format!(
                "the write was not released within {:?} (a front-end or the quorum is slow)",
                self.release_deadline
            ))),
        }
    }

    /// A trade, answered with its number once released.
    ///
    /// # Errors
    /// As [`Self::write`], and [`Error::Refused`] for what the ledger refused.
    pub async fn trade(&self, command: Command) -> Result<TradeReceipt> {
        let asked = command.trade().cloned();
        match self.write(command).await? {
            (Outcome::Traded(number), position) => Ok(TradeReceipt {
                transaction_number: number,
                position,
            }),
            (Outcome::Duplicate(number), position) => {
                // A retry is answered with the first trade's number, but only if it is the same
                // trade: a client that reuses an id for another trade must hear so.
                let stored = match &self.replica {
                    Replica::PrimaryBackup(r) => r.order(number).await?,
                    Replica::Raft(r) => r.order(number).await?,
                };
                if let (Some(asked), Some(row)) = (asked, stored)
                    && (row.name, row.kind, row.quantity)
                        != (asked.name, asked.kind, asked.quantity)
                {
                    return Err(Error::RequestIdReused {
                        request_id: asked.request_id,
                        number,
                    });
                }
                Ok(TradeReceipt {
                    transaction_number: number,
                    position,
                })
            }
            (Outcome::Refused(refusal), _) => Err(Error::Refused(refusal)),
            (other, _) => Err(Error::Storage(format!("a trade was decided as {other:?}"))),
        }
    }

    /// An order by number, answered by the leader only, and only once released (an order
    /// that is committed but not yet released belongs to a trade nobody was told of yet).
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotReady`], [`Error::UnknownOrder`].
    pub async fn order(&self, number: TxnNumber) -> Result<Order> {
        let row = match &self.replica {
            Replica::PrimaryBackup(r) => {
                let status = r.status();
                if status.role != bazaar_api::replica::ReplicaRole::Leader {
                    return Err(r.not_leader());
                }
                r.order(number).await?
            }
            Replica::Raft(r) => r.order(number).await?,
        };
        let Some(released) = self.release.released().position else {
            return Err(Error::NotReady(
                "a new leader releases nothing before its handover wait ends".into(),
            ));
        };
        row.filter(|row| row.log_index.position() <= released)
            .map(|row| row.to_order())
            .ok_or(Error::UnknownOrder(number))
    }
}
