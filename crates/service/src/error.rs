//! The one type that becomes an error response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bazaar_api::{ErrorBody, LeaderHint};

/// An error response: `{"error": {"code": <status>, "message": ..}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status, also written as `code` in the body.
    pub status: StatusCode,
    /// A sentence for the caller.
    pub message: String,
    /// For "not leader" replies: who leads.
    pub leader: Option<LeaderHint>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            leader: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500 with a generic message; the caller logs the details, the client never sees them.
    #[must_use]
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the details are in the service's log",
        )
    }

    /// Adds a leader hint.
    #[must_use]
    pub fn with_leader(mut self, leader: Option<LeaderHint>) -> Self {
        self.leader = leader;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = ErrorBody::new(self.status.as_u16(), self.message);
        body.error.leader = self.leader;
        (self.status, axum::Json(body)).into_response()
    }
}
