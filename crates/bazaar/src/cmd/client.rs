//! `bazaar client`: the load generator that verifies every order (SPEC.md section 7).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use bazaar_client::history::{self, Recorder};
use bazaar_client::load::{self, LoadConfig, Stop};
use bazaar_client::{Endpoint, Error};

use crate::Failure;

/// Flags of `bazaar client`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the front-end: `http://` or `https://`.
    #[arg(long, env = "BAZAAR_FRONTEND", default_value = "http://127.0.0.1:8080")]
    frontend: String,

    /// The certificate authority (PEM) an `https://` front-end's certificate must come from,
    /// e.g. `<data-dir>/tls/ca.pem` after `bazaar up --tls`.
    #[arg(long = "tls-ca", env = "BAZAAR_CLIENT_TLS_CA")]
    tls_ca: Option<PathBuf>,

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

    /// Also record every operation (invocation and completion time, request, outcome) and
    /// write the history to this file as JSON lines.
    #[arg(long, env = "BAZAAR_HISTORY")]
    history: Option<PathBuf>,

    /// Print every request and reply to stderr, one line each.
    #[arg(long, short)]
    verbose: bool,

    /// Fraction of iterations that also send one invalid request (an unknown stock, a bad
    /// trade type, a negative quantity, an unknown order), each checked against its documented
    /// error; 0 to 1.
    #[arg(long, env = "BAZAAR_BAD_REQUESTS", default_value_t = 0.0)]
    bad_requests: f64,
}

/// Runs the load, prints the table; fails (exit 1) on any mismatch or failed request.
pub async fn run(args: Args) -> Result<(), Failure> {
    let mut frontend = Endpoint::parse(&args.frontend).map_err(failure)?;
    if let Some(path) = &args.tls_ca {
        let pem = std::fs::read(path).map_err(|e| {
            Failure::Config(anyhow!("--tls-ca {}: cannot read it: {e}", path.display()))
        })?;
        let auth = bazaar_api::auth::ClientAuth::none()
            .trusting_ca_pem(&pem)
            .map_err(|e| Failure::Config(anyhow!("--tls-ca {}: {e}", path.display())))?;
        frontend = frontend.trusting(&auth);
    }
    let mut config = LoadConfig::new(frontend);
    config.clients = args.clients;
    config.stop = args
        .duration
        .map_or(Stop::Iterations(args.iterations), Stop::Duration);
    config.trade_probability = args.p;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config.request_timeout = args.timeout;
    config.progress = std::io::stderr().is_terminal() && !args.verbose;
    config.verbose = args.verbose;
    config.bad_requests = args.bad_requests;
    let recorder = args.history.as_ref().map(|_| Recorder::new());
    config.history.clone_from(&recorder);
    let report = load::run(config).await.map_err(failure)?;
    super::print_out(&format!("{report}\n")).map_err(Failure::Runtime)?;
    if let (Some(path), Some(recorder)) = (&args.history, &recorder) {
        history::write_jsonl(&recorder.ops(), path).map_err(failure)?;
    }
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
