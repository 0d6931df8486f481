//! Wire types shared by every Stock Bazaar process, and small typed HTTP clients for each service.
//!
//! Services depend on this crate and never on each other, so the JSON shapes defined here are
//! the only coupling between them (SPEC.md sections 2, 5 and 6).
//!
//! # Layout
//! - [`ids`] — newtypes for transaction numbers, replica ids, request ids, versions and epochs.
//! - [`price`] — exact prices in integer cents, written as JSON numbers with two decimals.
//! - [`envelope`] — the `{"data": ..}` and `{"error": {"code", "message"}}` bodies.
//! - [`json`] — strict JSON reading (duplicate keys refused) for every body and frame.
//! - [`stock`], [`order`] — the public resources and the trade request.
//! - [`log`] — the replicated log's commands and effects, positions, and how catalogs follow it.
//! - [`catalog`] — what a catalog answers lookups with and reports about itself.
//! - [`feed`] — the invalidation feed from the order leader to front-ends.
//! - [`replica`] — the order replicas' status, leader notices and replication messages.
//! - [`auth`] — the cluster key and the TLS trust every internal call presents.
//! - [`client`] — typed clients over pooled keep-alive HTTP connections.
//! - [`websocket`] — WebSockets to cluster services (the invalidation feed), key and TLS
//!   included.
//! - [`retry`] — back-off with a deadline for every retry loop.
#![warn(missing_docs)]

pub mod auth;
pub mod catalog;
pub mod client;
pub mod envelope;
pub mod feed;
pub mod ids;
pub mod json;
pub mod log;
pub mod order;
pub mod price;
pub mod replica;
pub mod retry;
pub mod stock;
pub mod websocket;

pub use envelope::{Data, ErrorBody, ErrorDetail, ErrorKind, LeaderHint};
pub use ids::{Epoch, ReplicaId, RequestId, TxnNumber, Version};
pub use order::{Order, TradeType};
pub use price::Price;
pub use stock::{Stock, StockState};

/// Longest stock name accepted anywhere, in characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them, so docs/openapi.yaml states the rule exactly), hence at most 256
/// bytes. Longer names are rejected with 400 before they reach the catalog, so a name can never
/// be a vector for oversized keys.
pub const STOCK_NAME_LEN_MAX: usize = 64;

/// Largest quantity a single trade may carry. The bound keeps every quantity representable as a
/// signed 32-bit integer in clients written in other languages (the spec calls anything above
/// 2^31 malformed).
pub const TRADE_QUANTITY_MAX: u64 = i32::MAX as u64;

/// Largest request body any service accepts, in bytes; larger bodies get 413.
pub const BODY_LEN_MAX: usize = 64 * 1024;

/// Checks a stock name's shape (not whether it exists).
///
/// # Errors
/// A sentence saying what is wrong with the name, fit for a 400 reply.
pub fn validate_stock_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("stock name must not be empty".into());
    }
    let length = name.chars().count();
    if length > STOCK_NAME_LEN_MAX {
        return Err(format!(
            "stock name is {length} characters long; the limit is {STOCK_NAME_LEN_MAX}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("stock name must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_names_are_bounded_and_printable() {
        assert!(validate_stock_name("GameStart").is_ok());
        assert!(validate_stock_name("").is_err());
        assert!(validate_stock_name(&"x".repeat(STOCK_NAME_LEN_MAX)).is_ok());
        assert!(validate_stock_name(&"x".repeat(STOCK_NAME_LEN_MAX + 1)).is_err());
        assert!(
            validate_stock_name(&"é".repeat(STOCK_NAME_LEN_MAX)).is_ok(),
            "characters, not bytes"
        );
        assert!(validate_stock_name("a\u{85}b").is_err(), "C1 controls too");
        assert!(validate_stock_name("a\nb").is_err());
    }
}
