//! The one type that becomes an error response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bazaar_api::{Epoch, ErrorBody, ErrorKind, LeaderHint};

/// An error response: `{"error": {"code": <status>, "kind": .., "message": ..}}`, with the
/// status derived from the kind ([`ErrorKind::status`]).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A sentence for the caller.
    pub message: String,
    /// For `not_leader` replies: who leads.
    pub leader: Option<LeaderHint>,
    /// For `stale_epoch` replies: the newest epoch known.
    pub epoch: Option<Epoch>,
    /// The reply ends the connection (`Connection: close`): the request's body was left
    /// unread, so the connection cannot carry another request.
    pub close: bool,
}

impl ApiError {
    /// An error of this kind with this message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            leader: None,
            epoch: None,
            close: false,
        }
    }

    /// `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// `internal`, with a generic message; the caller logs the details, the client never sees
    /// them.
    #[must_use]
    pub fn internal() -> Self {
        Self::new(
            ErrorKind::Internal,
            "internal error; the details are in the service's log",
        )
    }

    /// Adds a leader hint.
    #[must_use]
    pub fn with_leader(mut self, leader: Option<LeaderHint>) -> Self {
        self.leader = leader;
        self
    }

    /// Adds the newest epoch known.
    #[must_use]
    pub fn with_epoch(mut self, epoch: Epoch) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Says `Connection: close` (for replies sent before the body was read).
    #[must_use]
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = ErrorBody::new(self.kind, self.message);
        body.error.leader = self.leader;
        body.error.epoch = self.epoch;
        let mut response = (status, axum::Json(body)).into_response();
        if self.close {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
