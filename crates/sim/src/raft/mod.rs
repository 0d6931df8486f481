//! The same checker for raft mode (`--mode raft`): three real openraft nodes in one process,
//! each the order crate's own raft replica (its proposer, its release gate, its SQLite store and
//! state machine over a real file in a temporary directory), joined by an in-memory
//! implementation of openraft's network traits that drops, delays, reorders (by delay),
//! duplicates and partitions messages, from the seed. Clients trade through each replica's
//! writer, what the order service's `POST /trades` route calls, without HTTP.
//!
//! ```text
//!   clients ──writer.trade()──> replica 1 ─┐            ┌─ storage wrappers ─> order-1.db
//!                               replica 2 ─┼─ network ──┼─ storage wrappers ─> order-2.db
//!                               replica 3 ─┘ (faults)   └─ storage wrappers ─> order-3.db
//!                                                               │ what became durable,
//!   fault loop: crash / restart / partition / heal     checker <┘ what was applied
//! ```
//!
//! Every step (10 ms simulated) the fault loop may crash a replica (restarted 50-800 ms later
//! over the same file), cut one off (both ways, or only what it hears) for 100-1500 ms, and the
//! checker looks at the invariants ([`checker`]); most are checked the moment a replica applies
//! an entry or a client hears an acknowledgement. Then a liveness phase: faults stop, every
//! replica runs, every client finishes its operation and a few more, and every file must come
//! to hold the same log and the same orders.
//!
//! What a crash loses: a crash is a kill -9, not a power cut. The store syncs (fsync) every log
//! append, truncation and vote before answering, and applies without a sync; a killed process
//! loses neither (SQLite's committed frames are in the page cache), so a crash keeps every
//! transaction that committed and the checker asserts exactly that. A power cut, which could
//! roll back applies made without a sync, is not simulated; the store's argument for it (the
//! state machine and its applied index commit together, and the log is re-applied) is in
//! `bazaar_order::raft::store`. The files live in `/dev/shm` when it exists (`BAZAAR_SIM_DIR`
//! chooses another directory): a sync there costs nothing, and no sync matters to a kill.
//!
//! Determinism, and where it ends: the run uses a current-thread tokio runtime with paused
//! time, so time passes only when every task waits, and every storage call completes before
//! any other task runs. The seed fixes the fault schedule, the clients' operations and request
//! ids, and each message's fate (drawn per link and per message number). It does not fix
//! everything: openraft draws its election timeouts from `rand::thread_rng`, and `tokio::select!`
//! (in openraft's core and in our own tasks) polls its branches in a random order, neither of
//! which the seed reaches; a crash's cleanup waits for a real thread (the database's writer) to
//! end. So a seed replays the same faults against the same workload, but the interleaving, and
//! with it the trace, can differ between two runs of one seed. A violation prints the trace of
//! the run that found it.
//!
//! Planted bug ([`Plant::LyingDisk`]): one replica's disk acknowledges writes it has not
//! synced; a crash of that replica puts back a copy of its file from its last real sync (taken
//! every 20-300 ms), losing appends and votes it had acknowledged. Raft's safety rests on those
//! promises, and the checker finds the loss (an acknowledged trade left on fewer than a
//! majority of files, a fork, or openraft's own assertion that a follower's log went back).
//!
//! # Layout
//! - [`checker`] — the invariants and the model of each replica's file.
//! - [`network`] — openraft's network, in memory, with faults.
//! - [`storage`] — openraft's storage: the order crate's, observed, and stopped by a crash.
//! - [`cluster`] — starting, crashing and restarting replicas; the lying disk.
//! - [`client`] — a client.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod network;
pub mod storage;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bazaar_api::Price;
use bazaar_api::log::StockDef;
use bazaar_order::raft::RaftSettings;
use bazaar_order::raft::types::node_id;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use self::checker::{REPLICAS, Shared, replica};
use self::client::{Client, Doing, Phase};
use self::cluster::Cluster;
use self::network::{Net, NetCounts};
use crate::Violation;

/// Simulated time per step of the fault phase.
pub const STEP: Duration = Duration::from_millis(10);

/// How long the clients may take to finish once the faults stop, simulated.
const LIVENESS_DEADLINE: Duration = Duration::from_secs(60);

/// How long the files may take to agree once the clients finished, simulated.
const QUIET_DEADLINE: Duration = Duration::from_secs(30);

/// Stock each stock starts with: small, so buys are refused and restocks matter.
const INITIAL_QUANTITY: u64 = 20;

/// A bug planted on purpose, to show the checks find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// Replica 1's disk acknowledges writes before they are synced; its crash loses them.
    LyingDisk,
}

/// One run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Seeds the faults, the workload and the messages' fates.
    pub seed: u64,
    /// Steps of the fault phase ([`STEP`] each).
    pub steps: u64,
    /// A planted bug, if any.
    pub plant: Option<Plant>,
    /// Clients.
    pub clients: usize,
}

impl Config {
    /// A run of `steps` steps with seed `seed`, three clients, no planted bug.
    #[must_use]
    pub fn new(seed: u64, steps: u64) -> Self {
        Self {
            seed,
            steps,
            plant: None,
            clients: 3,
        }
    }

    /// The command that replays this run.
    #[must_use]
    pub fn replay(&self) -> String {
        let plant = match self.plant {
            Some(Plant::LyingDisk) => " --plant lying-disk",
            None => "",
        };
        format!(
            "bazaar-sim --mode raft --seed {} --steps {}{plant}",
            self.seed, self.steps
        )
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Steps of the fault phase.
    pub steps: u64,
    /// Simulated time, both phases, in milliseconds.
    pub simulated_ms: u64,
    /// Trades acknowledged.
    pub acked: usize,
    /// Trades refused.
    pub refused: usize,
    /// Restocks applied.
    pub restocks: usize,
    /// Highest log index applied.
    pub entries: u64,
    /// Crashes.
    pub crashes: usize,
    /// Partitions.
    pub partitions: usize,
    /// Terms in which a leader was seen.
    pub leaderships: usize,
    /// Snapshots installed by a replica that was behind.
    pub installs: usize,
    /// What the network did.
    pub net: NetCounts,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} steps, {} ms simulated: {} trades acknowledged, {} refused, {} restocks, {} \
             entries; {} crashes, {} partitions, {} leaderships, {} snapshot installs; {} \
             messages, {} lost, {} duplicated, {} late",
            self.steps,
            self.simulated_ms,
            self.acked,
            self.refused,
            self.restocks,
            self.entries,
            self.crashes,
            self.partitions,
            self.leaderships,
            self.installs,
            self.net.sent,
            self.net.lost,
            self.net.duplicated,
            self.net.late
        )
    }
}

/// Raft timing as the order service's defaults, with frequent snapshots so that replicas that
/// were down catch up from one.
fn settings() -> RaftSettings {
    RaftSettings {
        heartbeat: Duration::from_millis(25),
        election_min: Duration::from_millis(80),
        election_max: Duration::from_millis(160),
        snapshot_every: 32,
        keep_logs: 8,
    }
}

fn genesis() -> Vec<StockDef> {
    client::STOCKS
        .iter()
        .map(|name| StockDef {
            name: (*name).to_owned(),
            price: Price::from_cents(1000),
            quantity: INITIAL_QUANTITY,
        })
        .collect()
}

/// Where the runs' files go.
fn base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BAZAAR_SIM_DIR") {
        return PathBuf::from(dir);
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Runs one simulation.
///
/// # Errors
/// The first broken invariant, with the seed and the events that led to it (also when the
/// simulation itself could not run: its files could not be made).
pub fn run(config: Config) -> Result<Summary, Violation> {
    let harness = |what: String| Violation {
        seed: config.seed,
        step: 0,
        what,
        trace: Vec::new(),
        replay: config.replay(),
    };
    let dir = tempfile::Builder::new()
        .prefix("bazaar-sim-raft-")
        .tempdir_in(base_dir())
        .map_err(|e| harness(format!("cannot make a directory for the files: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| harness(format!("cannot start a runtime: {e}")))?;
    let outcome = runtime.block_on(simulate(config, dir.path().to_owned()));
    // Whatever still runs (after a violation: everything) is dropped with the runtime.
    drop(runtime);
    outcome
}

/// The fault schedule.
struct Faults {
    rng: StdRng,
    next: Instant,
    heal_at: Option<Instant>,
    down_until: Vec<(bazaar_api::ReplicaId, Instant)>,
    next_sync: Instant,
    crashes: usize,
    partitions: usize,
}

fn millis(rng: &mut StdRng, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.random_range(range))
}

impl Faults {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xFA17_5EED);
        let now = Instant::now();
        Self {
            next: now + millis(&mut rng, 50..400),
            next_sync: now,
            heal_at: None,
            down_until: Vec::new(),
            crashes: 0,
            partitions: 0,
            rng,
        }
    }

    /// Injects whatever is due now.
    async fn tick(
        &mut self,
        cluster: &mut Cluster,
        net: &Net,
        checker: &Shared,
    ) -> Result<(), String> {
        let now = Instant::now();
        if now >= self.next_sync {
            cluster.sync_liar()?;
            self.next_sync = now + millis(&mut self.rng, 20..300);
        }
        if self.heal_at.is_some_and(|at| now >= at) {
            self.heal_at = None;
            net.heal();
            checker.note("HEAL the network");
        }
        let mut still_down = Vec::new();
        for (id, until) in std::mem::take(&mut self.down_until) {
            if now >= until && cluster.can_start(id) {
                cluster.start(id, false).await?;
            } else {
                still_down.push((id, until));
            }
        }
        self.down_until = still_down;
        if now < self.next {
            return Ok(());
        }
        self.next = now + millis(&mut self.rng, 50..400);
        match self.rng.random_range(0..10) {
            0..=2 => {
                let up = cluster.up();
                if up.len() >= 2 {
                    let id = up[self.rng.random_range(0..up.len())];
                    cluster.crash(id);
                    self.crashes += 1;
                    let back = now + millis(&mut self.rng, 50..800);
                    self.down_until.push((id, back));
                }
            }
            3 if self.heal_at.is_none() => {
                let isolated = replica(self.rng.random_range(1..=REPLICAS));
                let deaf = self.rng.random_bool(0.3);
                let others: Vec<u64> = (1..=REPLICAS)
                    .map(|i| node_id(replica(i)))
                    .filter(|n| *n != node_id(isolated))
                    .collect();
                let me = node_id(isolated);
                net.cut(others.iter().map(|o| (*o, me)));
                if !deaf {
                    net.cut(others.iter().map(|o| (me, *o)));
                }
                self.partitions += 1;
                self.heal_at = Some(now + millis(&mut self.rng, 100..1500));
                checker.note(format!(
                    "PARTITION replica {isolated} cut off{}",
                    if deaf {
                        " (one way: it cannot hear)"
                    } else {
                        ""
                    }
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

async fn simulate(config: Config, dir: PathBuf) -> Result<Summary, Violation> {
    let checker = Shared::new(config.seed, config.replay());
    let harness = |checker: &Shared, what: String| {
        checker
            .lock()
            .fail(format!("the simulation could not go on: {what}"));
        checker
            .violation()
            .unwrap_or_else(|| unreachable_violation(&config))
    };
    let net = Net::new(config.seed, checker.clone());
    let liar = config.plant.map(|Plant::LyingDisk| replica(1));
    let mut cluster = Cluster::new(
        &dir,
        settings(),
        genesis(),
        net.clone(),
        checker.clone(),
        liar,
    );
    let started = Instant::now();
    for i in 1..=REPLICAS {
        cluster
            .start(replica(i), true)
            .await
            .map_err(|e| harness(&checker, e))?;
    }
    let (phase, phase_rx) = watch::channel(Phase::Faults);
    let doing = Doing::new(config.clients);
    let clients: Vec<_> = (0..config.clients)
        .map(|i| {
            let client = Client::new(
                i,
                config.seed,
                cluster.board(),
                checker.clone(),
                doing.clone(),
            );
            tokio::spawn(client.run(phase_rx.clone()))
        })
        .collect();
    let mut faults = Faults::new(config.seed);
    for step in 0..config.steps {
        tokio::time::sleep(STEP).await;
        checker.lock().step = step;
        cluster.observe();
        faults
            .tick(&mut cluster, &net, &checker)
            .await
            .map_err(|e| harness(&checker, e))?;
        checker.lock().check_holdings();
        if let Some(violation) = checker.violation() {
            return Err(violation);
        }
    }

    // Liveness: faults stop, every replica runs, every client finishes.
    net.set_faults(false);
    net.heal();
    checker.note("FAULTS STOP: the network heals and loses nothing; every replica starts");
    cluster.settle().await.map_err(|e| harness(&checker, e))?;
    for i in 1..=REPLICAS {
        cluster
            .start(replica(i), false)
            .await
            .map_err(|e| harness(&checker, e))?;
    }
    // Nobody syncs the liar's disk any more: nothing crashes now.
    let _ = phase.send(Phase::Liveness);
    let liveness_from = Instant::now();
    while !clients.iter().all(tokio::task::JoinHandle::is_finished) {
        tokio::time::sleep(STEP).await;
        cluster.observe();
        checker.lock().check_holdings();
        if let Some(violation) = checker.violation() {
            return Err(violation);
        }
        if liveness_from.elapsed() > LIVENESS_DEADLINE {
            let busy = doing.busy().join("; ");
            checker.lock().fail(format!(
                "liveness: with every fault healed and every replica up, the clients did not \
                 finish within {LIVENESS_DEADLINE:?}: {busy}"
            ));
            return Err(checker
                .violation()
                .unwrap_or_else(|| unreachable_violation(&config)));
        }
    }
    let quiet_from = Instant::now();
    while !checker.lock().converged() {
        tokio::time::sleep(STEP).await;
        cluster.observe();
        if let Some(violation) = checker.violation() {
            return Err(violation);
        }
        if quiet_from.elapsed() > QUIET_DEADLINE {
            let positions = checker.lock().applied_positions();
            checker.lock().fail(format!(
                "liveness: the replicas' files did not come to hold the same log and orders \
                 within {QUIET_DEADLINE:?} (applied up to {positions:?})"
            ));
            return Err(checker
                .violation()
                .unwrap_or_else(|| unreachable_violation(&config)));
        }
    }
    checker.note("QUIET: every file holds the same log and orders");
    checker.lock().check_everywhere();
    // Stopping every replica compares every file with what its storage reported.
    cluster.stop_all().await.map_err(|e| harness(&checker, e))?;
    if let Some(violation) = checker.violation() {
        return Err(violation);
    }
    let counts = checker.lock().counts.clone();
    Ok(Summary {
        steps: config.steps,
        simulated_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        acked: counts.acked,
        refused: counts.refused,
        restocks: counts.restocks,
        entries: counts.entries,
        crashes: faults.crashes,
        partitions: faults.partitions,
        leaderships: cluster.leader_terms.len(),
        installs: counts.installs,
        net: net.counts(),
    })
}

/// A violation for the case the checker was just told of one (it always has it).
fn unreachable_violation(config: &Config) -> Violation {
    Violation {
        seed: config.seed,
        step: 0,
        what: "a violation was recorded but lost".into(),
        trace: Vec::new(),
        replay: config.replay(),
    }
}
