//! The order replica's routes, split by caller: [`public`] for front-ends, [`internal`] for the
//! other replicas and the front-end's leader selection.

pub mod internal;
pub mod public;

use axum::Router;

use crate::replica::Replica;
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
    public::routes().merge(internal::routes()).with_state(state)
}
