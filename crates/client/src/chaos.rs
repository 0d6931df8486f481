//! `bazaar chaos`: clients trade while order replicas and catalogs are killed with SIGKILL and
//! restarted, round after round; at the end every acknowledged order is read back, the replica
//! logs are compared and every catalog is checked against them.
//!
//! ```text
//! start a system ─► load (K verifying clients) ──────────────────────────────► stop, verify orders
//!                     round 1: kill the leader ─► probe until a trade succeeds ─► restart
//!                     round 2: kill a random replica (raft: every third round, two), and a
//!                              catalog ─► restart
//!                     ...
//!                   ─► wait until quiet ─► logs identical? catalogs equal the log? ─► verdict
//! ```
//!
//! Every even round also kills one catalog (at random): with two or more, lookups fail over to
//! another and clients notice nothing; the restarted catalog rebuilds its view from its file and
//! the log.
//!
//! Round 1 always kills the leader, so at least one round hits it; later victims are drawn at
//! random from the replicas the previous round spared. In raft mode every third round kills
//! two replicas: a majority is lost, trades must be refused (not accepted without a
//! majority) until one returns, and no acknowledged order may be lost.
//!
//! `--sabotage` is a negative control: during the last round it silently changes one order in
//! a stopped follower's database, a corruption that catch-up cannot see (the log's tail still
//! matches), to show that the final verification catches it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bazaar_api::client::{ClientError, FrontendClient, Http};
use bazaar_api::order::TradeRequest;
use bazaar_api::replica::ReplicaStatus;
use bazaar_api::{TradeType, TxnNumber};
use bazaar_cluster::{Cluster, ClusterSpec, LogTarget, Role};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::load::{self, LiveCounters, LoadConfig, Stop};
use crate::report::LoadReport;
use crate::verify;

/// Rounds when none is given.
pub const ROUNDS_DEFAULT: u32 = 5;

/// Most rounds one run may ask for.
pub const ROUNDS_MAX: u32 = 1000;

/// How long a killed replica stays down when not told otherwise.
pub const DOWN_DEFAULT: Duration = Duration::from_secs(1);

/// Pause between a restart and the next round, when not told otherwise.
pub const SETTLE_DEFAULT: Duration = Duration::from_secs(1);

/// How long the probe keeps trying to trade after a kill before the round counts as a failed
/// failover.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(15);

/// How long the system may take to settle every reservation and equalise the logs at the end.
const QUIET_DEADLINE: Duration = Duration::from_secs(60);

/// Share of iterations that trade.
const TRADE_PROBABILITY: f64 = 0.5;

/// What a chaos run does.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The `bazaar` executable to start the system with.
    pub exe: PathBuf,
    /// Data directory of the system (created; must not hold another system's data).
    pub data_dir: PathBuf,
    /// Number of rounds.
    pub rounds: u32,
    /// Simulated clients trading throughout.
    pub clients: usize,
    /// How long killed replicas stay down.
    pub down: Duration,
    /// Pause after each restart.
    pub settle: Duration,
    /// `primary-backup` or `raft`.
    pub replication: String,
    /// Seeds the choice of victims and the clients.
    pub seed: u64,
    /// Corrupt a stopped follower's database in the last round (negative control).
    pub sabotage: bool,
}

impl ChaosConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag.
    pub fn validate(&self) -> Result<()> {
        if !(1..=ROUNDS_MAX).contains(&self.rounds) {
            return Err(Error::Config(format!(
                "--rounds {} must be from 1 to {ROUNDS_MAX}",
                self.rounds
            )));
        }
        if !(1..=load::CLIENTS_MAX).contains(&self.clients) {
            return Err(Error::Config(format!(
                "--clients {} must be from 1 to {}",
                self.clients,
                load::CLIENTS_MAX
            )));
        }
        if self.down.is_zero() || self.down > Duration::from_secs(600) {
            return Err(Error::Config(format!(
                "--down {:?} must be from 1ms to 10m",
                self.down
            )));
        }
        if self.settle > Duration::from_secs(600) {
            return Err(Error::Config(format!(
                "--settle {:?} must be at most 10m",
                self.settle
            )));
        }
        if !matches!(self.replication.as_str(), "primary-backup" | "raft") {
            return Err(Error::Config(format!(
                "--replication {:?} must be primary-backup or raft",
                self.replication
            )));
        }
        Ok(())
    }
}

/// What happened in one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// 1-based.
    pub round: u32,
    /// Replicas killed.
    pub killed: Vec<u8>,
    /// Catalogs killed.
    pub catalogs_killed: Vec<u8>,
    /// Whether the leader was among them.
    pub leader_killed: bool,
    /// The leader before the kill.
    pub leader_before: Option<u8>,
    /// Failed client requests while the round ran.
    pub client_errors: u64,
    /// Trades acknowledged while the round ran.
    pub trades: u64,
    /// Kill to the probe's first successful trade, when a majority (or, in primary-backup
    /// mode, any replica) survived.
    pub failover_ms: Option<f64>,
    /// In a round that killed a majority: whether the probe's trades were refused while it was
    /// down (as they must be) and how long the first refusal took.
    pub refused_without_majority_ms: Option<f64>,
    /// Restart to the probe's first successful trade, in a round that killed a majority.
    pub recovery_ms: Option<f64>,
    /// Anything that went wrong in the round itself.
    pub problems: Vec<String>,
}

/// The whole experiment.
#[derive(Debug, Serialize)]
pub struct ChaosReport {
    /// Replication mode.
    pub replication: String,
    /// Data directory used.
    pub data_dir: String,
    /// Every round.
    pub rounds: Vec<RoundReport>,
    /// The clients' run, including the read-back of every acknowledged order.
    pub load: LoadReport,
    /// `bazaar verify`'s findings on the quiet system.
    pub verify: Vec<String>,
    /// Whether verify passed.
    pub verify_ok: bool,
    /// Problems that make the run fail.
    pub problems: Vec<String>,
}

impl ChaosReport {
    /// True when no acknowledged order was lost, the logs are identical and the catalog matches
    /// them. Client errors alone do not fail the run (they are reported): in raft mode a round
    /// without a majority must refuse trades.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.verify_ok && self.load.mismatches == 0
    }

    /// Client errors in rounds where clients should not have noticed anything.
    #[must_use]
    pub fn unexpected_client_errors(&self) -> u64 {
        self.rounds
            .iter()
            .filter(|r| r.refused_without_majority_ms.is_none())
            .map(|r| r.client_errors)
            .sum()
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "chaos: {} rounds, {} replication, data in {}",
            self.rounds.len(),
            self.replication,
            self.data_dir
        )?;
        writeln!(
            f,
            "round  killed        leader?  client errors  trades  failover   without majority"
        )?;
        for r in &self.rounds {
            let killed: Vec<String> = r
                .killed
                .iter()
                .map(|id| format!("o{id}"))
                .chain(r.catalogs_killed.iter().map(|id| format!("c{id}")))
                .collect();
            let failover = r
                .failover_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"));
            let majority = match (r.refused_without_majority_ms, r.recovery_ms) {
                (Some(refused), Some(recovered)) => {
                    format!("refused in {refused:.0} ms, back {recovered:.0} ms after restart")
                }
                (Some(refused), None) => format!("refused in {refused:.0} ms"),
                _ => "-".to_owned(),
            };
            writeln!(
                f,
                "{:>5}  {:<12}  {:<7}  {:>13}  {:>6}  {:>8}   {majority}",
                r.round,
                killed.join(","),
                if r.leader_killed { "yes" } else { "no" },
                r.client_errors,
                r.trades,
                failover,
            )?;
            for p in &r.problems {
                writeln!(f, "       problem: {p}")?;
            }
        }
        writeln!(
            f,
            "clients: {} orders acknowledged, {} read back equal, {} mismatches; {} failed requests in rounds that kept a majority",
            self.load.orders_recorded,
            self.load.orders_verified,
            self.load.mismatches,
            self.unexpected_client_errors()
        )?;
        for sample in &self.load.error_samples {
            writeln!(f, "  error: {sample}")?;
        }
        for sample in &self.load.mismatch_samples {
            writeln!(f, "  mismatch: {sample}")?;
        }
        for line in &self.verify {
            writeln!(f, "{line}")?;
        }
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        if self.ok() {
            write!(
                f,
                "verdict: OK: every acknowledged order survived, replica logs are identical, the catalogs equal the log"
            )
        } else {
            write!(f, "verdict: FAILED")
        }
    }
}

/// Runs the experiment on a system it starts in `config.data_dir`, and stops it at the end.
///
/// # Errors
/// Bad settings, or the system could not be started. Everything that goes wrong later is in
/// the report.
pub async fn run(config: ChaosConfig) -> Result<ChaosReport> {
    config.validate()?;
    let mut spec = ClusterSpec::new(config.exe.clone(), config.data_dir.clone(), 0);
    spec.replication.clone_from(&config.replication);
    spec.logs = LogTarget::Dir(config.data_dir.join("logs"));
    let mut cluster = Cluster::start(spec).await?;
    let outcome = experiment(&config, &mut cluster).await;
    cluster.shutdown().await;
    let mut report = outcome?;
    match verify::verify(&config.data_dir) {
        Ok(found) => {
            report.verify_ok = found.ok();
            report.verify = found.to_string().lines().map(str::to_owned).collect();
        }
        Err(e) => report.problems.push(format!("verify could not run: {e}")),
    }
    Ok(report)
}

async fn experiment(config: &ChaosConfig, cluster: &mut Cluster) -> Result<ChaosReport> {
    let frontend_url = cluster.frontend_url();
    let frontend = Endpoint::parse(&frontend_url)?;
    let api = FrontendClient::new(
        Http::with_auth(Duration::from_secs(20), cluster.client_auth()),
        frontend_url.clone(),
    );
    let live = Arc::new(LiveCounters::default());
    let stop_load = CancellationToken::new();
    let mut load_config = LoadConfig::new(frontend);
    load_config.clients = config.clients;
    load_config.stop = Stop::Duration(load::DURATION_MAX);
    load_config.trade_probability = TRADE_PROBABILITY;
    load_config.seed = config.seed;
    load_config.live = Some(Arc::clone(&live));
    load_config.cancel = Some(stop_load.clone());
    let load = tokio::spawn(load::run(load_config));
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut report = ChaosReport {
        replication: config.replication.clone(),
        data_dir: config.data_dir.display().to_string(),
        rounds: Vec::new(),
        load: LoadReport::default(),
        verify: Vec::new(),
        verify_ok: false,
        problems: Vec::new(),
    };
    tokio::time::sleep(config.settle).await;
    let mut previous: Vec<u8> = Vec::new();
    for round in 1..=config.rounds {
        let errors_before = live.errors.load(Ordering::Relaxed);
        let trades_before = live.trades.load(Ordering::Relaxed);
        let mut outcome = run_round(config, cluster, &api, &mut rng, round, &previous).await;
        previous.clone_from(&outcome.killed);
        outcome.client_errors = live.errors.load(Ordering::Relaxed) - errors_before;
        outcome.trades = live.trades.load(Ordering::Relaxed) - trades_before;
        tracing::info!(
            round,
            killed = ?outcome.killed,
            leader_killed = outcome.leader_killed,
            client_errors = outcome.client_errors,
            failover_ms = ?outcome.failover_ms,
            "chaos round done"
        );
        report.rounds.push(outcome);
    }
    stop_load.cancel();
    report.load = load.await.map_err(|e| Error::Task(e.to_string()))??;
    if let Err(e) = wait_quiet(cluster).await {
        report.problems.push(e);
    }
    Ok(report)
}

async fn run_round(
    config: &ChaosConfig,
    cluster: &mut Cluster,
    api: &FrontendClient,
    rng: &mut StdRng,
    round: u32,
    previous: &[u8],
) -> RoundReport {
    let ids = cluster.replica_ids();
    let leader = api.leader().await.ok().map(|l| l.id.0);
    let raft = config.replication == "raft";
    let majority_round = raft && round.is_multiple_of(3) && ids.len() >= 3;
    let killed = choose_victims(
        &ids,
        leader,
        previous,
        Pick {
            count: if majority_round { ids.len() / 2 + 1 } else { 1 },
            leader_first: round == 1,
            // The negative control needs a stopped follower to corrupt.
            follower_needed: config.sabotage && round == config.rounds,
        },
        rng,
    );
    let catalogs = cluster.catalog_ids();
    let catalogs_killed: Vec<u8> = if round.is_multiple_of(2) && !catalogs.is_empty() {
        vec![catalogs[rng.random_range(0..catalogs.len())]]
    } else {
        Vec::new()
    };
    let mut outcome = RoundReport {
        round,
        leader_killed: leader.is_some_and(|l| killed.contains(&l)),
        leader_before: leader,
        killed: killed.clone(),
        catalogs_killed: catalogs_killed.clone(),
        client_errors: 0,
        trades: 0,
        failover_ms: None,
        refused_without_majority_ms: None,
        recovery_ms: None,
        problems: Vec::new(),
    };
    let killed_at = Instant::now();
    for id in &killed {
        if let Err(e) = cluster.kill(Role::Order, Some(*id)) {
            outcome.problems.push(e.to_string());
        }
    }
    for id in &catalogs_killed {
        if let Err(e) = cluster.kill(Role::Catalog, Some(*id)) {
            outcome.problems.push(e.to_string());
        }
    }
    if config.sabotage && round == config.rounds {
        let victim = killed.iter().find(|id| Some(**id) != leader).copied();
        match victim {
            Some(id) => match sabotage(&config.data_dir.join(format!("order-{id}.db"))) {
                Ok(number) => {
                    tracing::warn!(replica = id, order = %number, "sabotage: changed an order in a stopped replica's database")
                }
                Err(e) => outcome.problems.push(format!("sabotage failed: {e}")),
            },
            None => outcome
                .problems
                .push("sabotage needs a killed follower in the last round".into()),
        }
    }
    if majority_round {
        match probe_trade(api).await {
            Ok(()) => outcome
                .problems
                .push("a trade was acknowledged while a majority of replicas was down".into()),
            Err(_) => {
                outcome.refused_without_majority_ms = Some(ms(killed_at.elapsed()));
            }
        }
    } else if outcome.leader_killed {
        match probe_until_success(api).await {
            Ok(()) => outcome.failover_ms = Some(ms(killed_at.elapsed())),
            Err(e) => outcome.problems.push(format!(
                "no trade succeeded within {FAILOVER_DEADLINE:?} of the kill: {e}"
            )),
        }
    }
    let remaining = config.down.saturating_sub(killed_at.elapsed());
    tokio::time::sleep(remaining).await;
    for id in &catalogs_killed {
        if let Err(e) = cluster.restart(Role::Catalog, Some(*id)).await {
            outcome.problems.push(e.to_string());
        }
    }
    for (i, id) in killed.iter().enumerate() {
        if let Err(e) = cluster.restart(Role::Order, Some(*id)).await {
            outcome.problems.push(e.to_string());
        }
        if majority_round && i == 0 {
            // One replica is back: a majority again. Trading must resume by itself.
            let restarted = Instant::now();
            match probe_until_success(api).await {
                Ok(()) => outcome.recovery_ms = Some(ms(restarted.elapsed())),
                Err(e) => outcome.problems.push(format!(
                    "trading did not resume after a majority was back: {e}"
                )),
            }
        }
    }
    tokio::time::sleep(config.settle).await;
    outcome
}

/// What a round's choice of victims must satisfy.
#[derive(Debug, Clone, Copy)]
struct Pick {
    /// How many replicas to kill.
    count: usize,
    /// Kill the leader (round 1: at least one round must hit it).
    leader_first: bool,
    /// Kill at least one follower.
    follower_needed: bool,
}

/// Chooses a round's victims. Beyond what `pick` requires, they are drawn at random from the
/// replicas the previous round spared when enough are left, so rounds differ and the leader,
/// which moves, keeps being hit.
fn choose_victims(
    ids: &[u8],
    leader: Option<u8>,
    previous: &[u8],
    pick: Pick,
    rng: &mut StdRng,
) -> Vec<u8> {
    let mut killed: Vec<u8> = Vec::new();
    if pick.leader_first
        && let Some(l) = leader
    {
        killed.push(l);
    }
    if pick.follower_needed
        && killed.is_empty()
        && let Some(&follower) = ids.iter().find(|id| Some(**id) != leader)
    {
        killed.push(follower);
    }
    let count = pick.count.min(ids.len());
    let fresh: Vec<u8> = ids
        .iter()
        .copied()
        .filter(|id| !previous.contains(id) && !killed.contains(id))
        .collect();
    let pool: Vec<u8> = if fresh.len() + killed.len() >= count {
        fresh
    } else {
        ids.to_vec()
    };
    while killed.len() < count {
        let candidate = pool[rng.random_range(0..pool.len())];
        if !killed.contains(&candidate) {
            killed.push(candidate);
        }
    }
    killed
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One small trade through the front-end.
async fn probe_trade(api: &FrontendClient) -> std::result::Result<(), ClientError> {
    api.order_create(&TradeRequest {
        name: "FishCo".into(),
        kind: TradeType::Sell,
        quantity: 1,
        request_id: None,
    })
    .await
    .map(|_| ())
}

/// Trades until one is acknowledged, for at most [`FAILOVER_DEADLINE`].
async fn probe_until_success(api: &FrontendClient) -> std::result::Result<(), ClientError> {
    let deadline = Instant::now() + FAILOVER_DEADLINE;
    loop {
        match probe_trade(api).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Waits until every replica holds the same log and every catalog has applied and saved it.
async fn wait_quiet(cluster: &Cluster) -> std::result::Result<(), String> {
    let http = Http::with_auth(Duration::from_secs(2), cluster.client_auth());
    let replicas: Vec<String> = cluster
        .replica_ids()
        .into_iter()
        .filter_map(|id| cluster.url(Role::Order, Some(id)))
        .collect();
    let catalogs: Vec<String> = cluster
        .catalog_ids()
        .into_iter()
        .filter_map(|id| cluster.url(Role::Catalog, Some(id)))
        .collect();
    let deadline = Instant::now() + QUIET_DEADLINE;
    loop {
        let mut positions = Vec::new();
        for url in &replicas {
            let status: std::result::Result<ReplicaStatus, _> =
                http.get(&format!("{url}/health")).await;
            positions.push(status.ok().map(|s| s.position));
        }
        let mut views = Vec::new();
        for url in &catalogs {
            let status: std::result::Result<bazaar_api::catalog::CatalogStatus, _> =
                http.get(&format!("{url}/health")).await;
            views.push(status.ok().map(|s| (s.position, s.saved)));
        }
        let equal =
            positions.windows(2).all(|w| w[0] == w[1]) && positions.iter().all(Option::is_some);
        let caught_up = views.iter().all(|v| {
            v.is_some_and(|(at, saved)| Some(Some(at)) == positions.first().copied() && saved == at)
        });
        if equal && caught_up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the system did not settle within {QUIET_DEADLINE:?}: replica positions {positions:?}, catalogs (position, saved) {views:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Changes the quantity of an order in the middle of a stopped replica's log. The tail stays
/// intact, so the replica's catch-up finds its log agreeing with the leader's and keeps the
/// corruption: only a full comparison, as verify does, finds it.
fn sabotage(db: &Path) -> std::result::Result<TxnNumber, String> {
    let conn = rusqlite::Connection::open(db).map_err(|e| format!("{}: {e}", db.display()))?;
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
        .map_err(|e| format!("{}: {e}", db.display()))?;
    if count < 2 {
        return Err(format!("{} holds too few orders to corrupt", db.display()));
    }
    let number = count / 2;
    conn.execute(
        "UPDATE orders SET quantity = quantity + 1000 WHERE number = ?1",
        [number],
    )
    .map_err(|e| format!("{}: {e}", db.display()))?;
    Ok(TxnNumber(u64::try_from(number).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(count: usize) -> Pick {
        Pick {
            count,
            leader_first: false,
            follower_needed: false,
        }
    }

    #[test]
    fn round_one_kills_the_leader_and_later_rounds_spare_the_last_victims() {
        let ids = [1, 2, 3];
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let first = choose_victims(
                &ids,
                Some(3),
                &[],
                Pick {
                    leader_first: true,
                    ..pick(1)
                },
                &mut rng,
            );
            assert_eq!(first, [3]);
            let mut previous = first;
            for _ in 0..20 {
                let next = choose_victims(&ids, Some(2), &previous, pick(1), &mut rng);
                assert_eq!(next.len(), 1);
                assert!(
                    !previous.contains(&next[0]),
                    "seed {seed}: {next:?} after {previous:?}"
                );
                previous = next;
            }
        }
    }

    #[test]
    fn majority_rounds_kill_distinct_replicas_and_sabotage_gets_a_follower() {
        let ids = [1, 2, 3];
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut two = choose_victims(&ids, Some(1), &[2], pick(2), &mut rng);
            two.sort_unstable();
            two.dedup();
            assert_eq!(
                two.len(),
                2,
                "two distinct victims even when one was just killed"
            );
            let sabotage = choose_victims(
                &ids,
                Some(1),
                &[],
                Pick {
                    follower_needed: true,
                    ..pick(1)
                },
                &mut rng,
            );
            assert_eq!(sabotage.len(), 1);
            assert_ne!(sabotage[0], 1, "the victim is a follower");
        }
    }
}
