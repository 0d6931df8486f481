//! What the core knows of its own log without reading storage: how long it is, how much of it is
//! durable, the epoch of every entry (as epoch runs), and the newest entries themselves.

use std::collections::VecDeque;

use bazaar_api::Epoch;
use bazaar_api::log::{LogIndex, Position};
use bazaar_api::replica::{EntryId, EpochRun, LogEntry};

/// The in-memory side of a replica's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Epoch runs of every entry held, oldest first, starts strictly increasing.
    runs: Vec<EpochRun>,
    /// Entries held (durable or being made durable).
    len: Position,
    /// Entries known to be durable.
    durable: Position,
    /// The newest entries, consecutive, ending at `len`.
    window: VecDeque<LogEntry>,
    window_len_max: usize,
}

impl Log {
    /// A log as storage holds it at start: all of it durable.
    ///
    /// # Panics
    /// If the runs do not describe `len` entries (storage computed them from the same rows).
    #[must_use]
    pub fn new(
        runs: Vec<EpochRun>,
        len: Position,
        recent: Vec<LogEntry>,
        window_len_max: usize,
    ) -> Self {
        assert!(
            valid_runs(&runs, len),
            "runs {runs:?} do not describe {len} entries"
        );
        let mut log = Self {
            runs,
            len,
            durable: len,
            window: VecDeque::new(),
            window_len_max: window_len_max.max(1),
        };
        let first = len.0.saturating_sub(recent.len() as u64);
        for (i, entry) in recent.into_iter().enumerate() {
            assert_eq!(
                entry.index,
                LogIndex(first + i as u64),
                "recent entries end the log"
            );
            log.window.push_back(entry);
        }
        log.trim_window();
        log
    }

    /// Entries held.
    #[must_use]
    pub fn len(&self) -> Position {
        self.len
    }

    /// Entries known durable.
    #[must_use]
    pub fn durable(&self) -> Position {
        self.durable
    }

    /// The epoch runs of every entry held.
    #[must_use]
    pub fn runs(&self) -> &[EpochRun] {
        &self.runs
    }

    /// The epoch runs of the durable entries only: what the replica may promise to others.
    #[must_use]
    pub fn durable_runs(&self) -> Vec<EpochRun> {
        self.runs
            .iter()
            .copied()
            .filter(|r| r.start.0 < self.durable.0)
            .collect()
    }

    /// The last entry, as an append's `prev`.
    #[must_use]
    pub fn last_id(&self) -> Option<EntryId> {
        let index = self.len.last_index()?;
        Some(EntryId {
            index,
            epoch: self.epoch_at(index)?,
        })
    }

    /// The entry before `index`, as an append starting at `index` names it.
    #[must_use]
    pub fn id_before(&self, index: LogIndex) -> Option<EntryId> {
        let before = LogIndex(index.0.checked_sub(1)?);
        Some(EntryId {
            index: before,
            epoch: self.epoch_at(before)?,
        })
    }

    /// The epoch of the entry at `index`, if held.
    #[must_use]
    pub fn epoch_at(&self, index: LogIndex) -> Option<Epoch> {
        if index.0 >= self.len.0 {
            return None;
        }
        epoch_in(&self.runs, index)
    }

    /// Whether this log holds `id` (the log matching check).
    #[must_use]
    pub fn holds(&self, id: Option<EntryId>) -> bool {
        id.is_none_or(|id| self.epoch_at(id.index) == Some(id.epoch))
    }

    /// The held entries from `from` to the end, at most `limit`, if the window still has them.
    #[must_use]
    pub fn window_from(&self, from: LogIndex, limit: usize) -> Option<Vec<LogEntry>> {
        let first = self.window.front().map_or(self.len.0, |e| e.index.0);
        if from.0 < first {
            return (from.0 >= self.len.0).then(Vec::new);
        }
        let skip = usize::try_from(from.0 - first).ok()?;
        Some(self.window.iter().skip(skip).take(limit).cloned().collect())
    }

    /// Appends entries that continue the log.
    ///
    /// # Panics
    /// If an entry does not continue the log, or its epoch is older than the last run's: both
    /// would break the log matching rule the whole protocol rests on.
    pub fn append(&mut self, entries: &[LogEntry]) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.len.next_index(),
                "entries continue the log"
            );
            match self.runs.last() {
                Some(run) if run.epoch == entry.epoch => {}
                Some(run) => {
                    assert!(
                        run.epoch < entry.epoch,
                        "entry {} of epoch {} follows epoch {}",
                        entry.index,
                        entry.epoch,
                        run.epoch
                    );
                    self.runs.push(EpochRun {
                        start: entry.index,
                        epoch: entry.epoch,
                    });
                }
                None => self.runs.push(EpochRun {
                    start: entry.index,
                    epoch: entry.epoch,
                }),
            }
            self.window.push_back(entry.clone());
            self.len = entry.index.position();
        }
        self.trim_window();
    }

    fn trim_window(&mut self) {
        while self.window.len() > self.window_len_max {
            self.window.pop_front();
        }
    }

    /// Drops the entries from `from` on (they are moved aside in storage).
    pub fn truncate(&mut self, from: LogIndex) {
        if from.0 >= self.len.0 {
            return;
        }
        self.runs.retain(|r| r.start < from);
        self.len = Position(from.0);
        self.durable = self.durable.min(self.len);
        while self.window.back().is_some_and(|e| e.index >= from) {
            self.window.pop_back();
        }
    }

    /// Storage made everything up to `position` durable.
    pub fn made_durable(&mut self, position: Position) {
        self.durable = self.durable.max(position.min(self.len));
    }
}

/// The epoch of `index` in `runs` (which must cover it).
fn epoch_in(runs: &[EpochRun], index: LogIndex) -> Option<Epoch> {
    let i = runs.partition_point(|r| r.start <= index);
    i.checked_sub(1).map(|i| runs[i].epoch)
}

fn run_start(runs: &[EpochRun], index: LogIndex) -> LogIndex {
    let i = runs.partition_point(|r| r.start <= index);
    i.checked_sub(1).map_or(LogIndex(0), |i| runs[i].start)
}

/// Whether `runs` can describe a log of `len` entries: starts strictly increasing from 0, epochs
/// strictly increasing, every run non-empty.
#[must_use]
pub fn valid_runs(runs: &[EpochRun], len: Position) -> bool {
    if len.0 == 0 {
        return runs.is_empty();
    }
    runs.first().is_some_and(|r| r.start == LogIndex(0))
        && runs
            .windows(2)
            .all(|w| w[0].start < w[1].start && w[0].epoch < w[1].epoch)
        && runs.last().is_some_and(|r| r.start.0 < len.0)
}

/// How many leading entries two logs share: the position just after the last index at which
/// both hold an entry of the same epoch (by the log matching rule, everything before it agrees
/// too).
#[must_use]
pub fn agreement(
    ours: &[EpochRun],
    our_len: Position,
    theirs: &[EpochRun],
    their_len: Position,
) -> Position {
    let mut high = our_len.0.min(their_len.0);
    while let Some(index) = high.checked_sub(1).map(LogIndex) {
        if epoch_in(ours, index) == epoch_in(theirs, index) {
            return index.position();
        }
        // Both runs hold one epoch each from the later of their starts up to `index`, and the
        // two differ: nothing in that stretch agrees.
        high = run_start(ours, index).max(run_start(theirs, index)).0;
    }
    Position(0)
}

/// Whether log `a` (its last entry's epoch, its length) is more up to date than `b`: the newer
/// last epoch wins, then the longer log.
#[must_use]
pub fn more_up_to_date(a: (Option<Epoch>, Position), b: (Option<Epoch>, Position)) -> bool {
    a > b
}

/// The epoch of the last entry a log with these runs holds.
#[must_use]
pub fn last_epoch(runs: &[EpochRun]) -> Option<Epoch> {
    runs.last().map(|r| r.epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_api::log::Command;

    fn entries(from: u64, epochs: &[u64]) -> Vec<LogEntry> {
        epochs
            .iter()
            .enumerate()
            .map(|(i, e)| LogEntry {
                index: LogIndex(from + i as u64),
                epoch: Epoch(*e),
                command: Command::Restock { to: 1 },
            })
            .collect()
    }

    fn log_of(epochs: &[u64]) -> Log {
        let mut log = Log::new(Vec::new(), Position(0), Vec::new(), 4);
        log.append(&entries(0, epochs));
        log
    }

    #[test]
    fn runs_give_every_entry_its_epoch() {
        let log = log_of(&[1, 1, 2, 2, 2, 5]);
        assert_eq!(log.runs().len(), 3);
        assert_eq!(log.epoch_at(LogIndex(1)), Some(Epoch(1)));
        assert_eq!(log.epoch_at(LogIndex(4)), Some(Epoch(2)));
        assert_eq!(log.epoch_at(LogIndex(5)), Some(Epoch(5)));
        assert_eq!(log.epoch_at(LogIndex(6)), None);
        assert!(log.holds(None));
        assert!(log.holds(Some(EntryId {
            index: LogIndex(3),
            epoch: Epoch(2)
        })));
        assert!(!log.holds(Some(EntryId {
            index: LogIndex(3),
            epoch: Epoch(1)
        })));
        assert!(valid_runs(log.runs(), log.len()));
    }

    #[test]
    fn the_window_keeps_the_newest_entries() {
        let log = log_of(&[1, 1, 1, 1, 1, 1]);
        assert_eq!(log.window_from(LogIndex(1), 10), None, "evicted");
        let tail = log.window_from(LogIndex(3), 10).expect("held");
        assert_eq!(
            tail.iter().map(|e| e.index.0).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(log.window_from(LogIndex(6), 10), Some(Vec::new()));
    }

    #[test]
    fn truncation_drops_runs_and_durability() {
        let mut log = log_of(&[1, 1, 2, 2]);
        log.made_durable(Position(4));
        log.truncate(LogIndex(2));
        assert_eq!(log.len(), Position(2));
        assert_eq!(log.durable(), Position(2));
        assert_eq!(log.runs().len(), 1);
        log.append(&entries(2, &[3]));
        assert_eq!(log.epoch_at(LogIndex(2)), Some(Epoch(3)));
        assert_eq!(
            log.durable_runs().len(),
            1,
            "the new run is not durable yet"
        );
    }

    #[test]
    #[should_panic(expected = "follows epoch")]
    fn an_older_epoch_cannot_follow_a_newer_one() {
        let mut log = log_of(&[2]);
        log.append(&entries(1, &[1]));
    }

    #[test]
    fn agreement_is_where_the_logs_last_share_an_entry() {
        let a = log_of(&[1, 1, 2, 2, 2]);
        let b = log_of(&[1, 1, 2, 3, 3, 3]);
        assert_eq!(agreement(a.runs(), a.len(), b.runs(), b.len()), Position(3));
        let c = log_of(&[4]);
        assert_eq!(agreement(a.runs(), a.len(), c.runs(), c.len()), Position(0));
        let prefix = log_of(&[1, 1]);
        assert_eq!(
            agreement(a.runs(), a.len(), prefix.runs(), prefix.len()),
            Position(2)
        );
        assert_eq!(agreement(&[], Position(0), a.runs(), a.len()), Position(0));
    }

    #[test]
    fn newer_epochs_beat_longer_logs() {
        let tip = |e: u64, n: u64| (Some(Epoch(e)), Position(n));
        assert!(more_up_to_date(tip(2, 3), tip(1, 9)));
        assert!(more_up_to_date(tip(2, 4), tip(2, 3)));
        assert!(!more_up_to_date(tip(2, 3), tip(2, 3)));
        assert!(!more_up_to_date((None, Position(0)), tip(0, 0)));
    }
}
