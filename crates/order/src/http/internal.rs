//! Routes between primary-backup replicas (and the front-end's leader notices):
//! `/internal/...`. In raft mode the leader and append routes answer 409, naming the mode; the
//! page of orders is served in both.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use bazaar_api::replica::{
    AppendReply, AppendRequest, LeaderNotice, OrderEntry, OrdersPageQuery, ReplicaStatus,
};
use bazaar_api::{Data, TxnNumber};
use bazaar_service::{Json, Query};

use super::{AppState, PrimaryBackupRoute};
use crate::error::{Error, Result};
use crate::log_store::PAGE_LEN_MAX;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/leader", post(leader_notice))
        .route("/internal/append", post(replica_append))
        .route("/internal/orders", get(orders_page))
}

async fn leader_notice(
    PrimaryBackupRoute(replica): PrimaryBackupRoute,
    Json(notice): Json<LeaderNotice>,
) -> Result<Json<Data<ReplicaStatus>>> {
    Ok(Json(Data::new(replica.on_leader_notice(notice).await?)))
}

async fn replica_append(
    PrimaryBackupRoute(replica): PrimaryBackupRoute,
    Json(request): Json<AppendRequest>,
) -> Result<Json<Data<AppendReply>>> {
    Ok(Json(Data::new(replica.on_append(request).await?)))
}

async fn orders_page(
    State(app): State<AppState>,
    Query(query): Query<OrdersPageQuery>,
) -> Result<Json<Data<Vec<OrderEntry>>>> {
    let limit = query.limit.unwrap_or(PAGE_LEN_MAX);
    if limit == 0 {
        return Err(Error::BadRequest("limit must be at least 1".into()));
    }
    Ok(Json(Data::new(
        app.replica.page(TxnNumber(query.from), limit).await?,
    )))
}
