//! The catalog's flags (each also an environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bazaar_service::{NetworkArgs, parse_duration};

/// Restocking more often than this would turn a background chore into load.
pub const RESTOCK_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// Default restock level (SPEC.md section 3).
pub const RESTOCK_TO_DEFAULT: u64 = 100;

/// How long the catalog waits for a front-end to acknowledge an invalidation before dropping
/// it from the feed. A dropped front-end stops caching once its lease runs out, so this only
/// bounds how long one slow front-end can hold up a trade.
pub const FEED_ACK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);

/// Configuration of `bazaar catalog`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "BAZAAR_CATALOG_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// SQLite database file; created, and seeded from --stocks, on first start.
    #[arg(
        long,
        env = "BAZAAR_CATALOG_DB",
        default_value = "bazaar-data/catalog.db"
    )]
    pub db: PathBuf,

    /// Catalog CSV (header `name,price,quantity`) that seeds a new database. Without it the
    /// copy of data/stocks.csv built into the binary is used. Ignored once the database exists.
    #[arg(long, env = "BAZAAR_CATALOG_STOCKS")]
    pub stocks: Option<PathBuf>,

    /// Every this often (e.g. 10s), set each stock whose quantity is 0 back to --restock-to.
    /// Off unless given.
    #[arg(long, env = "BAZAAR_RESTOCK_INTERVAL", value_parser = parse_duration)]
    pub restock_interval: Option<Duration>,

    /// Quantity a sold-out stock is restocked to.
    #[arg(long, env = "BAZAAR_RESTOCK_TO", default_value_t = RESTOCK_TO_DEFAULT)]
    pub restock_to: u64,

    /// How long to wait for a front-end to acknowledge an invalidation before dropping it.
    #[arg(long, env = "BAZAAR_FEED_ACK_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub feed_ack_timeout: Duration,

    /// Cluster key, TLS and listener limits. Every route but `GET /health` and `GET /metrics`
    /// requires the key.
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl Config {
    /// A configuration with every default, listening on `listen` and storing in `db`.
    #[must_use]
    pub fn new(listen: SocketAddr, db: PathBuf) -> Self {
        Self {
            listen,
            db,
            stocks: None,
            restock_interval: None,
            restock_to: RESTOCK_TO_DEFAULT,
            feed_ack_timeout: FEED_ACK_TIMEOUT_DEFAULT,
            network: NetworkArgs::insecure(),
        }
    }

    /// Checks values that clap's types cannot.
    ///
    /// # Errors
    /// A sentence naming the flag and the bad value.
    pub fn validate(&self) -> Result<(), String> {
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
        if self.feed_ack_timeout.is_zero() {
            return Err("--feed-ack-timeout must be longer than 0ms".into());
        }
        Ok(())
    }
}
