//! A Prometheus registry per service (no global recorder, so several services can share a
//! process in tests) and the middleware that counts and times every request by route.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use tracing::Instrument;

/// Request latency buckets: 25 us doubling to about 0.8 s, which spans a cache hit on
/// loopback through a trade waiting out a failover.
const LATENCY_BUCKET_FIRST_S: f64 = 0.000_025;
const LATENCY_BUCKET_COUNT: u16 = 16;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// A service's metrics: the request metrics every service has, plus whatever the service
/// registers with [`Metrics::register`] while it starts.
#[derive(Clone)]
pub struct Metrics {
    /// Locked only to register (at start) and to encode (on scrape), never per request.
    registry: Arc<Mutex<Registry>>,
    /// The service's root span (`service`, `replica_id`): request spans hang off it, because
    /// axum runs each connection in a task of its own that would not inherit it.
    root: tracing::Span,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        LATENCY_BUCKET_FIRST_S,
        2.0,
        LATENCY_BUCKET_COUNT,
    ))
}

impl Metrics {
    /// A registry whose metric names start with `bazaar_`, for a service whose logs hang off
    /// `root`.
    #[must_use]
    pub fn with_root(root: tracing::Span) -> Self {
        Self {
            root,
            ..Self::new()
        }
    }

    /// A registry whose metric names start with `bazaar_`.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bazaar");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by method, matched route and status",
            requests.clone(),
        );
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, by method and matched route",
            latency.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            root: tracing::Span::none(),
            requests,
            latency,
        }
    }

    /// Adds a service-specific metric; call while the service starts.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// The registry in Prometheus' text format.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: one debug line and one metrics sample per request, labelled by matched route
/// (never by raw path, which would let callers grow the label set without bound).
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::debug_span!(parent: &metrics.root, "request", %method, %route);
    // With debug logs off the request span is disabled; the root span still labels whatever
    // the handler logs.
    let scope = if span.is_disabled() {
        metrics.root.clone()
    } else {
        span.clone()
    };
    let response = next.run(request).instrument(scope).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::debug!(
            status,
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    });
    metrics.observe(&method, &route, status, elapsed.as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn metrics_get(State(metrics): State<Metrics>) -> Response {
    let mut response = metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_metrics_name_routes_not_paths() {
        let metrics = Metrics::new();
        metrics.observe("GET", "/stocks/{name}", 200, 0.0001);
        let text = metrics.encode();
        assert!(text.contains("bazaar_http_requests_total{method=\"GET\",route=\"/stocks/{name}\",status=\"200\"} 1"), "{text}");
        assert!(
            text.contains("bazaar_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
