//! The catalog's routes: lookups (which may ask for a minimum log position) and its health.
//! Everything it knows comes from the order log; it has no write route of its own.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bazaar_api::catalog::{CatalogStatus, LookupQuery, StockAt, StocksAt};
use bazaar_api::log::Position;
use bazaar_api::{Data, validate_stock_name};
use bazaar_service::{Json, Path, Query};

use crate::error::{Error, Result};
use crate::view::Shared;

/// How long a lookup waits for the view to reach the position it asks for before it answers
/// `unavailable` (the front-end then asks another catalog).
pub const LOOKUP_WAIT: Duration = Duration::from_millis(1000);

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The view.
    pub shared: Shared,
    /// The position the file holds, updated by the saver.
    pub saved: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The catalog's router, without the shared layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health_get))
        .route("/stocks", get(stocks_list))
        .route("/stocks/{name}", get(stock_get))
        .with_state(state)
}

async fn health_get(State(app): State<AppState>) -> Json<Data<CatalogStatus>> {
    let current = app.shared.now();
    Json(Data::new(CatalogStatus {
        status: "ok".into(),
        service: "catalog".into(),
        stocks: current.view.stocks().count(),
        position: current.view.position(),
        saved: Position(app.saved.load(std::sync::atomic::Ordering::Relaxed)),
        following: current.following,
    }))
}

/// The view at `needed` or later. A view that lists no stock yet (a new catalog that has not
/// heard from the leader) cannot answer anything, whatever was asked.
async fn at_least(
    app: &AppState,
    needed: Position,
) -> Result<std::sync::Arc<crate::view::Current>> {
    let needed = needed.max(Position(1));
    let current = app
        .shared
        .at_least(needed, LOOKUP_WAIT)
        .await
        .map_err(|current| Error::Behind {
            at: current.view.position(),
            needed,
        })?;
    if current.view.stocks().next().is_none() {
        return Err(Error::Behind {
            at: current.view.position(),
            needed,
        });
    }
    Ok(current)
}

async fn stocks_list(
    State(app): State<AppState>,
    Query(query): Query<LookupQuery>,
) -> Result<Json<Data<StocksAt>>> {
    let current = at_least(&app, query.min_position.unwrap_or_default()).await?;
    Ok(Json(Data::new(StocksAt {
        stocks: current.view.stocks().cloned().collect(),
        position: current.view.position(),
    })))
}

async fn stock_get(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<LookupQuery>,
) -> Result<Json<Data<StockAt>>> {
    validate_stock_name(&name).map_err(Error::BadRequest)?;
    let current = at_least(&app, query.min_position.unwrap_or_default()).await?;
    let stock = current
        .view
        .stock(&name)
        .cloned()
        .ok_or(Error::UnknownStock(name))?;
    Ok(Json(Data::new(StockAt {
        stock,
        position: current.view.position(),
    })))
}
