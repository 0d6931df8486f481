//! The catalog's errors, and the one place they become error responses.

use axum::response::{IntoResponse, Response};
use bazaar_api::ErrorKind;
use bazaar_api::log::Position;
use bazaar_service::ApiError;

/// Everything that can go wrong in the catalog.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The stock does not exist.
    #[error("no stock named {0:?}")]
    UnknownStock(String),
    /// A lookup asked for a position this catalog's view has not reached in time.
    #[error("this catalog is at log position {at}; the lookup needs {needed} (it is catching up)")]
    Behind {
        /// Where the view is.
        at: Position,
        /// What the lookup asked for.
        needed: Position,
    },
    /// A request that makes no sense.
    #[error("{0}")]
    BadRequest(String),
    /// A flag is wrong.
    #[error("{0}")]
    Config(String),
    /// A database failure; the service stops.
    #[error("storage failure: {0}")]
    Storage(String),
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What kind of error this is on the wire.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownStock(_) => ErrorKind::UnknownStock,
            Self::Behind { .. } => ErrorKind::Unavailable,
            Self::BadRequest(_) => ErrorKind::BadRequest,
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
        ApiError::new(kind, err.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(&self).into_response()
    }
}
