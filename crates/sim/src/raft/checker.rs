//! The invariants of the raft simulation, checked as the storage reports what each replica
//! made durable and applied, as clients hear acknowledgements, and after every fault.
//!
//! The checker keeps, for each replica, a model of what its database holds (the Raft log as
//! index -> term, the last applied entry, the orders by number). The storage wrappers update it
//! after every write that returned, so it is what the file holds; a crash or restart reloads it
//! from the file itself.
//!
//! Invariants:
//! - state machine safety: every replica applies the same entry at each index, with the same
//!   outcomes (the ledger is deterministic);
//! - numbers never fork: a number is applied for one trade only, on every replica;
//! - exactly once: a request id is applied as one number, on every replica and across retries,
//!   and is acknowledged with that number;
//! - conservation: a reference ledger (`bazaar_ledger::Book`) replays the applied entries in
//!   index order, asserting quantity = initial + restocked + sold - bought per stock, and every
//!   replica's stock table at each position equals the reference's there;
//! - no acknowledged trade is lost: each is held (in the log, or applied) by a majority of the
//!   replicas' files at every moment after it was acknowledged. Crashes keep files (a crash is
//!   a kill, see `super`), so under a correct Raft this always holds; a file that loses an
//!   entry it reported durable can break it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bazaar_api::log::{BookSnapshot, Command, LogIndex, Position};
use bazaar_api::{ReplicaId, RequestId, TxnNumber};
use bazaar_ledger::{Book, Outcome};
use bazaar_order::file::Contents;
use bazaar_order::raft::types::LogId;
use tokio::time::Instant;

use crate::Violation;

/// Events kept for the trace printed with a violation.
const TRACE_LEN: usize = 400;

/// Replicas in the group.
pub const REPLICAS: usize = 3;

/// How many replicas' files must hold an acknowledged trade.
const MAJORITY: usize = REPLICAS / 2 + 1;

/// What one replica's file holds, as far as the invariants look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durable {
    /// The Raft log: term of the entry at each index.
    pub log: BTreeMap<u64, u64>,
    /// Index of the last entry applied.
    pub applied: Option<u64>,
    /// Applied orders: the request id of each number.
    pub orders: BTreeMap<u64, RequestId>,
}

impl Durable {
    /// What a replica's file holds, read from the file.
    pub fn from_file(contents: &Contents) -> Self {
        Self {
            log: contents
                .log
                .iter()
                .map(|e| (e.index.0, e.epoch.0))
                .collect(),
            applied: contents.applied,
            orders: contents
                .orders
                .iter()
                .map(|o| (o.number.0, o.request_id))
                .collect(),
        }
    }

    /// The first difference from `other`, in words.
    fn difference(&self, other: &Self) -> Option<String> {
        if self.applied != other.applied {
            return Some(format!(
                "applied up to {:?}, not {:?}",
                self.applied, other.applied
            ));
        }
        if let Some((i, t)) = self.log.iter().find(|(i, t)| other.log.get(i) != Some(t)) {
            return Some(format!("log entry {i} (term {t}) differs"));
        }
        if let Some((i, t)) = other.log.iter().find(|(i, _)| !self.log.contains_key(i)) {
            return Some(format!("log entry {i} (term {t}) is missing"));
        }
        if self.orders != other.orders {
            return Some(format!(
                "{} orders, not {}",
                self.orders.len(),
                other.orders.len()
            ));
        }
        None
    }
}

/// The first application of a log index anywhere.
#[derive(Debug, Clone)]
struct AppliedEntry {
    term: u64,
    commands: Vec<Command>,
    outcomes: Vec<Outcome>,
    by: ReplicaId,
}

/// The first application of a number anywhere.
#[derive(Debug, Clone, Copy)]
struct Numbered {
    request: RequestId,
    index: u64,
    term: u64,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Trades acknowledged (a retry acknowledged again counts once).
    pub acked: usize,
    /// Trades the ledger refused.
    pub refused: usize,
    /// Restocks applied.
    pub restocks: usize,
    /// Entries applied, at the highest index.
    pub entries: u64,
    /// Snapshots installed by a replica that was behind.
    pub installs: usize,
}

/// The checker, shared by the storage wrappers, the network, the clients and the fault loop.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Mutex<Checker>>,
}

/// The checker's state.
pub struct Checker {
    seed: u64,
    replay: String,
    origin: Instant,
    /// The fault phase's step, or past it.
    pub step: u64,
    trace: VecDeque<String>,
    violation: Option<Violation>,
    nodes: BTreeMap<ReplicaId, Durable>,
    entries: BTreeMap<u64, AppliedEntry>,
    numbers: BTreeMap<u64, Numbered>,
    requests: HashMap<RequestId, u64>,
    acked: HashMap<RequestId, u64>,
    /// The reference ledger, and its book after each index it applied.
    reference: Book,
    reference_books: BTreeMap<Position, BookSnapshot>,
    /// Replicas' books at positions the reference has not reached yet.
    waiting_books: BTreeMap<Position, Vec<(ReplicaId, BookSnapshot)>>,
    /// Files that lost something since the last check of acknowledged trades.
    holdings_dirty: bool,
    /// What the run did.
    pub counts: Counts,
}

impl Shared {
    /// A checker for the run `seed`, replayed by `replay`.
    pub fn new(seed: u64, replay: String) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Checker {
                seed,
                replay,
                origin: Instant::now(),
                step: 0,
                trace: VecDeque::with_capacity(TRACE_LEN),
                violation: None,
                nodes: (1..=REPLICAS)
                    .map(|i| (replica(i), Durable::default()))
                    .collect(),
                entries: BTreeMap::new(),
                numbers: BTreeMap::new(),
                requests: HashMap::new(),
                acked: HashMap::new(),
                reference: Book::new(),
                reference_books: BTreeMap::new(),
                waiting_books: BTreeMap::new(),
                holdings_dirty: false,
                counts: Counts::default(),
            })),
        }
    }

    /// The checker, locked (never across an await).
    pub fn lock(&self) -> MutexGuard<'_, Checker> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an event to the trace.
    pub fn note(&self, text: impl Into<String>) {
        self.lock().note(text);
    }

    /// The first violation found, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.lock().violation.clone()
    }
}

/// Replica `i` (1-based).
#[must_use]
pub fn replica(i: usize) -> ReplicaId {
    ReplicaId(u8::try_from(i).expect("three replicas"))
}

impl Checker {
    /// Simulated milliseconds since the run started.
    pub fn millis(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1000.0
    }

    /// Adds an event to the trace.
    pub fn note(&mut self, text: impl Into<String>) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        let line = format!("{:>10.3} ms  {}", self.millis(), text.into());
        self.trace.push_back(line);
    }

    /// Records a broken invariant (the first one wins; the run stops at the next step).
    pub fn fail(&mut self, what: impl Into<String>) {
        let what = what.into();
        self.note(format!("VIOLATION: {what}"));
        if self.violation.is_none() {
            self.violation = Some(Violation {
                seed: self.seed,
                step: self.step,
                what,
                trace: self.trace.iter().cloned().collect(),
                replay: self.replay.clone(),
            });
        }
    }

    /// Whether an invariant broke.
    pub fn failed(&self) -> bool {
        self.violation.is_some()
    }

    /// The model of replica `id`'s file.
    pub fn durable(&self, id: ReplicaId) -> &Durable {
        &self.nodes[&id]
    }

    /// Replaces the model of `id`'s file with what the file holds (at a boot, after a crash).
    /// `expect_same`: the model must already be that (a crash is a kill: a file keeps every
    /// write that returned).
    pub fn reload(&mut self, id: ReplicaId, file: Durable, expect_same: bool) {
        let model = self.nodes.entry(id).or_default();
        if expect_same && let Some(diff) = model.difference(&file) {
            let what = format!(
                "replica {id}'s file after a crash is not what its storage reported durable: \
                 the file has {diff}"
            );
            *model = file;
            self.fail(what);
            return;
        }
        if *model != file {
            self.holdings_dirty = true;
        }
        *model = file;
        // A file may hold orders the checker never saw applied only if it lost track: check
        // every one against the numbers applied anywhere.
        let orders: Vec<(u64, RequestId)> = self.nodes[&id]
            .orders
            .iter()
            .map(|(n, r)| (*n, *r))
            .collect();
        for (number, request) in orders {
            self.check_number(id, number, request, None);
        }
    }

    /// Entries made durable in `id`'s log.
    pub fn appended(&mut self, id: ReplicaId, entries: &[(u64, u64)]) {
        let log = &mut self.nodes.entry(id).or_default().log;
        for (index, term) in entries {
            log.insert(*index, *term);
        }
    }

    /// `id`'s log lost its entries from `since` on (a conflict with the leader's).
    pub fn truncated(&mut self, id: ReplicaId, since: u64) {
        let log = &mut self.nodes.entry(id).or_default().log;
        let gone = log.split_off(&since);
        if !gone.is_empty() {
            self.holdings_dirty = true;
        }
    }

    /// `id`'s log lost its entries up to `upto` (compaction: a snapshot covers them).
    pub fn purged(&mut self, id: ReplicaId, upto: u64) {
        let log = &mut self.nodes.entry(id).or_default().log;
        *log = log.split_off(&upto.saturating_add(1));
        self.holdings_dirty = true;
    }

    /// `id` applied `entries` (log id and commands) with these outcomes, and its stock table
    /// is then `book`.
    pub fn applied(
        &mut self,
        id: ReplicaId,
        entries: &[(LogId, Vec<Command>)],
        outcomes: &[Vec<Outcome>],
        book: &BookSnapshot,
    ) {
        if entries.len() != outcomes.len() {
            self.fail(format!(
                "replica {id} applied {} entries but answered {} outcomes",
                entries.len(),
                outcomes.len()
            ));
            return;
        }
        for ((log_id, commands), outcomes) in entries.iter().zip(outcomes) {
            self.applied_one(id, *log_id, commands, outcomes);
        }
        self.advance_reference();
        self.check_book(id, book.clone());
    }

    fn applied_one(
        &mut self,
        id: ReplicaId,
        log_id: LogId,
        commands: &[Command],
        outcomes: &[Outcome],
    ) {
        let (index, term) = (log_id.index, log_id.leader_id.term);
        let node = self.nodes.entry(id).or_default();
        if node.applied.is_some_and(|a| a >= index) {
            let what = format!(
                "replica {id} applied entry {index} after entry {:?}",
                node.applied
            );
            self.fail(what);
        }
        self.nodes.entry(id).or_default().applied = Some(index);
        match self.entries.get(&index) {
            Some(first) if first.term != term || first.commands != commands => {
                let what = format!(
                    "state machine safety broken: replica {id} applied entry {index} of term \
                     {term} ({} commands), replica {} applied entry {index} of term {} ({} \
                     commands)",
                    commands.len(),
                    first.by,
                    first.term,
                    first.commands.len()
                );
                self.fail(what);
                return;
            }
            Some(first) if first.outcomes != outcomes => {
                let what = format!(
                    "the ledger is not deterministic: entry {index} answered {outcomes:?} on \
                     replica {id} and {:?} on replica {}",
                    first.outcomes, first.by
                );
                self.fail(what);
                return;
            }
            Some(_) => {}
            None => {
                self.entries.insert(
                    index,
                    AppliedEntry {
                        term,
                        commands: commands.to_vec(),
                        outcomes: outcomes.to_vec(),
                        by: id,
                    },
                );
                self.counts.entries = self.counts.entries.max(index);
                for (command, outcome) in commands.iter().zip(outcomes) {
                    match (command, outcome) {
                        (Command::Trade(_), Outcome::Refused(_)) => self.counts.refused += 1,
                        (Command::Restock { .. }, Outcome::Restocked(_)) => {
                            self.counts.restocks += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        for (command, outcome) in commands.iter().zip(outcomes) {
            let Some(trade) = command.trade() else {
                continue;
            };
            match outcome {
                Outcome::Traded(number) => {
                    let previous = self
                        .nodes
                        .entry(id)
                        .or_default()
                        .orders
                        .insert(number.0, trade.request_id);
                    if let Some(previous) = previous {
                        self.fail(format!(
                            "replica {id} applied number {number} twice: for request \
                             {previous} and for request {}",
                            trade.request_id
                        ));
                    }
                    let again = self.nodes[&id]
                        .orders
                        .iter()
                        .find(|(n, r)| **r == trade.request_id && **n != number.0)
                        .map(|(n, _)| *n);
                    if let Some(again) = again {
                        self.fail(format!(
                            "exactly once broken on replica {id}: request {} applied as {again} \
                             and as {number}",
                            trade.request_id
                        ));
                    }
                    self.check_number(id, number.0, trade.request_id, Some((index, term)));
                }
                Outcome::Duplicate(number) => match self.requests.get(&trade.request_id) {
                    Some(first) if *first == number.0 => {}
                    first => {
                        let what = format!(
                            "exactly once broken: replica {id} answered request {} as a repeat \
                             of number {number}, but it was applied as {first:?}",
                            trade.request_id
                        );
                        self.fail(what);
                    }
                },
                _ => {}
            }
        }
    }

    /// Number `number` is applied for `request` on `id`: the same everywhere.
    fn check_number(
        &mut self,
        id: ReplicaId,
        number: u64,
        request: RequestId,
        at: Option<(u64, u64)>,
    ) {
        match self.numbers.get(&number) {
            Some(first) if first.request != request => {
                let what = format!(
                    "numbers forked: number {number} is request {} (entry {} of term {}) \
                     elsewhere but request {request} on replica {id}",
                    first.request, first.index, first.term
                );
                self.fail(what);
            }
            Some(_) => {}
            None => match at {
                Some((index, term)) => {
                    self.numbers.insert(
                        number,
                        Numbered {
                            request,
                            index,
                            term,
                        },
                    );
                }
                None => self.fail(format!(
                    "replica {id}'s file holds number {number} (request {request}), which no \
                     replica was seen applying"
                )),
            },
        }
        match self.requests.get(&request) {
            Some(first) if *first != number => {
                let what = format!(
                    "exactly once broken: request {request} is number {first} elsewhere but \
                     {number} on replica {id}"
                );
                self.fail(what);
            }
            Some(_) => {}
            None => {
                self.requests.insert(request, number);
            }
        }
    }

    /// Replays every entry the reference has not applied yet, in index order, as long as
    /// they are known without a gap.
    fn advance_reference(&mut self) {
        loop {
            // The log starts at index 0 (the membership `initialize` writes).
            let next = self.reference.position().next_index().0;
            let Some(entry) = self.entries.get(&next).cloned() else {
                return;
            };
            let reference = &mut self.reference;
            let replayed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                reference.apply_at(LogIndex(next), &entry.commands).0
            }));
            let outcomes = match replayed {
                Ok(outcomes) => outcomes,
                Err(panic) => {
                    let why = panic_text(&*panic);
                    self.fail(format!(
                        "the reference ledger refuses entry {next} (conservation or numbering): \
                         {why}"
                    ));
                    return;
                }
            };
            if outcomes != entry.outcomes {
                self.fail(format!(
                    "entry {next} answered {:?} on replica {} but {outcomes:?} replayed on the \
                     reference ledger",
                    entry.outcomes, entry.by
                ));
                return;
            }
            let unconserved = self
                .reference
                .records()
                .find(|r| !r.is_conserved())
                .map(|bad| format!("{bad:?}"));
            if let Some(bad) = unconserved {
                let what = format!("conservation broken at entry {next}: {bad}");
                self.fail(what);
                return;
            }
            let book = self.reference.snapshot();
            let position = book.position;
            for (id, theirs) in self.waiting_books.remove(&position).unwrap_or_default() {
                self.compare_book(id, &book, &theirs);
            }
            self.reference_books.insert(position, book);
        }
    }

    /// `id`'s stock table is `book`: the same as the reference's at that position.
    pub fn check_book(&mut self, id: ReplicaId, book: BookSnapshot) {
        match self.reference_books.get(&book.position).cloned() {
            Some(reference) => self.compare_book(id, &reference, &book),
            None => self
                .waiting_books
                .entry(book.position)
                .or_default()
                .push((id, book)),
        }
    }

    fn compare_book(&mut self, id: ReplicaId, reference: &BookSnapshot, theirs: &BookSnapshot) {
        if reference != theirs {
            let what = format!(
                "replica {id}'s stock table at position {} is {:?} (next number {}), the \
                 reference ledger's is {:?} (next number {})",
                theirs.position,
                theirs.stocks,
                theirs.next_number,
                reference.stocks,
                reference.next_number
            );
            self.fail(what);
        }
    }

    /// `id` installed a snapshot: its file now holds these orders and applied up to `applied`,
    /// and its stock table is `book`.
    pub fn installed(
        &mut self,
        id: ReplicaId,
        applied: Option<u64>,
        orders: BTreeMap<u64, RequestId>,
        book: BookSnapshot,
    ) {
        self.counts.installs += 1;
        let node = self.nodes.entry(id).or_default();
        node.applied = applied;
        node.orders = orders;
        self.holdings_dirty = true;
        let orders: Vec<(u64, RequestId)> = self.nodes[&id]
            .orders
            .iter()
            .map(|(n, r)| (*n, *r))
            .collect();
        for (number, request) in orders {
            self.check_number(id, number, request, None);
        }
        self.check_book(id, book);
    }

    /// A client heard `request` acknowledged as `number` at `position`.
    pub fn acked(&mut self, client: usize, request: RequestId, number: TxnNumber, at: Position) {
        self.note(format!(
            "client {client}: request {request} ACKED as number {number} at position {at}"
        ));
        match self.acked.insert(request, number.0) {
            Some(first) if first != number.0 => {
                self.fail(format!(
                    "exactly once broken: request {request} acknowledged as {first} and as {number}"
                ));
                return;
            }
            Some(_) => {}
            None => self.counts.acked += 1,
        }
        match self.requests.get(&request) {
            Some(applied) if *applied == number.0 => {}
            applied => {
                let what = format!(
                    "request {request} acknowledged as number {number}, but it was applied as \
                     {applied:?}"
                );
                self.fail(what);
                return;
            }
        }
        self.check_holdings_of(request, number.0);
    }

    /// Every acknowledged trade is held by a majority of files, if any file lost something
    /// since the last look.
    pub fn check_holdings(&mut self) {
        if !self.holdings_dirty {
            return;
        }
        self.holdings_dirty = false;
        for (request, number) in self.acked_by_number() {
            if !self.check_holdings_of(request, number) {
                return;
            }
        }
    }

    /// Every acknowledged trade, by number.
    fn acked_by_number(&self) -> Vec<(RequestId, u64)> {
        let mut acked: Vec<(RequestId, u64)> = self.acked.iter().map(|(r, n)| (*r, *n)).collect();
        acked.sort_unstable_by_key(|(_, n)| *n);
        acked
    }

    /// Whether `request`, acknowledged as `number`, is held by a majority of files (records
    /// a violation if not).
    fn check_holdings_of(&mut self, request: RequestId, number: u64) -> bool {
        let Some(first) = self.numbers.get(&number).copied() else {
            return true;
        };
        let holders: BTreeSet<ReplicaId> = self
            .nodes
            .iter()
            .filter(|(_, d)| {
                d.orders.get(&number) == Some(&request)
                    || d.log.get(&first.index) == Some(&first.term)
            })
            .map(|(id, _)| *id)
            .collect();
        if holders.len() >= MAJORITY {
            return true;
        }
        self.fail(format!(
            "acknowledged trade lost: request {request} (number {number}, entry {} of term {}) \
             is held by {} of {REPLICAS} replicas' files ({holders:?}); every acknowledged \
             trade must stay on a majority",
            first.index,
            first.term,
            holders.len()
        ));
        false
    }

    /// Every acknowledged trade is applied, with its number, on every replica.
    pub fn check_everywhere(&mut self) {
        for (request, number) in self.acked_by_number() {
            let missing: Vec<ReplicaId> = self
                .nodes
                .iter()
                .filter(|(_, d)| d.orders.get(&number) != Some(&request))
                .map(|(id, _)| *id)
                .collect();
            if !missing.is_empty() {
                self.fail(format!(
                    "after the faults stopped, acknowledged request {request} (number \
                     {number}) is not applied on replicas {missing:?}"
                ));
                return;
            }
        }
        let positions: BTreeSet<Option<u64>> = self.nodes.values().map(|d| d.applied).collect();
        let reached = self.reference.position();
        if let Some(Some(last)) = positions.iter().next_back()
            && reached != LogIndex(*last).position()
        {
            self.fail(format!(
                "the reference ledger replayed up to position {reached} only, but a replica \
                 applied up to entry {last}: the checker missed entries"
            ));
        }
    }

    /// Whether every replica's file has applied its whole log, as far as every other, with the
    /// same orders. (A log may be empty: a snapshot covers it.)
    pub fn converged(&self) -> bool {
        let last = |d: &Durable| d.log.last_key_value().map(|(i, _)| *i).max(d.applied);
        let mut files = self.nodes.values();
        let Some(first) = files.next() else {
            return true;
        };
        first.applied.is_some()
            && last(first) == first.applied
            && files.all(|d| {
                d.applied == first.applied && last(d) == d.applied && d.orders == first.orders
            })
    }

    /// Each replica's last applied entry, for messages.
    pub fn applied_positions(&self) -> Vec<(ReplicaId, Option<u64>)> {
        self.nodes.iter().map(|(id, d)| (*id, d.applied)).collect()
    }
}

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}
