//! `bazaar`: one binary, one subcommand per role (SPEC.md section 1). It parses flags, sets up
//! logging and signals, binds listeners and calls into the service crates; nothing else.

#[macro_use]
mod logging;
mod cmd;
mod crash;
mod signals;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

/// Stock Bazaar: a replicated stock-trading system.
#[derive(Debug, Parser)]
#[command(name = "bazaar", version, about, long_about = None)]
struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "BAZAAR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: logging::Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a complete local system (catalogs, order replicas, front-end) as child processes.
    Up(cmd::up::Args),
    /// Run the catalog service.
    Catalog(bazaar_catalog::Config),
    /// Run one order replica.
    Order(bazaar_order::Config),
    /// Run the front-end (the public REST API).
    Frontend(bazaar_frontend::Config),
    /// Check that replica logs are identical and gap-free and every catalog is a view of the log.
    Verify(cmd::verify::Args),
    /// Print the cluster table: each service's health, role, epoch, log position, last order and lag.
    Status(cmd::status::Args),
    /// Print one replica's order log from its database: each entry's index, epoch (raft:
    /// term), command and outcome.
    Log(cmd::log::Args),
    /// Load generator: K clients look up, trade and read back every order; reports latency.
    Client(cmd::client::Args),
    /// Evaluation sweep: latency vs trade probability, cache on and off, with CSV and plots.
    Eval(cmd::eval::Args),
    /// Kill and restart order replicas and catalogs under load; check no acknowledged order was lost.
    Chaos(cmd::chaos::Args),
    /// Network faults (partitions, one-way loss, pauses, kills) on test hosts under recorded
    /// load; check the history for linearizability (needs root and `ip netns`).
    Netchaos(cmd::netchaos::Args),
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad flags or configuration: exit 2.
    Config(anyhow::Error),
    /// A check found differences: exit 1.
    Check,
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = Arc::new(logging::init(cli.log_format));
    crash::install(Some(Arc::clone(&logs)));
    // Every TLS endpoint here is configured with ring explicitly; installing it as the
    // process default too keeps any client built elsewhere from panicking for want of one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            err_out!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => cmd::up::run(args).await,
            Command::Catalog(config) => cmd::serve::catalog(config).await,
            Command::Order(config) => cmd::serve::order(config).await,
            Command::Frontend(config) => cmd::serve::frontend(config).await,
            Command::Verify(args) => cmd::verify::run(&args),
            Command::Status(args) => cmd::status::run(args).await,
            Command::Log(args) => cmd::log::run(&args),
            Command::Client(args) => cmd::client::run(args).await,
            Command::Eval(args) => cmd::eval::run(args).await,
            Command::Chaos(args) => cmd::chaos::run(args).await,
            Command::Netchaos(args) => cmd::netchaos::run(args).await,
        }
    });
    // Background tasks that ignore shutdown must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // The last log lines come before the verdict.
    logs.flush(logging::FLUSH_DEADLINE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            err_out!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Check) => ExitCode::FAILURE,
        Err(Failure::Runtime(e)) => {
            err_out!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
