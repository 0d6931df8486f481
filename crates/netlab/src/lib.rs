//! Test hosts for Stock Bazaar's network fault experiments (issue 11): every service runs in a
//! Linux network namespace of its own, with its own address, and faults are made with the
//! kernel's own tools, so the services see real timeouts, refused connections and silence.
//!
//! ```text
//!   root namespace: untouched (no interface, route or firewall rule is added there)
//!
//!   <run>-switch:  br0 ── p1 ─┐  p2 ─┐  ...  pN ─┐         one bridge, one port per host
//!                             │      │           │
//!   <run>-catalog:          eth0 10.77.0.11      │         nftables table <run> with an
//!   <run>-order-1:                 eth0 10.77.0.12         input chain: where faults drop
//!   ...                                          │
//!   <run>-client:                              eth0 10.77.0.N+10   load and probes run here
//! ```
//!
//! The bridge lives in a "switch" namespace of its own: a bridge in the root namespace would
//! pass bridged traffic through the host's firewall (a Docker engine leaves a FORWARD policy of
//! DROP). Every name starts with the run's prefix (`bzlab-<pid>-<tag>`); everything a [`Lab`]
//! creates is inside its namespaces and goes away with them, on drop (a failed test unwinds
//! through it) and on the driver's SIGINT or SIGTERM (it drops the lab before exiting).
//! A driver killed outright leaves namespaces behind; [`sweep_stale`] removes those of runs
//! whose process is gone, and nothing else.
//!
//! Faults ([`Lab::block`], [`Lab::cut`], [`Lab::split`]) are `drop` rules for source addresses
//! in the receiving host's input chain, so a sender's packets vanish as on a broken link
//! (no error comes back). [`Services`] starts services with `ip netns exec` from their
//! [`bazaar_cluster::ServiceSpec`] command lines and pauses (SIGSTOP/SIGCONT), kills (SIGKILL)
//! and restarts them. [`spawn_in`] runs code on a thread inside a host, so a driver can be a
//! client on a host of its own.
//!
//! Needs root, iproute2 (`ip`) and nftables (`nft`).
//!
//! # Layout
//! - [`name`] — the run's prefix and the names derived from it; recognising stale runs.
//! - [`shell`] — running `ip` and `nft`, with their errors.
//! - [`lab`] — the switch, the hosts, faults, cleanup and the stale sweep.
//! - [`thread`] — running code inside a host's namespace.
//! - [`service`] — services as processes inside hosts: start, pause, kill, restart, stop.

pub mod lab;
pub mod name;
pub mod service;
pub mod shell;
pub mod thread;

pub use lab::{Host, Lab, sweep_stale};
pub use name::RunName;
pub use service::Services;
pub use thread::spawn_in;

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The harness needs root (network namespaces, nftables).
    #[error("network namespaces need root (running as uid {0})")]
    NotRoot(u32),
    /// A tool is missing: install it.
    #[error("{tool} is not installed: {hint}")]
    MissingTool {
        /// `ip` or `nft`.
        tool: String,
        /// How to get it.
        hint: String,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// No host or service of that name in this lab.
    #[error("no {0} in this lab")]
    NoSuch(String),
    /// Anything else from the OS.
    #[error("{0}")]
    Io(String),
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether this process may create namespaces: effective uid 0.
#[must_use]
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails with a clear message unless the harness can run here: root, `ip` and `nft`.
///
/// # Errors
/// [`Error::NotRoot`] or [`Error::MissingTool`].
pub fn check_prerequisites() -> Result<()> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        return Err(Error::NotRoot(uid.as_raw()));
    }
    for (tool, hint) in [
        ("ip", "apt-get install iproute2"),
        ("nft", "apt-get install nftables"),
    ] {
        if shell::find_tool(tool).is_none() {
            return Err(Error::MissingTool {
                tool: tool.into(),
                hint: hint.into(),
            });
        }
    }
    Ok(())
}
