//! Extractors whose rejections are [`ApiError`]s, so malformed JSON (400), a declared content
//! type that is not JSON (415), an oversized body (413), a late body (408) and a bad path or
//! query (400) all reach the caller in the same envelope as every other error.
//!
//! JSON bodies are read strictly: a key that appears twice in one object is refused (400), on
//! every route, public and internal, rather than silently keeping the last value. A body sent
//! without a `Content-Type` is accepted when it is JSON (clients of the earlier
//! implementations send none).

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use bazaar_api::ErrorKind;

use crate::admission::BodyReadTimeout;
use crate::error::ApiError;

/// A JSON body read strictly (see the module docs). Also a response: `Json(Data::new(x))`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        check_content_type(request.headers())?;
        let request = refuse_declared_overlong(request)?;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_error)?;
        from_slice_strict(&bytes).map(Self)
    }
}

/// 413 before reading anything when the declared length exceeds the route's limit (64 KiB, or
/// what the route set with `DefaultBodyLimit`). The limited body's size hint carries that limit:
/// it is capped there when the declared length is larger.
fn refuse_declared_overlong(request: Request) -> Result<Request, ApiError> {
    use axum::RequestExt;
    use hyper::body::Body as _;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let request = request.with_limited_body();
    match (declared, request.body().size_hint().upper()) {
        (Some(declared), Some(limit)) if declared > limit => Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body of {declared} bytes is larger than the limit of {limit} bytes"),
        )
        .closing()),
        _ => Ok(request),
    }
}

/// A declared type must be JSON (`application/json`, or `application/<x>+json`); no
/// declaration at all is fine.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(declared) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = declared
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "request body must be JSON: send the header Content-Type: application/json, or none",
        ))
    }
}

fn body_error(rejection: BytesRejection) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(error) = source {
        if let Some(late) = error.downcast_ref::<BodyReadTimeout>() {
            return ApiError::new(ErrorKind::RequestTimeout, late.to_string()).closing();
        }
        source = error.source();
    }
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "request body is larger than the limit of {} bytes",
                bazaar_api::BODY_LEN_MAX
            ),
        )
        .closing();
    }
    ApiError::bad_request(format!(
        "cannot read the request body: {}",
        rejection.body_text()
    ))
}

/// Parses a JSON document into `T` strictly ([`bazaar_api::json::from_slice`]: duplicate keys,
/// trailing data and values `T` does not accept are refused, with a message that names the
/// field). Use it for every JSON the services read: bodies through [`Json`], WebSocket frames
/// directly.
///
/// # Errors
/// 400 with the sentence.
pub fn from_slice_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    bazaar_api::json::from_slice(bytes).map_err(ApiError::bad_request)
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
