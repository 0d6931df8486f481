//! Routes the front-end calls: health (also used for leader selection), trades, order queries.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use bazaar_api::log::Command;
use bazaar_api::replica::{OrderTrade, ReplicaStatus, TradeReceipt};
use bazaar_api::{Data, Order, TxnNumber};
use bazaar_service::{Json, Path};

use super::AppState;
use crate::error::{Error, Result};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health_get))
        .route("/trades", post(trade_create))
        .route("/orders/{number}", get(order_get))
}

async fn health_get(State(app): State<AppState>) -> Json<Data<ReplicaStatus>> {
    Json(Data::new(app.writer.status()))
}

async fn trade_create(
    State(app): State<AppState>,
    Json(trade): Json<OrderTrade>,
) -> Result<Json<Data<TradeReceipt>>> {
    let command = Command::Trade(trade.command());
    command.validate().map_err(Error::BadRequest)?;
    Ok(Json(Data::new(app.writer.trade(command).await?)))
}

/// Order numbers are digits only, and at most what the store holds.
pub(crate) fn parse_order_number(text: &str) -> Result<TxnNumber> {
    let bad = || {
        Error::BadRequest(format!(
            "order number {text:?} is not a non-negative integer"
        ))
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .map(TxnNumber)
        .ok_or_else(|| Error::BadRequest(format!("order number {text} is out of range")))
}

async fn order_get(
    State(app): State<AppState>,
    Path(number): Path<String>,
) -> Result<Json<Data<Order>>> {
    let number = parse_order_number(&number)?;
    Ok(Json(Data::new(app.writer.order(number).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_are_digits_within_range() {
        assert_eq!(parse_order_number("0").ok(), Some(TxnNumber(0)));
        assert_eq!(
            parse_order_number("9223372036854775807").ok(),
            Some(TxnNumber(i64::MAX as u64))
        );
        for bad in [
            "",
            "+0",
            "-1",
            " 1",
            "1.0",
            "9223372036854775808",
            "0x1",
            "١",
        ] {
            assert!(parse_order_number(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
