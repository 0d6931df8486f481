//! `bazaar up`: a complete local system as child processes (SPEC.md section 8).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use bazaar_cluster::{Cluster, ClusterSpec, LogTarget, Role};
use bazaar_frontend::dashboard::DashboardMode;

use crate::Failure;
use crate::cmd::demo;
use crate::signals::shutdown_token;

/// Most order replicas `up` starts.
const REPLICAS_MAX: u8 = 9;

/// How often `up` looks for children that died.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(250);

/// `--replication` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Replication {
    /// The front-end picks a leader that copies each order to every live follower.
    PrimaryBackup,
    /// Raft consensus: a majority stores each order before it is acknowledged.
    Raft,
}

impl Replication {
    /// The flag spelling, as the order replicas take it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrimaryBackup => "primary-backup",
            Self::Raft => "raft",
        }
    }
}

/// Flags of `bazaar up`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Databases, logs (with --log-dir) and cluster.json go here.
    #[arg(long, env = "BAZAAR_DATA_DIR", default_value = "bazaar-data")]
    data_dir: PathBuf,

    /// Front-end on this port, catalog i on +i (8081, 8082), order replica i on +10+i
    /// (8091..8093). 0 picks free ports.
    #[arg(long, env = "BAZAAR_BASE_PORT", default_value_t = 8080)]
    base_port: u16,

    /// Address the front-end listens on (e.g. 0.0.0.0 to serve clients on other machines);
    /// the catalog and the replicas stay on 127.0.0.1.
    #[arg(long, env = "BAZAAR_FRONTEND_HOST", default_value = "127.0.0.1")]
    frontend_host: std::net::IpAddr,

    /// Number of order replicas (ids 1..=N).
    #[arg(long, env = "BAZAAR_REPLICA_COUNT", default_value_t = 3)]
    replicas: u8,

    /// Number of catalogs (ids 1..=N): views of the order log, any of which answers lookups.
    #[arg(long, env = "BAZAAR_CATALOG_COUNT", default_value_t = 2)]
    catalogs: u8,

    /// How the order replicas agree on the log.
    #[arg(
        long,
        env = "BAZAAR_REPLICATION",
        value_enum,
        default_value = "primary-backup"
    )]
    replication: Replication,

    /// Front-end cache capacity (default 8).
    #[arg(long, env = "BAZAAR_CACHE_SIZE")]
    cache_size: Option<usize>,

    /// Turn the front-end's cache off.
    #[arg(long, env = "BAZAAR_NO_CACHE")]
    no_cache: bool,

    /// Catalog restocking interval, e.g. 10s (off by default).
    #[arg(long, env = "BAZAAR_RESTOCK_INTERVAL", value_parser = bazaar_service::parse_duration)]
    restock_interval: Option<Duration>,

    /// Quantity a sold-out stock is restocked to (default 100).
    #[arg(long, env = "BAZAAR_RESTOCK_TO")]
    restock_to: Option<u64>,

    /// Catalog CSV the first leader writes into a new order log (default: the built-in
    /// data/stocks.csv).
    #[arg(long, env = "BAZAAR_STOCKS")]
    stocks: Option<PathBuf>,

    /// Write each service's log to DIR/<service>.log instead of this terminal.
    #[arg(long, env = "BAZAAR_LOG_DIR")]
    log_dir: Option<PathBuf>,

    /// The front-end's dashboard at `/`: `auto` (on when the front-end listens on loopback),
    /// `on` (or `--dashboard` alone), `off`.
    #[arg(
        long,
        env = "BAZAAR_DASHBOARD",
        value_enum,
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    dashboard: Option<DashboardMode>,

    /// Demonstration controls: the dashboard may kill and restart order replicas and the
    /// catalog, to watch failover and catch-up. Off by default.
    #[arg(long, env = "BAZAAR_DEMO")]
    demo: bool,

    /// Serve every service over TLS: a private certificate authority and a certificate per
    /// service are made in <data-dir>/tls (once), and every URL becomes https://.
    #[arg(long, env = "BAZAAR_TLS")]
    tls: bool,
}

/// Starts everything, supervises, stops everything on Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> Result<(), Failure> {
    if !(1..=REPLICAS_MAX).contains(&args.replicas) {
        return Err(Failure::Config(anyhow!(
            "--replicas {} must be from 1 to {REPLICAS_MAX}",
            args.replicas
        )));
    }
    if !(1..=bazaar_cluster::spec::CATALOGS_MAX).contains(&args.catalogs) {
        return Err(Failure::Config(anyhow!(
            "--catalogs {} must be from 1 to {}",
            args.catalogs,
            bazaar_cluster::spec::CATALOGS_MAX
        )));
    }
    if let Some(size) = args.cache_size
        && !(1..=bazaar_frontend::config::CACHE_SIZE_MAX).contains(&size)
    {
        return Err(Failure::Config(anyhow!(
            "--cache-size {size} must be from 1 to {} (use --no-cache to turn caching off)",
            bazaar_frontend::config::CACHE_SIZE_MAX
        )));
    }
    if let Some(stocks) = &args.stocks
        && !stocks.is_file()
    {
        return Err(Failure::Config(anyhow!(
            "--stocks {}: no such file",
            stocks.display()
        )));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Runtime(anyhow!("cannot find the bazaar executable: {e}")))?;
    let mut spec = ClusterSpec::new(exe, args.data_dir.clone(), args.base_port);
    spec.replicas = args.replicas;
    spec.catalogs = args.catalogs;
    spec.frontend_host = args.frontend_host;
    spec.replication = args.replication.as_str().into();
    spec.cache_size = args.cache_size;
    spec.no_cache = args.no_cache;
    spec.restock_interval = args
        .restock_interval
        .map(|d| format!("{}ms", d.as_millis()));
    spec.restock_to = args.restock_to;
    spec.tls = args.tls;
    spec.stocks = args
        .stocks
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    if let Some(dir) = &args.log_dir {
        spec.logs = LogTarget::Dir(dir.clone());
    }
    let shutdown = shutdown_token();
    let mut demo = demo_controls(&args, &mut spec, &shutdown).await?;
    let start = Cluster::start(spec);
    let mut cluster = tokio::select! {
        started = start => started.map_err(|e| Failure::Runtime(anyhow!(e)))?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let dashboard = args
        .dashboard
        .unwrap_or_default()
        .serves_on(std::net::SocketAddr::new(args.frontend_host, 0));
    print_banner(&cluster, dashboard.then_some(demo.is_some()));
    let mut ticks = tokio::time::interval(SUPERVISE_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
            request = demo::next(&mut demo) => {
                demo::handle(request, &mut cluster, &shutdown).await;
            }
        }
        for (record, status) in cluster.exited() {
            tracing::warn!(
                role = record.role.as_str(),
                id = ?record.id,
                pid = record.pid,
                %status,
                "a service exited; the rest keep running. Start it again with: {}",
                record.command.join(" ")
            );
        }
    }
    tracing::info!("stopping every service");
    cluster.shutdown().await;
    Ok(())
}

/// With `--demo`, starts the control endpoint and points the front-end at it; the dashboard
/// must be on for the controls to be of use.
async fn demo_controls(
    args: &Args,
    spec: &mut ClusterSpec,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<demo::Control>, Failure> {
    if let Some(mode) = args.dashboard {
        let value = match mode {
            DashboardMode::Auto => "auto",
            DashboardMode::On => "on",
            DashboardMode::Off => "off",
        };
        spec.extra_args
            .push((Role::Frontend, vec!["--dashboard".into(), value.into()]));
    }
    if !args.demo {
        return Ok(None);
    }
    let mode = args.dashboard.unwrap_or_default();
    if !mode.serves_on(std::net::SocketAddr::new(args.frontend_host, 0)) {
        return Err(Failure::Config(anyhow!(
            "--demo needs the dashboard, which is off for a front-end on {} (add --dashboard)",
            args.frontend_host
        )));
    }
    let control = demo::start(&args.data_dir, shutdown.clone())
        .await
        .map_err(Failure::Runtime)?;
    spec.extra_args.push((
        Role::Frontend,
        vec![
            "--demo-control-file".into(),
            std::fs::canonicalize(control.file())
                .unwrap_or_else(|_| control.file().to_owned())
                .display()
                .to_string(),
        ],
    ));
    Ok(Some(control))
}

/// `dashboard`: `None` when it is off, else whether it has demonstration controls.
fn print_banner(cluster: &Cluster, dashboard: Option<bool>) {
    let spec = cluster.spec();
    out!();
    out!(
        "Stock Bazaar is up ({} replication). Data: {}",
        spec.replication,
        spec.data_dir.display()
    );
    out!(
        "  front-end  {}   <- the public API",
        cluster.frontend_url()
    );
    for id in cluster.catalog_ids() {
        if let Some(url) = cluster.url(Role::Catalog, Some(id)) {
            out!("  catalog {id}  {url}");
        }
    }
    for id in cluster.replica_ids() {
        if let Some(url) = cluster.url(Role::Order, Some(id)) {
            out!("  order {id}    {url}");
        }
    }
    out!("  cluster file: {}", cluster.file_path().display());
    out!(
        "  cluster key:  {} (internal routes need it)",
        spec.key_file().display()
    );
    out!();
    if let Some(demo) = dashboard {
        out!(
            "Dashboard: {}/{}",
            cluster.frontend_url(),
            if demo {
                "  (with kill and restart buttons)"
            } else {
                ""
            }
        );
    }
    match spec.tls_ca() {
        Some(ca) => out!(
            "Try:  curl --cacert {} {}/stocks/GameStart",
            ca.display(),
            cluster.frontend_url()
        ),
        None => out!("Try:  curl {}/stocks/GameStart", cluster.frontend_url()),
    }
    out!("Ctrl-C stops everything.");
    out!();
}
