//! Routes the replicas' Raft nodes call on each other: `/internal/raft/...`. In primary-backup
//! mode they answer 409, naming the mode.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use bazaar_api::Data;
use bazaar_service::Json;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::types::{NodeId, TypeConfig};
use crate::http::{AppState, RaftRoute};

/// Largest Raft message accepted. Appends carry at most openraft's `max_payload_entries` (300)
/// orders of a few hundred bytes each, and snapshot chunks are
/// [`super::SNAPSHOT_CHUNK_LEN`] bytes, which JSON writes as up to four characters a byte;
/// the shared 64 KiB limit of the public routes would refuse both.
pub const RAFT_BODY_LEN_MAX: usize = 8 * 1024 * 1024;

type Reply<T, E = openraft::error::Infallible> = Json<Data<Result<T, RaftError<NodeId, E>>>>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/raft/append", post(raft_append))
        .route("/internal/raft/vote", post(raft_vote))
        .route("/internal/raft/snapshot", post(raft_snapshot))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LEN_MAX))
}

async fn raft_append(
    RaftRoute(raft): RaftRoute,
    Json(rpc): Json<AppendEntriesRequest<TypeConfig>>,
) -> Reply<AppendEntriesResponse<NodeId>> {
    Json(Data::new(raft.append_entries(rpc).await))
}

async fn raft_vote(
    RaftRoute(raft): RaftRoute,
    Json(rpc): Json<VoteRequest<NodeId>>,
) -> Reply<VoteResponse<NodeId>> {
    Json(Data::new(raft.vote(rpc).await))
}

async fn raft_snapshot(
    RaftRoute(raft): RaftRoute,
    Json(rpc): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Reply<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
    Json(Data::new(raft.install_snapshot(rpc).await))
}
