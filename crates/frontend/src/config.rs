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

/// Shortest and longest lease on the invalidation feed.
pub const FEED_LEASE_MIN: Duration = Duration::from_millis(100);
/// See [`FEED_LEASE_MIN`].
pub const FEED_LEASE_MAX: Duration = Duration::from_secs(10);

/// Configuration of `bazaar frontend`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "BAZAAR_FRONTEND_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of the catalog.
    #[arg(
        long,
        env = "BAZAAR_CATALOG_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub catalog: String,

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

    /// Lease on the invalidation feed: cached entries are served only while the catalog has
    /// answered a ping sent less than this long ago.
    #[arg(long, env = "BAZAAR_FEED_LEASE", default_value = "1s", value_parser = parse_duration)]
    pub feed_lease: Duration,

    /// How long a trade or order query keeps retrying through leader failures before the
    /// client gets 503.
    #[arg(long, env = "BAZAAR_FAILOVER_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub failover_deadline: Duration,

    /// Cluster key, TLS and listener limits. The front-end's own routes are public; it
    /// presents the key on every call it makes to the catalog and the replicas.
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl Config {
    /// Defaults, listening on `listen`, with the given catalog and replicas.
    #[must_use]
    pub fn new(listen: SocketAddr, catalog: String, replicas: ReplicaUrls) -> Self {
        Self {
            listen,
            catalog,
            replicas,
            cache_size: CACHE_SIZE_DEFAULT,
            no_cache: false,
            feed_lease: Duration::from_secs(1),
            failover_deadline: crate::leader::FAILOVER_DEADLINE_DEFAULT,
            network: NetworkArgs::insecure(),
        }
    }

    /// Checks what clap's types cannot.
    ///
    /// # Errors
    /// A sentence naming the flag and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        validate_base_url(&self.catalog).map_err(|e| format!("--catalog: {e}"))?;
        if self.replicas.0.is_empty() {
            return Err("--replicas lists no order replica".into());
        }
        if !self.no_cache && !(1..=CACHE_SIZE_MAX).contains(&self.cache_size) {
            return Err(format!(
                "--cache-size {} must be from 1 to {CACHE_SIZE_MAX} (use --no-cache to turn caching off)",
                self.cache_size
            ));
        }
        if !(FEED_LEASE_MIN..=FEED_LEASE_MAX).contains(&self.feed_lease) {
            return Err(format!(
                "--feed-lease {:?} must be from {FEED_LEASE_MIN:?} to {FEED_LEASE_MAX:?}",
                self.feed_lease
            ));
        }
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
