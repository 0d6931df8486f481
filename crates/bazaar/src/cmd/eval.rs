//! `bazaar eval`: the latency sweep over p with the cache on and off (SPEC.md section 7).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use bazaar_client::Endpoint;
use bazaar_client::eval::{self, EvalConfig, Target, TimelineConfig};

use crate::Failure;
use crate::cmd::client::failure;

/// Flags of `bazaar eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Results (results.csv, results.json), plots (PNG and SVG) and logs go here.
    #[arg(long, env = "BAZAAR_EVAL_OUT")]
    out: PathBuf,

    /// Iterations per client for each p.
    #[arg(long, env = "BAZAAR_ITERATIONS", default_value_t = eval::ITERATIONS_DEFAULT)]
    iterations: u64,

    /// Simulated clients.
    #[arg(long, env = "BAZAAR_CLIENTS", default_value_t = bazaar_client::load::CLIENTS_DEFAULT)]
    clients: usize,

    /// Measure this running front-end instead of starting systems (only its one cache
    /// setting is measured).
    #[arg(long, env = "BAZAAR_FRONTEND")]
    frontend: Option<String>,

    /// Parent of the started systems' data directories (cache-on/, cache-off/). Default:
    /// OUT/data.
    #[arg(long, env = "BAZAAR_EVAL_DATA_DIR", conflicts_with = "frontend")]
    data_dir: Option<PathBuf>,

    /// Seed of every run.
    #[arg(long, env = "BAZAAR_SEED", default_value_t = 1)]
    seed: u64,

    /// Length of the paced run sampled for the cache timeline, e.g. 4s; 0s skips it.
    #[arg(long, env = "BAZAAR_EVAL_TIMELINE", default_value = "4s", value_parser = bazaar_service::parse_duration)]
    timeline: Duration,
}

/// Runs the sweep, prints where the results are; fails (exit 1) if any run had failed
/// requests or mismatches, or a verify failed.
pub async fn run(args: Args) -> Result<(), Failure> {
    let target = match &args.frontend {
        Some(url) => Target::Existing(Endpoint::parse(url).map_err(failure)?),
        None => Target::Local {
            exe: std::env::current_exe()
                .map_err(|e| Failure::Runtime(anyhow!("cannot find the bazaar executable: {e}")))?,
            data_dir: args
                .data_dir
                .clone()
                .unwrap_or_else(|| args.out.join("data")),
        },
    };
    let mut config = EvalConfig::new(args.out.clone(), target);
    config.clients = args.clients;
    config.iterations = args.iterations;
    config.seed = args.seed;
    config.timeline = (!args.timeline.is_zero()).then(|| TimelineConfig {
        duration: args.timeline,
        ..TimelineConfig::default()
    });
    // On Ctrl-C or SIGTERM the sweep is dropped, and with it any system it started, whose
    // processes are then killed rather than left running.
    let shutdown = crate::signals::shutdown_token();
    let report = tokio::select! {
        report = eval::run(config) => report.map_err(failure)?,
        () = shutdown.cancelled() => {
            return Err(Failure::Runtime(anyhow!("interrupted; any system eval started is stopped")));
        }
    };

    if let Some(note) = &report.existing_system {
        out!("note: {note}");
    }
    out!(
        "{:<6} {:<5} {:<12} {:>7} {:>6} {:>6} {:>9} {:>8} {:>8} {:>8} {:>10}",
        "cache",
        "p",
        "request",
        "count",
        "errors",
        "409s",
        "mean_us",
        "p50_us",
        "p90_us",
        "p99_us",
        "req/s"
    );
    for row in eval::rows(&report) {
        let s = row.summary;
        out!(
            "{:<6} {:<5.1} {:<12} {:>7} {:>6} {:>6} {:>9.1} {:>8} {:>8} {:>8} {:>10.0}",
            row.cache.as_str(),
            row.p,
            row.kind.as_str(),
            s.count,
            s.errors,
            s.rejected,
            s.mean_us,
            s.p50_us,
            s.p90_us,
            s.p99_us,
            s.throughput_per_s
        );
    }
    if let Some(t) = &report.timeline {
        out!(
            "cache timeline: {} samples over {:.1} s, {} evictions and {} invalidations counted, \
             {} entries seen evicted and {} seen invalidated",
            t.samples,
            t.duration_s,
            t.evictions,
            t.invalidations,
            t.count(bazaar_client::cache_timeline::Departure::Evicted),
            t.count(bazaar_client::cache_timeline::Departure::Invalidated)
        );
    }
    for line in &report.verify {
        out!("{line}");
    }
    out!("wrote:");
    for file in &report.files {
        out!("  {}", file.display());
    }
    for problem in &report.problems {
        out!("problem: {problem}");
    }
    if report.ok() {
        out!("eval: OK");
        Ok(())
    } else {
        out!("eval: FAILED with {} problem(s)", report.problems.len());
        Err(Failure::Check)
    }
}
