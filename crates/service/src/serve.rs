//! Routers with the shared layers, and serving them: a bounded accept loop, optional TLS, and
//! graceful shutdown with a drain deadline.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::get;
use bazaar_api::ErrorKind;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connection::{self, Registry, Shared};
use crate::error::ApiError;
use crate::limits::Limits;
use crate::metrics::{self, Metrics};
use crate::security::{self, Access};

/// How long open connections may take to finish after shutdown starts; after that the server
/// stops waiting for them.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Pause after an accept that failed for want of resources (open files, memory), so the loop
/// does not spin while connections close and free them.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Adds what every service router has: `GET /metrics`, JSON 404 and 405 replies, the body
/// limit, the access check, and the request metrics middleware. The access check wraps every
/// route, including the fallbacks, so a route added later cannot miss it; it runs before the
/// body is read or any handler runs.
pub fn finish_router(router: Router, metrics: Metrics, access: Access) -> Router {
    router
        .route(
            "/metrics",
            get(metrics::metrics_get).with_state(metrics.clone()),
        )
        .fallback(route_missing)
        .method_not_allowed_fallback(method_missing)
        .layer(DefaultBodyLimit::max(bazaar_api::BODY_LEN_MAX))
        .layer(axum::middleware::from_fn_with_state(
            access,
            security::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

async fn route_missing(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorKind::UnknownRoute,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_missing(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("{} does not accept {method}", uri.path()),
    )
}

/// How a listener serves: TLS or not, and its limits.
#[derive(Debug, Clone, Default)]
pub struct Listening {
    /// Serve TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Timeouts and caps.
    pub limits: Limits,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets open connections
/// finish for at most [`DRAIN_DEADLINE`].
///
/// At most `limits.connections_max` connections are open at once: at the cap, the
/// longest-idle connection is closed to admit a new one, and when none is idle new clients wait
/// in the kernel's accept queue. At most `limits.in_flight_max` requests are handled at once
/// (more get 503 at once); see [`crate::limits`] for the timeouts.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    listening: Listening,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Shared {
        router,
        limits: listening.limits,
        tls: listening.tls.map(tokio_rustls::TlsAcceptor::from),
        in_flight: Arc::new(Semaphore::new(listening.limits.in_flight_max)),
        shed_logged_s: Arc::new(AtomicU64::new(0)),
        registry: Arc::new(Registry::default()),
        shutdown: shutdown.clone(),
    };
    let connections = Arc::new(Semaphore::new(listening.limits.connections_max));
    let tasks = TaskTracker::new();
    // Connection tasks log under the service's root span, like the requests they serve.
    let span = tracing::Span::current();
    let outcome = loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_resource_shortage(&e) => {
                tracing::warn!(error = %e, "cannot accept a connection; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
            // The client gave up between connecting and the accept: nothing to do.
            Err(e) if is_client_gone(&e) => continue,
            Err(e) => break Err(e),
        };
        let permit = match Arc::clone(&connections).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // At the cap: make room by closing the longest-idle connection, or wait for
                // one to end (a timeout ends any that stalls). Meanwhile new clients wait in
                // the kernel's accept queue.
                if !shared.registry.evict_longest_idle() {
                    tracing::debug!("at the connection cap and no connection is idle; waiting");
                }
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    permit = Arc::clone(&connections).acquire_owned() => {
                        permit.expect("the connection semaphore is never closed")
                    }
                }
            }
        };
        tasks.spawn(connection::serve(stream, permit, shared.clone()).instrument(span.clone()));
    };
    drop(listener);
    tasks.close();
    if tokio::time::timeout(DRAIN_DEADLINE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain deadline; closing them");
    }
    outcome
}

fn is_resource_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE
            || code == nix::libc::ENFILE
            || code == nix::libc::ENOBUFS
            || code == nix::libc::ENOMEM
    )
}

fn is_client_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(nix::libc::EPROTO)
}

/// Stops a service's background tasks: closes the tracker and waits for its tasks at most
/// `deadline` (each task ends when the service's stop token is cancelled).
pub async fn stop_tasks(tasks: &tokio_util::task::TaskTracker, deadline: Duration) {
    tasks.close();
    if tokio::time::timeout(deadline, tasks.wait()).await.is_err() {
        tracing::warn!("background tasks did not stop in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::post;
    use tower::ServiceExt;

    async fn echo(
        crate::Json(v): crate::Json<serde_json::Value>,
    ) -> crate::Json<serde_json::Value> {
        crate::Json(v)
    }

    fn app() -> Router {
        finish_router(
            Router::new().route("/echo", post(echo)),
            Metrics::new(),
            Access::Public,
        )
    }

    async fn call(request: Request<Body>) -> (u16, serde_json::Value) {
        let response = app().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("JSON body"))
    }

    fn post_json(body: impl Into<Body>, content_type: Option<&str>) -> Request<Body> {
        let mut builder = Request::post("/echo");
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        builder.body(body.into()).expect("request")
    }

    #[tokio::test]
    async fn json_is_accepted_with_or_without_a_json_content_type() {
        for content_type in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("application/problem+json"),
        ] {
            let (status, body) = call(post_json(r#"{"a":{"b":[1,{"c":2}]}}"#, content_type)).await;
            assert_eq!(status, 200, "{content_type:?}: {body}");
            assert_eq!(body["a"]["b"][1]["c"], 2);
        }
        let (status, body) = call(post_json(r#"{"a":1,"a":2}"#, None)).await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("\"a\" appears twice")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn every_rejection_uses_the_envelope() {
        let cases = [
            (post_json("{", Some("application/json")), 400),
            (post_json("{", None), 400),
            (post_json(r#"{"a":1,"a":2}"#, Some("application/json")), 400),
            (post_json(r#"[{"b":{"a":1,"a":2}}]"#, None), 400),
            (post_json("{} x", Some("application/json")), 400),
            (post_json("", Some("application/json")), 400),
            (post_json("{}", Some("text/plain")), 415),
            (
                post_json("{}", Some("application/x-www-form-urlencoded")),
                415,
            ),
            (
                post_json(
                    vec![b' '; bazaar_api::BODY_LEN_MAX + 1],
                    Some("application/json"),
                ),
                413,
            ),
            (
                Request::get("/nowhere")
                    .body(Body::empty())
                    .expect("request"),
                404,
            ),
            (
                Request::get("/echo").body(Body::empty()).expect("request"),
                405,
            ),
        ];
        for (request, status) in cases {
            let (got, body) = call(request).await;
            assert_eq!(got, status, "{body}");
            assert_eq!(body["error"]["code"], status, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }
}
