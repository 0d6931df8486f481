//! The public REST API (SPEC.md section 2), with its compatibility aliases, plus `/health`,
//! `/cache` and `/leader`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bazaar_api::client::{CacheView, LeaderView};
use bazaar_api::order::TradeRequest;
use bazaar_api::replica::{OrderTrade, TradeAck};
use bazaar_api::{Data, Order, Stock, TxnNumber, validate_stock_name};
use bazaar_service::{Json, Path, Query};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Lookup};
use crate::catalogs::Catalogs;
use crate::error::{Error, Result};
use crate::leader::LeaderSelector;

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// What the front-end knows of the log, and the lookup cache (with `--no-cache`, the
    /// knowledge alone).
    pub cache: Arc<Cache>,
    /// The catalogs lookups go to.
    pub catalogs: Catalogs,
    /// The order leader.
    pub leader: LeaderSelector,
}

/// The front-end's router, without the shared layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health_get))
        .route("/stocks", get(stocks_query))
        .route("/stocks/{name}", get(stock_get))
        .route("/products/{name}", get(stock_get))
        .route("/orders", get(orders_query).post(order_create))
        .route("/orders/{number}", get(order_get))
        .route("/cache", get(cache_get))
        .route("/leader", get(leader_get))
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    caching: bool,
}

async fn health_get(State(app): State<AppState>) -> Json<Data<Health>> {
    Json(Data::new(Health {
        status: "ok",
        service: "frontend",
        caching: app.cache.view().enabled,
    }))
}

/// A JSON reply from bytes already encoded (a cache hit serves them as they are).
fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Looks a stock up: from the cache when fresh, else from a catalog whose view is at least as
/// new as every change this front-end knows of (or, when it cannot vouch for its knowledge, as
/// new as the leader says every acknowledged change is).
async fn lookup(app: &AppState, name: String) -> Result<Bytes> {
    validate_stock_name(&name).map_err(Error::BadRequest)?;
    let (bound, ticket) = match app.cache.lookup(&name) {
        Lookup::Hit(body) => return Ok(body),
        Lookup::Miss { bound, ticket } => (bound, ticket),
    };
    let bound = match bound {
        Some(bound) => bound,
        None => app.leader.position().await?,
    };
    let found = app.catalogs.stock(&name, bound).await?;
    let version = found.stock.version;
    let body = Bytes::from(
        serde_json::to_vec(&Data::new(Stock::from(found.stock))).expect("stocks serialise"),
    );
    if let Some(ticket) = ticket {
        app.cache
            .fill(ticket, &name, found.position, version, body.clone());
    }
    Ok(body)
}

async fn stock_get(State(app): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(json_bytes(lookup(&app, name).await?))
}

#[derive(Debug, Deserialize)]
struct StocksQuery {
    stockname: Option<String>,
}

/// `GET /stocks?stockname=X` (the alias); plain `GET /stocks` lists every stock.
async fn stocks_query(
    State(app): State<AppState>,
    Query(query): Query<StocksQuery>,
) -> Result<Response> {
    match query.stockname {
        Some(name) => Ok(json_bytes(lookup(&app, name).await?)),
        None => {
            let bound = app.leader.position().await?;
            let stocks: Vec<Stock> = app
                .catalogs
                .stocks(bound)
                .await?
                .stocks
                .into_iter()
                .map(Stock::from)
                .collect();
            Ok(Json(Data::new(stocks)).into_response())
        }
    }
}

async fn order_create(
    State(app): State<AppState>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<Data<TradeAck>>> {
    let request = TradeRequest::from_json(&body).map_err(Error::BadRequest)?;
    let trade = OrderTrade {
        request_id: request.request_id.unwrap_or_default(),
        name: request.name,
        kind: request.kind,
        quantity: request.quantity,
    };
    let receipt = app.leader.trade(&trade).await?;
    // Every front-end heard of the change before the leader released it; this one also notes
    // it itself, so its own next lookup cannot miss it whatever happened to its feed.
    app.cache
        .invalidate(receipt.position, std::slice::from_ref(&trade.name));
    tracing::debug!(txn = %receipt.transaction_number, stock = %trade.name, kind = %trade.kind, quantity = trade.quantity, "trade relayed");
    Ok(Json(Data::new(TradeAck {
        transaction_number: receipt.transaction_number,
    })))
}

/// Digits only, at most `TxnNumber::MAX` (`+0` and 2^63 are 400, not another order).
fn parse_order_number(text: &str) -> Result<TxnNumber> {
    text.parse::<TxnNumber>().map_err(Error::BadRequest)
}

async fn order_get(
    State(app): State<AppState>,
    Path(number): Path<String>,
) -> Result<Json<Data<Order>>> {
    let number = parse_order_number(&number)?;
    Ok(Json(Data::new(app.leader.order_get(number).await?)))
}

#[derive(Debug, Deserialize)]
struct OrdersQuery {
    #[serde(rename = "order-number")]
    order_number: Option<String>,
}

/// `GET /orders?order-number=N` (the alias).
async fn orders_query(
    State(app): State<AppState>,
    Query(query): Query<OrdersQuery>,
) -> Result<Json<Data<Order>>> {
    let text = query
        .order_number
        .ok_or_else(|| Error::BadRequest("missing query parameter order-number".into()))?;
    let number = parse_order_number(&text)?;
    Ok(Json(Data::new(app.leader.order_get(number).await?)))
}

async fn cache_get(State(app): State<AppState>) -> Json<Data<CacheView>> {
    Json(Data::new(app.cache.view()))
}

async fn leader_get(State(app): State<AppState>) -> Result<Json<Data<LeaderView>>> {
    Ok(Json(Data::new(app.leader.view().await?)))
}

#[cfg(test)]
mod tests {
    /// Every route of the public router, as the OpenAPI document names it.
    const ROUTES: [&str; 9] = [
        "/health",
        "/stocks",
        "/stocks/{name}",
        "/products/{name}",
        "/orders",
        "/orders/{number}",
        "/cache",
        "/leader",
        "/metrics",
    ];

    /// docs/openapi.yaml must describe exactly the routes the front-end serves.
    #[test]
    fn the_openapi_document_lists_every_route_and_no_other() {
        let doc = include_str!("../../../docs/openapi.yaml");
        let paths = doc
            .split_once("\npaths:\n")
            .and_then(|(_, rest)| rest.split_once("\ncomponents:\n"))
            .map(|(paths, _)| paths)
            .expect("openapi.yaml has paths and components sections");
        let documented: Vec<&str> = paths
            .lines()
            .filter(|l| l.starts_with("  /") && l.ends_with(':'))
            .map(|l| l.trim().trim_end_matches(':'))
            .collect();
        let mut expected = ROUTES.to_vec();
        expected.extend(crate::dashboard::ROUTES);
        expected.sort_unstable();
        let mut found = documented.clone();
        found.sort_unstable();
        assert_eq!(found, expected, "documented paths {documented:?}");
    }
}
