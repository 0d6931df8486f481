//! The order replica's flags (each also an environment variable).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use bazaar_api::ReplicaId;
use bazaar_api::replica::{ReplicaUrls, ReplicationMode, validate_base_url};

/// Configuration of `bazaar order`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// This replica's id (1..=255); leader selection prefers the highest live id.
    #[arg(long, env = "BAZAAR_ORDER_ID")]
    pub id: ReplicaId,

    /// Address to listen on. Default 127.0.0.1:(8090 + id); port 0 picks a free port.
    #[arg(long, env = "BAZAAR_ORDER_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// SQLite database file. Default bazaar-data/order-<id>.db.
    #[arg(long, env = "BAZAAR_ORDER_DB")]
    pub db: Option<PathBuf>,

    /// Every replica, this one included, as `id=url` pairs separated by commas, e.g.
    /// `1=http://127.0.0.1:8091,2=http://127.0.0.1:8092,3=http://127.0.0.1:8093`.
    #[arg(long, env = "BAZAAR_ORDER_PEERS", default_value = "")]
    pub peers: ReplicaUrls,

    /// Base URL of the catalog.
    #[arg(
        long,
        env = "BAZAAR_CATALOG_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub catalog: String,

    /// How replicas agree on the order log.
    #[arg(
        long,
        env = "BAZAAR_REPLICATION",
        value_enum,
        default_value = "primary-backup"
    )]
    pub replication: ModeArg,
}

/// `--replication` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// The front-end picks a leader that copies each order to every live follower.
    PrimaryBackup,
    /// Raft consensus: a majority stores each order before it is acknowledged.
    Raft,
}

impl From<ModeArg> for ReplicationMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::PrimaryBackup => Self::PrimaryBackup,
            ModeArg::Raft => Self::Raft,
        }
    }
}

impl Config {
    /// The address to listen on.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8090 + u16::from(self.id.0))))
    }

    /// The database path.
    #[must_use]
    pub fn db_path(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("bazaar-data/order-{}.db", self.id)))
    }

    /// Checks what clap's types cannot.
    ///
    /// # Errors
    /// A sentence naming the flag and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        validate_base_url(&self.catalog).map_err(|e| format!("--catalog: {e}"))?;
        if self.peers.0.len() > 1 && !self.peers.0.contains_key(&self.id) {
            return Err(format!(
                "--peers lists replicas {:?} but not this replica ({})",
                self.peers.0.keys().map(|id| id.0).collect::<Vec<_>>(),
                self.id
            ));
        }
        Ok(())
    }

    /// The other replicas.
    #[must_use]
    pub fn others(&self) -> BTreeMap<ReplicaId, String> {
        self.peers
            .0
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, url)| (*id, url.clone()))
            .collect()
    }

    /// This replica's own URL as peers know it, if listed.
    #[must_use]
    pub fn own_url(&self) -> Option<String> {
        self.peers.0.get(&self.id).cloned()
    }
}
