//! Simulated storage: what survives a crash (the durable log and term) and what does not (the
//! persists still under way). Also the per-replica facts the invariants are checked against.

use std::collections::{HashMap, VecDeque};

use bazaar_api::log::{Command, LogIndex, Position};
use bazaar_api::replica::{EpochRun, LogEntry};
use bazaar_api::{RequestId, TxnNumber};
use bazaar_ledger::{Book, Outcome};
use bazaar_order::primary_backup::core::{RequestNumber, Term};

/// One persist waiting to become durable.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The core's number for it.
    pub request: RequestNumber,
    /// A term to store.
    pub term: Option<Term>,
    /// Entries from here on move aside.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append.
    pub entries: Vec<LogEntry>,
    /// When it becomes durable (simulated microseconds).
    pub durable_at: u64,
    /// Whether the core has been told it is done (a lying disk tells early).
    pub reported: bool,
}

/// One replica's disk.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// The durable term.
    pub term: Term,
    /// The durable log.
    pub log: Vec<LogEntry>,
    /// Entries moved aside.
    pub conflicts: Vec<LogEntry>,
    /// Persists under way, in order.
    pub pending: VecDeque<Pending>,
    /// Request id to number of every trade in the durable log: the orders table, which storage
    /// derives from the log it holds, as the real writer does.
    pub numbers: HashMap<RequestId, TxnNumber>,
    /// The durable log replayed, from which `numbers` grows.
    replayed: Book,
}

impl Disk {
    /// The durable log's epoch runs.
    #[must_use]
    pub fn runs(&self) -> Vec<EpochRun> {
        let mut runs: Vec<EpochRun> = Vec::new();
        for e in &self.log {
            if runs.last().is_none_or(|r| r.epoch != e.epoch) {
                runs.push(EpochRun {
                    start: e.index,
                    epoch: e.epoch,
                });
            }
        }
        runs
    }

    /// The durable log's length.
    #[must_use]
    pub fn len(&self) -> Position {
        Position(self.log.len() as u64)
    }

    /// The durable log replayed.
    ///
    /// # Errors
    /// The log is not dense.
    pub fn book(&self) -> Result<Book, String> {
        Book::replay(
            self.log
                .iter()
                .map(|e| (e.index, std::slice::from_ref(&e.command))),
        )
    }

    /// Durable entries from `start`, at most `limit`.
    #[must_use]
    pub fn entries(&self, start: LogIndex, limit: usize) -> Vec<LogEntry> {
        let Ok(start) = usize::try_from(start.0) else {
            return Vec::new();
        };
        self.log.iter().skip(start).take(limit).cloned().collect()
    }

    /// Makes a pending persist durable.
    ///
    /// # Errors
    /// A sentence when it breaks a storage rule (entries that do not continue the log, a
    /// request id stored twice): the runtime's own assertions, here as violations.
    pub fn apply(&mut self, persist: &Pending) -> Result<(), String> {
        if let Some(term) = persist.term {
            if term.epoch < self.term.epoch {
                return Err(format!(
                    "the term went back from {} to {}",
                    self.term.epoch, term.epoch
                ));
            }
            self.term = term;
        }
        if let Some(from) = persist.truncate_from {
            let keep = usize::try_from(from.0).unwrap_or(usize::MAX);
            if keep < self.log.len() {
                let aside = self.log.split_off(keep);
                self.conflicts.extend(aside);
                self.replayed = self.book()?;
                self.numbers = self.replayed.requests().collect();
            }
        }
        for entry in &persist.entries {
            if entry.index.0 != self.log.len() as u64 {
                return Err(format!(
                    "entry {} does not continue a log of {} entries",
                    entry.index,
                    self.log.len()
                ));
            }
            let (outcomes, _) = self
                .replayed
                .apply(entry.index, std::slice::from_ref(&entry.command));
            if let (Command::Trade(t), Some(Outcome::Traded(n))) =
                (&entry.command, outcomes.first())
                && let Some(first) = self.numbers.insert(t.request_id, *n)
            {
                return Err(format!(
                    "request {} stored as order {first} and again as order {n}",
                    t.request_id
                ));
            }
            self.log.push(entry.clone());
        }
        Ok(())
    }
}
