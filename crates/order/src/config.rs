//! The order replica's flags (each also an environment variable).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bazaar_api::ReplicaId;
use bazaar_api::replica::{ReplicaUrls, ReplicationMode};
use bazaar_service::{NetworkArgs, parse_duration};

use crate::release::feed::LEASE_MAX;

/// Longest heartbeat interval or election timeout accepted: beyond this a failover takes
/// minutes, which no deployment wants.
pub const RAFT_TIMING_MAX: Duration = Duration::from_secs(60);

/// Largest `--raft-snapshot-every` and `--raft-keep-logs` accepted.
pub const RAFT_LOG_COUNT_MAX: u64 = 1_000_000_000;

/// Shortest lease `--feed-lease` accepts: front-ends ping five times per lease.
pub const FEED_LEASE_MIN: Duration = Duration::from_millis(100);

/// Longest `--replication-timeout` and `--feed-ack-timeout` accepted.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(60);

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

    /// Catalog CSV (header `name,price,quantity`) that the first leader writes into the log's
    /// first entry. Without it the copy of data/stocks.csv built into the binary is used. Only
    /// the first leader of a new cluster reads it; every replica should be given the same.
    #[arg(long, env = "BAZAAR_STOCKS")]
    pub stocks: Option<PathBuf>,

    /// Primary-backup: copies (the leader's included) a write needs before it is acknowledged.
    /// The default, a majority of the replicas (2 of 3), never acknowledges what a partition
    /// or a crash can take back: a side without a majority refuses trades with 503. 1 is the
    /// lab's design: a leader cut off from every follower goes on alone, and what it
    /// acknowledges alone is lost (its numbers given again) if it dies or is partitioned away.
    #[arg(long, env = "BAZAAR_MIN_COPIES")]
    pub min_copies: Option<usize>,

    /// Primary-backup: a live follower that has not stored an append within this long is
    /// marked behind (and caught up in the background) so trades go on without it.
    #[arg(long, env = "BAZAAR_REPLICATION_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub replication_timeout: Duration,

    /// Lease granted to front-ends on the invalidation feed: a front-end trusts what it knows
    /// only while the leader answered a ping it sent less than this long ago. A new leader
    /// waits this long (plus a grace) before its first acknowledgement, and a leader waits it
    /// out for a front-end that stops answering.
    #[arg(long, env = "BAZAAR_FEED_LEASE", default_value = "400ms", value_parser = parse_duration)]
    pub feed_lease: Duration,

    /// How long to wait for a front-end to acknowledge an invalidation before dropping it (and
    /// waiting out its lease).
    #[arg(long, env = "BAZAAR_FEED_ACK_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub feed_ack_timeout: Duration,

    /// How replicas agree on the order log.
    #[arg(
        long,
        env = "BAZAAR_REPLICATION",
        value_enum,
        default_value = "primary-backup"
    )]
    pub replication: ModeArg,

    /// Raft: how often the leader sends heartbeats (also the timeout of one append request).
    /// 25ms suits loopback; on a real network use a few round trips, e.g. 50ms-100ms.
    #[arg(long, env = "BAZAAR_RAFT_HEARTBEAT", default_value = "25ms", value_parser = parse_duration)]
    pub raft_heartbeat: Duration,

    /// Raft: shortest election timeout. A follower that has heard nothing from the leader for
    /// its lease (the longest election timeout) plus a random timeout between the two bounds
    /// starts an election. Loopback: 80ms; a real network: 3-10 heartbeats, e.g. 300ms.
    #[arg(long, env = "BAZAAR_RAFT_ELECTION_MIN", default_value = "80ms", value_parser = parse_duration)]
    pub raft_election_min: Duration,

    /// Raft: longest election timeout (see --raft-election-min). Loopback: 160ms; a real
    /// network: twice the minimum, e.g. 600ms.
    #[arg(long, env = "BAZAAR_RAFT_ELECTION_MAX", default_value = "160ms", value_parser = parse_duration)]
    pub raft_election_max: Duration,

    /// Raft: build a snapshot of the applied orders every N log entries, so the log can be
    /// compacted and a replica that was down for long catches up from the snapshot.
    #[arg(long, env = "BAZAAR_RAFT_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub raft_snapshot_every: u64,

    /// Raft: log entries kept after a snapshot covers them, so a replica that is only a little
    /// behind catches up from the log rather than from a whole snapshot.
    #[arg(long, env = "BAZAAR_RAFT_KEEP_LOGS", default_value_t = 1_000)]
    pub raft_keep_logs: u64,

    /// Cluster key, TLS and listener limits. Every route but `GET /health` and `GET /metrics`
    /// requires the key, which the replica also presents to its peers and the catalog.
    #[command(flatten)]
    pub network: NetworkArgs,
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
    /// Copies a primary-backup write needs: `--min-copies`, else a majority of the replicas.
    #[must_use]
    pub fn min_copies(&self) -> usize {
        self.min_copies
            .unwrap_or_else(|| self.peers.0.len().max(1) / 2 + 1)
    }

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
        if self.peers.0.len() > 1 && !self.peers.0.contains_key(&self.id) {
            return Err(format!(
                "--peers lists replicas {:?} but not this replica ({})",
                self.peers.0.keys().map(|id| id.0).collect::<Vec<_>>(),
                self.id
            ));
        }
        if self.replication == ModeArg::Raft && !self.peers.0.contains_key(&self.id) {
            return Err(format!(
                "--peers must list every replica, this one ({}) included, with --replication raft: \
                 they form the Raft membership",
                self.id
            ));
        }
        self.validate_raft_timing()?;
        for (flag, value) in [
            ("--raft-snapshot-every", self.raft_snapshot_every),
            ("--raft-keep-logs", self.raft_keep_logs),
        ] {
            if value > RAFT_LOG_COUNT_MAX {
                return Err(format!(
                    "{flag} {value} must be at most {RAFT_LOG_COUNT_MAX}"
                ));
            }
        }
        if self.raft_snapshot_every == 0 {
            return Err("--raft-snapshot-every 0 must be at least 1".into());
        }
        let replicas = self.peers.0.len().max(1);
        if !(1..=replicas).contains(&self.min_copies()) {
            return Err(format!(
                "--min-copies {} must be from 1 to the number of replicas ({replicas})",
                self.min_copies()
            ));
        }
        if !(FEED_LEASE_MIN..=LEASE_MAX).contains(&self.feed_lease) {
            return Err(format!(
                "--feed-lease {:?} must be from {FEED_LEASE_MIN:?} to {LEASE_MAX:?}",
                self.feed_lease
            ));
        }
        for (flag, value) in [
            ("--replication-timeout", self.replication_timeout),
            ("--feed-ack-timeout", self.feed_ack_timeout),
        ] {
            if value < Duration::from_millis(1) || value > TIMEOUT_MAX {
                return Err(format!(
                    "{flag} {value:?} must be from 1ms to {TIMEOUT_MAX:?}"
                ));
            }
        }
        if let Some(stocks) = &self.stocks
            && !stocks.is_file()
        {
            return Err(format!("--stocks {}: no such file", stocks.display()));
        }
        Ok(())
    }

    /// Every replica's URL, this one's included.
    #[must_use]
    pub fn urls(&self) -> BTreeMap<ReplicaId, String> {
        self.peers.0.clone()
    }

    /// Heartbeat below the shortest election timeout, below the longest: otherwise followers
    /// would start elections against a healthy leader.
    fn validate_raft_timing(&self) -> Result<(), String> {
        let (heartbeat, min, max) = (
            self.raft_heartbeat,
            self.raft_election_min,
            self.raft_election_max,
        );
        for (flag, value) in [
            ("--raft-heartbeat", heartbeat),
            ("--raft-election-min", min),
            ("--raft-election-max", max),
        ] {
            if value < Duration::from_millis(1) || value > RAFT_TIMING_MAX {
                return Err(format!(
                    "{flag} {value:?} must be from 1ms to {RAFT_TIMING_MAX:?}"
                ));
            }
        }
        if min <= heartbeat {
            return Err(format!(
                "--raft-election-min {min:?} must be longer than --raft-heartbeat {heartbeat:?}"
            ));
        }
        if max <= min {
            return Err(format!(
                "--raft-election-max {max:?} must be longer than --raft-election-min {min:?}"
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["order", "--id", "1"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.config.validate()?;
        Ok(cli.config)
    }

    const PEERS: &str = "1=http://127.0.0.1:1,2=http://127.0.0.1:2,3=http://127.0.0.1:3";

    #[test]
    fn raft_flags_default_to_loopback_timing() {
        let config = parse(&["--replication", "raft", "--peers", PEERS]).expect("valid");
        assert_eq!(config.raft_heartbeat, Duration::from_millis(25));
        assert_eq!(config.raft_election_min, Duration::from_millis(80));
        assert_eq!(config.raft_election_max, Duration::from_millis(160));
    }

    #[test]
    fn bad_raft_flags_are_named() {
        for (args, flag) in [
            (vec!["--raft-heartbeat", "100ms"], "--raft-election-min"),
            (vec!["--raft-election-max", "80ms"], "--raft-election-max"),
            (vec!["--raft-heartbeat", "0ms"], "--raft-heartbeat"),
            (vec!["--raft-snapshot-every", "0"], "--raft-snapshot-every"),
            (vec!["--raft-keep-logs", "2000000000"], "--raft-keep-logs"),
            (vec!["--min-copies", "2"], "--min-copies"),
            (vec!["--feed-lease", "20s"], "--feed-lease"),
            (
                vec!["--replication-timeout", "0ms"],
                "--replication-timeout",
            ),
            (vec!["--stocks", "/no/such/file.csv"], "--stocks"),
        ] {
            let err = parse(&args).expect_err("invalid");
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        let err = parse(&["--replication", "raft"]).expect_err("raft needs peers");
        assert!(err.contains("--peers"), "{err}");
    }
}
