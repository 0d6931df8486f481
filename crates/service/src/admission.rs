//! What every request passes before it reaches a router: a target that is too long (414) or a
//! declared body over what any route accepts (413) is refused before anything is read; when the listener
//! already works on its cap of requests, the request is shed at once (503 with `Retry-After`);
//! a trailing slash is dropped so `/stocks/GameStart/` finds its route; and the body gets a
//! deadline (408 when it is late).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, Uri, header};
use axum::response::IntoResponse;
use bazaar_api::ErrorKind;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::connection::Phase;
use crate::error::ApiError;
use crate::limits::{BODY_LEN_CEILING, Limits, RETRY_AFTER_S, URI_LEN_MAX};

/// The hyper service of one connection.
#[derive(Clone)]
pub(crate) struct Admission {
    router: Router,
    limits: Limits,
    in_flight: Arc<Semaphore>,
    /// When a shed request was last logged (seconds since the Unix epoch), for the whole
    /// listener: at most one line a second, however hard it is hit.
    shed_logged_s: Arc<AtomicU64>,
    phase: Arc<Phase>,
}

impl Admission {
    pub(crate) fn new(
        router: Router,
        limits: Limits,
        in_flight: Arc<Semaphore>,
        shed_logged_s: Arc<AtomicU64>,
        phase: Arc<Phase>,
    ) -> Self {
        Self {
            router,
            limits,
            in_flight,
            shed_logged_s,
            phase,
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Admission {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.phase.dispatched();
        let phase = Arc::clone(&self.phase);
        if let Some(refusal) = refuse_early(&request) {
            phase.answered();
            return Box::pin(async move { Ok(refusal) });
        }
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            phase.answered();
            let response = shed(&self.shed_logged_s);
            return Box::pin(async move { Ok(response) });
        };
        let deadline = Instant::now() + self.limits.body_timeout;
        let timeout = self.limits.body_timeout;
        let mut request = request.map(|body| Body::new(TimedBody::new(body, deadline, timeout)));
        drop_trailing_slash(request.uri_mut());
        let router = self.router.clone();
        Box::pin(async move {
            let response = tower::ServiceExt::oneshot(router, request).await;
            drop(permit);
            phase.answered();
            response
        })
    }
}

/// 414 for a long target, 413 for a declared body over [`BODY_LEN_CEILING`]: before the body
/// is read. (A route's own, lower limit is checked as early by the JSON extractor.)
fn refuse_early(request: &Request<Incoming>) -> Option<Response<Body>> {
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target_len > URI_LEN_MAX {
        return Some(
            ApiError::new(
                ErrorKind::UriTooLong,
                format!(
                    "the request target is {target_len} bytes long; the limit is {URI_LEN_MAX}"
                ),
            )
            .into_response(),
        );
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > BODY_LEN_CEILING
    {
        let mut response = ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "request body of {length} bytes is larger than the limit of {BODY_LEN_CEILING} bytes"
            ),
        )
        .into_response();
        // The body is never read: close rather than drain it.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(response);
    }
    None
}

fn shed(logged_s: &AtomicU64) -> Response<Body> {
    let now_s = crate::now_ms() / 1000;
    if logged_s.swap(now_s, Ordering::Relaxed) != now_s {
        tracing::warn!("shedding load: the cap on requests in progress is reached (503)");
    }
    let mut response = ApiError::new(
        ErrorKind::Overloaded,
        format!("the service is overloaded; retry after {RETRY_AFTER_S} s"),
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    // The body is not read, and closing the connection sheds load too.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `/stocks/GameStart/` routes like `/stocks/GameStart` (the root stays `/`).
fn drop_trailing_slash(uri: &mut Uri) {
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return;
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let target = match uri.query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = target.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(new) = Uri::from_parts(parts) {
            *uri = new;
        }
    }
}

/// A request body that fails with [`BodyReadTimeout`] once its deadline passes.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Armed the first time the body is not ready, so requests without a body cost no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, deadline: Instant, timeout: Duration) -> Self {
        Self {
            inner,
            deadline,
            timeout,
            sleep: None,
        }
    }
}

/// The request body did not arrive in time. The JSON extractor answers it with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyReadTimeout(pub Duration);

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyReadTimeout(self.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_are_dropped_but_the_root_stays() {
        for (from, to) in [
            ("/stocks/GameStart/", "/stocks/GameStart"),
            ("/stocks//", "/stocks"),
            ("/stocks/?stockname=A", "/stocks?stockname=A"),
            ("/", "/"),
            ("/orders/1", "/orders/1"),
        ] {
            let mut uri: Uri = from.parse().expect("uri");
            drop_trailing_slash(&mut uri);
            assert_eq!(uri.to_string(), to, "{from}");
        }
    }
}
