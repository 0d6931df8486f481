//! The client side of Stock Bazaar: the load generator that verifies every order, the
//! evaluation sweep with plots, the chaos experiment, and `verify` (SPEC.md section 7).
//!
//! # Layout
//! - [`load`] — the load generator: K clients, lookups and trades, then every order read back.
//! - [`connection`] — one keep-alive HTTP/1.1 connection per simulated client.
//! - [`bad`] — invalid requests mixed into a load, each checked against its documented error.
//! - [`history`] — every operation a client ran, when, and how it ended (JSON lines).
//! - [`linearizable`] — checks a history against per-stock and per-order models.
//! - [`endpoint`] — the front-end's base URL, parsed once.
//! - [`stats`] — latency histograms and their summaries per request type.
//! - [`report`] — a load run's outcome as a table and as JSON.
//! - [`eval`] — the sweep over p with the cache on and off: CSV, JSON and plots.
//! - [`cache_timeline`] — which stocks were cached when, from `GET /cache` samples.
//! - [`plot`] — the figures, as PNG and SVG with an embedded font.
//! - [`verify`] — consistency checks over a data directory's databases.
//! - [`chaos`] — kills and restarts replicas under load, then checks nothing was lost.
//! - [`netchaos`] — network faults on test hosts under recorded load, then the checks.
//! - [`error`] — why a run could not be carried out.

pub mod bad;
pub mod cache_timeline;
pub mod chaos;
pub mod connection;
pub mod endpoint;
pub mod error;
pub mod eval;
pub mod history;
pub mod linearizable;
pub mod load;
pub mod netchaos;
pub mod plot;
pub mod report;
pub mod stats;
pub mod verify;

pub use endpoint::Endpoint;
pub use error::{Error, Result};
pub use load::{LoadConfig, Stop};
pub use report::LoadReport;
