//! The catalog's flags (each also an environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bazaar_api::replica::ReplicaUrls;
use bazaar_service::{NetworkArgs, parse_duration};

/// Restocking more often than this would turn a background chore into load.
pub const RESTOCK_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// Default restock level.
pub const RESTOCK_TO_DEFAULT: u64 = 100;

/// Configuration of `bazaar catalog`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "BAZAAR_CATALOG_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// SQLite file of this catalog's view, written lazily; rebuilt from the order log when it
    /// is missing or behind.
    #[arg(
        long,
        env = "BAZAAR_CATALOG_DB",
        default_value = "bazaar-data/catalog-1.db"
    )]
    pub db: PathBuf,

    /// The order replicas as `id=url` pairs separated by commas: the catalog follows whichever
    /// leads.
    #[arg(
        long,
        env = "BAZAAR_REPLICAS",
        default_value = "1=http://127.0.0.1:8091,2=http://127.0.0.1:8092,3=http://127.0.0.1:8093"
    )]
    pub replicas: ReplicaUrls,

    /// Every this often (e.g. 10s), ask the order leader to set each stock whose quantity is 0
    /// back to --restock-to. Off unless given.
    #[arg(long, env = "BAZAAR_RESTOCK_INTERVAL", value_parser = parse_duration)]
    pub restock_interval: Option<Duration>,

    /// Quantity a sold-out stock is restocked to.
    #[arg(long, env = "BAZAAR_RESTOCK_TO", default_value_t = RESTOCK_TO_DEFAULT)]
    pub restock_to: u64,

    /// Cluster key, TLS and listener limits. Every route but `GET /health` and `GET /metrics`
    /// requires the key.
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl Config {
    /// A configuration with every default, listening on `listen`, storing in `db`, following
    /// `replicas`.
    #[must_use]
    pub fn new(listen: SocketAddr, db: PathBuf, replicas: ReplicaUrls) -> Self {
        Self {
            listen,
            db,
            replicas,
            restock_interval: None,
            restock_to: RESTOCK_TO_DEFAULT,
            network: NetworkArgs::insecure(),
        }
    }

    /// Checks values that clap's types cannot.
    ///
    /// # Errors
    /// A sentence naming the flag and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.replicas.0.is_empty() {
            return Err("--replicas lists no order replica".into());
        }
        if let Some(interval) = self.restock_interval
            && interval < RESTOCK_INTERVAL_MIN
        {
            return Err(format!(
                "--restock-interval {interval:?} is shorter than the minimum {RESTOCK_INTERVAL_MIN:?}"
            ));
        }
        if self.restock_to == 0 || self.restock_to > bazaar_api::TRADE_QUANTITY_MAX {
            return Err(format!(
                "--restock-to {} must be from 1 to {}",
                self.restock_to,
                bazaar_api::TRADE_QUANTITY_MAX
            ));
        }
        Ok(())
    }
}
