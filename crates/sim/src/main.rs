//! `bazaar-sim`: runs the simulator for one seed, or for many seeds within a time budget.
//!
//! ```text
//! cargo run --release -p bazaar-sim -- --seed 42 --steps 20000
//! cargo run --release -p bazaar-sim -- --budget 60s --profile quorum
//! cargo run --release -p bazaar-sim -- --budget 60s --plant lying-disk   # must find it
//! cargo run --release -p bazaar-sim -- --mode raft --seed 42 --steps 1000
//! cargo run --release -p bazaar-sim -- --mode raft --budget 60s
//! cargo run --release -p bazaar-sim -- --mode raft --budget 60s --plant lying-disk
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bazaar_sim::{Config, Plant, Profile, Violation, raft, run};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// The primary-backup core (a pure state machine), simulated step by step.
    PrimaryBackup,
    /// Three openraft nodes with the order crate's storage, over a faulty in-memory network.
    Raft,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    /// --min-copies 2 under every fault (drops, duplicates, partitions, crashes).
    Quorum,
    /// --min-copies 1 under crashes and a lossless network.
    Lab,
    /// Both, alternating seeds.
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlantArg {
    /// Storage that reports writes durable before they are (raft: on replica 1).
    LyingDisk,
}

/// A seeded deterministic simulator of the primary-backup replication core.
#[derive(Debug, Parser)]
#[command(name = "bazaar-sim")]
struct Cli {
    /// Which replication to simulate.
    #[arg(long, value_enum, default_value = "primary-backup")]
    mode: ModeArg,
    /// Run this seed only (and print its summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Steps of the fault phase per seed (primary-backup: events, default 20000; raft: 10 ms
    /// of simulated time each, default 1000).
    #[arg(long)]
    steps: Option<u64>,
    /// Run seeds from --first-seed on until this much time has passed (e.g. 60s).
    #[arg(long, value_parser = parse_seconds)]
    budget: Option<Duration>,
    /// First seed of a budgeted run.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Faults and settings (primary-backup only).
    #[arg(long, value_enum, default_value = "both")]
    profile: ProfileArg,
    /// Plant a bug the checks must find.
    #[arg(long, value_enum)]
    plant: Option<PlantArg>,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs = text.strip_suffix('s').unwrap_or(text);
    secs.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is not a number of seconds such as 60s"))
}

fn config(cli: &Cli, seed: u64) -> Config {
    let profile = match cli.profile {
        ProfileArg::Quorum => Profile::Quorum,
        ProfileArg::Lab => Profile::Lab,
        ProfileArg::Both if seed.is_multiple_of(2) => Profile::Lab,
        ProfileArg::Both => Profile::Quorum,
    };
    let mut config = Config::new(seed, cli.steps.unwrap_or(20_000), profile);
    config.plant = cli.plant.map(|PlantArg::LyingDisk| Plant::LyingDisk);
    config
}

fn raft_config(cli: &Cli, seed: u64) -> raft::Config {
    let mut config = raft::Config::new(seed, cli.steps.unwrap_or(1_000));
    config.plant = cli.plant.map(|PlantArg::LyingDisk| raft::Plant::LyingDisk);
    config
}

/// What one seed's run reports: its summary or the violation.
fn run_seed(cli: &Cli, seed: u64) -> Result<(u64, usize, String), Violation> {
    match cli.mode {
        ModeArg::PrimaryBackup => run(config(cli, seed)).map(|s| (s.steps, s.acked, s.to_string())),
        ModeArg::Raft => {
            raft::run(raft_config(cli, seed)).map(|s| (s.steps, s.acked, s.to_string()))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(seed) = cli.seed {
        let started = Instant::now();
        return match run_seed(&cli, seed) {
            Ok((_, _, summary)) => {
                println!(
                    "seed {seed}: OK: {summary} ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                ExitCode::SUCCESS
            }
            Err(violation) => {
                println!("{violation}");
                ExitCode::FAILURE
            }
        };
    }
    let budget = cli.budget.unwrap_or(Duration::from_secs(10));
    let started = Instant::now();
    let mut seed = cli.first_seed;
    let (mut runs, mut steps, mut acked) = (0_u64, 0_u64, 0_usize);
    while started.elapsed() < budget {
        match run_seed(&cli, seed) {
            Ok((s, a, _)) => {
                runs += 1;
                steps += s;
                acked += a;
            }
            Err(violation) => {
                println!("{violation}");
                println!(
                    "found after {runs} clean seeds in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return ExitCode::FAILURE;
            }
        }
        seed += 1;
    }
    println!(
        "OK: {runs} seeds ({}..{}), {steps} steps, {acked} trades acknowledged, no invariant broken in {:.1} s",
        cli.first_seed,
        seed.saturating_sub(1),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
