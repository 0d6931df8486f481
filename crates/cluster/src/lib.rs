//! A local Stock Bazaar system as child processes: start it (catalog, order replicas,
//! front-end), wait until it serves, write `cluster.json`, notice children that die, kill and
//! restart single services, and stop everything cleanly (SPEC.md section 8).
//!
//! `bazaar up`, `bazaar eval`, `bazaar chaos` and the integration tests all use it, so the
//! commands written to `cluster.json` are exactly the ones that started each service.
//!
//! # Layout
//! - [`file`] — the `cluster.json` format.
//! - [`spec`] — what to start, and the command line of each service.
//! - [`security`] — the cluster key and the TLS certificates in the data directory.
//! - [`Cluster`]: the running children.

pub mod file;
pub mod security;
pub mod spec;

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use bazaar_api::auth::{ClientAuth, SECURITY_ENV};
use bazaar_api::client::Http;
use bazaar_api::replica::ReplicaStatus;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use file::{ClusterFile, Role, ServiceRecord};
pub use spec::{ClusterSpec, LogTarget, ServiceSpec};

/// How long a service may take to become ready after it is started. Generous: debug builds on
/// a loaded CI machine start slowly, and a replica may have orders to pull first.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// How long a service may take to stop after SIGTERM before it is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Environment variable naming the process that supervises a service: a service that finds
/// its parent is no longer that process stops (see `bazaar`'s signal handling).
pub const SUPERVISOR_PID_ENV: &str = "BAZAAR_SUPERVISOR_PID";

/// Pause between readiness polls.
const POLL_PAUSE: Duration = Duration::from_millis(25);

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A child could not be started.
    #[error("cannot start {service}: {source}")]
    Spawn {
        /// Service name.
        service: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A child exited or never became ready.
    #[error("{service} {what}{}", log_tail_suffix(.log_tail))]
    NotReady {
        /// Service name.
        service: String,
        /// What happened.
        what: String,
        /// The end of its log, when logs go to files.
        log_tail: Option<String>,
    },
    /// No such service in this cluster.
    #[error("no {0} in this cluster")]
    NoSuchService(String),
    /// Reading or writing a file.
    #[error("{0}")]
    Io(String),
}

fn log_tail_suffix(tail: &Option<String>) -> String {
    tail.as_ref()
        .map(|t| format!("; last lines of its log:\n{t}"))
        .unwrap_or_default()
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

struct Running {
    spec: ServiceSpec,
    child: Option<Child>,
    pid: u32,
}

/// The running system. Dropping it kills every child still running (SIGKILL); call
/// [`Cluster::shutdown`] for a clean stop.
pub struct Cluster {
    spec: ClusterSpec,
    services: Vec<Running>,
    /// Presents the cluster key and trusts the cluster's CA: what a client of the back-end
    /// services needs.
    auth: ClientAuth,
    http: Http,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("data_dir", &self.spec.data_dir)
            .finish_non_exhaustive()
    }
}

/// Starts tried when a freely chosen port is taken between the choice and the bind.
const PORT_RACE_ATTEMPTS: u32 = 3;

impl Cluster {
    /// Starts catalog and order replicas, waits until they serve, starts the front-end, waits
    /// until it has chosen a leader, and writes `cluster.json`.
    ///
    /// # Errors
    /// A child could not start or did not become ready in [`START_DEADLINE`]; the children
    /// already started are killed.
    pub async fn start(spec: ClusterSpec) -> Result<Self> {
        // With base port 0 the ports are chosen free here and bound by the services a moment
        // later; another process (a parallel test, another `up`) may take one in between. Such
        // a start is tried again with new ports on the same data directory (the services of
        // the failed attempt are killed when it is dropped, and what they wrote belongs to
        // the same cluster). Any other failure, or a fixed base port, is reported at once.
        let mut attempt = 1;
        loop {
            match Self::start_once(spec.clone()).await {
                Err(e)
                    if spec.base_port == 0
                        && attempt < PORT_RACE_ATTEMPTS
                        && e.to_string().contains("Address already in use") =>
                {
                    tracing::warn!(attempt, error = %e, "a chosen port was taken meanwhile; choosing new ports");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    async fn start_once(spec: ClusterSpec) -> Result<Self> {
        let services = spec.services()?;
        let auth = security::client_auth(&spec.key_file(), spec.tls_ca().as_deref())?;
        let mut cluster = Self {
            spec,
            services: Vec::new(),
            http: Http::with_auth(Duration::from_secs(2), &auth),
            auth,
        };
        let (frontends, backends): (Vec<_>, Vec<_>) =
            services.into_iter().partition(|s| s.role == Role::Frontend);
        for service in backends {
            cluster.spawn(service)?;
        }
        for i in 0..cluster.services.len() {
            cluster.wait_ready(i).await?;
        }
        let first_frontend = cluster.services.len();
        for service in frontends {
            cluster.spawn(service)?;
        }
        for i in first_frontend..cluster.services.len() {
            cluster.wait_ready(i).await?;
        }
        cluster.write_file()?;
        Ok(cluster)
    }

    /// What was started.
    #[must_use]
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// What a client of the back-end services presents and trusts: the cluster key and, with
    /// TLS, the cluster's certificate authority.
    #[must_use]
    pub fn client_auth(&self) -> &ClientAuth {
        &self.auth
    }

    /// The records `cluster.json` holds.
    #[must_use]
    pub fn records(&self) -> Vec<ServiceRecord> {
        self.services.iter().map(|r| r.spec.record(r.pid)).collect()
    }

    /// Path of `cluster.json`.
    #[must_use]
    pub fn file_path(&self) -> PathBuf {
        self.spec.data_dir.join("cluster.json")
    }

    /// Base URL of the (first) front-end.
    #[must_use]
    pub fn frontend_url(&self) -> String {
        self.url(Role::Frontend, None).unwrap_or_default()
    }

    /// Base URL of a service.
    #[must_use]
    pub fn url(&self, role: Role, id: Option<u8>) -> Option<String> {
        self.services
            .iter()
            .find(|r| r.spec.role == role && (id.is_none() || r.spec.id == id))
            .map(|r| r.spec.url.clone())
    }

    /// Ids of the catalogs.
    #[must_use]
    pub fn catalog_ids(&self) -> Vec<u8> {
        self.services
            .iter()
            .filter(|r| r.spec.role == Role::Catalog)
            .filter_map(|r| r.spec.id)
            .collect()
    }

    /// Ids of the order replicas.
    #[must_use]
    pub fn replica_ids(&self) -> Vec<u8> {
        self.services
            .iter()
            .filter(|r| r.spec.role == Role::Order)
            .filter_map(|r| r.spec.id)
            .collect()
    }

    /// Whether a service's process is running (as far as this cluster knows).
    #[must_use]
    pub fn is_running(&self, role: Role, id: Option<u8>) -> bool {
        self.index(role, id)
            .is_ok_and(|i| self.services[i].child.is_some())
    }

    fn index(&self, role: Role, id: Option<u8>) -> Result<usize> {
        self.services
            .iter()
            .position(|r| r.spec.role == role && r.spec.id == id)
            .ok_or_else(|| Error::NoSuchService(ServiceSpec::name_of(role, id)))
    }

    fn spawn(&mut self, spec: ServiceSpec) -> Result<()> {
        let child = self.spawn_child(&spec)?;
        let pid = child.id();
        tracing::info!(service = %spec.name(), pid, url = %spec.url, "started");
        self.services.push(Running {
            spec,
            child: Some(child),
            pid,
        });
        Ok(())
    }

    fn spawn_child(&self, spec: &ServiceSpec) -> Result<Child> {
        let (program, args) = spec
            .command
            .split_first()
            .ok_or_else(|| Error::Io(format!("{} has an empty command", spec.name())))?;
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null());
        // The command line alone says how a child runs (cluster.json repeats it), so no
        // credential or TLS setting leaks in from this process's environment.
        for name in SECURITY_ENV {
            command.env_remove(name);
        }
        // The child stops when this process is gone, rather than run on unsupervised.
        command.env(SUPERVISOR_PID_ENV, std::process::id().to_string());
        if let Some(filter) = &self.spec.rust_log {
            command.env("RUST_LOG", filter);
        }
        if let LogTarget::Dir(dir) = &self.spec.logs {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
            let path = dir.join(format!("{}.log", spec.name()));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
            let err = file
                .try_clone()
                .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
            command.stdout(file).stderr(err);
        }
        command.spawn().map_err(|source| Error::Spawn {
            service: spec.name(),
            source,
        })
    }

    /// The last `lines` lines of a service's log file, when logs go to files.
    #[must_use]
    pub fn log_tail(&self, role: Role, id: Option<u8>, lines: usize) -> Option<String> {
        let LogTarget::Dir(dir) = &self.spec.logs else {
            return None;
        };
        let text =
            std::fs::read_to_string(dir.join(format!("{}.log", ServiceSpec::name_of(role, id))))
                .ok()?;
        let all: Vec<&str> = text.lines().collect();
        Some(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Polls until service `i` serves, or fails if its process exits first.
    async fn wait_ready(&mut self, i: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.reap(i) {
                let spec = &self.services[i].spec;
                return Err(Error::NotReady {
                    service: spec.name(),
                    what: format!("exited during start ({status})"),
                    log_tail: self.log_tail(spec.role, spec.id, 20),
                });
            }
            if self.is_ready(i).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let spec = &self.services[i].spec;
                return Err(Error::NotReady {
                    service: spec.name(),
                    what: format!("was not ready within {START_DEADLINE:?}"),
                    log_tail: self.log_tail(spec.role, spec.id, 20),
                });
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    async fn is_ready(&self, i: usize) -> bool {
        let spec = &self.services[i].spec;
        match spec.role {
            Role::Catalog => self
                .http
                .get::<serde_json::Value>(&format!("{}/health", spec.url))
                .await
                .is_ok(),
            Role::Order => self
                .http
                .get::<ReplicaStatus>(&format!("{}/health", spec.url))
                .await
                .is_ok_and(|s| s.ready),
            // Ready once it serves a lookup: a leader is known, and a catalog follows it.
            Role::Frontend => self
                .http
                .get::<serde_json::Value>(&format!("{}/stocks", spec.url))
                .await
                .is_ok(),
        }
    }

    /// Collects the exit status of service `i` if its process has exited.
    fn reap(&mut self, i: usize) -> Option<ExitStatus> {
        let running = &mut self.services[i];
        let status = running.child.as_mut()?.try_wait().ok()??;
        running.child = None;
        Some(status)
    }

    /// Services whose process exited since the last call, with how it ended.
    pub fn exited(&mut self) -> Vec<(ServiceRecord, ExitStatus)> {
        (0..self.services.len())
            .filter_map(|i| {
                self.reap(i)
                    .map(|status| (self.services[i].spec.record(self.services[i].pid), status))
            })
            .collect()
    }

    /// Kills a service with SIGKILL and reaps it.
    ///
    /// # Errors
    /// No such service.
    pub fn kill(&mut self, role: Role, id: Option<u8>) -> Result<()> {
        let i = self.index(role, id)?;
        if let Some(mut child) = self.services[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!(service = %self.services[i].spec.name(), pid = self.services[i].pid, "killed");
        }
        Ok(())
    }

    /// Starts a stopped or killed service again with its original command, waits until it
    /// serves, and rewrites `cluster.json` with its new pid.
    ///
    /// # Errors
    /// It could not start or did not become ready.
    pub async fn restart(&mut self, role: Role, id: Option<u8>) -> Result<()> {
        let i = self.index(role, id)?;
        if self.services[i].child.is_some() {
            self.stop_one(i).await;
        }
        let child = self.spawn_child(&self.services[i].spec)?;
        self.services[i].pid = child.id();
        self.services[i].child = Some(child);
        tracing::info!(service = %self.services[i].spec.name(), pid = self.services[i].pid, "restarted");
        self.write_file()?;
        self.wait_ready(i).await
    }

    /// Sends SIGTERM and waits up to [`STOP_DEADLINE`], then SIGKILL.
    async fn stop_one(&mut self, i: usize) {
        let Some(mut child) = self.services[i].child.take() else {
            return;
        };
        let name = self.services[i].spec.name();
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(service = %name, %status, "stopped");
                    return;
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL_PAUSE).await;
                }
                _ => {
                    tracing::warn!(service = %name, "did not stop after SIGTERM; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Stops one service cleanly (SIGTERM, then SIGKILL after the deadline).
    ///
    /// # Errors
    /// No such service.
    pub async fn stop(&mut self, role: Role, id: Option<u8>) -> Result<()> {
        let i = self.index(role, id)?;
        self.stop_one(i).await;
        Ok(())
    }

    /// Stops everything cleanly: front-ends first (no new requests), then the catalogs, then the
    /// order replicas.
    pub async fn shutdown(mut self) {
        for role in [Role::Frontend, Role::Catalog, Role::Order] {
            let indices: Vec<usize> = (0..self.services.len())
                .filter(|&i| self.services[i].spec.role == role)
                .collect();
            // Each role stops together: stopping replicas one by one would make each survivor
            // wait for the others that are already gone.
            let mut stopping = Vec::new();
            for i in indices {
                if let Some(child) = self.services[i].child.take() {
                    if let Ok(pid) = i32::try_from(child.id()) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                    }
                    stopping.push((self.services[i].spec.name(), child));
                }
            }
            let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
            while !stopping.is_empty() {
                stopping.retain_mut(|(name, child)| match child.try_wait() {
                    Ok(Some(status)) => {
                        tracing::info!(service = %name, %status, "stopped");
                        false
                    }
                    Ok(None) if tokio::time::Instant::now() < deadline => true,
                    _ => {
                        tracing::warn!(service = %name, "did not stop after SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        false
                    }
                });
                tokio::time::sleep(POLL_PAUSE).await;
            }
        }
    }

    /// Writes `cluster.json` (atomically: readers never see half a file).
    ///
    /// # Errors
    /// The data directory is not writable.
    pub fn write_file(&self) -> Result<()> {
        ClusterFile {
            replication: Some(self.spec.replication.clone()),
            services: self.records(),
        }
        .write(&self.file_path())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for running in &mut self.services {
            if let Some(mut child) = running.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
