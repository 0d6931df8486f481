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

async fn order_get(
    State(app): State<AppState>,
    Path(number): Path<String>,
) -> Result<Json<Data<Order>>> {
    let number: TxnNumber = number.parse().map_err(Error::BadRequest)?;
    Ok(Json(Data::new(app.writer.order(number).await?)))
}
