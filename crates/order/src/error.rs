//! The order service's errors, and the one place they become error responses.

use axum::response::{IntoResponse, Response};
use bazaar_api::{Epoch, ErrorKind, LeaderHint, ReplicaId, TxnNumber};
use bazaar_ledger::Refusal;
use bazaar_service::ApiError;

/// Everything that can go wrong in an order replica.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Trades and order queries go to the leader; this replica is not it.
    #[error("replica {me} is not the leader{}", leader_suffix(.leader.as_ref()))]
    NotLeader {
        /// This replica.
        me: ReplicaId,
        /// Who it believes leads.
        leader: Option<LeaderHint>,
    },
    /// Recovering, electing, or chosen leader but still catching up.
    #[error("replica is not ready: {0}")]
    NotReady(String),
    /// A raft leader that cannot reach a majority: nothing commits until that changes.
    #[error("{0}")]
    NoQuorum(String),
    /// No order with that number.
    #[error("no order number {0}")]
    UnknownOrder(TxnNumber),
    /// The ledger refused the trade; nothing was written.
    #[error("{0}")]
    Refused(Refusal),
    /// A trade under a request id that already names a different trade (order `number`).
    #[error(
        "request id {request_id} already names order {number}, a different trade; a retry must repeat the trade it names"
    )]
    RequestIdReused {
        /// The id.
        request_id: bazaar_api::RequestId,
        /// The order it names.
        number: TxnNumber,
    },
    /// The write may or may not have been committed: retry with the same request id.
    #[error("the outcome is not known yet: {0}")]
    Uncertain(String),
    /// A leader notice or append from an epoch older than this replica's.
    #[error("epoch {got} is older than epoch {newest}")]
    StaleEpoch {
        /// The sender's epoch.
        got: Epoch,
        /// This replica's newest epoch.
        newest: Epoch,
    },
    /// Two leaders claim the same epoch (two front-ends choosing leaders in primary-backup
    /// mode, which the docs rule out).
    #[error("replica {claimed} claims epoch {epoch}, which belongs to replica {known}")]
    EpochClaimed {
        /// The epoch.
        epoch: Epoch,
        /// The known leader of that epoch.
        known: ReplicaId,
        /// The other claimant.
        claimed: ReplicaId,
    },
    /// A request that makes no sense (bad query, bad batch, a value out of range).
    #[error("{0}")]
    BadRequest(String),
    /// A route of the other replication mode (a misconfigured peer or front-end).
    #[error("replica {me} runs {mode} replication; {route} belongs to the other mode")]
    WrongMode {
        /// This replica.
        me: ReplicaId,
        /// The mode it runs.
        mode: &'static str,
        /// The route that was called.
        route: String,
    },
    /// A flag is wrong.
    #[error("{0}")]
    Config(String),
    /// A database failure; the replica stops.
    #[error("storage failure: {0}")]
    Storage(String),
    /// Shutting down (or the writer stopped after a storage failure).
    #[error("the order replica is shutting down")]
    ShuttingDown,
}

fn leader_suffix(leader: Option<&LeaderHint>) -> String {
    match leader {
        Some(LeaderHint { id, url: Some(url) }) => format!("; the leader is replica {id} at {url}"),
        Some(LeaderHint { id, url: None }) => format!("; the leader is replica {id}"),
        None => "; no leader is known".into(),
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What kind of error this is on the wire.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotLeader { .. } => ErrorKind::NotLeader,
            Self::NotReady(_) | Self::ShuttingDown => ErrorKind::NotReady,
            Self::NoQuorum(_) => ErrorKind::NoQuorum,
            Self::UnknownOrder(_) => ErrorKind::UnknownOrder,
            Self::Refused(Refusal::UnknownStock { .. }) => ErrorKind::UnknownStock,
            Self::Refused(Refusal::InsufficientStock { .. }) => ErrorKind::InsufficientStock,
            Self::Refused(Refusal::AmountLimit { .. }) => ErrorKind::AmountLimit,
            Self::Refused(Refusal::NotListed) => ErrorKind::NotReady,
            Self::RequestIdReused { .. } => ErrorKind::RequestIdReused,
            Self::Uncertain(_) => ErrorKind::Uncertain,
            Self::StaleEpoch { .. } => ErrorKind::StaleEpoch,
            Self::EpochClaimed { .. } => ErrorKind::EpochClaimed,
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::WrongMode { .. } => ErrorKind::WrongMode,
            Self::Config(_) | Self::Storage(_) => ErrorKind::Internal,
        }
    }
}

impl From<&Error> for ApiError {
    fn from(err: &Error) -> Self {
        let kind = err.kind();
        if kind == ErrorKind::Internal {
            tracing::error!(error = %err, "request failed");
            return ApiError::internal();
        }
        let api = ApiError::new(kind, err.to_string());
        match err {
            Error::NotLeader { leader, .. } => api.with_leader(leader.clone()),
            Error::StaleEpoch { newest, .. } => api.with_epoch(*newest),
            _ => api,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(&self).into_response()
    }
}
