//! Is a recorded history linearizable? Each object is checked on its own, which is what makes
//! histories of many thousands of operations tractable:
//!
//! - **a stock**: a quantity that buys (acknowledged, or refused for want of shares), sells and
//!   lookups act on, starting from any value (the first `GET /stocks` or lookup pins it);
//! - **an order number**: empty until a trade is acknowledged with that number, then that
//!   order for good; a query returns the order, or 404 only if no trade got the number yet.
//!
//! Linearizability is local (Herlihy and Wing): a history of operations that each touch one
//! object is linearizable exactly when every object's sub-history is. A trade touches two
//! objects (its stock and its number), so checking them apart is a necessary condition: every
//! anomaly reported is real, and an anomaly that needs both objects at once can be missed.
//!
//! The search is the Wing-Gong-Lowe algorithm with memoisation, from the `todc-utils` crate
//! ([`WGLChecker`]). Stateright's `LinearizabilityTester` was measured too and does not cope:
//! it has no memoisation, took 7-13 s for 1,000 operations of one linearizable stock and did
//! not finish in 100 s on a 200-operation history with one planted stale read, where
//! `todc-utils` decides 3,000 operations in 0.2-1.6 s (docs/EVALUATION.md).
//!
//! **Unknown outcomes.** A trade without a usable reply (timeout, broken connection, 5xx) may
//! have taken effect at any time after it was invoked, or never: its response is put after
//! the end of the history and its effect is "maybe". The checker's models are deterministic,
//! so a stock's state is the *set* of quantities it may hold (intervals, see [`Quantities`]),
//! and a maybe-trade maps each possible quantity to itself and to the traded one. A lookup
//! without a reply constrains nothing and is dropped; so are requests refused as invalid (4xx
//! other than 409) or never sent.
//!
//! **The smallest stretch.** For an object that fails, the checker first finds the earliest
//! time `t` such that the history cut at `t` already fails (operations still running at `t`
//! become "maybe"), then the latest start `s` such that the operations between `s` and `t`
//! fail on their own from an unknown state (operations running across `s` become "maybe").
//! Both cuts only relax the history, so the stretch shown fails by itself.
//!
//! # Layout
//! - [`Quantities`] — a set of possible quantities, as disjoint intervals.
//! - `StockModel`, `SlotModel` — the two sequential specifications.
//! - [`check`] — builds each object's sub-history, runs the search under a time budget, and
//!   reports anomalies with their smallest stretch ([`Report`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bazaar_api::{RequestId, TradeType};
use serde::Serialize;
use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::specifications::Specification;

use crate::history::{Call, Op, Outcome};

/// How long a whole check may search before the objects not yet decided are reported as
/// undecided.
pub const BUDGET_DEFAULT: Duration = Duration::from_secs(120);

/// Most operations printed per anomaly; a longer stretch shows its first and last ones.
pub const STRETCH_SHOWN_MAX: usize = 40;

/// Most intervals a set of quantities keeps; past that the closest ones are merged, which
/// only ever admits more quantities (so it can hide an anomaly, never invent one).
const INTERVALS_MAX: usize = 64;

/// Histories up to this many operations are checked whole first; longer ones by growing
/// prefixes, so a failure early in a long history is found without searching all of it.
const PREFIX_FIRST: usize = 512;

/// A set of quantities a stock may hold: sorted, disjoint, non-adjacent inclusive intervals;
/// an upper end of `u64::MAX` means "no upper bound".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantities(Vec<(u64, u64)>);

impl Quantities {
    /// Every quantity: nothing is known yet.
    #[must_use]
    pub fn any() -> Self {
        Self(vec![(0, u64::MAX)])
    }

    /// Exactly one quantity.
    #[must_use]
    pub fn exactly(quantity: u64) -> Self {
        Self(vec![(quantity, quantity)])
    }

    /// No quantity at all: the state after an impossible step.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `quantity` is possible.
    #[must_use]
    pub fn contains(&self, quantity: u64) -> bool {
        self.0
            .iter()
            .any(|&(lo, hi)| lo <= quantity && quantity <= hi)
    }

    /// After an acknowledged buy of `quantity`: the possible quantities that cover it, less it.
    #[must_use]
    pub fn bought(&self, quantity: u64) -> Self {
        Self::normalised(
            self.0
                .iter()
                .filter(|&&(_, hi)| hi >= quantity)
                .map(|&(lo, hi)| {
                    let hi = if hi == u64::MAX { hi } else { hi - quantity };
                    (lo.max(quantity) - quantity, hi)
                })
                .collect(),
        )
    }

    /// After a buy of `quantity` was refused: the possible quantities below it.
    #[must_use]
    pub fn short_of(&self, quantity: u64) -> Self {
        Self::normalised(
            self.0
                .iter()
                .filter(|&&(lo, _)| lo < quantity)
                .map(|&(lo, hi)| (lo, hi.min(quantity - 1)))
                .collect(),
        )
    }

    /// After a sell of `quantity`.
    #[must_use]
    pub fn sold(&self, quantity: u64) -> Self {
        Self::normalised(
            self.0
                .iter()
                .map(|&(lo, hi)| {
                    let hi = if hi == u64::MAX {
                        hi
                    } else {
                        hi.saturating_add(quantity)
                    };
                    (lo.saturating_add(quantity), hi)
                })
                .collect(),
        )
    }

    /// Either set.
    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        let mut all = self.0.clone();
        all.extend_from_slice(&other.0);
        Self::normalised(all)
    }

    fn normalised(mut intervals: Vec<(u64, u64)>) -> Self {
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for (lo, hi) in intervals {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        while merged.len() > INTERVALS_MAX {
            // Merge the two neighbours with the smallest gap between them.
            let i = (0..merged.len() - 1)
                .min_by_key(|&i| merged[i + 1].0 - merged[i].1)
                .expect("more than one interval");
            merged[i].1 = merged[i + 1].1;
            merged.remove(i + 1);
        }
        Self(merged)
    }
}

/// What a trade did, as far as its reply tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Acknowledged: it took effect.
    Applied,
    /// A buy refused for want of shares: it saw fewer than it asked for.
    Refused,
    /// No usable reply: it may have taken effect or not.
    Maybe,
}

/// One step on a stock.
#[derive(Debug, Clone)]
enum StockStep {
    /// Sets the possible quantities (the start of a history or of a stretch).
    Start(Quantities),
    /// A lookup saw this quantity.
    Observe(u64),
    /// A buy.
    Buy(u64, Effect),
    /// A sell.
    Sell(u64, Effect),
}

/// A stock's quantity, as a set of possible quantities.
struct StockModel;

impl Specification for StockModel {
    type State = Quantities;
    type Operation = StockStep;

    fn init() -> Quantities {
        Quantities(Vec::new())
    }

    fn apply(step: &StockStep, state: &Quantities) -> (bool, Quantities) {
        let next = match step {
            StockStep::Start(quantities) => return (true, quantities.clone()),
            StockStep::Observe(q) if state.contains(*q) => Quantities::exactly(*q),
            StockStep::Observe(_) => Quantities(Vec::new()),
            StockStep::Buy(q, Effect::Applied) => state.bought(*q),
            StockStep::Buy(q, Effect::Refused) => state.short_of(*q),
            StockStep::Buy(q, Effect::Maybe) => state.union(&state.bought(*q)),
            StockStep::Sell(q, Effect::Applied | Effect::Refused) => state.sold(*q),
            StockStep::Sell(q, Effect::Maybe) => state.union(&state.sold(*q)),
        };
        if next.is_empty() {
            (false, state.clone())
        } else {
            (true, next)
        }
    }
}

/// An order as the slot of its number holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OrderBody {
    stock: String,
    kind: TradeType,
    quantity: u64,
}

impl fmt::Display for OrderBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.kind, self.quantity, self.stock)
    }
}

/// One step on an order number.
#[derive(Debug, Clone)]
enum SlotStep {
    /// A trade was given this number.
    Create(OrderBody),
    /// A query saw this order, or none.
    Read(Option<OrderBody>),
}

/// An order number: empty, then one order for good.
struct SlotModel;

impl Specification for SlotModel {
    type State = Option<OrderBody>;
    type Operation = SlotStep;

    fn init() -> Option<OrderBody> {
        None
    }

    fn apply(step: &SlotStep, state: &Option<OrderBody>) -> (bool, Option<OrderBody>) {
        match step {
            SlotStep::Create(body) if state.is_none() => (true, Some(body.clone())),
            SlotStep::Read(seen) if seen == state => (true, state.clone()),
            _ => (false, state.clone()),
        }
    }
}

/// An operation of one object's sub-history.
#[derive(Debug, Clone)]
struct Timed<T> {
    /// Index of the operation in the whole history.
    source: usize,
    invoked: u64,
    /// `None`: never known to complete (an unknown outcome).
    completed: Option<u64>,
    step: T,
}

/// Whether `steps`, after `start`, have a linearization.
fn linearizable<S>(start: Option<S::Operation>, steps: &[Timed<S::Operation>]) -> bool
where
    S: Specification,
{
    // (time, 0 for calls and 1 for responses, process, step): at equal times calls come
    // first, which treats the two operations as concurrent (the lenient reading).
    let mut events: Vec<(u64, u8, usize, &S::Operation)> = Vec::with_capacity(steps.len() * 2);
    for (i, timed) in steps.iter().enumerate() {
        let process = i + 1;
        events.push((timed.invoked, 0, process, &timed.step));
        events.push((timed.completed.unwrap_or(u64::MAX), 1, process, &timed.step));
    }
    events.sort_by_key(|&(time, kind, process, _)| (time, kind, process));
    let mut actions = Vec::with_capacity(events.len() + 2);
    if let Some(start) = start {
        actions.push((0, Action::Call(start.clone())));
        actions.push((0, Action::Response(start)));
    }
    for (_, kind, process, step) in events {
        actions.push((
            process,
            if kind == 0 {
                Action::Call(step.clone())
            } else {
                Action::Response(step.clone())
            },
        ));
    }
    if actions.is_empty() {
        return true;
    }
    WGLChecker::<S>::is_linearizable(History::from_actions(actions))
}

/// How an object's steps change when the history is cut.
trait Relax: Sized {
    /// The step when its operation is still running at the cut: `None` if it then
    /// constrains nothing (a read), or its "maybe" form.
    fn unfinished(&self) -> Option<Self>;
}

impl Relax for StockStep {
    fn unfinished(&self) -> Option<Self> {
        match self {
            Self::Start(_) | Self::Observe(_) => None,
            Self::Buy(q, _) => Some(Self::Buy(*q, Effect::Maybe)),
            Self::Sell(q, _) => Some(Self::Sell(*q, Effect::Maybe)),
        }
    }
}

impl Relax for SlotStep {
    fn unfinished(&self) -> Option<Self> {
        match self {
            // A number given to a trade is given even if the reply is late; the order must
            // still be created before anyone reads it.
            Self::Create(_) => Some(self.clone()),
            Self::Read(_) => None,
        }
    }
}

/// The sub-history between `from` and `until`: operations completed before `from` are gone
/// (the start state is unknown instead), operations running across either cut lose their
/// outcome, operations invoked after `until` are gone.
fn stretch<T: Relax + Clone>(steps: &[Timed<T>], from: u64, until: u64) -> Vec<Timed<T>> {
    steps
        .iter()
        .filter(|t| t.invoked <= until && t.completed.is_none_or(|c| c >= from))
        .filter_map(|t| {
            let across = t.invoked < from || t.completed.is_none_or(|c| c > until);
            if across {
                let step = t.step.unfinished()?;
                Some(Timed {
                    source: t.source,
                    invoked: t.invoked,
                    completed: None,
                    step,
                })
            } else {
                Some(t.clone())
            }
        })
        .collect()
}

/// The smallest failing stretch of a failing object, as indices into the whole history; or
/// `None` when the object is linearizable. `any_state` is the step that admits every state:
/// the history starts with it, and only with it can a stretch start later than the history
/// (its earlier operations then only ever admit more). Without it, stretches start at the
/// beginning.
fn smallest_failing_stretch<S>(
    any_state: Option<&S::Operation>,
    steps: &[Timed<S::Operation>],
) -> Option<Vec<usize>>
where
    S: Specification,
    S::Operation: Relax,
{
    let start = any_state;
    let fails =
        |from: u64, until: u64| !linearizable::<S>(start.cloned(), &stretch(steps, from, until));
    // Cut points: the times at which operations complete, in order.
    let mut cuts: Vec<u64> = steps.iter().filter_map(|t| t.completed).collect();
    cuts.push(u64::MAX);
    cuts.sort_unstable();
    cuts.dedup();
    // Grow the prefix until it fails, then narrow the end down by bisection.
    let mut low = 0; // cuts[..low] are known to pass
    let mut high = PREFIX_FIRST.min(cuts.len() - 1);
    loop {
        if fails(0, cuts[high]) {
            break;
        }
        if high == cuts.len() - 1 {
            return None;
        }
        low = high + 1;
        high = (high * 2).min(cuts.len() - 1);
    }
    while low < high {
        let mid = low + (high - low) / 2;
        if fails(0, cuts[mid]) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    let until = cuts[high];
    // The latest start that still fails on its own.
    let mut starts: Vec<u64> = steps
        .iter()
        .filter(|t| t.invoked <= until)
        .map(|t| t.invoked)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let (mut low, mut high) = (0, starts.len().saturating_sub(1));
    if start.is_none() {
        high = 0;
    }
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if fails(starts[mid], until) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    let from = starts.get(low).copied().unwrap_or(0);
    let mut sources: Vec<usize> = stretch(steps, from, until)
        .iter()
        .map(|t| t.source)
        .collect();
    sources.sort_unstable();
    Some(sources)
}

/// A sub-history that has no linearization.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    /// The object: `stock FishCo` or `order 17`.
    pub object: String,
    /// What is wrong, in a sentence.
    pub summary: String,
    /// The smallest stretch of history that fails on its own, by invocation time.
    pub stretch: Vec<Op>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "anomaly: {}: {} ({} operations):",
            self.object,
            self.summary,
            self.stretch.len()
        )?;
        let n = self.stretch.len();
        for (i, op) in self.stretch.iter().enumerate() {
            if n > STRETCH_SHOWN_MAX && i == 10 {
                writeln!(f, "    ... {} more ...", n - STRETCH_SHOWN_MAX)?;
            }
            if n <= STRETCH_SHOWN_MAX || i < 10 || i >= n - (STRETCH_SHOWN_MAX - 10) {
                writeln!(f, "    {}", op.describe())?;
            }
        }
        Ok(())
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Operations in the history.
    pub ops: usize,
    /// Lookups with an answer (a `GET /stocks` counts once).
    pub lookups: usize,
    /// Trades acknowledged.
    pub trades_acknowledged: usize,
    /// Buys refused for want of shares.
    pub trades_refused: usize,
    /// Trades with an unknown outcome (checked as "maybe").
    pub trades_unknown: usize,
    /// Trades without a reply whose outcome the logs settled (applied with a number, or never).
    pub trades_settled: usize,
    /// Order queries with an answer.
    pub order_queries: usize,
    /// Stocks checked.
    pub stocks: usize,
    /// Order numbers checked (those some query asked for).
    pub order_numbers: usize,
    /// Objects without a linearization, with their smallest stretch.
    pub anomalies: Vec<Anomaly>,
    /// Objects the search did not decide within the budget.
    pub undecided: Vec<String>,
    /// How long the check took.
    pub elapsed_s: f64,
}

impl Report {
    /// True when every object was decided and is linearizable.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.anomalies.is_empty() && self.undecided.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for anomaly in &self.anomalies {
            write!(f, "{anomaly}")?;
        }
        for object in &self.undecided {
            writeln!(f, "undecided: {object}: the search ran out of time")?;
        }
        write!(
            f,
            "linearizability: {} operations ({} lookups, {} trades acknowledged, {} refused, {} settled by the logs, {} unknown, {} order queries) on {} stocks and {} order numbers, checked in {:.1} s: ",
            self.ops,
            self.lookups,
            self.trades_acknowledged,
            self.trades_refused,
            self.trades_settled,
            self.trades_unknown,
            self.order_queries,
            self.stocks,
            self.order_numbers,
            self.elapsed_s
        )?;
        if self.ok() {
            write!(f, "linearizable, 0 anomalies")
        } else {
            write!(
                f,
                "{} anomalies, {} undecided",
                self.anomalies.len(),
                self.undecided.len()
            )
        }
    }
}

/// Each stock's steps, and each order number's, from the whole history.
struct Objects {
    stocks: BTreeMap<String, Vec<Timed<StockStep>>>,
    slots: BTreeMap<u64, Vec<Timed<SlotStep>>>,
    /// Order numbers read back as an order no trade could have made.
    unexplained: Vec<Anomaly>,
}

fn body_of(call: &Call) -> Option<OrderBody> {
    match call {
        Call::Trade {
            stock,
            kind,
            quantity,
            ..
        } => Some(OrderBody {
            stock: stock.clone(),
            kind: *kind,
            quantity: *quantity,
        }),
        _ => None,
    }
}

/// An operation's interval, carrying one object's step.
fn at<T>(source: usize, op: &Op, step: T) -> Timed<T> {
    Timed {
        source,
        invoked: op.invoked_us,
        completed: Some(op.completed_us),
        step,
    }
}

fn objects(ops: &[Op], settled: Option<&Settled>, report: &mut Report) -> Objects {
    let mut stocks: BTreeMap<String, Vec<Timed<StockStep>>> = BTreeMap::new();
    let mut slots: BTreeMap<u64, Vec<Timed<SlotStep>>> = BTreeMap::new();
    let mut queried: BTreeMap<u64, Vec<(usize, Option<OrderBody>)>> = BTreeMap::new();
    for (source, op) in ops.iter().enumerate() {
        let timed = |step| at(source, op, step);
        let slot_step = |step| at(source, op, step);
        match (&op.call, &op.outcome) {
            (Call::Lookup { stock }, Outcome::Quantity { quantity }) => {
                report.lookups += 1;
                stocks
                    .entry(stock.clone())
                    .or_default()
                    .push(timed(StockStep::Observe(*quantity)));
            }
            (Call::StockList, Outcome::Stocks { stocks: all }) => {
                report.lookups += 1;
                for (stock, quantity) in all {
                    stocks
                        .entry(stock.clone())
                        .or_default()
                        .push(timed(StockStep::Observe(*quantity)));
                }
            }
            (
                Call::Trade {
                    stock,
                    kind,
                    quantity,
                    request_id,
                },
                outcome,
            ) => {
                // A trade without a reply that the logs settle: it took effect with this number,
                // or (None) it never did.
                let settled_number = match (outcome, request_id, settled) {
                    (Outcome::Unknown { .. }, Some(id), Some(settled)) => {
                        Some(settled.0.get(id).copied())
                    }
                    _ => None,
                };
                let effect = match (outcome, settled_number) {
                    (Outcome::Traded { .. }, _) => Effect::Applied,
                    (Outcome::Refused, _) if *kind == TradeType::Buy => Effect::Refused,
                    (Outcome::Unknown { .. }, Some(Some(_))) => {
                        report.trades_settled += 1;
                        Effect::Applied
                    }
                    (Outcome::Unknown { .. }, Some(None)) => {
                        report.trades_settled += 1;
                        continue;
                    }
                    (Outcome::Unknown { .. }, None) => Effect::Maybe,
                    // Refused as invalid or never sent: no effect, nothing seen.
                    _ => continue,
                };
                let step = match kind {
                    TradeType::Buy => StockStep::Buy(*quantity, effect),
                    TradeType::Sell => StockStep::Sell(*quantity, effect),
                };
                let mut entry = timed(step);
                match effect {
                    Effect::Applied if settled_number.is_some() => entry.completed = None,
                    Effect::Applied => report.trades_acknowledged += 1,
                    Effect::Refused => report.trades_refused += 1,
                    Effect::Maybe => {
                        report.trades_unknown += 1;
                        entry.completed = None;
                    }
                }
                stocks.entry(stock.clone()).or_default().push(entry);
                let number = match (outcome, settled_number) {
                    (Outcome::Traded { number }, _) => Some((*number, Some(op.completed_us))),
                    (_, Some(Some(number))) => Some((number, None)),
                    _ => None,
                };
                if let (Some((number, completed)), Some(body)) = (number, body_of(&op.call)) {
                    let mut create = slot_step(SlotStep::Create(body));
                    create.completed = completed;
                    slots.entry(number).or_default().push(create);
                }
            }
            (Call::OrderQuery { number }, Outcome::Found { order }) => {
                report.order_queries += 1;
                let body = OrderBody {
                    stock: order.name.clone(),
                    kind: order.kind,
                    quantity: order.quantity,
                };
                queried
                    .entry(*number)
                    .or_default()
                    .push((source, Some(body.clone())));
                slots
                    .entry(*number)
                    .or_default()
                    .push(slot_step(SlotStep::Read(Some(body))));
            }
            (Call::OrderQuery { number }, Outcome::NotFound) => {
                report.order_queries += 1;
                queried.entry(*number).or_default().push((source, None));
                slots
                    .entry(*number)
                    .or_default()
                    .push(slot_step(SlotStep::Read(None)));
            }
            _ => {}
        }
    }
    // Only numbers someone asked for can show anything.
    slots.retain(|number, _| queried.contains_key(number));
    // A number read back as an order that no acknowledged trade was given: a trade whose
    // reply was lost may have made it, else nothing could have.
    let mut unexplained = Vec::new();
    for (number, reads) in &queried {
        let slot = slots.entry(*number).or_default();
        let created = slot.iter().any(|t| matches!(t.step, SlotStep::Create(_)));
        if created {
            continue;
        }
        let mut bodies: Vec<(usize, OrderBody)> = reads
            .iter()
            .filter_map(|(source, body)| body.clone().map(|b| (*source, b)))
            .collect();
        bodies.sort_by_key(|(_, body)| body.to_string());
        bodies.dedup_by(|a, b| a.1 == b.1);
        for (read, body) in bodies {
            let maker = ops.iter().enumerate().find(|(_, op)| {
                op.outcome.is_unknown()
                    && body_of(&op.call).as_ref() == Some(&body)
                    && op.invoked_us <= ops[read].completed_us
            });
            match maker {
                Some((source, op)) => slot.push(Timed {
                    source,
                    invoked: op.invoked_us,
                    completed: None,
                    step: SlotStep::Create(body),
                }),
                None => unexplained.push(Anomaly {
                    object: format!("order {number}"),
                    summary: format!(
                        "read back as {body}, but no trade of that was acknowledged with this number or left without a reply before the query"
                    ),
                    stretch: vec![ops[read].clone()],
                }),
            }
        }
    }
    Objects {
        stocks,
        slots,
        unexplained,
    }
}

/// Names what a failing order number shows, from its operations.
fn slot_summary(number: u64, steps: &[Timed<SlotStep>]) -> String {
    let creates: Vec<&Timed<SlotStep>> = steps
        .iter()
        .filter(|t| matches!(t.step, SlotStep::Create(_)))
        .collect();
    if creates.len() > 1 {
        return format!(
            "transaction number {number} was given to {} different trades",
            creates.len()
        );
    }
    if let Some(create) = creates.first() {
        let SlotStep::Create(body) = &create.step else {
            unreachable!("filtered to creates")
        };
        for t in steps {
            match &t.step {
                SlotStep::Read(None) if create.completed.is_some_and(|done| done < t.invoked) => {
                    return format!(
                        "order {number} ({body}) was acknowledged, then a query found no such order (lost or not yet visible)"
                    );
                }
                SlotStep::Read(Some(seen)) if seen != body => {
                    return format!(
                        "order {number} was acknowledged as {body} but read back as {seen}"
                    );
                }
                _ => {}
            }
        }
    }
    format!("no order of the operations on number {number} explains what clients saw")
}

/// Most threads the search uses.
const WORKERS_MAX: usize = 4;

/// One object's sub-history, to search.
enum Job {
    Stock(String, Vec<Timed<StockStep>>),
    Slot(u64, Vec<Timed<SlotStep>>),
}

impl Job {
    fn object(&self) -> String {
        match self {
            Self::Stock(stock, _) => format!("stock {stock}"),
            Self::Slot(number, _) => format!("order {number}"),
        }
    }

    /// The anomaly this object shows, with its smallest stretch, if it has one.
    fn search(&self, ops: &[Op]) -> Option<Anomaly> {
        let stretch = |sources: Vec<usize>| sources.iter().map(|&i| ops[i].clone()).collect();
        match self {
            Self::Stock(_, steps) => {
                let start = StockStep::Start(Quantities::any());
                smallest_failing_stretch::<StockModel>(Some(&start), steps).map(|sources| Anomaly {
                    object: self.object(),
                    summary: "no order of these operations explains the quantities clients saw"
                        .to_owned(),
                    stretch: stretch(sources),
                })
            }
            Self::Slot(number, steps) => {
                smallest_failing_stretch::<SlotModel>(None, steps).map(|sources| Anomaly {
                    object: self.object(),
                    summary: slot_summary(*number, steps),
                    stretch: stretch(sources),
                })
            }
        }
    }
}

/// What the replicas' logs say about trades: the order number of every trade that took effect,
/// by the request id the client named it with. Given to [`check`] once a run's logs are final
/// (`bazaar netchaos` reads them from the replicas' files), it settles each trade that got no
/// reply but carried a request id: it took effect with that number, or never did. Without it
/// such a trade is a "maybe" for the rest of the history, and a long run with many of them
/// is more than the search can decide.
#[derive(Debug, Clone, Default)]
pub struct Settled(pub HashMap<RequestId, u64>);

/// Checks a history (sorted or not), with what the logs settle if they are at hand. Objects
/// still undecided after `budget` are reported as such; the search for them goes on in
/// detached threads until it ends or the process does.
#[must_use]
pub fn check(ops: &[Op], settled: Option<&Settled>, budget: Duration) -> Report {
    let started = Instant::now();
    let mut ops = ops.to_vec();
    crate::history::sort(&mut ops);
    let mut report = Report {
        ops: ops.len(),
        ..Report::default()
    };
    let Objects {
        stocks,
        slots,
        unexplained,
    } = objects(&ops, settled, &mut report);
    report.stocks = stocks.len();
    report.order_numbers = slots.len();
    report.anomalies = unexplained;
    // Order numbers first: each is tiny, and there are as many as trades.
    let jobs: VecDeque<Job> = slots
        .into_iter()
        .map(|(number, steps)| Job::Slot(number, steps))
        .chain(
            stocks
                .into_iter()
                .map(|(stock, steps)| Job::Stock(stock, steps)),
        )
        .collect();
    let mut pending: BTreeSet<String> = jobs.iter().map(Job::object).collect();
    let jobs = Arc::new(Mutex::new(jobs));
    let ops = Arc::new(ops);
    let (tx, rx) = mpsc::channel::<(String, Option<Anomaly>)>();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(WORKERS_MAX));
    let mut started_any = false;
    for i in 0..workers {
        let (jobs, ops, tx) = (Arc::clone(&jobs), Arc::clone(&ops), tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("linearizability-{i}"))
            .spawn(move || {
                loop {
                    let job = jobs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop_front();
                    let Some(job) = job else { return };
                    let object = job.object();
                    if tx.send((object, job.search(&ops))).is_err() {
                        return;
                    }
                }
            });
        match spawned {
            Ok(_) => started_any = true,
            Err(e) => tracing::error!(error = %e, "cannot start a linearizability search thread"),
        }
    }
    drop(tx);
    if !started_any {
        report.undecided = pending.into_iter().collect();
        return report;
    }
    let deadline = started + budget;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((object, anomaly)) => {
                pending.remove(&object);
                report.anomalies.extend(anomaly);
            }
            Err(_) => break,
        }
    }
    // Anomalies in a stable order: stocks by name, then orders by number.
    report.anomalies.sort_by(|a, b| a.object.cmp(&b.object));
    report.undecided = pending.into_iter().collect();
    report.elapsed_s = started.elapsed().as_secs_f64();
    report
}

#[cfg(test)]
mod tests;
