//! Routers with the shared layers, and serving with graceful shutdown and a drain deadline.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::get;
use bazaar_api::ErrorKind;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::metrics::{self, Metrics};

/// How long open connections may take to finish after shutdown starts; after that the server
/// stops waiting for them.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Adds what every service router has: `GET /metrics`, JSON 404 and 405 replies, the body
/// limit, and the request metrics middleware.
pub fn finish_router(router: Router, metrics: Metrics) -> Router {
    router
        .route(
            "/metrics",
            get(metrics::metrics_get).with_state(metrics.clone()),
        )
        .fallback(route_missing)
        .method_not_allowed_fallback(method_missing)
        .layer(DefaultBodyLimit::max(bazaar_api::BODY_LEN_MAX))
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

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains open connections
/// for at most [`DRAIN_DEADLINE`].
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_DEADLINE).await;
        } => {
            tracing::warn!("connections still open after the drain deadline; closing them");
            Ok(())
        }
    }
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
        finish_router(Router::new().route("/echo", post(echo)), Metrics::new())
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
    async fn every_rejection_uses_the_envelope() {
        let cases = [
            (post_json("{", Some("application/json")), 400),
            (post_json("{}", None), 415),
            (post_json("{}", Some("text/plain")), 415),
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
