//! The decisions of primary-backup replication, free of I/O: whether to accept a sender's
//! epoch, what to do with an append given the local log, which peer's log to adopt, and where
//! two logs stop agreeing. The runtime gathers the facts, calls these, and carries out the
//! answer.

use bazaar_api::replica::{EntryRef, LogTip, OrderEntry};
use bazaar_api::{Epoch, ReplicaId, TxnNumber};

use crate::log_store::Term;

/// What to make of a message claiming `leader` leads `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochVerdict {
    /// Older than what we know: refuse it.
    Stale {
        /// Our newest epoch.
        newest: Epoch,
    },
    /// Exactly what we know.
    Current,
    /// Newer (or the first leader of a known epoch): persist it, then follow it.
    Adopt,
    /// Another replica already leads this epoch.
    Claimed {
        /// That replica.
        known: ReplicaId,
    },
}

/// Judges a claim of leadership against the newest term we know.
#[must_use]
pub fn judge_epoch(known: Term, epoch: Epoch, leader: ReplicaId) -> EpochVerdict {
    if epoch < known.epoch {
        return EpochVerdict::Stale {
            newest: known.epoch,
        };
    }
    if epoch > known.epoch {
        return EpochVerdict::Adopt;
    }
    match known.leader {
        Some(l) if l == leader => EpochVerdict::Current,
        Some(known) => EpochVerdict::Claimed { known },
        None => EpochVerdict::Adopt,
    }
}

/// What a follower does with an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendPlan {
    /// Append `entries[skip..]`; the first `skip` are already held.
    Append {
        /// Entries already held.
        skip: usize,
    },
    /// Local entries from `from` on differ from the leader's: move them aside, then append
    /// `entries[skip..]`.
    Conflict {
        /// First differing number.
        from: TxnNumber,
        /// Entries already held before it.
        skip: usize,
    },
    /// The local log does not hold the leader's `prev`: catch up from the leader first.
    Resync,
    /// The batch itself is malformed.
    Invalid(String),
}

/// Plans an append by the log matching rule: entries are taken only on top of a log that
/// agrees with the leader's at `prev`.
///
/// - `last`: the local log's last number.
/// - `mine_at_prev`: the local entry at `prev.number`, if the log reaches it.
/// - `mine_overlap`: local entries numbered from the batch's first number up to `last`.
#[must_use]
pub fn plan_append(
    last: Option<TxnNumber>,
    mine_at_prev: Option<EntryRef>,
    mine_overlap: &[EntryRef],
    prev: Option<EntryRef>,
    entries: &[OrderEntry],
) -> AppendPlan {
    let first = prev.map_or(TxnNumber(0), |p| p.number.next());
    if let Some(bad) = entries
        .iter()
        .enumerate()
        .find(|(i, e)| e.number.0 != first.0 + *i as u64)
    {
        return AppendPlan::Invalid(format!(
            "batch entry {} should be number {}, not {}",
            bad.0,
            first.0 + bad.0 as u64,
            bad.1.number
        ));
    }
    if let Some(prev) = prev
        && mine_at_prev != Some(prev)
    {
        return AppendPlan::Resync;
    }
    let mut skip = 0;
    for entry in entries {
        if last.is_none_or(|last| entry.number > last) {
            break;
        }
        match mine_overlap.iter().find(|m| m.number == entry.number) {
            Some(mine) if mine.request_id == entry.request_id => skip += 1,
            _ => {
                return AppendPlan::Conflict {
                    from: entry.number,
                    skip,
                };
            }
        }
    }
    // The batch may end before the local log does (a retried batch); the rest is not ours to
    // judge here: the next append's prev check settles it.
    AppendPlan::Append { skip }
}

/// Whether log tip `a` is more up to date than `b`: the newer epoch wins, then the longer log.
#[must_use]
pub fn more_up_to_date(a: Option<LogTip>, b: Option<LogTip>) -> bool {
    match (a, b) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(a), Some(b)) => (a.epoch, a.number) > (b.epoch, b.number),
    }
}

/// The peer whose log is the most up to date, if it is more so than ours.
#[must_use]
pub fn best_source(
    mine: Option<LogTip>,
    peers: &[(ReplicaId, Option<LogTip>)],
) -> Option<ReplicaId> {
    let mut best: Option<(ReplicaId, Option<LogTip>)> = None;
    for &(id, tip) in peers {
        if best.is_none_or(|(_, b)| more_up_to_date(tip, b)) {
            best = Some((id, tip));
        }
    }
    best.filter(|(_, tip)| more_up_to_date(*tip, mine))
        .map(|(id, _)| id)
}

/// The highest number at which both slices hold the same request id. Both are sorted by
/// number. By the log matching rule, two logs that agree at a number agree on everything
/// before it.
#[must_use]
pub fn agreement_in_window(mine: &[EntryRef], theirs: &[EntryRef]) -> Option<TxnNumber> {
    mine.iter()
        .rev()
        .find(|m| {
            theirs
                .binary_search_by_key(&m.number, |t| t.number)
                .is_ok_and(|i| theirs[i].request_id == m.request_id)
        })
        .map(|m| m.number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_api::{RequestId, TradeType};

    fn entry(number: u64, epoch: u64) -> OrderEntry {
        OrderEntry {
            number: TxnNumber(number),
            request_id: RequestId::new(),
            name: "A".into(),
            kind: TradeType::Sell,
            quantity: 1,
            epoch: Epoch(epoch),
        }
    }

    fn r(e: &OrderEntry) -> EntryRef {
        EntryRef {
            number: e.number,
            request_id: e.request_id,
        }
    }

    #[test]
    fn epochs_only_move_forward_and_have_one_leader() {
        let known = Term {
            epoch: Epoch(5),
            leader: Some(ReplicaId(3)),
        };
        assert_eq!(
            judge_epoch(known, Epoch(4), ReplicaId(3)),
            EpochVerdict::Stale { newest: Epoch(5) }
        );
        assert_eq!(
            judge_epoch(known, Epoch(5), ReplicaId(3)),
            EpochVerdict::Current
        );
        assert_eq!(
            judge_epoch(known, Epoch(5), ReplicaId(2)),
            EpochVerdict::Claimed {
                known: ReplicaId(3)
            }
        );
        assert_eq!(
            judge_epoch(known, Epoch(6), ReplicaId(1)),
            EpochVerdict::Adopt
        );
        assert_eq!(
            judge_epoch(Term::default(), Epoch(0), ReplicaId(1)),
            EpochVerdict::Adopt
        );
    }

    #[test]
    fn a_batch_continuing_the_log_is_appended() {
        let log: Vec<_> = (0..3).map(|n| entry(n, 1)).collect();
        let batch = vec![entry(3, 1), entry(4, 1)];
        let plan = plan_append(
            Some(TxnNumber(2)),
            Some(r(&log[2])),
            &[],
            Some(r(&log[2])),
            &batch,
        );
        assert_eq!(plan, AppendPlan::Append { skip: 0 });
        let empty_log = plan_append(None, None, &[], None, &[entry(0, 1)]);
        assert_eq!(empty_log, AppendPlan::Append { skip: 0 });
    }

    #[test]
    fn a_gap_or_a_different_prev_means_resync() {
        let leader: Vec<_> = (0..4).map(|n| entry(n, 1)).collect();
        let mine: Vec<_> = (0..2).map(|n| entry(n, 1)).collect();
        // The follower holds 0..=1, the batch starts at 4 after prev 3: a gap.
        let gap = plan_append(
            Some(TxnNumber(1)),
            None,
            &[],
            Some(r(&leader[3])),
            &[entry(4, 1)],
        );
        assert_eq!(gap, AppendPlan::Resync);
        // Same number, different request: the logs diverged at or before prev.
        let diverged = plan_append(
            Some(TxnNumber(1)),
            Some(r(&mine[1])),
            &[],
            Some(r(&leader[1])),
            &[entry(2, 1)],
        );
        assert_eq!(diverged, AppendPlan::Resync);
    }

    #[test]
    fn overlap_is_skipped_when_equal_and_a_conflict_when_not() {
        let log: Vec<_> = (0..4).map(|n| entry(n, 1)).collect();
        let overlap = [r(&log[2]), r(&log[3])];
        let retried = vec![log[2].clone(), log[3].clone(), entry(4, 1)];
        let plan = plan_append(
            Some(TxnNumber(3)),
            Some(r(&log[1])),
            &overlap,
            Some(r(&log[1])),
            &retried,
        );
        assert_eq!(plan, AppendPlan::Append { skip: 2 });
        let newer = vec![log[2].clone(), entry(3, 2)];
        let plan = plan_append(
            Some(TxnNumber(3)),
            Some(r(&log[1])),
            &overlap,
            Some(r(&log[1])),
            &newer,
        );
        assert_eq!(
            plan,
            AppendPlan::Conflict {
                from: TxnNumber(3),
                skip: 1
            }
        );
    }

    #[test]
    fn malformed_batches_are_refused() {
        let plan = plan_append(None, None, &[], None, &[entry(0, 1), entry(2, 1)]);
        assert!(matches!(plan, AppendPlan::Invalid(_)));
        let plan = plan_append(None, None, &[], None, &[entry(1, 1)]);
        assert!(matches!(plan, AppendPlan::Invalid(_)));
    }

    #[test]
    fn newer_epochs_beat_longer_logs() {
        let tip = |n, e| {
            Some(LogTip {
                number: TxnNumber(n),
                epoch: Epoch(e),
            })
        };
        assert!(more_up_to_date(tip(3, 2), tip(9, 1)));
        assert!(more_up_to_date(tip(4, 2), tip(3, 2)));
        assert!(!more_up_to_date(tip(3, 2), tip(3, 2)));
        assert!(!more_up_to_date(None, tip(0, 0)));
        let peers = [
            (ReplicaId(1), tip(5, 1)),
            (ReplicaId(2), tip(2, 3)),
            (ReplicaId(3), None),
        ];
        assert_eq!(best_source(tip(9, 1), &peers), Some(ReplicaId(2)));
        assert_eq!(best_source(tip(2, 3), &peers), None);
    }

    #[test]
    fn agreement_is_the_highest_shared_entry() {
        let common: Vec<_> = (0..3).map(|n| entry(n, 1)).collect();
        let mine: Vec<_> = common.iter().map(r).chain([r(&entry(3, 1))]).collect();
        let theirs: Vec<_> = common
            .iter()
            .map(r)
            .chain([r(&entry(3, 2)), r(&entry(4, 2))])
            .collect();
        assert_eq!(agreement_in_window(&mine, &theirs), Some(TxnNumber(2)));
        assert_eq!(agreement_in_window(&mine[3..], &theirs[3..]), None);
    }
}
