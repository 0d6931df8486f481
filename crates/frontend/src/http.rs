//! The public REST API (SPEC.md section 2), with its compatibility aliases, plus `/health`,
//! `/cache` and `/leader`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bazaar_api::client::{CacheView, CatalogClient, LeaderView};
use bazaar_api::order::TradeRequest;
use bazaar_api::replica::{OrderTrade, TradeAck};
use bazaar_api::{Data, Order, RequestId, Stock, TxnNumber, validate_stock_name};
use bazaar_service::{Json, Path, Query};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Lookup};
use crate::error::{Error, Result};
use crate::leader::LeaderSelector;

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The lookup cache; `None` with `--no-cache`.
    pub cache: Option<Arc<Cache>>,
    /// Catalog client for lookups.
    pub catalog: CatalogClient,
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
        caching: app.cache.as_ref().is_some_and(|c| c.view().enabled),
    }))
}

async fn lookup(app: &AppState, name: String) -> Result<Stock> {
    validate_stock_name(&name).map_err(Error::BadRequest)?;
    let ticket = match app.cache.as_deref().map(|c| c.lookup(&name)) {
        Some(Lookup::Hit(stock)) => return Ok(stock),
        Some(Lookup::Miss(ticket)) => ticket,
        None => None,
    };
    let state = app
        .catalog
        .stock_get(&name)
        .await
        .map_err(Error::from_catalog)?;
    if let (Some(cache), Some(ticket)) = (&app.cache, ticket) {
        cache.fill(ticket, &state);
    }
    Ok(state.into())
}

async fn stock_get(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Data<Stock>>> {
    Ok(Json(Data::new(lookup(&app, name).await?)))
}

#[derive(Debug, Deserialize)]
struct StocksQuery {
    stockname: Option<String>,
}

/// `GET /stocks?stockname=X` (the alias); plain `GET /stocks` lists every stock.
async fn stocks_query(
    State(app): State<AppState>,
    Query(query): Query<StocksQuery>,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    match query.stockname {
        Some(name) => Ok(Json(Data::new(lookup(&app, name).await?)).into_response()),
        None => {
            let stocks: Vec<Stock> = app
                .catalog
                .stocks()
                .await
                .map_err(Error::from_catalog)?
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
        request_id: RequestId::new(),
        name: request.name,
        kind: request.kind,
        quantity: request.quantity,
        attempt: 0,
    };
    let ack = app.leader.trade(&trade).await?;
    if let Some(cache) = &app.cache {
        cache.drop_stock(&trade.name);
    }
    tracing::debug!(txn = %ack.transaction_number, stock = %trade.name, kind = %trade.kind, quantity = trade.quantity, "trade relayed");
    Ok(Json(Data::new(ack)))
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
    let view = app.cache.as_ref().map_or_else(
        || CacheView {
            capacity: 0,
            hits: 0,
            misses: 0,
            evictions: 0,
            invalidations: 0,
            enabled: false,
            entries: Vec::new(),
        },
        |c| c.view(),
    );
    Json(Data::new(view))
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
        expected.sort_unstable();
        let mut found = documented.clone();
        found.sort_unstable();
        assert_eq!(found, expected, "documented paths {documented:?}");
    }
}
