//! Routes between replicas (and the front-end's leader notices): `/internal/...`.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use bazaar_api::replica::{
    AppendReply, AppendRequest, LeaderNotice, OrderEntry, OrdersPageQuery, ReplicaStatus,
};
use bazaar_api::{Data, TxnNumber};
use bazaar_service::{Json, Query};

use super::AppState;
use crate::error::{Error, Result};
use crate::log_store::PAGE_LEN_MAX;
use crate::replica::Replica;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/leader", post(leader_notice))
        .route("/internal/append", post(replica_append))
        .route("/internal/orders", get(orders_page))
}

async fn leader_notice(
    State(app): State<AppState>,
    Json(notice): Json<LeaderNotice>,
) -> Result<Json<Data<ReplicaStatus>>> {
    match &app.replica {
        Replica::PrimaryBackup(r) => Ok(Json(Data::new(r.on_leader_notice(notice).await?))),
    }
}

async fn replica_append(
    State(app): State<AppState>,
    Json(request): Json<AppendRequest>,
) -> Result<Json<Data<AppendReply>>> {
    match &app.replica {
        Replica::PrimaryBackup(r) => Ok(Json(Data::new(r.on_append(request).await?))),
    }
}

async fn orders_page(
    State(app): State<AppState>,
    Query(query): Query<OrdersPageQuery>,
) -> Result<Json<Data<Vec<OrderEntry>>>> {
    let limit = query.limit.unwrap_or(PAGE_LEN_MAX);
    if limit == 0 {
        return Err(Error::BadRequest("limit must be at least 1".into()));
    }
    match &app.replica {
        Replica::PrimaryBackup(r) => {
            Ok(Json(Data::new(r.page(TxnNumber(query.from), limit).await?)))
        }
    }
}
