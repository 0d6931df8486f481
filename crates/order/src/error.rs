//! The order service's errors, and the one place they become HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bazaar_api::client::{ClientError, STATUS_NOT_LEADER};
use bazaar_api::{Epoch, LeaderHint, ReplicaId, RequestId, TxnNumber};
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
    /// Recovering, or chosen leader but still catching up.
    #[error("replica is not ready: {0}")]
    NotReady(String),
    /// No order with that number.
    #[error("no order number {0}")]
    UnknownOrder(TxnNumber),
    /// The catalog does not know the stock.
    #[error("{0}")]
    UnknownStock(String),
    /// The catalog refused a buy for lack of stock.
    #[error("{0}")]
    InsufficientStock(String),
    /// The catalog could not be reached in time.
    #[error("the catalog is unavailable: {0}")]
    CatalogUnavailable(String),
    /// The catalog answered something the saga does not expect.
    #[error("the catalog refused the trade: {0}")]
    CatalogRejected(String),
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
    /// Reconciliation cancelled the trade's reservation before this request could finish it;
    /// a retry starts it afresh.
    #[error("trade {0} was abandoned by reconciliation; retry it")]
    Abandoned(RequestId),
    /// A request that makes no sense (bad query, bad batch).
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
    /// Maps a catalog call's failure in the trade saga.
    #[must_use]
    pub fn from_catalog(e: ClientError) -> Self {
        match e {
            ClientError::Rejected {
                status: 404,
                message,
                ..
            } => Self::UnknownStock(message),
            ClientError::Rejected {
                status: 409,
                message,
                ..
            } => Self::InsufficientStock(message),
            ClientError::Rejected { status: 503, .. } | ClientError::Unreachable { .. } => {
                Self::CatalogUnavailable(e.to_string())
            }
            ClientError::Timeout { .. } => Self::CatalogUnavailable(e.to_string()),
            other => Self::CatalogRejected(other.to_string()),
        }
    }
}

impl From<&Error> for ApiError {
    fn from(err: &Error) -> Self {
        let status = match err {
            Error::NotLeader { leader, .. } => {
                return ApiError::new(
                    StatusCode::from_u16(STATUS_NOT_LEADER).expect("421 is a valid status"),
                    err.to_string(),
                )
                .with_leader(leader.clone());
            }
            Error::UnknownOrder(_) | Error::UnknownStock(_) => StatusCode::NOT_FOUND,
            Error::InsufficientStock(_) | Error::EpochClaimed { .. } | Error::WrongMode { .. } => {
                StatusCode::CONFLICT
            }
            Error::StaleEpoch { .. } => StatusCode::PRECONDITION_FAILED,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotReady(_)
            | Error::CatalogUnavailable(_)
            | Error::Abandoned(_)
            | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::CatalogRejected(_) => StatusCode::BAD_GATEWAY,
            Error::Config(_) | Error::Storage(_) => {
                tracing::error!(error = %err, "request failed");
                return ApiError::internal();
            }
        };
        ApiError::new(status, err.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(&self).into_response()
    }
}
