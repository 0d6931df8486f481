//! The front-end's errors, and the one place they become HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bazaar_api::client::ClientError;
use bazaar_service::ApiError;

/// Everything a public request can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown stock or order.
    #[error("{0}")]
    NotFound(String),
    /// Not enough stock to buy.
    #[error("{0}")]
    Conflict(String),
    /// No order replica could take the request in time.
    #[error("no order replica reachable: {0}")]
    NoReplica(String),
    /// The catalog could not be reached.
    #[error("the catalog is unavailable: {0}")]
    CatalogUnavailable(String),
    /// A service behind the front-end answered something unexpected.
    #[error("{0}")]
    Upstream(String),
    /// Too much at once (dashboard pages); try again later.
    #[error("{0}")]
    Busy(String),
    /// A flag is wrong.
    #[error("{0}")]
    Config(String),
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a failed catalog lookup.
    #[must_use]
    pub fn from_catalog(e: ClientError) -> Self {
        match e {
            ClientError::Rejected {
                status: 404,
                message,
                ..
            } => Self::NotFound(message),
            ClientError::Rejected {
                status: 400,
                message,
                ..
            } => Self::BadRequest(message),
            e if e.is_unreachable() || e.status() == Some(503) => {
                Self::CatalogUnavailable(e.to_string())
            }
            e => Self::Upstream(e.to_string()),
        }
    }

    /// Maps a final rejection from the order leader (after failover has been tried).
    #[must_use]
    pub fn from_leader(e: ClientError) -> Self {
        match e {
            ClientError::Rejected {
                status: 404,
                message,
                ..
            } => Self::NotFound(message),
            ClientError::Rejected {
                status: 409,
                message,
                ..
            } => Self::Conflict(message),
            ClientError::Rejected {
                status: 400,
                message,
                ..
            } => Self::BadRequest(message),
            e if e.is_unreachable() => Self::NoReplica(e.to_string()),
            ClientError::Rejected {
                status: 503,
                message,
                ..
            } => Self::NoReplica(message),
            e => Self::Upstream(e.to_string()),
        }
    }
}

impl From<&Error> for ApiError {
    fn from(err: &Error) -> Self {
        let status = match err {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::NoReplica(_) | Error::CatalogUnavailable(_) | Error::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Upstream(_) => {
                tracing::warn!(error = %err, "upstream failure");
                StatusCode::BAD_GATEWAY
            }
            Error::Config(_) => {
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
