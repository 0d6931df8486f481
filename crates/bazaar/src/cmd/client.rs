//! `bazaar client`: the load generator that verifies every order (SPEC.md section 7).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use bazaar_client::load::{self, LoadConfig, Stop};
use bazaar_client::{Endpoint, Error};

use crate::Failure;

/// Flags of `bazaar client`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the front-end.
    #[arg(long, env = "BAZAAR_FRONTEND", default_value = "http://127.0.0.1:8080")]
    frontend: String,

    /// Simulated clients, each with its own keep-alive connection.
    #[arg(long, env = "BAZAAR_CLIENTS", default_value_t = load::CLIENTS_DEFAULT)]
    clients: usize,

    /// Iterations per client (a lookup, then maybe a trade).
    #[arg(long, env = "BAZAAR_ITERATIONS", default_value_t = load::ITERATIONS_DEFAULT)]
    iterations: u64,

    /// Run for this long instead of a number of iterations, e.g. 10s.
    #[arg(long, env = "BAZAAR_DURATION", value_parser = bazaar_service::parse_duration)]
    duration: Option<Duration>,

    /// Probability of a trade after each lookup, 0 to 1.
    #[arg(long, env = "BAZAAR_P", default_value_t = load::TRADE_PROBABILITY_DEFAULT)]
    p: f64,

    /// Seed for repeatable requests (default: random, printed in the report).
    #[arg(long, env = "BAZAAR_SEED")]
    seed: Option<u64>,

    /// Also write the report as JSON to this file.
    #[arg(long, env = "BAZAAR_JSON")]
    json: Option<PathBuf>,

    /// Bound on each request, e.g. 15s.
    #[arg(long, env = "BAZAAR_TIMEOUT", default_value = "15s", value_parser = bazaar_service::parse_duration)]
    timeout: Duration,
}

/// Runs the load, prints the table; fails (exit 1) on any mismatch or failed request.
pub async fn run(args: Args) -> Result<(), Failure> {
    let mut config = LoadConfig::new(Endpoint::parse(&args.frontend).map_err(failure)?);
    config.clients = args.clients;
    config.stop = args
        .duration
        .map_or(Stop::Iterations(args.iterations), Stop::Duration);
    config.trade_probability = args.p;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config.request_timeout = args.timeout;
    config.progress = std::io::stderr().is_terminal();
    let report = load::run(config).await.map_err(failure)?;
    out!("{report}");
    if let Some(path) = &args.json {
        report.write_json(path).map_err(failure)?;
    }
    if report.ok() {
        Ok(())
    } else {
        Err(Failure::Check)
    }
}

/// Settings errors exit 2, everything else 1.
pub fn failure(e: Error) -> Failure {
    if e.is_config() {
        Failure::Config(anyhow!(e))
    } else {
        Failure::Runtime(anyhow!(e))
    }
}
