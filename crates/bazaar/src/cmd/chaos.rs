//! `bazaar chaos`: kills order replicas under load and checks that nothing was lost.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use bazaar_client::chaos::{self, ChaosConfig};

use crate::Failure;
use crate::cmd::client::failure;
use crate::cmd::up::Replication;

/// Flags of `bazaar chaos`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rounds of kill and restart.
    #[arg(long, env = "BAZAAR_CHAOS_ROUNDS", default_value_t = chaos::ROUNDS_DEFAULT)]
    rounds: u32,

    /// Simulated clients trading throughout.
    #[arg(long, env = "BAZAAR_CLIENTS", default_value_t = bazaar_client::load::CLIENTS_DEFAULT)]
    clients: usize,

    /// How long a killed replica stays down, e.g. 1s.
    #[arg(long, env = "BAZAAR_CHAOS_DOWN", default_value = "1s", value_parser = bazaar_service::parse_duration)]
    down: Duration,

    /// Pause after each restart, e.g. 1s.
    #[arg(long, env = "BAZAAR_CHAOS_SETTLE", default_value = "1s", value_parser = bazaar_service::parse_duration)]
    settle: Duration,

    /// How the order replicas agree on the log.
    #[arg(
        long,
        env = "BAZAAR_REPLICATION",
        value_enum,
        default_value = "primary-backup"
    )]
    replication: Replication,

    /// Data directory of the system chaos starts (kept afterwards). Default: a fresh temporary
    /// directory, removed when the verdict is OK and kept (and printed) otherwise.
    #[arg(long, env = "BAZAAR_CHAOS_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Seed of the victims' choice and of the clients.
    #[arg(long, env = "BAZAAR_SEED", default_value_t = 1)]
    seed: u64,

    /// Also write the report as JSON to this file.
    #[arg(long, env = "BAZAAR_CHAOS_JSON")]
    json: Option<PathBuf>,

    /// Negative control: in the last round, silently corrupt one order in a stopped follower's
    /// database; the final verification must catch it (the run then fails).
    #[arg(long)]
    sabotage: bool,
}

/// Runs the experiment and prints the report; fails (exit 1) on any loss or difference.
pub async fn run(args: Args) -> Result<(), Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Runtime(anyhow!("cannot find the bazaar executable: {e}")))?;
    let dir = super::ExperimentDir::new(args.data_dir.as_deref(), "chaos")?;
    let data_dir = dir.path.clone();
    let config = ChaosConfig {
        exe,
        data_dir: data_dir.clone(),
        rounds: args.rounds,
        clients: args.clients,
        down: args.down,
        settle: args.settle,
        replication: args.replication.as_str().into(),
        seed: args.seed,
        sabotage: args.sabotage,
    };
    // On Ctrl-C or SIGTERM the experiment is dropped, and with it the system it started.
    let shutdown = crate::signals::shutdown_token();
    let report = tokio::select! {
        report = chaos::run(config) => report.map_err(failure)?,
        () = shutdown.cancelled() => {
            return Err(Failure::Runtime(anyhow!("interrupted; the system chaos started is stopped")));
        }
    };
    out!("{report}");
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("reports always serialise");
        std::fs::write(path, text + "\n")
            .map_err(|e| Failure::Runtime(anyhow!("cannot write {}: {e}", path.display())))?;
    }
    dir.finish(report.ok())
}
