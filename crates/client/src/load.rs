//! The load generator behind `bazaar client` (SPEC.md section 7).
//!
//! K simulated clients each own one keep-alive connection and a seeded RNG. Each loops: look up
//! a random stock; with probability p trade it (random buy or sell of 1..=5 shares); remember
//! every acknowledged order. When every client has finished, each queries its orders back and
//! compares them field by field. The two phases are timed apart so each request type's
//! throughput is measured over the time it was actually being sent.
//!
//! ```text
//!   GET /stocks ─► names ─► K × [ N × (lookup ─p─► trade) ] ─► K × [ order query per ack ]
//!                                  load phase                       verify phase
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bazaar_api::order::TradeRequest;
use bazaar_api::replica::TradeAck;
use bazaar_api::{Data, Order, RequestId, Stock, TradeType};
use bytes::Bytes;
use hyper::{StatusCode, Uri};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::bad::{BadRequest, BadRequestSummary};
use crate::connection::{Connection, REQUEST_TIMEOUT_DEFAULT, Reply};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::history::Recorder;
use crate::report::LoadReport;
use crate::stats::{LatencyStats, RequestKind};

/// Simulated clients when none is given.
pub const CLIENTS_DEFAULT: usize = 5;

/// Most simulated clients (each holds a connection and a task).
pub const CLIENTS_MAX: usize = 1024;

/// Iterations per client when none is given.
pub const ITERATIONS_DEFAULT: u64 = 100;

/// Most iterations per client, also the bound of a run with a set duration.
pub const ITERATIONS_MAX: u64 = 10_000_000;

/// Longest run with a set duration.
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

/// Probability of a trade after each lookup when none is given.
pub const TRADE_PROBABILITY_DEFAULT: f64 = 0.4;

/// Largest quantity one trade asks for; small so that buys rarely exhaust a stock.
pub const TRADE_QUANTITY_SENT_MAX: u64 = 5;

/// Error and mismatch descriptions kept per run; the rest are only counted.
pub const SAMPLES_MAX: usize = 10;

/// How often the progress bar is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// When a load run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many iterations per client.
    Iterations(u64),
    /// After this much time (each client also stops at [`ITERATIONS_MAX`]).
    Duration(Duration),
}

/// What a load run does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The front-end.
    pub frontend: Endpoint,
    /// Simulated clients, each with its own connection.
    pub clients: usize,
    /// When to stop.
    pub stop: Stop,
    /// Probability of a trade after each lookup, 0..=1.
    pub trade_probability: f64,
    /// Seeds every client's RNG (with the client's index), making the requests repeatable.
    pub seed: u64,
    /// Pause after each iteration; zero for a closed loop at full speed.
    pub think_time: Duration,
    /// Bound on each request.
    pub request_timeout: Duration,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Counters updated as the run goes, for a caller that watches it (the chaos experiment).
    pub live: Option<Arc<LiveCounters>>,
    /// Ends the load phase early when cancelled (the verify phase still runs).
    pub cancel: Option<CancellationToken>,
    /// Records every request of every client, when set (client `i` records as `i`).
    pub history: Option<Recorder>,
    /// Share of iterations that also send one invalid request (0 for none), each checked
    /// against its documented error.
    pub bad_requests: f64,
    /// Print every request and reply to stderr.
    pub verbose: bool,
}

/// Counters a run updates while it goes.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Requests that failed (anything but the expected answers).
    pub errors: AtomicU64,
    /// Trades acknowledged.
    pub trades: AtomicU64,
}

impl LoadConfig {
    /// The defaults of `bazaar client` against `frontend`, with a random seed.
    #[must_use]
    pub fn new(frontend: Endpoint) -> Self {
        Self {
            frontend,
            clients: CLIENTS_DEFAULT,
            stop: Stop::Iterations(ITERATIONS_DEFAULT),
            trade_probability: TRADE_PROBABILITY_DEFAULT,
            seed: rand::random(),
            think_time: Duration::ZERO,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            progress: false,
            live: None,
            cancel: None,
            history: None,
            bad_requests: 0.0,
            verbose: false,
        }
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag and the bad value.
    pub fn validate(&self) -> Result<()> {
        if !(1..=CLIENTS_MAX).contains(&self.clients) {
            return Err(Error::Config(format!(
                "--clients {} must be from 1 to {CLIENTS_MAX}",
                self.clients
            )));
        }
        match self.stop {
            Stop::Iterations(n) if !(1..=ITERATIONS_MAX).contains(&n) => {
                return Err(Error::Config(format!(
                    "--iterations {n} must be from 1 to {ITERATIONS_MAX}"
                )));
            }
            Stop::Duration(d) if d.is_zero() || d > DURATION_MAX => {
                return Err(Error::Config(format!(
                    "--duration {d:?} must be more than zero and at most {DURATION_MAX:?}"
                )));
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.trade_probability) {
            return Err(Error::Config(format!(
                "--p {} must be a probability from 0 to 1",
                self.trade_probability
            )));
        }
        if !(0.0..=1.0).contains(&self.bad_requests) {
            return Err(Error::Config(format!(
                "--bad-requests {} must be a fraction from 0 to 1",
                self.bad_requests
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Config("--timeout must be more than zero".into()));
        }
        Ok(())
    }
}

/// What every client reads: the stocks and the paths to send.
#[derive(Debug)]
struct Plan {
    stocks: Vec<StockTarget>,
    orders_path: Uri,
    stop: Stop,
    trade_probability: f64,
    bad_requests: f64,
    think_time: Duration,
    cancel: Option<CancellationToken>,
}

#[derive(Debug)]
struct StockTarget {
    name: String,
    /// `/stocks/{name}`, percent-encoded and parsed once.
    path: Uri,
}

impl StockTarget {
    fn new(name: String, frontend: &Endpoint) -> Result<Self> {
        let path = bazaar_api::client::url_with_segments("", &["stocks", &name]);
        match path.parse() {
            Ok(path) => Ok(Self { name, path }),
            Err(e) => Err(Error::Unreachable {
                url: frontend.to_string(),
                detail: format!("stock name {name:?} makes a bad path {path:?}: {e}"),
            }),
        }
    }
}

/// Runs a load and verification against the front-end.
///
/// # Errors
/// Bad settings, or the front-end cannot list its stocks before the run. Failures during the
/// run are counted in the report instead; [`LoadReport::ok`] tells whether there were any.
pub async fn run(config: LoadConfig) -> Result<LoadReport> {
    config.validate()?;
    let addr = config.frontend.resolve().await?;
    let connection = |client: usize| {
        let mut connection = Connection::new(addr, &config.frontend, config.request_timeout);
        if let Some(history) = &config.history {
            connection.record_into(history.client(client));
        }
        if config.verbose {
            connection.print_exchanges(format!("client {client}"));
        }
        connection
    };
    let names = stock_names(&mut connection(0), &config.frontend).await?;
    let plan = Arc::new(Plan {
        stocks: names
            .into_iter()
            .map(|name| StockTarget::new(name, &config.frontend))
            .collect::<Result<_>>()?,
        orders_path: Uri::from_static("/orders"),
        stop: config.stop,
        trade_probability: config.trade_probability,
        bad_requests: config.bad_requests,
        think_time: config.think_time,
        cancel: config.cancel.clone(),
    });

    let progress = Progress::start(&config);
    let started = Instant::now();
    let clients = join_all((0..config.clients).map(|index| {
        let mut client = SimulatedClient::new(index, connection(index), config.seed);
        client.live.clone_from(&config.live);
        tokio::spawn(client.trade_loop(Arc::clone(&plan), progress.counter()))
    }))
    .await?;
    let load_elapsed = started.elapsed();
    drop(progress);

    let duplicates = duplicate_numbers(&clients);
    let started = Instant::now();
    let clients = join_all(
        clients
            .into_iter()
            .map(|client| tokio::spawn(client.verify_orders())),
    )
    .await?;
    let verify_elapsed = started.elapsed();

    let mut report = LoadReport {
        frontend: config.frontend.to_string(),
        clients: config.clients,
        iterations_per_client: match config.stop {
            Stop::Iterations(n) => Some(n),
            Stop::Duration(_) => None,
        },
        duration_s: match config.stop {
            Stop::Iterations(_) => None,
            Stop::Duration(d) => Some(d.as_secs_f64()),
        },
        trade_probability: config.trade_probability,
        seed: config.seed,
        stocks: plan.stocks.len(),
        load_elapsed_s: load_elapsed.as_secs_f64(),
        verify_elapsed_s: verify_elapsed.as_secs_f64(),
        ..LoadReport::default()
    };
    report.mismatches = u64::try_from(duplicates.len()).unwrap_or(u64::MAX);
    report.mismatch_samples = duplicates;
    add_clients(&mut report, &clients, load_elapsed, verify_elapsed);
    Ok(report)
}

/// Waits for every task, in order.
async fn join_all<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Result<Vec<T>> {
    let tasks: Vec<_> = tasks.collect();
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await.map_err(|e| Error::Task(e.to_string()))?);
    }
    Ok(done)
}

/// Merges every client's measurements into the report. Lookups and trades are rated over the
/// load phase, order queries over the verify phase.
fn add_clients(
    report: &mut LoadReport,
    clients: &[SimulatedClient],
    load_elapsed: Duration,
    verify_elapsed: Duration,
) {
    let (mut lookup, mut trade, mut order_query) = (
        LatencyStats::new(),
        LatencyStats::new(),
        LatencyStats::new(),
    );
    for client in clients {
        lookup.merge(&client.lookup);
        trade.merge(&client.trade);
        order_query.merge(&client.order_query);
        report.orders_recorded += client.orders.len() as u64;
        report.orders_verified += client.verified;
        report.bad_requests.merge(&client.bad_requests, SAMPLES_MAX);
        report.mismatches += client.mismatches;
        report.reconnects += client.connection.reconnects();
        report
            .mismatch_samples
            .extend(client.mismatch_samples.iter().cloned());
        report
            .error_samples
            .extend(client.error_samples.iter().cloned());
    }
    report.mismatch_samples.truncate(SAMPLES_MAX);
    report.error_samples.truncate(SAMPLES_MAX);
    report.lookup = lookup.summary(load_elapsed);
    report.trade = trade.summary(load_elapsed);
    report.order_query = order_query.summary(verify_elapsed);
}

/// `GET /stocks`: the names to look up.
async fn stock_names(connection: &mut Connection, frontend: &Endpoint) -> Result<Vec<String>> {
    let unreachable = |detail: String| Error::Unreachable {
        url: format!("{frontend}/stocks"),
        detail,
    };
    let reply = connection
        .get(&Uri::from_static("/stocks"))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if reply.status != StatusCode::OK {
        return Err(unreachable(format!(
            "HTTP {}: {}",
            reply.status,
            body_excerpt(&reply.body)
        )));
    }
    let stocks: Data<Vec<Stock>> = serde_json::from_slice(&reply.body)
        .map_err(|e| unreachable(format!("not a list of stocks: {e}")))?;
    if stocks.data.is_empty() {
        return Err(unreachable("the catalog has no stocks to trade".into()));
    }
    Ok(stocks.data.into_iter().map(|s| s.name).collect())
}

/// Transaction numbers acknowledged more than once, across all clients: two trades must never
/// share a number.
fn duplicate_numbers(clients: &[SimulatedClient]) -> Vec<String> {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    for client in clients {
        for order in &client.orders {
            if let Some(first) = seen.insert(order.number.0, client.index) {
                duplicates.push(format!(
                    "transaction number {} was acknowledged twice (clients {first} and {})",
                    order.number, client.index
                ));
            }
        }
    }
    duplicates
}

/// The start of a body, for error messages.
fn body_excerpt(body: &[u8]) -> String {
    const EXCERPT_LEN_MAX: usize = 200;
    String::from_utf8_lossy(&body[..body.len().min(EXCERPT_LEN_MAX)]).into_owned()
}

/// One simulated client: its connection, its RNG, and everything it measured.
struct SimulatedClient {
    index: usize,
    connection: Connection,
    rng: StdRng,
    lookup: LatencyStats,
    trade: LatencyStats,
    order_query: LatencyStats,
    /// Every acknowledged order, as sent.
    orders: Vec<Order>,
    /// Orders read back equal to what was sent.
    verified: u64,
    mismatches: u64,
    mismatch_samples: Vec<String>,
    error_samples: Vec<String>,
    bad_requests: BadRequestSummary,
    /// Shared with the caller, when it watches the run.
    live: Option<Arc<LiveCounters>>,
}

impl SimulatedClient {
    fn new(index: usize, connection: Connection, seed: u64) -> Self {
        // Mix the index in so that neighbouring seeds do not give overlapping streams.
        let index_mix = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            index,
            connection,
            rng: StdRng::seed_from_u64(seed ^ index_mix),
            lookup: LatencyStats::new(),
            trade: LatencyStats::new(),
            order_query: LatencyStats::new(),
            orders: Vec::new(),
            verified: 0,
            mismatches: 0,
            mismatch_samples: Vec::new(),
            error_samples: Vec::new(),
            bad_requests: BadRequestSummary::default(),
            live: None,
        }
    }

    fn error(&mut self, kind: RequestKind, text: impl FnOnce() -> String) {
        if let Some(live) = &self.live {
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
        match kind {
            RequestKind::Lookup => self.lookup.record_error(),
            RequestKind::Trade => self.trade.record_error(),
            RequestKind::OrderQuery => self.order_query.record_error(),
        }
        if self.error_samples.len() < SAMPLES_MAX {
            self.error_samples
                .push(format!("client {}: {kind}: {}", self.index, text()));
        }
    }

    fn mismatch(&mut self, text: String) {
        self.mismatches += 1;
        if self.mismatch_samples.len() < SAMPLES_MAX {
            self.mismatch_samples
                .push(format!("client {}: {text}", self.index));
        }
    }

    /// The load phase.
    async fn trade_loop(mut self, plan: Arc<Plan>, progress: Option<Arc<AtomicU64>>) -> Self {
        let (iterations, deadline) = match plan.stop {
            Stop::Iterations(n) => (n, None),
            Stop::Duration(d) => (ITERATIONS_MAX, Some(Instant::now() + d)),
        };
        for _ in 0..iterations {
            if deadline.is_some_and(|d| Instant::now() >= d)
                || plan
                    .cancel
                    .as_ref()
                    .is_some_and(CancellationToken::is_cancelled)
            {
                break;
            }
            // Every random draw happens whatever the replies are, so a seed always gives the
            // same sequence of requests.
            let stock = self.rng.random_range(0..plan.stocks.len());
            let trade = (self.rng.random_bool(plan.trade_probability)).then(|| {
                let kind = if self.rng.random_bool(0.5) {
                    TradeType::Buy
                } else {
                    TradeType::Sell
                };
                (kind, self.rng.random_range(1..=TRADE_QUANTITY_SENT_MAX))
            });
            // Drawn only when asked for, so a seed without bad requests repeats as before.
            let bad = (plan.bad_requests > 0.0 && self.rng.random_bool(plan.bad_requests))
                .then(|| BadRequest::draw(&mut self.rng));
            self.stock_lookup(&plan.stocks[stock]).await;
            if let Some(bad) = bad {
                self.bad_request(bad, &plan.stocks[stock].name).await;
            }
            if let Some((kind, quantity)) = trade {
                self.order_create(&plan, &plan.stocks[stock].name, kind, quantity)
                    .await;
            }
            if let Some(progress) = &progress {
                progress.fetch_add(1, Ordering::Relaxed);
            }
            if !plan.think_time.is_zero() {
                tokio::time::sleep(plan.think_time).await;
            }
        }
        self
    }

    async fn bad_request(&mut self, bad: BadRequest, stock: &str) {
        let (path, body) = bad.request(stock);
        let result = match body {
            Some(body) => self.connection.post_json(&path, body).await,
            None => self.connection.get(&path).await,
        };
        self.bad_requests.sent += 1;
        let checked = result
            .map_err(|e| format!("{bad}: {e}"))
            .and_then(|reply| bad.check(&reply));
        match checked {
            Ok(()) => self.bad_requests.as_documented += 1,
            Err(text) => {
                if self.bad_requests.samples.len() < SAMPLES_MAX {
                    self.bad_requests
                        .samples
                        .push(format!("client {}: {text}", self.index));
                }
            }
        }
    }

    async fn stock_lookup(&mut self, target: &StockTarget) {
        let kind = RequestKind::Lookup;
        let started = Instant::now();
        let result = self.connection.get(&target.path).await;
        let latency = started.elapsed();
        match result {
            Ok(Reply { status, body }) if status == StatusCode::OK => {
                match serde_json::from_slice::<Data<Stock>>(&body) {
                    Ok(stock) if stock.data.name == target.name => self.lookup.record(latency),
                    Ok(stock) => self.error(kind, || {
                        format!("asked for {:?}, got {:?}", target.name, stock.data.name)
                    }),
                    Err(e) => {
                        self.error(kind, || format!("{}: unreadable reply: {e}", target.name))
                    }
                }
            }
            Ok(Reply { status, body }) => self.error(kind, || {
                format!("{}: HTTP {status}: {}", target.name, body_excerpt(&body))
            }),
            Err(e) => self.error(kind, || format!("{}: {e}", target.name)),
        }
    }

    async fn order_create(&mut self, plan: &Plan, name: &str, kind: TradeType, quantity: u64) {
        let request_kind = RequestKind::Trade;
        // The client names each trade, so a trade whose reply is lost can be looked up in the
        // logs afterwards (the linearizability check resolves it that way).
        let request = TradeRequest {
            name: name.to_owned(),
            kind,
            quantity,
            request_id: Some(RequestId::new()),
        };
        let body = match serde_json::to_vec(&request) {
            Ok(body) => Bytes::from(body),
            Err(e) => return self.error(request_kind, || format!("cannot encode a trade: {e}")),
        };
        let started = Instant::now();
        let result = self.connection.post_json(&plan.orders_path, body).await;
        let latency = started.elapsed();
        match result {
            Ok(Reply { status, body }) if status == StatusCode::OK => {
                match serde_json::from_slice::<Data<TradeAck>>(&body) {
                    Ok(ack) => {
                        self.trade.record(latency);
                        if let Some(live) = &self.live {
                            live.trades.fetch_add(1, Ordering::Relaxed);
                        }
                        self.orders.push(Order {
                            number: ack.data.transaction_number,
                            name: request.name,
                            kind,
                            quantity,
                        });
                    }
                    Err(e) => self.error(request_kind, || {
                        format!("{kind} {quantity} {name}: unreadable reply: {e}")
                    }),
                }
            }
            // Not enough stock: the system is right to refuse.
            Ok(Reply { status, .. }) if status == StatusCode::CONFLICT => {
                self.trade.record_rejected(latency);
            }
            Ok(Reply { status, body }) => self.error(request_kind, || {
                format!(
                    "{kind} {quantity} {name}: HTTP {status}: {}",
                    body_excerpt(&body)
                )
            }),
            Err(e) => self.error(request_kind, || format!("{kind} {quantity} {name}: {e}")),
        }
    }

    /// The verify phase: every acknowledged order must read back exactly as it was sent.
    async fn verify_orders(mut self) -> Self {
        let orders = std::mem::take(&mut self.orders);
        for sent in &orders {
            let kind = RequestKind::OrderQuery;
            let path: Uri = match format!("/orders/{}", sent.number).parse() {
                Ok(path) => path,
                Err(e) => {
                    self.error(kind, || format!("order {}: bad path: {e}", sent.number));
                    continue;
                }
            };
            let started = Instant::now();
            let result = self.connection.get(&path).await;
            let latency = started.elapsed();
            match result {
                Ok(Reply { status, body }) if status == StatusCode::OK => {
                    match serde_json::from_slice::<Data<Order>>(&body) {
                        Ok(read) => {
                            self.order_query.record(latency);
                            if read.data == *sent {
                                self.verified += 1;
                            } else {
                                self.mismatch(format!(
                                    "order {}: sent {}, read back {}",
                                    sent.number,
                                    describe(sent),
                                    describe(&read.data)
                                ));
                            }
                        }
                        Err(e) => self.error(kind, || {
                            format!("order {}: unreadable reply: {e}", sent.number)
                        }),
                    }
                }
                Ok(Reply { status, .. }) if status == StatusCode::NOT_FOUND => {
                    self.order_query.record(latency);
                    self.mismatch(format!(
                        "order {} ({}) was acknowledged but the front-end says it does not exist",
                        sent.number,
                        describe(sent)
                    ));
                }
                Ok(Reply { status, body }) => self.error(kind, || {
                    format!(
                        "order {}: HTTP {status}: {}",
                        sent.number,
                        body_excerpt(&body)
                    )
                }),
                Err(e) => self.error(kind, || format!("order {}: {e}", sent.number)),
            }
        }
        self.orders = orders;
        self
    }
}

fn describe(order: &Order) -> String {
    format!(
        "#{} {} {} {}",
        order.number, order.kind, order.quantity, order.name
    )
}

/// The progress bar, redrawn by a ticker task so clients only bump an atomic counter.
struct Progress {
    state: Option<ProgressState>,
}

struct ProgressState {
    bar: ProgressBar,
    counter: Arc<AtomicU64>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(config: &LoadConfig) -> Self {
        if !config.progress {
            return Self { state: None };
        }
        let (bar, template) = match config.stop {
            Stop::Iterations(n) => (
                ProgressBar::new(n.saturating_mul(config.clients as u64)),
                "{bar:40} {pos}/{len} iterations, {elapsed} (eta {eta})",
            ),
            Stop::Duration(_) => (
                ProgressBar::no_length(),
                "{spinner} {pos} iterations, {elapsed}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        let counter = Arc::new(AtomicU64::new(0));
        let ticker = {
            let bar = bar.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
                // Ends when `Progress` is dropped, which aborts this task.
                loop {
                    ticks.tick().await;
                    bar.set_position(counter.load(Ordering::Relaxed));
                }
            })
        };
        Self {
            state: Some(ProgressState {
                bar,
                counter,
                ticker,
            }),
        }
    }

    fn counter(&self) -> Option<Arc<AtomicU64>> {
        self.state.as_ref().map(|s| Arc::clone(&s.counter))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.ticker.abort();
            state.bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests;
