//! `bazaar up --demo`: the control endpoint through which the dashboard stops (SIGKILL) and
//! starts again an order replica or a catalog, so a learner can watch failover and catch-up.
//!
//! It listens on 127.0.0.1 on a free port, inside `up`. Its address and a random token go to
//! `<data-dir>/demo-control.json` (mode 0600), which the front-end reads
//! (`--demo-control-file`); every route sits under the token, so a browser, or another local
//! user who cannot read the file, gets 404. The HTTP handlers only pass requests over a channel
//! to `up`'s supervision loop, which owns the running services and carries them out with the
//! same kill and restart (the command in `cluster.json`) that tests and operators use.
//!
//! Routes: `GET /<token>/services` lists the services; `POST
//! /<token>/services/{name}/kill|restart` acts on one and answers its new entry. The front-end
//! cannot be stopped from here: it serves the page.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use bazaar_api::{Data, ErrorKind};
use bazaar_cluster::{Cluster, Role, ServiceSpec};
use bazaar_service::{ApiError, Json, Path as UrlPath};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The control file's name in the data directory.
pub const CONTROL_FILE: &str = "demo-control.json";

/// Requests waiting for the supervision loop; more get 503 (a page clicking very fast).
const QUEUE_LEN: usize = 8;

/// How long a request may wait for the loop: a restart waits until the service serves.
const REPLY_DEADLINE: Duration = Duration::from_secs(65);

/// One service as the dashboard sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    /// `order-2`, `catalog`, `frontend`.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Replica id.
    pub id: Option<u8>,
    /// Base URL.
    pub url: String,
    /// Whether its process runs.
    pub running: bool,
}

/// A stop or a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL.
    Kill,
    /// Start again with the command in `cluster.json`, and wait until it serves.
    Restart,
}

/// What the HTTP side asks the supervision loop.
#[derive(Debug)]
pub enum Request {
    /// Every service.
    List(oneshot::Sender<Vec<ServiceEntry>>),
    /// Act on one service.
    Act {
        /// Service name.
        name: String,
        /// What to do.
        action: Action,
        /// The service's new entry, or why not.
        reply: oneshot::Sender<Result<ServiceEntry, ApiError>>,
    },
}

/// The running endpoint; `up` takes requests from it.
#[derive(Debug)]
pub struct Control {
    file: PathBuf,
    requests: mpsc::Receiver<Request>,
}

#[derive(Clone)]
struct Endpoint {
    token: String,
    requests: mpsc::Sender<Request>,
}

/// Binds the endpoint, writes the control file and serves until `stop` is cancelled.
///
/// # Errors
/// The port or the file.
pub async fn start(data_dir: &Path, stop: CancellationToken) -> anyhow::Result<Control> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen for demonstration controls on 127.0.0.1")?;
    let addr = listener
        .local_addr()
        .context("the control listener has no address")?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let file = data_dir.join(CONTROL_FILE);
    write_private(
        &file,
        &serde_json::json!({"url": format!("http://{addr}"), "token": token}).to_string(),
    )?;
    let (sender, requests) = mpsc::channel(QUEUE_LEN);
    let router = Router::new()
        .route("/{token}/services", get(services_get))
        .route("/{token}/services/{name}/{action}", post(service_act))
        .fallback(|| async { ApiError::new(ErrorKind::UnknownRoute, "no such route") })
        .with_state(Endpoint {
            token,
            requests: sender,
        });
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the demonstration control endpoint failed");
        }
    });
    tracing::info!(%addr, "demonstration controls on (the dashboard can kill and restart services)");
    Ok(Control { file, requests })
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

impl Control {
    /// The control file, for the front-end's `--demo-control-file`.
    #[must_use]
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The next request; never resolves after the endpoint is gone.
    pub async fn next(&mut self) -> Request {
        match self.requests.recv().await {
            Some(request) => request,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Control {
    /// The endpoint stops with `up`'s shutdown token; its file goes with `up`.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The next request of an optional endpoint; pending forever without one.
pub async fn next(control: &mut Option<Control>) -> Request {
    match control {
        Some(control) => control.next().await,
        None => std::future::pending().await,
    }
}

fn entries(cluster: &Cluster) -> Vec<ServiceEntry> {
    cluster
        .records()
        .into_iter()
        .map(|r| ServiceEntry {
            name: ServiceSpec::name_of(r.role, r.id),
            running: cluster.is_running(r.role, r.id),
            role: r.role,
            id: r.id,
            url: r.url,
        })
        .collect()
}

/// Carries out one request on the cluster; `shutdown` cuts a restart short.
pub async fn handle(request: Request, cluster: &mut Cluster, shutdown: &CancellationToken) {
    match request {
        Request::List(reply) => {
            let _ = reply.send(entries(cluster));
        }
        Request::Act {
            name,
            action,
            reply,
        } => {
            let outcome = act(&name, action, cluster, shutdown).await;
            let _ = reply.send(outcome);
        }
    }
}

async fn act(
    name: &str,
    action: Action,
    cluster: &mut Cluster,
    shutdown: &CancellationToken,
) -> Result<ServiceEntry, ApiError> {
    let entry = entries(cluster)
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::UnknownService,
                format!("no service named {name:?}"),
            )
        })?;
    if entry.role == Role::Frontend {
        return Err(ApiError::bad_request(
            "the front-end serves this page; stop it from the terminal",
        ));
    }
    let failed =
        |e: bazaar_cluster::Error| ApiError::new(ErrorKind::Unavailable, format!("{name}: {e}"));
    match action {
        Action::Kill => {
            if !entry.running {
                return Err(ApiError::new(
                    ErrorKind::ServiceState,
                    format!("{name} is not running"),
                ));
            }
            cluster.kill(entry.role, entry.id).map_err(failed)?;
            tracing::warn!(service = name, "killed (SIGKILL) from the dashboard");
        }
        Action::Restart => {
            if entry.running {
                return Err(ApiError::new(
                    ErrorKind::ServiceState,
                    format!("{name} is running; kill it first"),
                ));
            }
            tracing::info!(service = name, "starting again from the dashboard");
            tokio::select! {
                started = cluster.restart(entry.role, entry.id) => started.map_err(failed)?,
                () = shutdown.cancelled() => {
                    return Err(ApiError::new(ErrorKind::Unavailable, "bazaar up is stopping"));
                }
            }
        }
    }
    entries(cluster)
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::UnknownService,
                format!("no service named {name:?}"),
            )
        })
}

/// Compares two tokens in time that does not depend on where they differ.
fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn ask<T>(
    endpoint: &Endpoint,
    request: Request,
    reply: oneshot::Receiver<T>,
) -> Result<T, ApiError> {
    let busy = || ApiError::new(ErrorKind::Unavailable, "bazaar up is busy or stopping");
    endpoint.requests.try_send(request).map_err(|_| busy())?;
    tokio::time::timeout(REPLY_DEADLINE, reply)
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())
}

async fn services_get(
    State(endpoint): State<Endpoint>,
    UrlPath(token): UrlPath<String>,
) -> Result<Json<Data<Vec<ServiceEntry>>>, ApiError> {
    if !same_token(&token, &endpoint.token) {
        return Err(ApiError::new(ErrorKind::UnknownRoute, "no such route"));
    }
    let (sender, reply) = oneshot::channel();
    Ok(Json(Data::new(
        ask(&endpoint, Request::List(sender), reply).await?,
    )))
}

async fn service_act(
    State(endpoint): State<Endpoint>,
    UrlPath((token, name, action)): UrlPath<(String, String, String)>,
) -> Result<Json<Data<ServiceEntry>>, ApiError> {
    if !same_token(&token, &endpoint.token) {
        return Err(ApiError::new(ErrorKind::UnknownRoute, "no such route"));
    }
    let action = match action.as_str() {
        "kill" => Action::Kill,
        "restart" => Action::Restart,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown action {other:?}: kill or restart"
            )));
        }
    };
    let (sender, reply) = oneshot::channel();
    let request = Request::Act {
        name,
        action,
        reply: sender,
    };
    Ok(Json(Data::new(ask(&endpoint, request, reply).await??)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", "abc"));
    }

    #[test]
    fn the_control_file_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CONTROL_FILE);
        std::fs::write(&path, "old").expect("an older file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, "{}").expect("write");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{}");
    }
}
