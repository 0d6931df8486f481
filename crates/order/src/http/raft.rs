//! Routes the replicas' Raft nodes call on each other: `/internal/raft/...`. In primary-backup
//! mode they answer `wrong_mode`. Terms and log indexes are checked before openraft sees them:
//! a term far beyond this node's would make it adopt a term whose successor cannot be stored.

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

use super::{AppState, RaftRoute};
use crate::error::Error;
use crate::primary_backup::core::{EPOCH_MAX, EPOCH_STEP_MAX};
use crate::raft::types::{NodeId, TypeConfig, Vote};

type Reply<T, E = openraft::error::Infallible> = Json<Data<Result<T, RaftError<NodeId, E>>>>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/raft/append", post(raft_append))
        .route("/internal/raft/vote", post(raft_vote))
        .route("/internal/raft/snapshot", post(raft_snapshot))
        .layer(DefaultBodyLimit::max(super::REPLICATION_BODY_LEN_MAX))
}

/// Largest log index a message may name: what the store's signed integers hold.
const LOG_INDEX_MAX: u64 = i64::MAX as u64;

/// Refuses a vote whose term the cluster could never reach by elections, or which would
/// leave no room for the next one.
fn check_vote(vote: &Vote, current_term: u64) -> Result<(), Error> {
    let term = vote.leader_id.term;
    if term > EPOCH_MAX || term.saturating_sub(current_term) > EPOCH_STEP_MAX {
        return Err(Error::BadRequest(format!(
            "term {term} is too far ahead of term {current_term} (at most {EPOCH_STEP_MAX} \
             more, and at most {EPOCH_MAX})"
        )));
    }
    Ok(())
}

fn check_index(what: &str, index: Option<u64>) -> Result<(), Error> {
    match index {
        Some(i) if i > LOG_INDEX_MAX => Err(Error::BadRequest(format!(
            "{what} {i} is larger than {LOG_INDEX_MAX}"
        ))),
        _ => Ok(()),
    }
}

async fn raft_append(
    RaftRoute(raft): RaftRoute,
    Json(rpc): Json<AppendEntriesRequest<TypeConfig>>,
) -> Result<Reply<AppendEntriesResponse<NodeId>>, Error> {
    check_vote(&rpc.vote, raft.term())?;
    check_index("prev log index", rpc.prev_log_id.map(|l| l.index))?;
    check_index("commit index", rpc.leader_commit.map(|l| l.index))?;
    for entry in &rpc.entries {
        check_index("entry index", Some(entry.log_id.index))?;
        if entry.log_id.leader_id.term > rpc.vote.leader_id.term {
            return Err(Error::BadRequest(format!(
                "entry {} has term {}, newer than the sender's {}",
                entry.log_id.index, entry.log_id.leader_id.term, rpc.vote.leader_id.term
            )));
        }
        if let openraft::EntryPayload::Normal(command) = &entry.payload {
            for c in &command.0 {
                c.validate().map_err(Error::BadRequest)?;
            }
        }
    }
    Ok(Json(Data::new(raft.raft().append_entries(rpc).await)))
}

async fn raft_vote(
    RaftRoute(raft): RaftRoute,
    Json(rpc): Json<VoteRequest<NodeId>>,
) -> Result<Reply<VoteResponse<NodeId>>, Error> {
    check_vote(&rpc.vote, raft.term())?;
    check_index("last log index", rpc.last_log_id.map(|l| l.index))?;
    Ok(Json(Data::new(raft.raft().vote(rpc).await)))
}

async fn raft_snapshot(
    RaftRoute(raft): RaftRoute,
    Json(rpc): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Result<Reply<InstallSnapshotResponse<NodeId>, InstallSnapshotError>, Error> {
    check_vote(&rpc.vote, raft.term())?;
    check_index("snapshot index", rpc.meta.last_log_id.map(|l| l.index))?;
    Ok(Json(Data::new(raft.raft().install_snapshot(rpc).await)))
}
