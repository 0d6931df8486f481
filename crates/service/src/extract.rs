//! Extractors whose rejections are [`ApiError`]s, so malformed JSON (400), a missing or wrong
//! content type (415), an oversized body (413) and a bad path or query (400) all reach the
//! caller in the same envelope as every other error.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use bazaar_api::ErrorKind;

use crate::error::ApiError;

/// `axum::Json` with enveloped rejections. Also a response: `Json(Data::new(x))`.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "request body must be JSON with the header Content-Type: application/json"
                    .to_owned()
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => format!(
                "request body is larger than the limit of {} bytes",
                bazaar_api::BODY_LEN_MAX
            ),
            _ => rejection.body_text(),
        };
        // Data errors (valid JSON of the wrong shape) are the caller's fault like syntax
        // errors; the spec answers both with 400.
        let kind = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorKind::UnsupportedMediaType,
            s if s.is_server_error() => ErrorKind::Internal,
            _ => ErrorKind::BadRequest,
        };
        Self::new(kind, message)
    }
}

/// `axum::extract::Path` with enveloped rejections.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        let kind = if rejection.status().is_server_error() {
            ErrorKind::Internal
        } else {
            ErrorKind::BadRequest
        };
        Self::new(kind, rejection.body_text())
    }
}

/// `axum::extract::Query` with enveloped rejections.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}
