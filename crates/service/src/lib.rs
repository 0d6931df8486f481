//! What every Stock Bazaar service process has in common: the error envelope and the
//! extractors that send every rejection through it, the JSON 404/405 fallbacks, the body limit,
//! per-route request metrics and debug logs, the `/metrics` endpoint, the cluster key check,
//! TLS, and a listener with bounded resources and graceful shutdown.
//!
//! Each service maps its own `Error` to an [`ApiError`] in one place (its `error.rs`); nothing
//! else in a service names an HTTP status.
//!
//! # Layout
//! - [`error`] — [`ApiError`], the one type that becomes an error response.
//! - [`extract`] — `Json` (strict: duplicate keys refused), `Path` and `Query` extractors whose
//!   rejections are [`ApiError`]s.
//! - [`metrics`] — a per-service Prometheus registry and the request metrics middleware.
//! - [`security`] — the cluster key flags and the access check; [`tls`] — server TLS.
//! - [`limits`] — timeouts and caps of a listener; [`network`] — the flags every service has.
//! - [`serve`] — routers with the shared layers, and the accept loop with a shutdown deadline;
//!   `connection` and `admission` (private) serve one connection and admit each request.
//! - [`batch`], [`writer`] — taking queued work in batches; the group-commit writer thread.
//! - [`db`], [`lockfile`] — opening SQLite files; one process per database file.
//! - [`fatal`] — the signal that stops a service after a failed durable write.
//! - [`duration`] — `250ms`/`10s` durations for flags.
#![warn(missing_docs)]

mod admission;
pub mod batch;
mod connection;
pub mod db;
pub mod duration;
pub mod error;
pub mod extract;
pub mod fatal;
pub mod limits;
pub mod lockfile;
pub mod metrics;
pub mod network;
pub mod security;
pub mod serve;
pub mod tls;
pub mod writer;

pub use admission::BodyReadTimeout;
pub use duration::parse_duration;
pub use error::ApiError;
pub use extract::{Json, Path, Query};
pub use fatal::Fatal;
pub use lockfile::DbLock;
pub use metrics::Metrics;
pub use network::{Network, NetworkArgs};
pub use security::{Access, SecurityArgs};
pub use serve::{Listening, finish_router, serve, stop_tasks};

/// Milliseconds since the Unix epoch, for timestamps stored in databases.
#[must_use]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
