//! The catalog's errors, and the one place they become HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bazaar_api::{Epoch, RequestId};
use bazaar_service::ApiError;

/// Everything that can go wrong in the catalog.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The stock does not exist.
    #[error("no stock named {0:?}")]
    UnknownStock(String),
    /// A buy wants more than is available.
    #[error("cannot buy {wanted} of {stock}: {available} available")]
    InsufficientStock {
        /// Stock name.
        stock: String,
        /// Shares asked for.
        wanted: u64,
        /// Shares available (quantity minus reservations).
        available: u64,
    },
    /// A sell would push the quantity past what the database can hold.
    #[error("cannot sell {wanted} of {stock}: the quantity would exceed the catalog's limit")]
    QuantityLimit {
        /// Stock name.
        stock: String,
        /// Shares offered.
        wanted: u64,
    },
    /// Confirm or cancel of a request id the catalog never saw.
    #[error("no trade with request id {0}")]
    UnknownTrade(RequestId),
    /// Confirm of a cancelled reservation.
    #[error("trade {0} was cancelled and cannot be confirmed")]
    AlreadyCancelled(RequestId),
    /// Cancel of a confirmed trade.
    #[error("trade {0} is confirmed and cannot be cancelled")]
    AlreadyConfirmed(RequestId),
    /// A request id reused for a different trade.
    #[error("request id {0} was already used for a different trade")]
    RequestIdReused(RequestId),
    /// A deposed leader: its epoch is older than one the catalog has seen.
    #[error("epoch {got} is older than epoch {newest}: the caller is no longer the leader")]
    StaleEpoch {
        /// The caller's epoch.
        got: Epoch,
        /// The newest epoch seen.
        newest: Epoch,
    },
    /// The catalog CSV or a flag is wrong.
    #[error("{0}")]
    Config(String),
    /// A database failure; the service stops.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store is shutting down.
    #[error("the catalog is shutting down")]
    ShuttingDown,
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<&Error> for ApiError {
    fn from(err: &Error) -> Self {
        let status = match err {
            Error::UnknownStock(_) | Error::UnknownTrade(_) => StatusCode::NOT_FOUND,
            Error::InsufficientStock { .. }
            | Error::QuantityLimit { .. }
            | Error::AlreadyCancelled(_)
            | Error::AlreadyConfirmed(_) => StatusCode::CONFLICT,
            Error::RequestIdReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::StaleEpoch { .. } => StatusCode::PRECONDITION_FAILED,
            Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
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
