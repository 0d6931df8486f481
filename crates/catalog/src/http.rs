//! The catalog's routes. Public-facing reads first, then the `/internal/` routes that order
//! leaders (the trade saga) and front-ends (the invalidation feed) call.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bazaar_api::catalog::{TradeRecord, TradeSettle, TradeTry, TradesQuery};
use bazaar_api::{Data, Epoch, RequestId, StockState, validate_stock_name};
use bazaar_service::{ApiError, Json, Path, Query};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::feed::{Feed, LEASE_DEFAULT};
use crate::store::Store;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The stocks and trades.
    pub store: Store,
    /// Subscribed front-ends.
    pub feed: Feed,
    /// Cancelled when the service stops; long-lived feed connections watch it.
    pub shutdown: CancellationToken,
    /// Saga step outcomes.
    pub trade_steps: Family<StepLabels, Counter>,
}

/// Labels of the saga step counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    step: &'static str,
    outcome: &'static str,
}

/// The catalog's router, without the shared layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health_get))
        .route("/stocks", get(stocks_list))
        .route("/stocks/{name}", get(stock_get))
        .route("/internal/trades", post(trade_try).get(trades_list))
        .route("/internal/trades/{request_id}/confirm", post(trade_confirm))
        .route("/internal/trades/{request_id}/cancel", post(trade_cancel))
        .route("/internal/feed", get(feed_subscribe))
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    stocks: usize,
    subscribers: usize,
}

async fn health_get(State(app): State<AppState>) -> Json<Data<Health>> {
    Json(Data::new(Health {
        status: "ok",
        service: "catalog",
        stocks: app.store.stocks().len(),
        subscribers: app.feed.subscriber_count(),
    }))
}

async fn stocks_list(State(app): State<AppState>) -> Json<Data<Vec<StockState>>> {
    Json(Data::new(app.store.stocks()))
}

async fn stock_get(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Data<StockState>>, ApiError> {
    validate_stock_name(&name).map_err(ApiError::bad_request)?;
    app.store
        .stock(&name)
        .map(|s| Json(Data::new(s)))
        .ok_or_else(|| ApiError::from(&Error::UnknownStock(name)))
}

fn count(app: &AppState, step: &'static str, result: &Result<impl Sized>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(Error::InsufficientStock { .. }) => "insufficient",
        Err(Error::StaleEpoch { .. }) => "fenced",
        Err(_) => "error",
    };
    app.trade_steps
        .get_or_create(&StepLabels { step, outcome })
        .inc();
}

/// Confirms, and pushes the invalidation to every front-end before answering.
async fn confirm(app: &AppState, id: RequestId, epoch: Epoch) -> Result<TradeRecord, ApiError> {
    let result = app.store.trade_confirm(id, epoch).await;
    count(app, "confirm", &result);
    let settled = result.map_err(|e| ApiError::from(&e))?;
    // The push starts only now, after the commit published the new state: a front-end that
    // subscribes at any moment is either in the subscriber set the push takes, or subscribed
    // after the publication, so whatever it caches is new. (Pushing before the publication
    // would miss a front-end that subscribes in between and caches the old state.) A repeated
    // confirm pushes again: the first caller may have vanished before every front-end
    // acknowledged, and this one is about to acknowledge the trade. The push runs in its own
    // task so a caller that disconnects cannot cut it short.
    let feed = app.feed.clone();
    let name = settled.record.name.clone();
    let pushed = tokio::spawn(
        async move { feed.invalidate(&name, settled.version).await }.in_current_span(),
    )
    .await;
    if let Err(e) = pushed {
        tracing::error!(error = %e, "invalidation task failed");
        return Err(ApiError::internal());
    }
    Ok(settled.record)
}

async fn trade_try(
    State(app): State<AppState>,
    Json(trade): Json<TradeTry>,
) -> Result<Json<Data<TradeRecord>>, ApiError> {
    if validate_stock_name(&trade.name).is_err() {
        return Err(ApiError::from(&Error::UnknownStock(trade.name)));
    }
    let result = app.store.trade_try(trade).await;
    count(&app, "try", &result);
    Ok(Json(Data::new(result.map_err(|e| ApiError::from(&e))?)))
}

fn parse_request_id(text: &str) -> Result<RequestId, ApiError> {
    text.parse().map_err(ApiError::bad_request)
}

async fn trade_confirm(
    State(app): State<AppState>,
    Path(request_id): Path<String>,
    Json(settle): Json<TradeSettle>,
) -> Result<Json<Data<TradeRecord>>, ApiError> {
    let request_id = parse_request_id(&request_id)?;
    Ok(Json(Data::new(
        confirm(&app, request_id, settle.epoch).await?,
    )))
}

async fn trade_cancel(
    State(app): State<AppState>,
    Path(request_id): Path<String>,
    Json(settle): Json<TradeSettle>,
) -> Result<Json<Data<TradeRecord>>, ApiError> {
    let request_id = parse_request_id(&request_id)?;
    let result = app.store.trade_cancel(request_id, settle.epoch).await;
    count(&app, "cancel", &result);
    Ok(Json(Data::new(result.map_err(|e| ApiError::from(&e))?)))
}

async fn trades_list(
    State(app): State<AppState>,
    Query(query): Query<TradesQuery>,
) -> Result<Json<Data<Vec<TradeRecord>>>> {
    Ok(Json(Data::new(app.store.trades(query).await?)))
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    /// Lease the front-end will honour, in milliseconds.
    lease_ms: Option<u64>,
    /// Who is subscribing, for logs.
    subscriber: Option<String>,
}

async fn feed_subscribe(
    State(app): State<AppState>,
    Query(query): Query<FeedQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(
                rejection.status(),
                format!("the feed is a WebSocket: {}", rejection.body_text()),
            )
            .into_response();
        }
    };
    let lease = query.lease_ms.map_or(LEASE_DEFAULT, Duration::from_millis);
    let label = query.subscriber.unwrap_or_else(|| "unnamed".into());
    let feed = app.feed.clone();
    let shutdown = app.shutdown.clone();
    // The upgraded connection runs in a task of hyper's; it logs under this request's span.
    let span = tracing::Span::current();
    upgrade.on_upgrade(move |socket| {
        feed.serve_subscriber(socket, label, lease, shutdown)
            .instrument(span)
    })
}
