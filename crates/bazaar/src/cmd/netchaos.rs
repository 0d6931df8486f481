//! `bazaar netchaos`: a seeded schedule of network faults (partitions, one-way loss, pauses,
//! kills) on test hosts under recorded load; the history is checked for linearizability.
//! Needs root, `ip netns` and nftables.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use bazaar_client::linearizable;
use bazaar_client::netchaos::{self, FaultKind, NetChaosConfig};

use crate::Failure;
use crate::cmd::client::failure;
use crate::cmd::up::Replication;

/// Flags of `bazaar netchaos`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kinds of fault to draw from, comma-separated: partition, one-way, pause, kill.
    #[arg(
        long,
        env = "BAZAAR_FAULTS",
        default_value = "partition,one-way,pause,kill"
    )]
    faults: String,

    /// Seed of the fault schedule and of the clients: the same seed gives the same schedule.
    #[arg(long, env = "BAZAAR_SEED", default_value_t = 1)]
    seed: u64,

    /// How long clients trade while faults come and go, e.g. 60s or 10m.
    #[arg(long, env = "BAZAAR_DURATION", default_value = "60s", value_parser = bazaar_service::parse_duration)]
    duration: Duration,

    /// How the order replicas agree on the log.
    #[arg(
        long,
        env = "BAZAAR_REPLICATION",
        value_enum,
        default_value = "primary-backup"
    )]
    replication: Replication,

    /// Simulated clients trading throughout (one more reads orders back).
    #[arg(long, env = "BAZAAR_CLIENTS", default_value_t = netchaos::CLIENTS_DEFAULT)]
    clients: usize,

    /// Where the databases, service logs, history.jsonl, timeline.{csv,json,png,svg} and
    /// report.json go (must not hold a system). Default: a fresh temporary directory, removed
    /// when the verdict is OK and kept (and printed) otherwise.
    #[arg(long, env = "BAZAAR_NETCHAOS_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// How long the linearizability search may take before undecided objects are reported.
    #[arg(long, default_value = "120s", value_parser = bazaar_service::parse_duration)]
    check_budget: Duration,
}

/// Runs the experiment and prints what happened; fails (exit 1) on any anomaly or loss.
pub async fn run(args: Args) -> Result<(), Failure> {
    let faults = FaultKind::parse_list(&args.faults).map_err(|e| Failure::Config(anyhow!(e)))?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Runtime(anyhow!("cannot find the bazaar executable: {e}")))?;
    let dir = super::ExperimentDir::new(args.data_dir.as_deref(), "netchaos")?;
    let data_dir = dir.path.clone();
    let config = NetChaosConfig {
        exe,
        data_dir: data_dir.clone(),
        replication: args.replication.as_str().into(),
        faults,
        seed: args.seed,
        duration: args.duration,
        clients: args.clients,
        check_budget: if args.check_budget.is_zero() {
            linearizable::BUDGET_DEFAULT
        } else {
            args.check_budget
        },
    };
    // The first Ctrl-C or SIGTERM ends the run early; the test hosts are removed either way.
    let shutdown = crate::signals::shutdown_token();
    let report = tokio::task::spawn_blocking(move || netchaos::run(config, shutdown))
        .await
        .map_err(|e| Failure::Runtime(anyhow!("the experiment failed: {e}")))?
        .map_err(failure)?;
    out!("{report}");
    let path = data_dir.join("report.json");
    let text = serde_json::to_string_pretty(&report).expect("reports always serialise");
    std::fs::write(&path, text + "\n")
        .map_err(|e| Failure::Runtime(anyhow!("cannot write {}: {e}", path.display())))?;
    dir.finish(report.ok())
}
