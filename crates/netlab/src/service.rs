//! Services as processes inside hosts. Each starts with `ip netns exec <host> <command>`,
//! where the command is exactly the one [`bazaar_cluster::ClusterSpec`] built for it (and
//! `ip` replaces itself with it, so the child's pid is the service's). Restarting runs the same
//! command again. Pausing is SIGSTOP and SIGCONT: a paused process keeps its sockets, so peers
//! see silence, not a refused connection, as with a stalled machine.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bazaar_cluster::{Role, ServiceSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::lab::Host;
use crate::shell::find_tool;
use crate::{Error, Result};

/// Pause between checks while waiting for processes to exit.
const EXIT_POLL: Duration = Duration::from_millis(20);

struct Running {
    spec: ServiceSpec,
    /// The namespace it runs in.
    namespace: String,
    /// `None` once it was killed or seen to exit.
    child: Option<Child>,
    pid: u32,
    /// Stopped with SIGSTOP and not continued yet.
    paused: bool,
}

/// The services of a lab. Dropping it kills every one still running (SIGKILL).
pub struct Services {
    /// One log file per service, appended to across restarts.
    log_dir: PathBuf,
    /// Environment given to every service (`RUST_LOG`, tuning variables).
    env: Vec<(String, String)>,
    running: Vec<Running>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("log_dir", &self.log_dir)
            .field("services", &self.names())
            .finish_non_exhaustive()
    }
}

impl Services {
    /// No services yet; their logs will go to `log_dir`, and each gets `env`.
    #[must_use]
    pub fn new(log_dir: PathBuf, env: Vec<(String, String)>) -> Self {
        Self {
            log_dir,
            env,
            running: Vec::new(),
        }
    }

    /// Starts `spec` inside `host`. Returns its pid.
    ///
    /// # Errors
    /// A service of that name exists already, or the process cannot be started.
    pub fn start(&mut self, spec: ServiceSpec, host: &Host) -> Result<u32> {
        let name = spec.name();
        if self.index(&name).is_ok() {
            return Err(Error::Io(format!("{name} was started already")));
        }
        let child = self.spawn(&spec, &host.namespace)?;
        let pid = child.id();
        tracing::info!(service = %name, host = %host.name, pid, "started");
        self.running.push(Running {
            spec,
            namespace: host.namespace.clone(),
            child: Some(child),
            pid,
            paused: false,
        });
        Ok(pid)
    }

    fn spawn(&self, spec: &ServiceSpec, namespace: &str) -> Result<Child> {
        let ip = find_tool("ip").ok_or_else(|| Error::MissingTool {
            tool: "ip".into(),
            hint: "apt-get install iproute2".into(),
        })?;
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", self.log_dir.display())))?;
        let path = self.log_dir.join(format!("{}.log", spec.name()));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
        Command::new(ip)
            .args(["netns", "exec", namespace])
            .args(&spec.command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::Io(format!("cannot start {}: {e}", spec.name())))
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.running
            .iter()
            .position(|r| r.spec.name() == name)
            .ok_or_else(|| Error::NoSuch(format!("service {name}")))
    }

    /// Names of every service started, in start order.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.running.iter().map(|r| r.spec.name()).collect()
    }

    /// The spec a service was started from.
    ///
    /// # Errors
    /// [`Error::NoSuch`].
    pub fn spec(&self, name: &str) -> Result<&ServiceSpec> {
        self.index(name).map(|i| &self.running[i].spec)
    }

    /// The pid of a service's current process.
    ///
    /// # Errors
    /// [`Error::NoSuch`].
    pub fn pid(&self, name: &str) -> Result<u32> {
        self.index(name).map(|i| self.running[i].pid)
    }

    /// Whether the service's process is running (paused counts as running).
    #[must_use]
    pub fn is_running(&self, name: &str) -> bool {
        self.index(name)
            .is_ok_and(|i| self.running[i].child.is_some())
    }

    /// The last `lines` lines of a service's log.
    #[must_use]
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.log_dir.join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn signal(&self, i: usize, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.running[i].pid)
            .map_err(|_| Error::Io(format!("pid {} out of range", self.running[i].pid)))?;
        kill(Pid::from_raw(pid), signal).map_err(|e| {
            Error::Io(format!(
                "cannot send {signal} to {}: {e}",
                self.running[i].spec.name()
            ))
        })
    }

    /// Stops a service's process with SIGSTOP: it keeps its sockets and answers nothing.
    ///
    /// # Errors
    /// No such service, it is not running, or the signal failed.
    pub fn pause(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        if self.running[i].child.is_none() {
            return Err(Error::Io(format!("{name} is not running")));
        }
        self.signal(i, Signal::SIGSTOP)?;
        self.running[i].paused = true;
        tracing::info!(service = %name, pid = self.running[i].pid, "paused");
        Ok(())
    }

    /// Continues a paused service (SIGCONT).
    ///
    /// # Errors
    /// No such service, or the signal failed.
    pub fn resume(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        if !self.running[i].paused {
            return Ok(());
        }
        self.signal(i, Signal::SIGCONT)?;
        self.running[i].paused = false;
        tracing::info!(service = %name, pid = self.running[i].pid, "resumed");
        Ok(())
    }

    /// Kills a service with SIGKILL and reaps it.
    ///
    /// # Errors
    /// No such service.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        if let Some(mut child) = self.running[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!(service = %name, pid = self.running[i].pid, "killed");
        }
        self.running[i].paused = false;
        Ok(())
    }

    /// Starts a service again with its original command, in its host (killing it first if it
    /// still runs). Returns the new pid. Whether it serves is for the caller to wait for.
    ///
    /// # Errors
    /// No such service, or the process cannot be started.
    pub fn restart(&mut self, name: &str) -> Result<u32> {
        let i = self.index(name)?;
        self.kill(name)?;
        let child = self.spawn(&self.running[i].spec, &self.running[i].namespace)?;
        self.running[i].pid = child.id();
        self.running[i].child = Some(child);
        tracing::info!(service = %name, pid = self.running[i].pid, "restarted");
        Ok(self.running[i].pid)
    }

    /// Services whose process exited since the last call, with how.
    pub fn exited(&mut self) -> Vec<(String, ExitStatus)> {
        let mut gone = Vec::new();
        for running in &mut self.running {
            let Some(child) = running.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                running.child = None;
                gone.push((running.spec.name(), status));
            }
        }
        gone
    }

    /// Stops everything cleanly: front-ends, then order replicas, then catalogs, each group
    /// with SIGTERM (paused ones are continued first) and `deadline` before SIGKILL. Blocks.
    pub fn stop_all(&mut self, deadline: Duration) {
        for role in [Role::Frontend, Role::Order, Role::Catalog] {
            let group: Vec<usize> = (0..self.running.len())
                .filter(|&i| self.running[i].spec.role == role && self.running[i].child.is_some())
                .collect();
            for &i in &group {
                if self.running[i].paused {
                    let _ = self.signal(i, Signal::SIGCONT);
                    self.running[i].paused = false;
                }
                let _ = self.signal(i, Signal::SIGTERM);
            }
            let until = Instant::now() + deadline;
            for &i in &group {
                let name = self.running[i].spec.name();
                let Some(mut child) = self.running[i].child.take() else {
                    continue;
                };
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => {
                            tracing::info!(service = %name, %status, "stopped");
                            break;
                        }
                        Ok(None) if Instant::now() < until => std::thread::sleep(EXIT_POLL),
                        _ => {
                            tracing::warn!(service = %name, "did not stop after SIGTERM; killing it");
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for running in &mut self.running {
            if let Some(mut child) = running.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
