//! The front-end's errors, and the one place they become error responses.

use axum::response::{IntoResponse, Response};
use bazaar_api::ErrorKind;
use bazaar_api::client::ClientError;
use bazaar_service::ApiError;

/// Everything a public request can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A service behind the front-end refused the request for a reason the client should see
    /// (unknown stock or order, not enough stock, a value out of range): passed on as it came.
    #[error("{message}")]
    Refused {
        /// What went wrong.
        kind: ErrorKind,
        /// The service's message.
        message: String,
    },
    /// Malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// No order replica could take the request in time.
    #[error("no order replica can take the request: {0}")]
    NoReplica(String),
    /// No catalog could answer in time.
    #[error("no catalog can answer: {0}")]
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
                kind: kind @ (ErrorKind::UnknownStock | ErrorKind::BadRequest),
                message,
                ..
            } => Self::Refused { kind, message },
            e if e.is_unreachable() => Self::CatalogUnavailable(e.to_string()),
            ClientError::Rejected {
                kind: ErrorKind::Unavailable | ErrorKind::NotReady | ErrorKind::Overloaded,
                message,
                ..
            } => Self::CatalogUnavailable(message),
            e => Self::Upstream(e.to_string()),
        }
    }

    /// Maps a final rejection from the order leader (after failover has been tried).
    #[must_use]
    pub fn from_leader(e: ClientError) -> Self {
        match e {
            ClientError::Rejected {
                kind:
                    kind @ (ErrorKind::UnknownStock
                    | ErrorKind::UnknownOrder
                    | ErrorKind::InsufficientStock
                    | ErrorKind::AmountLimit
                    | ErrorKind::RequestIdReused
                    | ErrorKind::BadRequest),
                message,
                ..
            } => Self::Refused { kind, message },
            e if e.is_unreachable() => Self::NoReplica(e.to_string()),
            ClientError::Rejected {
                kind:
                    ErrorKind::NotReady
                    | ErrorKind::NoQuorum
                    | ErrorKind::Uncertain
                    | ErrorKind::NotLeader
                    | ErrorKind::Overloaded,
                message,
                ..
            } => Self::NoReplica(message),
            e => Self::Upstream(e.to_string()),
        }
    }

    /// What kind of error this is on the wire.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Refused { kind, .. } => *kind,
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::NoReplica(_) | Self::CatalogUnavailable(_) => ErrorKind::Unavailable,
            Self::Busy(_) => ErrorKind::Overloaded,
            Self::Upstream(_) | Self::Config(_) => ErrorKind::Internal,
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
        ApiError::new(kind, err.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(&self).into_response()
    }
}
