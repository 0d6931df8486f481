//! The front-end's flags (each also an environment variable).

use std::net::SocketAddr;
use std::time::Duration;

use bazaar_api::replica::{ReplicaUrls, validate_base_url};
use bazaar_service::{NetworkArgs, parse_duration};

/// Default cache capacity: smaller than the shipped catalog (12 stocks), so replacement
/// happens under load.
pub const CACHE_SIZE_DEFAULT: usize = 8;

/// Largest cache capacity accepted.
pub const CACHE_SIZE_MAX: usize = 1_000_000;

/// Most catalogs `--catalogs` may list.
pub const CATALOGS_MAX: usize = 16;

/// Base URLs separated by commas, as `--catalogs` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogUrls(pub Vec<String>);

impl std::str::FromStr for CatalogUrls {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut urls = Vec::new();
        for url in text.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let url = url.trim_end_matches('/');
            validate_base_url(url)?;
            if urls.iter().any(|u| u == url) {
                return Err(format!("catalog {url} is listed twice"));
            }
            urls.push(url.to_owned());
        }
        Ok(Self(urls))
    }
}

impl std::fmt::Display for CatalogUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// Configuration of `bazaar frontend`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "BAZAAR_FRONTEND_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URLs of the catalogs, separated by commas: lookups go to the first that answers in
    /// time and fail over to the others.
    #[arg(
        long,
        env = "BAZAAR_CATALOGS",
        default_value = "http://127.0.0.1:8081,http://127.0.0.1:8082"
    )]
    pub catalogs: CatalogUrls,

    /// Order replicas as `id=url` pairs separated by commas.
    #[arg(
        long,
        env = "BAZAAR_REPLICAS",
        default_value = "1=http://127.0.0.1:8091,2=http://127.0.0.1:8092,3=http://127.0.0.1:8093"
    )]
    pub replicas: ReplicaUrls,

    /// Stocks the lookup cache holds at most (LRU replacement).
    #[arg(long, env = "BAZAAR_CACHE_SIZE", default_value_t = CACHE_SIZE_DEFAULT)]
    pub cache_size: usize,

    /// Turn the lookup cache off: every lookup goes to the catalog.
    #[arg(long, env = "BAZAAR_NO_CACHE")]
    pub no_cache: bool,

    /// How long a trade or order query keeps retrying through leader failures before the
    /// client gets 503.
    #[arg(long, env = "BAZAAR_FAILOVER_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub failover_deadline: Duration,

    /// The operator's dashboard at `/`.
    #[command(flatten)]
    pub dashboard: crate::dashboard::DashboardConfig,

    /// Cluster key, TLS and listener limits. The front-end's own routes are public; it
    /// presents the key on every call it makes to the catalog and the replicas.
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl Config {
    /// Defaults, listening on `listen`, with the given catalog and replicas.
    #[must_use]
    pub fn new(listen: SocketAddr, catalogs: CatalogUrls, replicas: ReplicaUrls) -> Self {
        Self {
            listen,
            catalogs,
            replicas,
            cache_size: CACHE_SIZE_DEFAULT,
            no_cache: false,
            failover_deadline: crate::leader::FAILOVER_DEADLINE_DEFAULT,
            dashboard: crate::dashboard::DashboardConfig::default(),
            network: NetworkArgs::insecure(),
        }
    }

    /// Checks what clap's types cannot.
    ///
    /// # Errors
    /// A sentence naming the flag and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.catalogs.0.is_empty() || self.catalogs.0.len() > CATALOGS_MAX {
            return Err(format!(
                "--catalogs lists {} catalogs; give 1 to {CATALOGS_MAX}",
                self.catalogs.0.len()
            ));
        }
        if self.replicas.0.is_empty() {
            return Err("--replicas lists no order replica".into());
        }
        if !self.no_cache && !(1..=CACHE_SIZE_MAX).contains(&self.cache_size) {
            return Err(format!(
                "--cache-size {} must be from 1 to {CACHE_SIZE_MAX} (use --no-cache to turn caching off)",
                self.cache_size
            ));
        }
        self.dashboard.validate(self.listen)?;
        if self.failover_deadline.is_zero() || self.failover_deadline > Duration::from_secs(600) {
            return Err(format!(
                "--failover-deadline {:?} must be from 1ms to 10m",
                self.failover_deadline
            ));
        }
        self.network.resolve()?;
        Ok(())
    }
}
