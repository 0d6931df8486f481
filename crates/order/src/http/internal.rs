//! Routes between services: leader notices, appends, statuses and log pages between
//! primary-backup replicas; the leader's log for catalogs and its restocks; the invalidation
//! feed and the read position for front-ends.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bazaar_api::feed::FeedQuery;
use bazaar_api::log::{Command, LogFollow, LogFollowQuery, Position, PositionReply};
use bazaar_api::replica::{
    AppendReply, AppendRequest, EntriesQuery, LeaderNotice, LogEntry, PeerStatus, ReplicaStatus,
    RestockRequest, StatusFence,
};
use bazaar_api::{Data, ErrorKind};
use bazaar_service::{ApiError, Json, Query};
use tracing::Instrument;

use super::{AppState, PrimaryBackupRoute};

use crate::error::{Error, Result};
use crate::primary_backup::core::BATCH_LEN_MAX;
use crate::release::FOLLOW_WAIT_MAX;
use crate::release::feed::Authority;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/leader", post(leader_notice))
        .route(
            "/internal/append",
            post(replica_append).layer(DefaultBodyLimit::max(super::REPLICATION_BODY_LEN_MAX)),
        )
        .route("/internal/status", post(peer_status))
        .route("/internal/log/entries", get(entries_page))
        .route("/internal/log", get(log_follow))
        .route("/internal/position", get(position_get))
        .route("/internal/restock", post(restock))
        .route("/internal/feed", get(feed_subscribe))
}

/// Most replicas a notice may call live.
const LIVE_LEN_MAX: usize = 255;

async fn leader_notice(
    PrimaryBackupRoute(replica): PrimaryBackupRoute,
    Json(notice): Json<LeaderNotice>,
) -> Result<Json<Data<ReplicaStatus>>> {
    if notice.live.len() > LIVE_LEN_MAX {
        return Err(Error::BadRequest(format!(
            "a notice names {} live replicas; at most {LIVE_LEN_MAX}",
            notice.live.len()
        )));
    }
    Ok(Json(Data::new(replica.notice(notice).await?)))
}

async fn replica_append(
    PrimaryBackupRoute(replica): PrimaryBackupRoute,
    Json(request): Json<AppendRequest>,
) -> Result<Json<Data<AppendReply>>> {
    if request.entries.len() > BATCH_LEN_MAX {
        return Err(Error::BadRequest(format!(
            "an append carries {} entries; at most {BATCH_LEN_MAX}",
            request.entries.len()
        )));
    }
    for entry in &request.entries {
        entry
            .command
            .validate()
            .map_err(|e| Error::BadRequest(format!("entry {}: {e}", entry.index)))?;
    }
    Ok(Json(Data::new(replica.append(request).await?)))
}

async fn peer_status(
    PrimaryBackupRoute(replica): PrimaryBackupRoute,
    Json(fence): Json<Option<StatusFence>>,
) -> Result<Json<Data<PeerStatus>>> {
    Ok(Json(Data::new(replica.peer_status(fence).await?)))
}

async fn entries_page(
    PrimaryBackupRoute(replica): PrimaryBackupRoute,
    Query(query): Query<EntriesQuery>,
) -> Result<Json<Data<Vec<LogEntry>>>> {
    let limit = query.limit.map_or(BATCH_LEN_MAX, |l| {
        usize::try_from(l).unwrap_or(BATCH_LEN_MAX)
    });
    if limit == 0 {
        return Err(Error::BadRequest("limit must be at least 1".into()));
    }
    Ok(Json(Data::new(
        replica
            .entries(query.from, limit.min(BATCH_LEN_MAX))
            .await?,
    )))
}

async fn log_follow(
    State(app): State<AppState>,
    Query(query): Query<LogFollowQuery>,
) -> Result<Json<Data<LogFollow>>> {
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(FOLLOW_WAIT_MAX);
    match app
        .writer
        .release
        .follow(query.from, query.epoch, wait)
        .await
    {
        Some(answer) => Ok(Json(Data::new(answer))),
        None => Err(not_releasing(&app)),
    }
}

/// Why this replica has nothing to offer: it does not lead, or it has not released anything
/// yet in this leadership.
fn not_releasing(app: &AppState) -> Error {
    let status = app.writer.status();
    if status.role == bazaar_api::replica::ReplicaRole::Leader {
        Error::NotReady("leading, but nothing is released yet (the handover wait)".into())
    } else {
        match &app.writer.replica {
            crate::replica::Replica::PrimaryBackup(r) => r.not_leader(),
            crate::replica::Replica::Raft(r) => r.not_leader(),
        }
    }
}

async fn position_get(State(app): State<AppState>) -> Result<Json<Data<PositionReply>>> {
    match app.writer.release.position() {
        Some((epoch, position)) => Ok(Json(Data::new(PositionReply { position, epoch }))),
        None => Err(not_releasing(&app)),
    }
}

async fn restock(
    State(app): State<AppState>,
    Json(request): Json<RestockRequest>,
) -> Result<Json<Data<Position>>> {
    let command = Command::Restock { to: request.to };
    command.validate().map_err(Error::BadRequest)?;
    let (_, position) = app.writer.write(command).await?;
    Ok(Json(Data::new(position)))
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
                ErrorKind::BadRequest,
                format!("the feed is a WebSocket: {}", rejection.body_text()),
            )
            .into_response();
        }
    };
    // Refused before the upgrade when not leading, so the front-end looks for the leader.
    if app.writer.release.hello().is_none() {
        return not_releasing(&app).into_response();
    }
    let label = query.subscriber.unwrap_or_else(|| "unnamed".into());
    let feed = app.writer.release.feed().clone();
    let authority: Arc<dyn Authority> = Arc::new(app.writer.release.clone());
    let shutdown = app.shutdown.clone();
    // The upgraded connection runs in a task of hyper's; it logs under this request's span.
    let span = tracing::Span::current();
    upgrade.on_upgrade(move |socket| {
        feed.serve_subscriber(socket, label, authority, shutdown)
            .instrument(span)
    })
}
