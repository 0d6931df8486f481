//! `bazaar netchaos`: network faults on test hosts under verifying load, with every client
//! operation recorded and checked for linearizability (issue 11).
//!
//! ```text
//! lab: switch + hosts catalog-1..2, order-1..3, frontend, client (crate bazaar-netlab)
//!   start every service in its host (the exact ClusterSpec command lines)
//!   client host: K verifying clients + one order reader, every operation recorded
//!   seeded schedule: partition / one-way / pause / kill, one at a time, each healed
//!   ─► load ends (every acknowledged order read back) ─► quiet ─► stop services
//!   ─► history: linearizable per stock and per order number?
//!   ─► every acknowledged order in every replica's log?  verify (logs, catalog, totals)
//!   ─► timeline (CSV, JSON, figure) and the verdict
//! ```
//!
//! The clients' host is a management network as well: faults are never applied to it, so the
//! driver can always see every service (to find the leader, to wait for a restart).
//! Everything runs on one thread's runtime inside the clients' host (see
//! [`bazaar_netlab::spawn_in`]); the lab is removed when the run ends, fails, or is cancelled.
//!
//! # Layout
//! - [`schedule`] — the seeded fault schedule (pure).
//! - [`timeline`] — what clients saw over time, per bucket and per fault.

pub mod schedule;
pub mod timeline;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bazaar_api::client::Http;
use bazaar_cluster::{ClusterFile, ClusterSpec, Role, ServiceSpec};
use bazaar_netlab::{Lab, Services};
use hyper::Uri;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, REQUEST_TIMEOUT_DEFAULT};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::history::{self, Op, Outcome, Recorder};
use crate::linearizable;
use crate::load::{self, LiveCounters, LoadConfig, Stop};
use crate::report::LoadReport;
use crate::verify;
pub use schedule::{Fault, FaultKind, Pick, Planned};
use timeline::{ClientView, FaultSpan};

/// The lab's hosts: one per service, and the clients'.
pub const HOSTS: [&str; 7] = [
    "catalog-1",
    "catalog-2",
    "order-1",
    "order-2",
    "order-3",
    "frontend",
    "client",
];

/// The host the clients and the driver live on; faults never touch it.
pub const CLIENT_HOST: &str = "client";

/// Every host has its own addresses, so every service can use the spec's standard ports.
const BASE_PORT: u16 = 8080;

/// Simulated clients when none is given.
pub const CLIENTS_DEFAULT: usize = 5;

/// Run length when none is given.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(60);

/// Shortest run: a warm-up, one fault and a tail.
pub const DURATION_MIN: Duration = Duration::from_secs(10);

/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(6 * 3600);

/// Share of iterations that trade.
const TRADE_PROBABILITY: f64 = 0.5;

/// How long a service may take to serve after it is started.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// How long the replicas may take to agree after the last fault, before verification.
const QUIET_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between the order reader's queries.
const READER_PAUSE: Duration = Duration::from_millis(20);

/// Pause between polls.
const POLL: Duration = Duration::from_millis(50);

/// How long stopping the services may take before they are killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// What a run does.
#[derive(Debug, Clone)]
pub struct NetChaosConfig {
    /// The `bazaar` executable the services run.
    pub exe: PathBuf,
    /// Databases, logs, the history and the timeline go here (created; must be fresh).
    pub data_dir: PathBuf,
    /// `primary-backup` or `raft`.
    pub replication: String,
    /// Which kinds of fault the schedule draws from.
    pub faults: Vec<FaultKind>,
    /// Seeds the schedule and the clients.
    pub seed: u64,
    /// How long clients trade.
    pub duration: Duration,
    /// Simulated clients.
    pub clients: usize,
    /// How long the linearizability search may take.
    pub check_budget: Duration,
}

impl NetChaosConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag.
    pub fn validate(&self) -> Result<()> {
        if !(DURATION_MIN..=DURATION_MAX).contains(&self.duration) {
            return Err(Error::Config(format!(
                "--duration {:?} must be from {DURATION_MIN:?} to {DURATION_MAX:?}",
                self.duration
            )));
        }
        if !(1..=load::CLIENTS_MAX).contains(&self.clients) {
            return Err(Error::Config(format!(
                "--clients {} must be from 1 to {}",
                self.clients,
                load::CLIENTS_MAX
            )));
        }
        if !matches!(self.replication.as_str(), "primary-backup" | "raft") {
            return Err(Error::Config(format!(
                "--replication {:?} must be primary-backup or raft",
                self.replication
            )));
        }
        if self.faults.is_empty() {
            return Err(Error::Config("--faults must name at least one kind".into()));
        }
        if self.check_budget.is_zero() {
            return Err(Error::Config(
                "--check-budget must be more than zero".into(),
            ));
        }
        Ok(())
    }
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// As planned (by role).
    pub planned: String,
    /// As carried out (by host): `partition {order-3} | {order-1, order-2}`.
    pub done: String,
    /// When it started, seconds from the start of the run.
    pub started_s: f64,
    /// When it was healed, continued or restarted.
    pub ended_s: f64,
    /// What clients saw from requests invoked while it lasted.
    pub during: ClientView,
    /// From the end of the fault to the first acknowledged trade invoked after it, ms.
    pub first_trade_after_heal_ms: Option<f64>,
    /// Anything that went wrong carrying it out.
    pub problem: Option<String>,
}

/// Every acknowledged order, looked for in every replica's log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AckedCheck {
    /// Trades acknowledged to clients.
    pub acknowledged: usize,
    /// Per replica: acknowledged orders its log does not hold at their number.
    pub missing: BTreeMap<u8, usize>,
    /// Per replica: acknowledged numbers at which its log holds a different order.
    pub different: BTreeMap<u8, usize>,
    /// Examples, at most a few per replica.
    pub samples: Vec<String>,
}

impl AckedCheck {
    /// True when every replica holds every acknowledged order.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.missing.values().all(|&n| n == 0) && self.different.values().all(|&n| n == 0)
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct NetChaosReport {
    /// Replication mode.
    pub replication: String,
    /// Seed of the schedule and the clients.
    pub seed: u64,
    /// Fault kinds drawn from.
    pub faults: Vec<FaultKind>,
    /// How long clients traded, s.
    pub duration_s: f64,
    /// Data directory (databases, logs, history, timeline).
    pub data_dir: String,
    /// Every fault, in order.
    pub schedule: Vec<FaultRecord>,
    /// The clients' run, including the read-back of every acknowledged order.
    pub load: LoadReport,
    /// Operations the order reader ran.
    pub reader_ops: usize,
    /// The linearizability check of the history.
    pub history: linearizable::Report,
    /// Acknowledged orders in every replica's log.
    pub acked: AckedCheck,
    /// `bazaar verify`'s output.
    pub verify: Vec<String>,
    /// Whether verify passed.
    pub verify_ok: bool,
    /// Files written.
    pub files: Vec<String>,
    /// Anything else that makes the run fail.
    pub problems: Vec<String>,
}

impl NetChaosReport {
    /// True when the history is linearizable, every acknowledged order is in every log,
    /// verify passed and every order read back as it was acknowledged.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.history.ok()
            && self.acked.ok()
            && self.verify_ok
            && self.load.mismatches == 0
            && self.problems.is_empty()
    }
}

impl std::fmt::Display for NetChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.faults.iter().map(|k| k.as_str()).collect();
        writeln!(
            f,
            "netchaos: {} replication, seed {}, {:.0} s, faults {}; data in {}",
            self.replication,
            self.seed,
            self.duration_s,
            kinds.join(","),
            self.data_dir
        )?;
        writeln!(
            f,
            "{:>7}  {:>6}  {:<52} {:>5} {:>5} {:>5} {:>7} {:>8} {:>8}  first trade after heal",
            "at s", "for s", "fault", "ops", "ok", "unkn", "trades", "p99 ms", "max ms",
        )?;
        for r in &self.schedule {
            let after = r
                .first_trade_after_heal_ms
                .map_or_else(|| "none".to_owned(), |ms| format!("{ms:.0} ms"));
            writeln!(
                f,
                "{:>7.1}  {:>6.1}  {:<52} {:>5} {:>5} {:>5} {:>7} {:>8.0} {:>8.0}  {after}",
                r.started_s,
                r.ended_s - r.started_s,
                r.done,
                r.during.ops,
                r.during.answered,
                r.during.unknown,
                r.during.trades_ok,
                r.during.p99_ms,
                r.during.max_ms,
            )?;
            if let Some(problem) = &r.problem {
                writeln!(f, "         problem: {problem}")?;
            }
        }
        writeln!(
            f,
            "clients: {} orders acknowledged, {} read back equal, {} mismatches, {} failed requests; order reader: {} queries",
            self.load.orders_recorded,
            self.load.orders_verified,
            self.load.mismatches,
            self.load.errors(),
            self.reader_ops
        )?;
        for sample in &self.load.mismatch_samples {
            writeln!(f, "  mismatch: {sample}")?;
        }
        writeln!(f, "{}", self.history)?;
        write!(
            f,
            "acknowledged orders in every replica log: {} acknowledged",
            self.acked.acknowledged
        )?;
        for (replica, n) in self.acked.missing.iter().filter(|(_, n)| **n > 0) {
            write!(f, "; replica {replica} lacks {n}")?;
        }
        for (replica, n) in self.acked.different.iter().filter(|(_, n)| **n > 0) {
            write!(
                f,
                "; replica {replica} holds another order at {n} of their numbers"
            )?;
        }
        if self.acked.ok() {
            write!(f, ", all in every log")?;
        }
        writeln!(f)?;
        for sample in &self.acked.samples {
            writeln!(f, "  {sample}")?;
        }
        for line in &self.verify {
            writeln!(f, "{line}")?;
        }
        for problem in &self.problems {
            writeln!(f, "problem: {problem}")?;
        }
        for file in &self.files {
            writeln!(f, "wrote {file}")?;
        }
        if self.ok() {
            write!(
                f,
                "verdict: OK: {} faults, {} operations checked, 0 anomalies; every acknowledged order is in every log; verify passed",
                self.schedule.len(),
                self.history.ops
            )
        } else {
            write!(
                f,
                "verdict: FAILED (seed {}): {} anomalies, {} undecided; acknowledged orders missing from a log: {}; verify {}",
                self.seed,
                self.history.anomalies.len(),
                self.history.undecided.len(),
                self.acked.missing.values().sum::<usize>()
                    + self.acked.different.values().sum::<usize>(),
                if self.verify_ok { "passed" } else { "failed" }
            )
        }
    }
}

/// Runs the experiment. Blocks: it creates the lab, runs everything on a thread inside the
/// clients' host, and removes the lab before returning, also when `cancel` fires.
///
/// # Errors
/// Bad settings, the lab could not be made, or the system could not be started. Everything
/// that goes wrong later is in the report.
pub fn run(config: NetChaosConfig, cancel: CancellationToken) -> Result<NetChaosReport> {
    config.validate()?;
    let lab_error = |e: bazaar_netlab::Error| Error::Unreachable {
        url: "the test hosts".into(),
        detail: e.to_string(),
    };
    bazaar_netlab::check_prerequisites().map_err(|e| Error::Config(e.to_string()))?;
    if let Ok(removed) = bazaar_netlab::sweep_stale()
        && !removed.is_empty()
    {
        tracing::info!(?removed, "removed namespaces left by earlier runs");
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::io(&config.data_dir, e))?;
    let lab = Lab::new(&HOSTS).map_err(lab_error)?;
    let namespace = lab.host(CLIENT_HOST).map_err(lab_error)?.namespace.clone();
    let worker = bazaar_netlab::spawn_in(&namespace, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Task(format!("cannot start a runtime in the client host: {e}")))?;
        // The lab moves in, so it is removed on this thread whatever happens.
        runtime.block_on(experiment(&config, lab, cancel))
    })
    .map_err(lab_error)?;
    worker
        .join()
        .map_err(|_| Error::Task("the experiment panicked".into()))?
        .map_err(lab_error)?
}

/// Where each service lives, and the commands that start it.
fn service_specs(config: &NetChaosConfig, lab: &Lab) -> Result<Vec<ServiceSpec>> {
    let mut spec = ClusterSpec::new(config.exe.clone(), config.data_dir.clone(), BASE_PORT);
    spec.replication.clone_from(&config.replication);
    for host in lab.hosts().iter().filter(|h| h.name != CLIENT_HOST) {
        spec.hosts.insert(host.name.clone(), IpAddr::V4(host.addr));
    }
    Ok(spec.services()?)
}

async fn experiment(
    config: &NetChaosConfig,
    mut lab: Lab,
    cancel: CancellationToken,
) -> Result<NetChaosReport> {
    let specs = service_specs(config, &lab)?;
    let mut services = Services::new(
        config.data_dir.join("logs"),
        vec![("RUST_LOG".into(), "info".into())],
    );
    let auth = bazaar_cluster::security::client_auth_of(&config.data_dir).map_err(|e| {
        Error::Unreachable {
            url: config.data_dir.display().to_string(),
            detail: e.to_string(),
        }
    })?;
    let http = Http::with_auth(Duration::from_secs(2), &auth);
    let lab_error = |e: bazaar_netlab::Error| Error::Unreachable {
        url: "the test hosts".into(),
        detail: e.to_string(),
    };
    let (frontends, backends): (Vec<_>, Vec<_>) =
        specs.iter().partition(|s| s.role == Role::Frontend);
    for group in [backends, frontends] {
        for spec in &group {
            let host = lab.host(&spec.name()).map_err(lab_error)?;
            services.start((*spec).clone(), host).map_err(lab_error)?;
        }
        for spec in &group {
            wait_ready(&http, spec, &mut services).await?;
        }
    }
    ClusterFile {
        replication: Some(config.replication.clone()),
        services: specs
            .iter()
            .map(|s| s.record(services.pid(&s.name()).unwrap_or(0)))
            .collect(),
    }
    .write(&config.data_dir.join("cluster.json"))?;
    let frontend_url = specs
        .iter()
        .find(|s| s.role == Role::Frontend)
        .map(|s| s.url.clone())
        .ok_or_else(|| Error::Config("the cluster has no front-end".into()))?;
    tracing::info!(frontend = %frontend_url, "system serving on test hosts");

    // Clients and the order reader, every operation recorded on one clock.
    let recorder = Recorder::new();
    let live = Arc::new(LiveCounters::default());
    let stop_load = cancel.child_token();
    let mut load_config = LoadConfig::new(Endpoint::parse(&frontend_url)?);
    load_config.clients = config.clients;
    load_config.stop = Stop::Duration(config.duration);
    load_config.trade_probability = TRADE_PROBABILITY;
    load_config.seed = config.seed;
    load_config.live = Some(Arc::clone(&live));
    load_config.cancel = Some(stop_load.clone());
    load_config.history = Some(recorder.clone());
    let load_task = tokio::spawn(load::run(load_config));
    let stop_reader = cancel.child_token();
    let reader = tokio::spawn(order_reader(
        Endpoint::parse(&frontend_url)?,
        recorder.client(config.clients),
        Arc::clone(&live),
        config.seed,
        stop_reader.clone(),
    ));

    let planned = schedule::schedule(config.seed, &config.faults, config.duration);
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for fault in &planned {
        let start = recorder.origin() + fault.at;
        tokio::select! {
            () = tokio::time::sleep_until(start.into()) => {}
            () = cancel.cancelled() => break,
        }
        records.push(
            carry_out(
                fault,
                &mut lab,
                &mut services,
                &specs,
                &http,
                &recorder,
                &cancel,
            )
            .await,
        );
        if cancel.is_cancelled() {
            break;
        }
    }
    let healed = tokio::task::block_in_place(|| lab.heal());
    if let Err(e) = healed {
        problems.push(format!("cannot heal the network: {e}"));
    }
    if cancel.is_cancelled() {
        stop_load.cancel();
    }
    let load = load_task.await.map_err(|e| Error::Task(e.to_string()))??;
    stop_reader.cancel();
    let reader_ops = reader.await.map_err(|e| Error::Task(e.to_string()))?;
    if cancel.is_cancelled() {
        return Err(Error::Task(
            "interrupted; the test hosts are removed".into(),
        ));
    }

    if let Err(e) = wait_quiet(&http, &specs).await {
        problems.push(e);
    }
    tokio::task::block_in_place(|| services.stop_all(STOP_DEADLINE));
    drop(services);
    drop(lab);

    let ops = recorder.ops();
    let end_us = ops.iter().map(|op| op.completed_us).max().unwrap_or(0);
    for record in &mut records {
        let from = (record.started_s * 1e6) as u64;
        let to = (record.ended_s * 1e6) as u64;
        record.during = timeline::client_view(&ops, from, to);
        record.first_trade_after_heal_ms =
            timeline::first_trade_after(&ops, to).map(|us| us as f64 / 1000.0);
    }
    let settled = settled_by_logs(&config.data_dir);
    let history = tokio::task::block_in_place(|| {
        linearizable::check(&ops, Some(&settled), config.check_budget)
    });
    let acked = acked_in_every_log(&ops, &config.data_dir);
    let (verify_lines, verify_ok) = match verify::verify(&config.data_dir) {
        Ok(found) => (
            found.to_string().lines().map(str::to_owned).collect(),
            found.ok(),
        ),
        Err(e) => (vec![format!("verify could not run: {e}")], false),
    };
    let mut report = NetChaosReport {
        replication: config.replication.clone(),
        seed: config.seed,
        faults: config.faults.clone(),
        duration_s: config.duration.as_secs_f64(),
        data_dir: config.data_dir.display().to_string(),
        schedule: records,
        load,
        reader_ops,
        history,
        acked,
        verify: verify_lines,
        verify_ok,
        files: Vec::new(),
        problems,
    };
    write_outputs(config, &ops, end_us, &mut report);
    Ok(report)
}

/// Polls a service until it serves: the catalog answers `/health`, a replica reports itself
/// ready, the front-end names a leader.
async fn wait_ready(http: &Http, spec: &ServiceSpec, services: &mut Services) -> Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    let name = spec.name();
    loop {
        let ready = match spec.role {
            Role::Catalog => http
                .get::<serde_json::Value>(&format!("{}/health", spec.url))
                .await
                .is_ok(),
            Role::Order => http
                .get::<serde_json::Value>(&format!("{}/health", spec.url))
                .await
                .is_ok_and(|h| h["ready"] == serde_json::Value::Bool(true)),
            Role::Frontend => http
                .get::<serde_json::Value>(&format!("{}/leader", spec.url))
                .await
                .is_ok(),
        };
        if ready {
            return Ok(());
        }
        let exited = services.exited();
        if let Some((_, status)) = exited.iter().find(|(n, _)| *n == name) {
            return Err(Error::Unreachable {
                url: spec.url.clone(),
                detail: format!(
                    "{name} exited during start ({status}); its log ends:\n{}",
                    services.log_tail(&name, 20)
                ),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Unreachable {
                url: spec.url.clone(),
                detail: format!(
                    "{name} did not serve within {READY_DEADLINE:?}; its log ends:\n{}",
                    services.log_tail(&name, 20)
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The replica the front-end trades with now, by id; else one that says it leads.
async fn current_leader(http: &Http, specs: &[ServiceSpec]) -> Option<u8> {
    if let Some(frontend) = specs.iter().find(|s| s.role == Role::Frontend)
        && let Ok(leader) = http
            .get::<serde_json::Value>(&format!("{}/leader", frontend.url))
            .await
        && let Some(id) = leader["id"].as_u64().and_then(|id| u8::try_from(id).ok())
    {
        return Some(id);
    }
    for replica in specs.iter().filter(|s| s.role == Role::Order) {
        if let Ok(health) = http
            .get::<serde_json::Value>(&format!("{}/health", replica.url))
            .await
            && health["role"] == "leader"
        {
            return replica.id;
        }
    }
    None
}

/// The host names a pick stands for now.
fn resolve(pick: Pick, leader: u8, replicas: &[u8]) -> Vec<String> {
    let followers: Vec<u8> = replicas
        .iter()
        .copied()
        .filter(|&id| id != leader)
        .collect();
    let order = |id: u8| ServiceSpec::name_of(Role::Order, Some(id));
    match pick {
        Pick::Leader => vec![order(leader)],
        Pick::Follower(n) => followers
            .get(usize::from(n))
            .or(followers.first())
            .map(|&id| vec![order(id)])
            .unwrap_or_default(),
        Pick::Followers => followers.into_iter().map(order).collect(),
        Pick::Frontend => vec![ServiceSpec::name_of(Role::Frontend, None)],
        Pick::Catalog => vec![ServiceSpec::name_of(Role::Catalog, Some(1))],
    }
}

fn braces(hosts: &[String]) -> String {
    format!("{{{}}}", hosts.join(", "))
}

/// Applies one fault, waits its length, undoes it, and says what happened.
async fn carry_out(
    planned: &Planned,
    lab: &mut Lab,
    services: &mut Services,
    specs: &[ServiceSpec],
    http: &Http,
    recorder: &Recorder,
    cancel: &CancellationToken,
) -> FaultRecord {
    let replicas: Vec<u8> = specs
        .iter()
        .filter(|s| s.role == Role::Order)
        .filter_map(|s| s.id)
        .collect();
    let leader = current_leader(http, specs)
        .await
        .unwrap_or_else(|| replicas.iter().copied().max().unwrap_or(1));
    let hosts = |pick: Pick| resolve(pick, leader, &replicas);
    let services_but = |these: &[String]| -> Vec<String> {
        specs
            .iter()
            .map(ServiceSpec::name)
            .filter(|n| !these.contains(n))
            .collect()
    };
    let started = Instant::now();
    let (done, applied): (String, std::result::Result<(), String>) = match &planned.fault {
        Fault::Split { a, b } => {
            let a: Vec<String> = a.iter().flat_map(|&p| hosts(p)).collect();
            let b: Vec<String> = b.iter().flat_map(|&p| hosts(p)).collect();
            let (ra, rb): (Vec<&str>, Vec<&str>) = (
                a.iter().map(String::as_str).collect(),
                b.iter().map(String::as_str).collect(),
            );
            (
                format!("partition {} | {}", braces(&a), braces(&b)),
                tokio::task::block_in_place(|| lab.split(&ra, &rb)).map_err(|e| e.to_string()),
            )
        }
        Fault::ReplicasApart => {
            let names: Vec<String> = replicas
                .iter()
                .map(|&id| ServiceSpec::name_of(Role::Order, Some(id)))
                .collect();
            let mut outcome = Ok(());
            for (i, x) in names.iter().enumerate() {
                for y in &names[i + 1..] {
                    if outcome.is_ok() {
                        outcome = tokio::task::block_in_place(|| lab.split(&[x], &[y]))
                            .map_err(|e| e.to_string());
                    }
                }
            }
            ("partition replicas from each other".to_owned(), outcome)
        }
        Fault::Cut { host } => {
            let cut = hosts(*host);
            let rest = services_but(&cut);
            let (rc, rr): (Vec<&str>, Vec<&str>) = (
                cut.iter().map(String::as_str).collect(),
                rest.iter().map(String::as_str).collect(),
            );
            (
                format!("cut {} off ({host})", braces(&cut)),
                tokio::task::block_in_place(|| lab.split(&rc, &rr)).map_err(|e| e.to_string()),
            )
        }
        Fault::OneWay { from, to } => {
            let (from_hosts, to_hosts) = (hosts(*from), hosts(*to));
            let mut outcome = Ok(());
            for x in &from_hosts {
                for y in &to_hosts {
                    if outcome.is_ok() {
                        outcome = tokio::task::block_in_place(|| lab.block(x, y))
                            .map_err(|e| e.to_string());
                    }
                }
            }
            (
                format!(
                    "one-way: {} cannot reach {}",
                    braces(&from_hosts),
                    braces(&to_hosts)
                ),
                outcome,
            )
        }
        Fault::Pause { host } => {
            let target = hosts(*host);
            let outcome = target.first().map_or(Err("no such host".to_owned()), |t| {
                services.pause(t).map_err(|e| e.to_string())
            });
            (format!("pause {} ({host})", braces(&target)), outcome)
        }
        Fault::Kill { host } => {
            let target = hosts(*host);
            let outcome = target.first().map_or(Err("no such host".to_owned()), |t| {
                tokio::task::block_in_place(|| services.kill(t)).map_err(|e| e.to_string())
            });
            (format!("kill -9 {} ({host})", braces(&target)), outcome)
        }
    };
    tracing::info!(fault = %done, leader, "fault started");
    let mut problem = applied.err();
    tokio::select! {
        () = tokio::time::sleep(planned.length) => {}
        () = cancel.cancelled() => {}
    }
    // Undo it.
    let undone = match &planned.fault {
        Fault::Pause { host } => hosts(*host)
            .first()
            .map_or(Ok(()), |t| services.resume(t).map_err(|e| e.to_string())),
        Fault::Kill { host } => match hosts(*host).first() {
            Some(t) => match tokio::task::block_in_place(|| services.restart(t)) {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            None => Ok(()),
        },
        _ => tokio::task::block_in_place(|| lab.heal()).map_err(|e| e.to_string()),
    };
    let ended = Instant::now();
    if let Err(e) = undone {
        problem.get_or_insert(format!("cannot undo the fault: {e}"));
    }
    if let Fault::Kill { host } = &planned.fault
        && let Some(spec) = hosts(*host)
            .first()
            .and_then(|t| specs.iter().find(|s| s.name() == *t))
        && let Err(e) = wait_ready(http, spec, services).await
    {
        problem.get_or_insert(format!("the restarted service did not serve: {e}"));
    }
    tracing::info!(fault = %done, "fault ended");
    let seconds = |at: Instant| recorder.micros(at) as f64 / 1e6;
    FaultRecord {
        planned: planned.fault.to_string(),
        done,
        started_s: seconds(started),
        ended_s: seconds(ended),
        during: ClientView::default(),
        first_trade_after_heal_ms: None,
        problem,
    }
}

/// Queries order numbers around the newest acknowledged one, recorded like every client's
/// operations: a number read back as another order, or lost, shows while faults happen.
async fn order_reader(
    frontend: Endpoint,
    history: history::ClientHistory,
    live: Arc<LiveCounters>,
    seed: u64,
    stop: CancellationToken,
) -> usize {
    let Ok(addr) = frontend.resolve().await else {
        return 0;
    };
    let mut connection = Connection::new(addr, &frontend, REQUEST_TIMEOUT_DEFAULT);
    connection.record_into(history);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_0DE5);
    let mut queries = 0;
    while !stop.is_cancelled() {
        let newest = live.trades.load(Ordering::Relaxed);
        let number = rng.random_range(0..=newest.saturating_add(3));
        if let Ok(path) = format!("/orders/{number}").parse::<Uri>() {
            tokio::select! {
                _ = connection.get(&path) => queries += 1,
                () = stop.cancelled() => break,
            }
        }
        tokio::time::sleep(READER_PAUSE).await;
    }
    queries
}

/// Waits until every replica reports the same log position (catch-up done), so verify
/// compares settled logs.
async fn wait_quiet(http: &Http, specs: &[ServiceSpec]) -> std::result::Result<(), String> {
    let deadline = Instant::now() + QUIET_DEADLINE;
    loop {
        let mut tips = Vec::new();
        for replica in specs.iter().filter(|s| s.role == Role::Order) {
            match http
                .get::<serde_json::Value>(&format!("{}/health", replica.url))
                .await
            {
                Ok(health) => tips.push(health["position"].clone()),
                Err(e) => tips.push(serde_json::Value::String(e.to_string())),
            }
        }
        if tips.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the replicas did not agree on their last entry within {QUIET_DEADLINE:?}: {tips:?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The order number of every trade the replicas' final logs hold, by request id: what settles
/// the trades whose replies were lost. A file that cannot be read adds nothing (verify reports
/// it).
fn settled_by_logs(data_dir: &std::path::Path) -> linearizable::Settled {
    let mut settled = linearizable::Settled::default();
    for path in verify::replica_files(data_dir).unwrap_or_default().values() {
        if let Ok(contents) = bazaar_order::file::read(path) {
            settled
                .0
                .extend(contents.orders.iter().map(|o| (o.request_id, o.number.0)));
        }
    }
    settled
}

/// Every trade acknowledged to a client must be in every replica's log at its number, as the
/// same order (stock, type, quantity).
fn acked_in_every_log(ops: &[Op], data_dir: &std::path::Path) -> AckedCheck {
    const SAMPLES_PER_REPLICA: usize = 3;
    let mut check = AckedCheck::default();
    let acked: Vec<(u64, &Op)> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Traded { number } => Some((number, op)),
            _ => None,
        })
        .collect();
    check.acknowledged = acked.len();
    let Ok(files) = verify::replica_files(data_dir) else {
        return check;
    };
    for (id, path) in files {
        let contents = match bazaar_order::file::read(&path) {
            Ok(contents) => contents,
            Err(e) => {
                check
                    .samples
                    .push(format!("replica {id}: cannot read: {e}"));
                continue;
            }
        };
        let by_number: BTreeMap<u64, &bazaar_order::orders::OrderRow> =
            contents.orders.iter().map(|o| (o.number.0, o)).collect();
        let (mut missing, mut different, mut shown) = (0, 0, 0);
        for (number, op) in &acked {
            let history::Call::Trade {
                stock,
                kind,
                quantity,
                ..
            } = &op.call
            else {
                continue;
            };
            match by_number.get(number) {
                None => {
                    missing += 1;
                    if shown < SAMPLES_PER_REPLICA {
                        shown += 1;
                        check.samples.push(format!(
                            "replica {id} has no order {number} ({kind} {quantity} {stock}, acknowledged at {:.3} s)",
                            op.completed_us as f64 / 1e6
                        ));
                    }
                }
                Some(entry)
                    if entry.name != *stock
                        || entry.kind != *kind
                        || entry.quantity != *quantity =>
                {
                    different += 1;
                    if shown < SAMPLES_PER_REPLICA {
                        shown += 1;
                        check.samples.push(format!(
                            "replica {id} holds {} {} {} at {number}, acknowledged as {kind} {quantity} {stock}",
                            entry.kind, entry.quantity, entry.name
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        check.missing.insert(id, missing);
        check.different.insert(id, different);
    }
    check
}

/// The history, the timeline (CSV, JSON) and its figure, and the report as JSON.
fn write_outputs(config: &NetChaosConfig, ops: &[Op], end_us: u64, report: &mut NetChaosReport) {
    let dir = &config.data_dir;
    let spans: Vec<FaultSpan> = report
        .schedule
        .iter()
        .map(|r| FaultSpan {
            start_s: r.started_s,
            end_s: r.ended_s,
            label: r.done.clone(),
        })
        .collect();
    let buckets = timeline::buckets(ops, end_us);
    let mut wrote = |what: Result<Vec<PathBuf>>| match what {
        Ok(paths) => report
            .files
            .extend(paths.iter().map(|p| p.display().to_string())),
        Err(e) => report.problems.push(format!("cannot write an output: {e}")),
    };
    let history_path = dir.join("history.jsonl");
    wrote(history::write_jsonl(ops, &history_path).map(|()| vec![history_path]));
    let csv = dir.join("timeline.csv");
    wrote(timeline::write_csv(&buckets, &spans, &csv).map(|()| vec![csv]));
    let json = dir.join("timeline.json");
    let text = serde_json::json!({ "buckets": buckets, "faults": spans });
    wrote(
        std::fs::write(&json, format!("{text:#}\n"))
            .map(|()| vec![json.clone()])
            .map_err(|e| Error::io(&json, e)),
    );
    let title = format!(
        "{} replication, seed {}: faults against trade latency and errors",
        config.replication, config.seed
    );
    wrote(crate::plot::fault_timeline_figure(
        &dir.join("timeline"),
        &title,
        &buckets,
        &spans,
    ));
}
