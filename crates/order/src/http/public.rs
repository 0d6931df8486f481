//! Routes the front-end calls: health (also used for leader selection), trades, order queries.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use bazaar_api::replica::{OrderTrade, ReplicaStatus, TradeAck};
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
    Json(Data::new(app.replica.status()))
}

async fn trade_create(
    State(app): State<AppState>,
    Json(trade): Json<OrderTrade>,
) -> Result<Json<Data<TradeAck>>> {
    bazaar_api::validate_stock_name(&trade.name).map_err(Error::BadRequest)?;
    if trade.quantity == 0 || trade.quantity > bazaar_api::TRADE_QUANTITY_MAX {
        return Err(Error::BadRequest(format!(
            "quantity must be from 1 to {}",
            bazaar_api::TRADE_QUANTITY_MAX
        )));
    }
    let number = app.trader.trade(trade).await?;
    Ok(Json(Data::new(TradeAck {
        transaction_number: number,
    })))
}

async fn order_get(
    State(app): State<AppState>,
    Path(number): Path<String>,
) -> Result<Json<Data<Order>>> {
    let number: TxnNumber = number.parse().map_err(Error::BadRequest)?;
    Ok(Json(Data::new(app.replica.order_get(number).await?)))
}
