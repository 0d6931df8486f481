//! The evaluation sweep behind `bazaar eval` (SPEC.md section 7): latency per request type
//! against the trade probability p, with the front-end's cache on and off, written as a CSV and
//! plots, plus a picture of cache replacement over time.
//!
//! ```text
//!   for cache in [on, off]:            (a fresh local system each, or one existing system)
//!       start system ─► wait for the cache ─► warm-up ─► for p in 0, .2, .4, .6, .8: load::run
//!       cache on only: paced run while sampling GET /cache ─► timeline
//!       stop system ─► verify its databases
//!   results.csv, results.json, latency_<request>.{png,svg}, cache_timeline.{png,svg}
//! ```
//!
//! The timeline comes from a separate, paced run: at full speed the cache changes hundreds of
//! times between two 20 ms samples and the picture would be a blur. Its numbers are not in the
//! CSV.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bazaar_api::client::{FrontendClient, Http};
use bazaar_cluster::{Cluster, ClusterSpec, LogTarget};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cache_timeline::{self, CacheSample, CacheTimeline};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::load::{self, LoadConfig, Stop};
use crate::plot::{self, LatencyPoint, LatencySeries};
use crate::report::LoadReport;
use crate::stats::{LatencySummary, RequestKind};

/// The trade probabilities swept.
pub const TRADE_PROBABILITIES: [f64; 5] = [0.0, 0.2, 0.4, 0.6, 0.8];

/// Iterations per client and run when none is given.
pub const ITERATIONS_DEFAULT: u64 = 1000;

/// Iterations per client of the unrecorded warm-up run before each sweep (connections, the
/// catalog's page cache, the front-end's first leader contact).
pub const WARM_UP_ITERATIONS: u64 = 20;

/// How long to wait for a fresh front-end's cache to be enabled by its invalidation feed.
pub const CACHE_READY_DEADLINE: Duration = Duration::from_secs(15);

/// Pause between polls of `GET /cache` while waiting for it.
const CACHE_READY_POLL: Duration = Duration::from_millis(50);

/// Timeout of the eval's own `GET /cache` calls.
const CACHE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The paced run that the cache timeline samples.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineConfig {
    /// How long it runs.
    pub duration: Duration,
    /// Pause between `GET /cache` samples.
    pub sample_interval: Duration,
    /// Pause each client takes after each iteration.
    pub think_time: Duration,
    /// Probability of a trade after each lookup.
    pub trade_probability: f64,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(4),
            sample_interval: cache_timeline::SAMPLE_INTERVAL_DEFAULT,
            // Five clients at one iteration per 60 ms change the cache about once per sample.
            think_time: Duration::from_millis(60),
            trade_probability: 0.4,
        }
    }
}

/// Which system the sweep measures.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start a local system twice, cache on then off, with this `bazaar` executable. Each run
    /// keeps its databases in `data_dir/cache-on` or `data_dir/cache-off`.
    Local {
        /// The `bazaar` executable.
        exe: PathBuf,
        /// Parent of the runs' data directories.
        data_dir: PathBuf,
    },
    /// Measure a running system as it is configured (one cache setting only).
    Existing(Endpoint),
}

/// What the sweep does.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Results, plots and logs go here.
    pub out_dir: PathBuf,
    /// The system.
    pub target: Target,
    /// Simulated clients per run.
    pub clients: usize,
    /// Iterations per client per run.
    pub iterations: u64,
    /// Trade probabilities, in order.
    pub probabilities: Vec<f64>,
    /// Seeds every run (the same seed for each p, so runs differ only by p).
    pub seed: u64,
    /// Bound on each request.
    pub request_timeout: Duration,
    /// The cache timeline's run; `None` to skip it.
    pub timeline: Option<TimelineConfig>,
}

impl EvalConfig {
    /// The defaults of `bazaar eval`.
    #[must_use]
    pub fn new(out_dir: PathBuf, target: Target) -> Self {
        Self {
            out_dir,
            target,
            clients: load::CLIENTS_DEFAULT,
            iterations: ITERATIONS_DEFAULT,
            probabilities: TRADE_PROBABILITIES.to_vec(),
            seed: 1,
            request_timeout: crate::connection::REQUEST_TIMEOUT_DEFAULT,
            timeline: Some(TimelineConfig::default()),
        }
    }

    fn load_config(&self, frontend: &Endpoint, p: f64, iterations: u64) -> LoadConfig {
        LoadConfig {
            clients: self.clients,
            stop: Stop::Iterations(iterations),
            trade_probability: p,
            seed: self.seed,
            request_timeout: self.request_timeout,
            ..LoadConfig::new(frontend.clone())
        }
    }

    /// Checks the settings before anything starts.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad flag.
    pub fn validate(&self) -> Result<()> {
        let endpoint = Endpoint::parse("http://127.0.0.1:1").expect("a constant URL parses");
        for &p in &self.probabilities {
            self.load_config(&endpoint, p, self.iterations).validate()?;
        }
        if self.probabilities.is_empty() {
            return Err(Error::Config("no trade probabilities to sweep".into()));
        }
        if let Some(t) = &self.timeline
            && (t.duration.is_zero() || t.sample_interval.is_zero())
        {
            return Err(Error::Config(
                "the cache timeline needs a duration and a sample interval above zero".into(),
            ));
        }
        Ok(())
    }
}

/// Cache on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSetting {
    /// The front-end caches lookups.
    On,
    /// Every lookup goes to the catalog.
    Off,
}

impl CacheSetting {
    /// `on` or `off`, as in the CSV.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// One load run of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRun {
    /// Cache setting.
    pub cache: CacheSetting,
    /// Trade probability.
    pub p: f64,
    /// What it measured.
    pub report: LoadReport,
}

/// What the sweep produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    /// Every run, cache setting by p.
    pub runs: Vec<SweepRun>,
    /// The cache timeline, if one was drawn.
    pub timeline: Option<CacheTimeline>,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// What `verify` said about each local system's databases afterwards.
    pub verify: Vec<String>,
    /// Things that went wrong without stopping the sweep: failed requests, mismatches, a
    /// failed verify, a cache that never came up.
    pub problems: Vec<String>,
    /// Set when an existing system was measured: only its one cache setting.
    pub existing_system: Option<String>,
}

impl EvalReport {
    /// True when no run failed and every verify passed.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs the sweep and writes results and plots to `config.out_dir`.
///
/// # Errors
/// Bad settings, an unwritable output directory, a system that would not start, or a
/// front-end that could not be reached at the start of a run. Failed requests and mismatches
/// do not stop the sweep; they are listed in [`EvalReport::problems`].
pub async fn run(config: EvalConfig) -> Result<EvalReport> {
    config.validate()?;
    create_dir(&config.out_dir)?;
    let mut report = EvalReport::default();
    match &config.target {
        Target::Local { exe, data_dir } => {
            for setting in [CacheSetting::On, CacheSetting::Off] {
                measure_local(&config, exe, data_dir, setting, &mut report).await?;
            }
        }
        Target::Existing(frontend) => {
            let view = cache_client(frontend)
                .cache()
                .await
                .map_err(|e| Error::Unreachable {
                    url: format!("{frontend}/cache"),
                    detail: e.to_string(),
                })?;
            let setting = if view.capacity > 0 {
                CacheSetting::On
            } else {
                CacheSetting::Off
            };
            report.existing_system = Some(format!(
                "measured the existing system at {frontend} only, with its cache {} \
                 (as GET /cache reports); started none, so there is no cache {} comparison",
                setting.as_str(),
                match setting {
                    CacheSetting::On => "off",
                    CacheSetting::Off => "on",
                }
            ));
            measure(&config, frontend, setting, &mut report).await?;
        }
    }
    write_outputs(&config, &mut report)?;
    Ok(report)
}

/// Starts a local system with the cache `setting`, sweeps it, stops it and verifies its data.
async fn measure_local(
    config: &EvalConfig,
    exe: &Path,
    data_dir: &Path,
    setting: CacheSetting,
    report: &mut EvalReport,
) -> Result<()> {
    let name = format!("cache-{}", setting.as_str());
    let run_dir = data_dir.join(&name);
    prepare_data_dir(&run_dir)?;
    let mut spec = ClusterSpec::new(exe.to_owned(), run_dir.clone(), 0);
    spec.no_cache = setting == CacheSetting::Off;
    spec.logs = LogTarget::Dir(config.out_dir.join("logs").join(&name));
    tracing::info!(
        cache = setting.as_str(),
        data_dir = %run_dir.display(),
        "starting a local system"
    );
    let cluster = Cluster::start(spec).await?;
    let measured = match Endpoint::parse(&cluster.frontend_url()) {
        Ok(frontend) => measure(config, &frontend, setting, report).await,
        Err(e) => Err(e),
    };
    cluster.shutdown().await;
    measured?;
    match crate::verify::verify(&run_dir) {
        Ok(verdict) => {
            let text = verdict.to_string();
            let last = text.lines().last().unwrap_or_default().to_owned();
            if !verdict.ok() {
                report
                    .problems
                    .push(format!("cache {}: {}", setting.as_str(), text));
            }
            report
                .verify
                .push(format!("cache {}: {last}", setting.as_str()));
        }
        Err(e) => report.problems.push(format!(
            "cache {}: verify could not run: {e}",
            setting.as_str()
        )),
    }
    Ok(())
}

/// Sweeps p against one front-end, then samples the cache timeline when the cache is on.
async fn measure(
    config: &EvalConfig,
    frontend: &Endpoint,
    setting: CacheSetting,
    report: &mut EvalReport,
) -> Result<()> {
    if setting == CacheSetting::On && !cache_ready(frontend).await {
        report.problems.push(format!(
            "the cache at {frontend} was not enabled within {CACHE_READY_DEADLINE:?}; \
             'cache on' numbers may be uncached"
        ));
    }
    // Unrecorded: the first requests after a start pay for connections and cold caches.
    load::run(config.load_config(frontend, 0.0, WARM_UP_ITERATIONS)).await?;
    for &p in &config.probabilities {
        let run = load::run(config.load_config(frontend, p, config.iterations)).await?;
        tracing::info!(
            cache = setting.as_str(),
            p,
            lookups_per_s = run.lookup.throughput_per_s.round(),
            lookup_p50_us = run.lookup.p50_us,
            trade_p50_us = run.trade.p50_us,
            ok = run.ok(),
            "run done"
        );
        if !run.ok() {
            report.problems.push(format!(
                "cache {}, p = {p}: {} mismatches, {} failed requests{}",
                setting.as_str(),
                run.mismatches,
                run.errors(),
                run.mismatch_samples
                    .iter()
                    .chain(&run.error_samples)
                    .take(3)
                    .map(|s| format!("; {s}"))
                    .collect::<String>()
            ));
        }
        report.runs.push(SweepRun {
            cache: setting,
            p,
            report: run,
        });
    }
    if setting == CacheSetting::On
        && let Some(timeline) = &config.timeline
    {
        report.timeline = Some(sample_timeline(config, frontend, timeline).await?);
    }
    Ok(())
}

fn cache_client(frontend: &Endpoint) -> FrontendClient {
    FrontendClient::new(Http::new(CACHE_CALL_TIMEOUT), frontend.to_string())
}

/// Waits until the front-end's invalidation feed has enabled its cache.
async fn cache_ready(frontend: &Endpoint) -> bool {
    let client = cache_client(frontend);
    let deadline = tokio::time::Instant::now() + CACHE_READY_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        if client.cache().await.is_ok_and(|view| view.enabled) {
            return true;
        }
        tokio::time::sleep(CACHE_READY_POLL).await;
    }
    false
}

/// A paced run while a sampler reads `GET /cache`.
async fn sample_timeline(
    config: &EvalConfig,
    frontend: &Endpoint,
    timeline: &TimelineConfig,
) -> Result<CacheTimeline> {
    let client = cache_client(frontend);
    let stocks = client
        .http()
        .get::<Vec<bazaar_api::Stock>>(&format!("{frontend}/stocks"))
        .await
        .map(|stocks| stocks.into_iter().map(|s| s.name).collect::<Vec<_>>())
        .unwrap_or_default();
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(cache_timeline::sample(
        client,
        timeline.sample_interval,
        stop.clone(),
    ));
    let load = LoadConfig {
        stop: Stop::Duration(timeline.duration),
        think_time: timeline.think_time,
        ..config.load_config(frontend, timeline.trade_probability, 1)
    };
    let run = load::run(load).await;
    stop.cancel();
    let samples: Vec<CacheSample> = sampler.await.map_err(|e| Error::Task(e.to_string()))?;
    let run = run?;
    tracing::info!(
        samples = samples.len(),
        lookups = run.lookup.count,
        trades = run.trade.count,
        "cache timeline sampled"
    );
    Ok(CacheTimeline::from_samples(&samples, &stocks))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Makes `dir` ready for a fresh system: created if missing, emptied if an earlier eval left a
/// system there, refused if it holds anything else.
fn prepare_data_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(std::result::Result::ok)
            .collect();
        if !entries.is_empty() {
            if !dir.join("cluster.json").is_file() {
                return Err(Error::Config(format!(
                    "--data-dir: {} is not empty and was not made by an earlier eval; \
                     choose another directory",
                    dir.display()
                )));
            }
            tracing::info!(dir = %dir.display(), "removing the previous eval's system");
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    create_dir(dir)
}

/// One CSV row: cache setting, p and request type with its summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Cache setting.
    pub cache: CacheSetting,
    /// Trade probability.
    pub p: f64,
    /// Request type.
    pub kind: RequestKind,
    /// Its numbers.
    pub summary: LatencySummary,
}

/// Every row of `results.csv`, cache setting by p by request type.
#[must_use]
pub fn rows(report: &EvalReport) -> Vec<Row> {
    report
        .runs
        .iter()
        .flat_map(|run| {
            RequestKind::ALL.map(|kind| Row {
                cache: run.cache,
                p: run.p,
                kind,
                summary: *run.report.summary(kind),
            })
        })
        .collect()
}

/// Header of `results.csv`.
pub const CSV_HEADER: &str =
    "cache,p,request,count,errors,rejected,mean_us,p50_us,p90_us,p99_us,max_us";

/// `results.csv`: latency fields are empty where no request of the type was sent (trades and
/// order queries at p = 0).
#[must_use]
pub fn csv(rows: &[Row]) -> String {
    let mut text = format!("{CSV_HEADER}\n");
    for row in rows {
        let s = &row.summary;
        let _ = write!(
            text,
            "{},{},{},{},{},{},",
            row.cache.as_str(),
            format_p(row.p),
            row.kind,
            s.count,
            s.errors,
            s.rejected
        );
        if s.count > 0 {
            let _ = writeln!(
                text,
                "{:.1},{},{},{},{}",
                s.mean_us, s.p50_us, s.p90_us, s.p99_us, s.max_us
            );
        } else {
            text.push_str(",,,,\n");
        }
    }
    text
}

/// `0.2` as `0.2`, `0` as `0.0`: always a decimal point, never rounded.
fn format_p(p: f64) -> String {
    let text = p.to_string();
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

fn write_file(path: &Path, contents: &[u8], report: &mut EvalReport) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io(path, e))?;
    report.files.push(path.to_owned());
    Ok(())
}

/// Writes the CSV, the JSON with every run, and the plots.
fn write_outputs(config: &EvalConfig, report: &mut EvalReport) -> Result<()> {
    let out = &config.out_dir;
    let rows = rows(report);
    write_file(&out.join("results.csv"), csv(&rows).as_bytes(), report)?;
    let json = serde_json::to_vec_pretty(&*report).map_err(|e| Error::Io {
        path: out.join("results.json").display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_file(&out.join("results.json"), &json, report)?;

    for kind in RequestKind::ALL {
        let series: Vec<LatencySeries> = [CacheSetting::On, CacheSetting::Off]
            .into_iter()
            .filter(|&c| rows.iter().any(|r| r.cache == c))
            .map(|cache| LatencySeries {
                label: format!("cache {}", cache.as_str()),
                points: rows
                    .iter()
                    .filter(|r| r.cache == cache && r.kind == kind && r.summary.count > 0)
                    .map(|r| LatencyPoint {
                        p: r.p,
                        mean_us: r.summary.mean_us,
                        p50_us: r.summary.p50_us as f64,
                        p99_us: r.summary.p99_us as f64,
                    })
                    .collect(),
            })
            .collect();
        let title = format!(
            "{}: {} clients x {} iterations",
            kind.title(),
            config.clients,
            config.iterations
        );
        let files = plot::latency_figure(
            &out.join(format!("latency_{}", kind.as_str())),
            &title,
            &series,
        )?;
        report.files.extend(files);
    }

    if let Some(timeline) = report.timeline.clone() {
        let mut residency_csv = String::from("stock,from_s,to_s\n");
        for r in &timeline.residencies {
            let _ = writeln!(
                residency_csv,
                "{},{:.3},{:.3}",
                timeline.stocks[r.stock], r.from_s, r.to_s
            );
        }
        write_file(
            &out.join("cache_residency.csv"),
            residency_csv.as_bytes(),
            report,
        )?;
        let title = format!(
            "Cache contents over time (capacity {}, {} hits, {} misses)",
            timeline.capacity, timeline.hits, timeline.misses
        );
        let files = plot::cache_timeline_figure(&out.join("cache_timeline"), &title, &timeline)?;
        report.files.extend(files);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(count: u64) -> LatencySummary {
        LatencySummary {
            count,
            p50_us: 50,
            p99_us: 99,
            mean_us: 60.0,
            ..LatencySummary::default()
        }
    }

    #[test]
    fn csv_has_a_row_per_run_and_request_type_and_blanks_for_no_data() {
        let report = EvalReport {
            runs: [CacheSetting::On, CacheSetting::Off]
                .into_iter()
                .flat_map(|cache| {
                    [0.0, 0.2].map(|p| SweepRun {
                        cache,
                        p,
                        report: LoadReport {
                            lookup: summary(10),
                            trade: summary(if p > 0.0 { 2 } else { 0 }),
                            order_query: summary(if p > 0.0 { 2 } else { 0 }),
                            ..LoadReport::default()
                        },
                    })
                })
                .collect(),
            ..EvalReport::default()
        };
        let text = csv(&rows(&report));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 1 + 2 * 2 * 3);
        assert_eq!(lines[1], "on,0.0,lookup,10,0,0,60.0,50,0,99,0");
        assert_eq!(lines[2], "on,0.0,trade,0,0,0,,,,,");
        assert!(lines[12].starts_with("off,0.2,order_query,2,"));
        for line in &lines {
            assert_eq!(line.split(',').count(), 11, "{line}");
        }
    }

    #[test]
    fn a_data_dir_with_foreign_files_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run_dir = dir.path().join("cache-on");
        prepare_data_dir(&run_dir).expect("created");
        std::fs::write(run_dir.join("precious.txt"), "keep me").expect("write");
        let err = prepare_data_dir(&run_dir).expect_err("not ours");
        assert!(err.is_config(), "{err}");
        assert!(run_dir.join("precious.txt").exists());
        std::fs::write(run_dir.join("cluster.json"), "{}").expect("write");
        prepare_data_dir(&run_dir).expect("an earlier eval's system is replaced");
        assert!(!run_dir.join("precious.txt").exists());
    }
}
