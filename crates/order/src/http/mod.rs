//! The order replica's routes, split by caller: [`public`] for front-ends (health, trades, order
//! queries), [`internal`] for the other replicas, the catalogs and the front-ends' feed and
//! leader selection, and [`raft`] for the Raft nodes. Every value is checked here, before it
//! reaches the replica.

/// Largest replication message accepted (primary-backup appends, Raft appends and snapshot
/// chunks). A primary-backup append carries up to `BATCH_LEN_MAX` (512) entries of up to a few
/// hundred bytes each, or a genesis of up to 10,000 stocks; openraft's carry 300 entries or a
/// snapshot chunk, which JSON writes as up to four characters a byte. The shared 64 KiB limit
/// of the other routes would refuse a follower that is more than a few hundred entries behind,
/// and it would then never catch up.
pub const REPLICATION_BODY_LEN_MAX: usize = 8 * 1024 * 1024;

pub mod internal;
pub mod public;
pub mod raft;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::primary_backup::PrimaryBackup;
use crate::raft::RaftReplica;
use crate::replica::Writer;

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The replica behind its release gate.
    pub writer: Writer,
    /// Cancelled when the service stops; long-lived feed connections watch it.
    pub shutdown: CancellationToken,
}

/// The replica's router, without the shared layers.
pub fn router(state: AppState) -> Router {
    public::routes()
        .merge(internal::routes())
        .merge(raft::routes())
        .with_state(state)
}

fn route_of(parts: &Parts) -> impl FnOnce() -> String {
    let route = format!("{} {}", parts.method, parts.uri.path());
    move || route
}

/// The replica behind a primary-backup route. As an extractor it runs before the body is read,
/// so a raft replica answers `wrong_mode` whatever the body holds.
#[derive(Debug, Clone)]
pub struct PrimaryBackupRoute(pub PrimaryBackup);

impl FromRequestParts<AppState> for PrimaryBackupRoute {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        state
            .writer
            .replica
            .primary_backup(route_of(parts))
            .cloned()
            .map(Self)
    }
}

/// The Raft node behind a raft route; a primary-backup replica answers `wrong_mode`.
#[derive(Debug, Clone)]
pub struct RaftRoute(pub RaftReplica);

impl FromRequestParts<AppState> for RaftRoute {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        state
            .writer
            .replica
            .raft(route_of(parts))
            .cloned()
            .map(Self)
    }
}
