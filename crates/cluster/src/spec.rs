//! What a local cluster consists of, and the exact command line of each service.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use crate::file::{Role, ServiceRecord};
use crate::{Error, Result};

/// Where children's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// The parent's stdout and stderr (`bazaar up`).
    Inherit,
    /// One file per service in this directory, appended to across restarts.
    Dir(PathBuf),
}

/// A system to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `bazaar` executable.
    pub exe: PathBuf,
    /// Databases and `cluster.json` go here.
    pub data_dir: PathBuf,
    /// Front-end on this port, catalog i on +i, order replica i on +10+i. 0: free ports.
    pub base_port: u16,
    /// Address the front-end listens on. The catalog and the replicas always listen on
    /// 127.0.0.1: only the public API needs to be reachable from other machines.
    pub frontend_host: IpAddr,
    /// Number of order replicas (ids 1..=n).
    pub replicas: u8,
    /// Number of catalogs (ids 1..=n, at most [`CATALOGS_MAX`]).
    pub catalogs: u8,
    /// `--replication` of the order replicas.
    pub replication: String,
    /// `--cache-size` of the front-end.
    pub cache_size: Option<usize>,
    /// `--no-cache` on the front-end.
    pub no_cache: bool,
    /// `--restock-interval` of the catalogs.
    pub restock_interval: Option<String>,
    /// `--restock-to` of the catalogs.
    pub restock_to: Option<u64>,
    /// `--stocks` of the order replicas (the first leader writes it into the log).
    pub stocks: Option<PathBuf>,
    /// `--log-format` of every service.
    pub log_format: Option<String>,
    /// `RUST_LOG` of every service, if set.
    pub rust_log: Option<String>,
    /// Where their output goes.
    pub logs: LogTarget,
    /// Extra arguments per role, appended to its command (tuning flags, tests).
    pub extra_args: Vec<(Role, Vec<String>)>,
    /// Services on hosts of their own, by service name (`catalog-1`, `order-2`, `frontend`):
    /// each listens on and is reached at its address instead of 127.0.0.1 (`frontend_host`
    /// for the front-end). The network fault tests put every service in a network namespace
    /// with an address of its own; the ports stay as chosen.
    pub hosts: BTreeMap<String, IpAddr>,
    /// Serve every service over TLS with certificates from a private CA (`up --tls`).
    pub tls: bool,
}

impl ClusterSpec {
    /// Defaults: three primary-backup replicas, caching on, logs inherited.
    #[must_use]
    pub fn new(exe: PathBuf, data_dir: PathBuf, base_port: u16) -> Self {
        Self {
            exe,
            data_dir,
            base_port,
            frontend_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            replicas: 3,
            catalogs: 2,
            replication: "primary-backup".into(),
            cache_size: None,
            no_cache: false,
            restock_interval: None,
            restock_to: None,
            stocks: None,
            log_format: None,
            rust_log: None,
            logs: LogTarget::Inherit,
            extra_args: Vec::new(),
            hosts: BTreeMap::new(),
            tls: false,
        }
    }

    /// `https` with TLS, `http` otherwise.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The cluster key file of this cluster (`<data-dir>/cluster.key`).
    #[must_use]
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join(crate::security::KEY_FILE)
    }

    /// The certificate authority clients trust, with TLS.
    #[must_use]
    pub fn tls_ca(&self) -> Option<PathBuf> {
        self.tls
            .then(|| self.data_dir.join(crate::security::TLS_DIR).join("ca.pem"))
    }

    /// The services to start, with their ports chosen and commands built. Creates the data
    /// directory so every path in the commands can be absolute.
    ///
    /// # Errors
    /// The data directory cannot be created, or free ports cannot be found.
    pub fn services(&self) -> Result<Vec<ServiceSpec>> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            Error::Io(format!(
                "cannot create data directory {}: {e}",
                self.data_dir.display()
            ))
        })?;
        let data_dir = std::fs::canonicalize(&self.data_dir)
            .map_err(|e| Error::Io(format!("cannot resolve {}: {e}", self.data_dir.display())))?;
        let ports = self.ports()?;
        let host = |name: &str| {
            self.hosts
                .get(name)
                .copied()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        };
        let scheme = self.scheme();
        let url =
            |name: &str, port: u16| format!("{scheme}://{}", SocketAddr::new(host(name), port));
        let listen = |name: &str, port: u16| SocketAddr::new(host(name), port).to_string();
        let exe = self.exe.display().to_string();
        let replicas: Vec<String> = (1..=self.replicas)
            .map(|id| {
                let name = ServiceSpec::name_of(Role::Order, Some(id));
                format!("{id}={}", url(&name, ports.order[usize::from(id) - 1]))
            })
            .collect();
        let replicas = replicas.join(",");
        let catalogs: Vec<(u8, String, u16)> = ports
            .catalogs
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let id = u8::try_from(i + 1).expect("at most CATALOGS_MAX catalogs");
                (id, ServiceSpec::name_of(Role::Catalog, Some(id)), *port)
            })
            .collect();
        let catalog_urls: Vec<String> = catalogs
            .iter()
            .map(|(_, name, port)| url(name, *port))
            .collect();
        let mut services = Vec::new();

        for (id, name, port) in &catalogs {
            let (id, port) = (*id, *port);
            let mut catalog = vec![
                exe.clone(),
                "catalog".into(),
                "--listen".into(),
                listen(name, port),
                "--db".into(),
                path_arg(&data_dir.join(format!("catalog-{id}.db"))),
                "--replicas".into(),
                replicas.clone(),
            ];
            if let Some(interval) = &self.restock_interval {
                catalog.extend(["--restock-interval".into(), interval.clone()]);
            }
            if let Some(to) = self.restock_to {
                catalog.extend(["--restock-to".into(), to.to_string()]);
            }
            services.push(self.finish(Role::Catalog, Some(id), url(name, port), catalog));
        }

        for id in 1..=self.replicas {
            let port = ports.order[usize::from(id) - 1];
            let name = ServiceSpec::name_of(Role::Order, Some(id));
            let mut order = vec![
                exe.clone(),
                "order".into(),
                "--id".into(),
                id.to_string(),
                "--listen".into(),
                listen(&name, port),
                "--db".into(),
                path_arg(&data_dir.join(format!("order-{id}.db"))),
                "--peers".into(),
                replicas.clone(),
                "--replication".into(),
                self.replication.clone(),
            ];
            if let Some(stocks) = &self.stocks {
                order.extend(["--stocks".into(), path_arg(stocks)]);
            }
            services.push(self.finish(Role::Order, Some(id), url(&name, port), order));
        }

        let frontend_host = self
            .hosts
            .get(Role::Frontend.as_str())
            .copied()
            .unwrap_or(self.frontend_host);
        let mut frontend = vec![
            exe,
            "frontend".into(),
            "--listen".into(),
            SocketAddr::new(frontend_host, ports.frontend).to_string(),
            "--catalogs".into(),
            catalog_urls.join(","),
            "--replicas".into(),
            replicas,
        ];
        if self.no_cache {
            frontend.push("--no-cache".into());
        } else if let Some(size) = self.cache_size {
            frontend.extend(["--cache-size".into(), size.to_string()]);
        }
        // Reach the front-end where it listens; a wildcard address is reachable on loopback.
        let frontend_url = if frontend_host.is_unspecified() {
            format!("{scheme}://127.0.0.1:{}", ports.frontend)
        } else {
            format!(
                "{scheme}://{}",
                SocketAddr::new(frontend_host, ports.frontend)
            )
        };
        services.push(self.finish(Role::Frontend, None, frontend_url, frontend));
        self.add_security_args(&data_dir, &mut services)?;
        Ok(services)
    }

    /// Every service gets the cluster key file by absolute path and, with TLS, its certificate
    /// and the authority, right after its subcommand: the command then starts it again exactly
    /// so from any working directory.
    fn add_security_args(&self, data_dir: &Path, services: &mut [ServiceSpec]) -> Result<()> {
        let key_file = crate::security::ensure_key(data_dir)?;
        let tls = if self.tls {
            let names: Vec<String> = services.iter().map(ServiceSpec::name).collect();
            let mut hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
            if !self.frontend_host.is_unspecified() && !self.frontend_host.is_loopback() {
                hosts.push(self.frontend_host.to_string());
            }
            hosts.extend(self.hosts.values().map(ToString::to_string));
            Some(crate::security::ensure_tls(data_dir, &names, &hosts)?)
        } else {
            None
        };
        for (i, service) in services.iter_mut().enumerate() {
            let mut args = vec!["--cluster-key-file".to_owned(), path_arg(&key_file)];
            if let Some(files) = tls.as_ref().and_then(|t| t.get(i)) {
                args.extend([
                    "--tls-cert".to_owned(),
                    path_arg(&files.cert),
                    "--tls-key".to_owned(),
                    path_arg(&files.key),
                    "--tls-ca".to_owned(),
                    path_arg(&files.ca),
                ]);
            }
            let at = 2.min(service.command.len());
            service.command.splice(at..at, args);
        }
        Ok(())
    }

    fn finish(
        &self,
        role: Role,
        id: Option<u8>,
        url: String,
        mut command: Vec<String>,
    ) -> ServiceSpec {
        if let Some(format) = &self.log_format {
            command.extend(["--log-format".into(), format.clone()]);
        }
        for (r, args) in &self.extra_args {
            if *r == role {
                command.extend(args.iter().cloned());
            }
        }
        ServiceSpec {
            role,
            id,
            url,
            command,
        }
    }

    fn ports(&self) -> Result<Ports> {
        if !(1..=CATALOGS_MAX).contains(&self.catalogs) {
            return Err(Error::Io(format!(
                "{} catalogs: a cluster runs 1 to {CATALOGS_MAX}",
                self.catalogs
            )));
        }
        if self.base_port != 0 {
            let base = self.base_port;
            let at = |offset: u16| {
                base.checked_add(offset).ok_or_else(|| {
                    Error::Io(format!(
                        "--base-port {base} leaves no room for every service"
                    ))
                })
            };
            return Ok(Ports {
                frontend: base,
                catalogs: (1..=u16::from(self.catalogs))
                    .map(at)
                    .collect::<Result<_>>()?,
                order: (1..=u16::from(self.replicas))
                    .map(|id| at(10 + id))
                    .collect::<Result<_>>()?,
            });
        }
        // Hold every listener until all ports are chosen so no two services get the same one.
        // The ports are free again by the time the children bind them; another process could
        // take one in between, which the start then reports.
        let catalogs = usize::from(self.catalogs);
        let count = 1 + catalogs + usize::from(self.replicas);
        let listeners = (0..count)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::Io(format!("cannot find free ports: {e}")))?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::Io(format!("cannot find free ports: {e}")))?;
        Ok(Ports {
            frontend: ports[0],
            catalogs: ports[1..=catalogs].to_vec(),
            order: ports[catalogs + 1..].to_vec(),
        })
    }
}

struct Ports {
    frontend: u16,
    catalogs: Vec<u16>,
    order: Vec<u16>,
}

/// Most catalogs a local cluster runs: their ports sit between the front-end's and the
/// replicas' (base + 1 ..= base + 9).
pub const CATALOGS_MAX: u8 = 9;

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// One service to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Role.
    pub role: Role,
    /// Replica or catalog id.
    pub id: Option<u8>,
    /// Base URL.
    pub url: String,
    /// Full argv.
    pub command: Vec<String>,
}

impl ServiceSpec {
    /// `catalog-1`, `frontend`, `order-2`.
    #[must_use]
    pub fn name(&self) -> String {
        Self::name_of(self.role, self.id)
    }

    /// The name of a role and id.
    #[must_use]
    pub fn name_of(role: Role, id: Option<u8>) -> String {
        match id {
            Some(id) => format!("{}-{id}", role.as_str()),
            None => role.as_str().to_owned(),
        }
    }

    /// The `cluster.json` record for this service running as `pid`.
    #[must_use]
    pub fn record(&self, pid: u32) -> ServiceRecord {
        ServiceRecord {
            role: self.role,
            id: self.id,
            url: self.url.clone(),
            pid,
            command: self.command.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_follow_the_spec() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = ClusterSpec::new("bazaar".into(), dir.path().to_owned(), 8080);
        let services = spec.services().expect("services");
        let urls: Vec<_> = services.iter().map(|s| (s.name(), s.url.clone())).collect();
        assert_eq!(
            urls,
            [
                ("catalog-1".into(), "http://127.0.0.1:8081".into()),
                ("catalog-2".into(), "http://127.0.0.1:8082".into()),
                ("order-1".into(), "http://127.0.0.1:8091".into()),
                ("order-2".into(), "http://127.0.0.1:8092".into()),
                ("order-3".into(), "http://127.0.0.1:8093".into()),
                ("frontend".into(), "http://127.0.0.1:8080".into()),
            ]
        );
        let order = &services[3].command;
        assert_eq!(order[1], "order");
        assert!(order.contains(&"--peers".to_owned()));
        assert!(order.iter().any(|a| a.ends_with("order-2.db")));
        for service in &services {
            let at = service
                .command
                .iter()
                .position(|a| a == "--cluster-key-file")
                .expect("every service names the key file");
            let key_file = Path::new(&service.command[at + 1]);
            assert!(key_file.is_absolute() && key_file.is_file(), "{key_file:?}");
            assert!(!service.command.iter().any(|a| a.starts_with("--tls")));
        }
    }

    #[test]
    fn tls_clusters_use_https_and_name_their_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = ClusterSpec::new("bazaar".into(), dir.path().to_owned(), 8080);
        spec.tls = true;
        let services = spec.services().expect("services");
        for service in &services {
            assert!(service.url.starts_with("https://"), "{}", service.url);
            for flag in ["--tls-cert", "--tls-key", "--tls-ca"] {
                let at = service
                    .command
                    .iter()
                    .position(|a| a == flag)
                    .unwrap_or_else(|| panic!("{} lacks {flag}", service.name()));
                assert!(Path::new(&service.command[at + 1]).is_file());
            }
            assert!(
                service.command.iter().all(|a| !a.contains("http://")),
                "{:?}",
                service.command
            );
        }
        assert!(spec.tls_ca().is_some_and(|ca| ca.is_file()));
    }

    #[test]
    fn free_ports_are_distinct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = ClusterSpec::new("bazaar".into(), dir.path().to_owned(), 0);
        let services = spec.services().expect("services");
        let mut urls: Vec<_> = services.iter().map(|s| s.url.clone()).collect();
        urls.sort();
        urls.dedup();
        assert_eq!(urls.len(), 6);
    }

    #[test]
    fn only_the_front_end_leaves_loopback_with_frontend_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = ClusterSpec::new("bazaar".into(), dir.path().to_owned(), 8080);
        spec.frontend_host = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let services = spec.services().expect("services");
        let listen = |s: &ServiceSpec| {
            let i = s
                .command
                .iter()
                .position(|a| a == "--listen")
                .expect("--listen");
            s.command[i + 1].clone()
        };
        let frontend = services
            .iter()
            .find(|s| s.role == Role::Frontend)
            .expect("frontend");
        assert_eq!(listen(frontend), "0.0.0.0:8080");
        assert_eq!(
            frontend.url, "http://127.0.0.1:8080",
            "a wildcard is reached on loopback"
        );
        for other in services.iter().filter(|s| s.role != Role::Frontend) {
            assert!(listen(other).starts_with("127.0.0.1:"), "{}", other.name());
        }
        spec.frontend_host = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
        let services = spec.services().expect("services");
        let frontend = services
            .iter()
            .find(|s| s.role == Role::Frontend)
            .expect("frontend");
        assert_eq!(
            frontend.url, "http://10.0.0.5:8080",
            "a specific address is reached there"
        );
    }

    #[test]
    fn services_on_hosts_of_their_own_listen_and_are_reached_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = ClusterSpec::new("bazaar".into(), dir.path().to_owned(), 8080);
        let at = |last: u8| IpAddr::V4(Ipv4Addr::new(10, 77, 0, last));
        spec.hosts.insert("catalog-1".into(), at(2));
        spec.hosts.insert("order-1".into(), at(3));
        spec.hosts.insert("frontend".into(), at(6));
        let services = spec.services().expect("services");
        let by_name = |name: &str| {
            services
                .iter()
                .find(|s| s.name() == name)
                .expect("service")
                .clone()
        };
        assert_eq!(by_name("catalog-1").url, "http://10.77.0.2:8081");
        assert_eq!(by_name("catalog-2").url, "http://127.0.0.1:8082");
        assert_eq!(by_name("order-1").url, "http://10.77.0.3:8091");
        assert_eq!(
            by_name("order-2").url,
            "http://127.0.0.1:8092",
            "a service not named stays on loopback"
        );
        assert_eq!(by_name("frontend").url, "http://10.77.0.6:8080");
        let order = by_name("order-1").command.join(" ");
        assert!(order.contains("--listen 10.77.0.3:8091"), "{order}");
        let catalog = by_name("catalog-1").command.join(" ");
        assert!(catalog.contains("--listen 10.77.0.2:8081"), "{catalog}");
        assert!(catalog.contains("1=http://10.77.0.3:8091"), "{catalog}");
        assert!(
            order.contains("1=http://10.77.0.3:8091,2=http://127.0.0.1:8092"),
            "{order}"
        );
        let frontend = by_name("frontend").command.join(" ");
        assert!(frontend.contains("--listen 10.77.0.6:8080"), "{frontend}");
        assert!(
            frontend.contains("--catalogs http://10.77.0.2:8081,http://127.0.0.1:8082"),
            "{frontend}"
        );
    }

    #[test]
    fn a_base_port_too_high_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = ClusterSpec::new("bazaar".into(), dir.path().to_owned(), 65530);
        assert!(spec.services().is_err());
    }
}
