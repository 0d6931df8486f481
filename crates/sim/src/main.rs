//! `bazaar-sim`: runs the simulator for one seed, or for many seeds within a time budget.
//!
//! ```text
//! cargo run --release -p bazaar-sim -- --seed 42 --steps 20000
//! cargo run --release -p bazaar-sim -- --budget 60s --profile quorum
//! cargo run --release -p bazaar-sim -- --budget 60s --plant lying-disk   # must find it
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bazaar_sim::{Config, Plant, Profile, run};
use clap::{Parser, ValueEnum};

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
    /// Storage that reports writes durable before they are.
    LyingDisk,
}

/// A seeded deterministic simulator of the primary-backup replication core.
#[derive(Debug, Parser)]
#[command(name = "bazaar-sim")]
struct Cli {
    /// Run this seed only (and print its summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Steps of the fault phase per seed.
    #[arg(long, default_value_t = 20_000)]
    steps: u64,
    /// Run seeds from --first-seed on until this much time has passed (e.g. 60s).
    #[arg(long, value_parser = parse_seconds)]
    budget: Option<Duration>,
    /// First seed of a budgeted run.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Faults and settings.
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
    let mut config = Config::new(seed, cli.steps, profile);
    config.plant = cli.plant.map(|PlantArg::LyingDisk| Plant::LyingDisk);
    config
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(seed) = cli.seed {
        return match run(config(&cli, seed)) {
            Ok(summary) => {
                println!("seed {seed}: OK: {summary}");
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
        match run(config(&cli, seed)) {
            Ok(summary) => {
                runs += 1;
                steps += summary.steps;
                acked += summary.acked;
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
        seed - 1,
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
