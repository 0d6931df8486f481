//! A lab: a switch namespace with a bridge, one namespace per host plugged into it, and the
//! faults between hosts. Dropping the lab kills whatever still runs inside its namespaces and
//! deletes them, and with them every interface and nftables table the lab made.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::name::RunName;
use crate::shell::{self, ip, nft};
use crate::{Error, Result};

/// First three octets of every lab's subnet. Labs are isolated from each other and from the
/// root namespace, so every lab may use the same addresses.
const SUBNET: [u8; 3] = [10, 77, 0];

/// Last octet of the first host's address.
const HOST_OCTET_FIRST: u8 = 11;

/// Most hosts in one lab (addresses .11 to .250).
pub const HOSTS_MAX: usize = 240;

/// The switch namespace's host part.
const SWITCH: &str = "switch";

/// One test host: a namespace with one interface on the lab's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The name the lab knows it by (`catalog`, `order-2`, `client`).
    pub name: String,
    /// Its network namespace (`bzlab-<pid>-<tag>-<name>`), for `ip netns exec`.
    pub namespace: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
}

/// A running lab. See the crate documentation for its shape.
#[derive(Debug)]
pub struct Lab {
    run: RunName,
    /// Every namespace created so far, switch first; removed on drop.
    namespaces: Vec<String>,
    hosts: Vec<Host>,
    /// Directed pairs of host indices `(from, to)` whose packets are dropped at `to`.
    blocked: BTreeSet<(usize, usize)>,
    /// The rules each host holds now, to rewrite only hosts whose rules change.
    applied: Vec<Vec<Ipv4Addr>>,
}

impl Lab {
    /// Creates the switch and one host per name, each with its address, and an empty
    /// nftables table in each host.
    ///
    /// # Errors
    /// Not root, a tool missing, or a command failed; whatever was created is removed.
    pub fn new(host_names: &[&str]) -> Result<Self> {
        crate::check_prerequisites()?;
        if host_names.len() > HOSTS_MAX {
            return Err(Error::Io(format!(
                "a lab holds at most {HOSTS_MAX} hosts, not {}",
                host_names.len()
            )));
        }
        let unique: BTreeSet<&&str> = host_names.iter().collect();
        if unique.len() != host_names.len() || unique.contains(&SWITCH) {
            return Err(Error::Io(format!(
                "host names must be distinct and not {SWITCH:?}: {host_names:?}"
            )));
        }
        let run = RunName::new();
        let mut lab = Self {
            run,
            namespaces: Vec::new(),
            hosts: Vec::new(),
            blocked: BTreeSet::new(),
            applied: Vec::new(),
        };
        let switch = run.namespace(SWITCH);
        lab.add_namespace(&switch)?;
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, name) in host_names.iter().enumerate() {
            lab.add_host(&switch, i, name)?;
        }
        tracing::info!(run = %run, hosts = lab.hosts.len(), "lab ready");
        Ok(lab)
    }

    fn add_namespace(&mut self, namespace: &str) -> Result<()> {
        ip(&["netns", "add", namespace])?;
        self.namespaces.push(namespace.to_owned());
        Ok(())
    }

    fn add_host(&mut self, switch: &str, index: usize, name: &str) -> Result<()> {
        let namespace = self.run.namespace(name);
        let octet = u8::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(HOST_OCTET_FIRST))
            .ok_or_else(|| Error::Io(format!("host {index} has no address left")))?;
        let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], octet);
        self.add_namespace(&namespace)?;
        // Both ends are created inside lab namespaces, so no interface ever exists in the
        // root namespace, and each end's name only has to be unique inside its namespace.
        let port = format!("p{index}");
        ip(&[
            "-n", switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &namespace,
        ])?;
        ip(&["-n", switch, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", switch, "link", "set", &port, "up"])?;
        let cidr = format!("{addr}/24");
        ip(&["-n", &namespace, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        let table = self.run.table();
        nft(
            &namespace,
            &format!(
                "table inet {table} {{\n  chain input {{ type filter hook input priority 0; policy accept; }}\n}}\n"
            ),
        )?;
        self.hosts.push(Host {
            name: name.to_owned(),
            namespace,
            addr,
        });
        self.applied.push(Vec::new());
        Ok(())
    }

    /// This run's name (the prefix of everything it made).
    #[must_use]
    pub fn run(&self) -> RunName {
        self.run
    }

    /// Every host, in the order given to [`Lab::new`].
    #[must_use]
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host named `name`.
    ///
    /// # Errors
    /// [`Error::NoSuch`].
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.index(name).map(|i| &self.hosts[i])
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.hosts
            .iter()
            .position(|h| h.name == name)
            .ok_or_else(|| Error::NoSuch(format!("host {name}")))
    }

    /// Every namespace the lab made, the switch's first.
    #[must_use]
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// One-way loss: packets from `from` to `to` are dropped when they reach `to`; `to` still
    /// reaches `from`. (Over TCP this soon looks like a cut: replies need the other way.)
    ///
    /// # Errors
    /// No such host, or nft failed.
    pub fn block(&mut self, from: &str, to: &str) -> Result<()> {
        let pair = (self.index(from)?, self.index(to)?);
        if pair.0 != pair.1 {
            self.blocked.insert(pair);
        }
        self.apply()
    }

    /// A partition: no packet crosses between side `a` and side `b`, either way. Hosts on
    /// neither side keep reaching both.
    ///
    /// # Errors
    /// No such host, or nft failed.
    pub fn split(&mut self, a: &[&str], b: &[&str]) -> Result<()> {
        let a: Vec<usize> = a.iter().map(|h| self.index(h)).collect::<Result<_>>()?;
        let b: Vec<usize> = b.iter().map(|h| self.index(h)).collect::<Result<_>>()?;
        for &x in &a {
            for &y in &b {
                if x != y {
                    self.blocked.insert((x, y));
                    self.blocked.insert((y, x));
                }
            }
        }
        self.apply()
    }

    /// Cuts `host` off from every other host of the lab.
    ///
    /// # Errors
    /// No such host, or nft failed.
    pub fn cut(&mut self, host: &str) -> Result<()> {
        let others: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.name != host)
            .map(|h| h.name.clone())
            .collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        self.split(&[host], &others)
    }

    /// Removes every network fault.
    ///
    /// # Errors
    /// nft failed.
    pub fn heal(&mut self) -> Result<()> {
        self.blocked.clear();
        self.apply()
    }

    /// The directed pairs `(from, to)` of host names whose packets are dropped now.
    #[must_use]
    pub fn blocked(&self) -> Vec<(String, String)> {
        self.blocked
            .iter()
            .map(|&(from, to)| (self.hosts[from].name.clone(), self.hosts[to].name.clone()))
            .collect()
    }

    /// Rewrites the input chain of every host whose set of dropped sources changed.
    fn apply(&mut self) -> Result<()> {
        let table = self.run.table();
        for (to, host) in self.hosts.iter().enumerate() {
            let sources: Vec<Ipv4Addr> = self
                .blocked
                .iter()
                .filter(|&&(_, t)| t == to)
                .map(|&(from, _)| self.hosts[from].addr)
                .collect();
            if sources == self.applied[to] {
                continue;
            }
            let mut script = format!("flush chain inet {table} input\n");
            if !sources.is_empty() {
                let list: Vec<String> = sources.iter().map(Ipv4Addr::to_string).collect();
                script.push_str(&format!(
                    "add rule inet {table} input ip saddr {{ {} }} drop\n",
                    list.join(", ")
                ));
            }
            nft(&host.namespace, &script)?;
            tracing::debug!(host = %host.name, dropped_from = ?sources, "rules applied");
            self.applied[to] = sources;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Hosts first: a namespace whose processes live on would outlast `ip netns del`.
        for namespace in self.namespaces.iter().rev() {
            if let Err(e) = remove_namespace(namespace) {
                tracing::warn!(%namespace, error = %e, "could not remove a lab namespace");
            }
        }
        tracing::info!(run = %self.run, "lab removed");
    }
}

/// Kills every process inside `namespace` (they were started there by a lab) and deletes it.
fn remove_namespace(namespace: &str) -> Result<()> {
    for pid in shell::namespace_pids(namespace).unwrap_or_default() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    ip(&["netns", "del", namespace]).map(drop)
}

/// Removes the namespaces of earlier runs whose process no longer exists (a driver killed
/// before it could clean up), with whatever still runs inside them. Only names with this
/// crate's prefix are touched, and never those of a live process. Returns what was removed.
///
/// # Errors
/// Listing namespaces failed; a namespace that cannot be removed is logged and skipped.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for namespace in shell::namespaces()? {
        let Some(run) = RunName::of_namespace(&namespace) else {
            continue;
        };
        if run.owner_alive() {
            continue;
        }
        match remove_namespace(&namespace) {
            Ok(()) => removed.push(namespace),
            Err(e) => tracing::warn!(%namespace, error = %e, "could not remove a stale namespace"),
        }
    }
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), "removed namespaces of earlier runs");
    }
    Ok(removed)
}
