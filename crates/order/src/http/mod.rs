//! The order replica's routes, split by caller: [`public`] for front-ends, [`internal`] for the
//! other replicas and the front-end's leader selection in primary-backup mode, and
//! [`crate::raft::http`] for the Raft nodes.

pub mod internal;
pub mod public;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::Error;
use crate::replica::Replica;
use crate::replication::Replicator;
use crate::saga::Trader;

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// This replica.
    pub replica: Replica,
    /// Runs trades.
    pub trader: Trader,
}

/// The replica's router, without the shared layers.
pub fn router(state: AppState) -> Router {
    public::routes()
        .merge(internal::routes())
        .merge(crate::raft::http::routes())
        .with_state(state)
}

fn route_of(parts: &Parts) -> impl FnOnce() -> String {
    let route = format!("{} {}", parts.method, parts.uri.path());
    move || route
}

/// The replica behind a primary-backup route. As an extractor it runs before the body is read,
/// so a raft replica answers 409 naming the mode whatever the body holds.
#[derive(Debug, Clone)]
pub struct PrimaryBackupRoute(pub Replicator);

impl FromRequestParts<AppState> for PrimaryBackupRoute {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        state
            .replica
            .primary_backup(route_of(parts))
            .cloned()
            .map(Self)
    }
}

/// The Raft node behind a raft route; a primary-backup replica answers 409 naming the mode.
#[derive(Clone)]
pub struct RaftRoute(pub crate::raft::types::Raft);

impl FromRequestParts<AppState> for RaftRoute {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        state.replica.raft(route_of(parts)).cloned().map(Self)
    }
}
