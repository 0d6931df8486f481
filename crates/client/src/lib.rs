//! The client side of Stock Bazaar: the load generator that verifies every order, the
//! evaluation sweep with plots, the chaos experiment, and `verify` (SPEC.md section 7).
//!
//! # Layout
//! - [`verify`] — consistency checks over a data directory's databases.

pub mod verify;
