//! Choosing the order leader from the replicas' health, free of I/O: the selection's decisions,
//! which the runtime (`super`) carries out and the simulator drives directly.

use bazaar_api::replica::{ReplicaRole, ReplicaStatus, ReplicationMode};
use bazaar_api::{Epoch, ReplicaId};

/// What to do after asking every replica for its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Primary-backup: tell `live` (all but the candidate first) that `candidate` leads
    /// `epoch`; the candidate answers once it holds every entry any reachable replica holds.
    Appoint {
        /// The chosen replica: the highest id that answered and is ready.
        candidate: ReplicaId,
        /// One above every epoch a replica reported.
        epoch: Epoch,
        /// The replicas that answered (the new leader waits for these).
        live: Vec<ReplicaId>,
    },
    /// This replica leads (raft: it won an election).
    Found {
        /// The leader.
        leader: ReplicaId,
        /// Its epoch (raft: term).
        epoch: Epoch,
    },
    /// Raft: fewer than a majority answer, so no leader can commit anything.
    NoMajority {
        /// Replicas that answered.
        answered: usize,
        /// A majority.
        needed: usize,
    },
    /// Nobody can lead yet (an election under way, every replica recovering, none answering).
    Wait(String),
}

/// The replication mode the statuses report (the first that answered decides).
#[must_use]
pub fn mode(statuses: &[(ReplicaId, Option<ReplicaStatus>)]) -> Option<ReplicationMode> {
    statuses
        .iter()
        .find_map(|(_, s)| s.as_ref().map(|s| s.mode))
}

/// Decides what to do with the replicas' statuses, skipping `refused` (replicas that refused
/// leadership in this selection already).
#[must_use]
pub fn choose(statuses: &[(ReplicaId, Option<ReplicaStatus>)], refused: &[ReplicaId]) -> Choice {
    let answered: Vec<&ReplicaStatus> = statuses.iter().filter_map(|(_, s)| s.as_ref()).collect();
    match mode(statuses) {
        None => Choice::Wait("no order replica answered its health check".into()),
        Some(ReplicationMode::Raft) => {
            let needed = statuses.len() / 2 + 1;
            if answered.len() < needed {
                return Choice::NoMajority {
                    answered: answered.len(),
                    needed,
                };
            }
            // The newest term wins if a deposed leader has not noticed yet.
            answered
                .iter()
                .filter(|s| s.role == ReplicaRole::Leader && s.ready && s.leader == Some(s.id))
                .max_by_key(|s| s.epoch)
                .map_or_else(
                    || Choice::Wait("no order replica has won the raft election yet".into()),
                    |s| Choice::Found {
                        leader: s.id,
                        epoch: s.epoch,
                    },
                )
        }
        Some(ReplicationMode::PrimaryBackup) => {
            let newest = answered.iter().map(|s| s.epoch).max().unwrap_or_default();
            let Some(epoch) = newest.0.checked_add(1).map(Epoch) else {
                return Choice::Wait("the replicas report the largest possible epoch".into());
            };
            let mut ready: Vec<&&ReplicaStatus> = answered
                .iter()
                .filter(|s| s.ready && !refused.contains(&s.id))
                .collect();
            ready.sort_by_key(|s| std::cmp::Reverse(s.id));
            match ready.first() {
                Some(candidate) => Choice::Appoint {
                    candidate: candidate.id,
                    epoch,
                    live: answered.iter().map(|s| s.id).collect(),
                },
                None if answered.is_empty() => {
                    Choice::Wait("no order replica answered its health check".into())
                }
                None => {
                    Choice::Wait("every order replica that answered is still recovering".into())
                }
            }
        }
    }
}

/// Primary-backup: whether `leader` still leads `epoch` as far as `statuses` show: it answers
/// as the ready leader of that epoch, can still commit (it does not report that the followers
/// it needs are out of reach), and no replica has seen a newer one. A request that timed
/// out on such a leader met a slow leader, not a failed one (it may be waiting out a dropped
/// front-end's lease, or its handover wait): appointing it again under a new epoch would make
/// it resign, fail every write it was releasing and start a new handover wait, so under a
/// long lease trades would never be released. The choice stands instead, and a retry with the
/// same request id joins the write already under way.
#[must_use]
pub fn still_leads(
    statuses: &[(ReplicaId, Option<ReplicaStatus>)],
    leader: ReplicaId,
    epoch: Epoch,
) -> bool {
    let answered = || statuses.iter().filter_map(|(_, s)| s.as_ref());
    let leads = answered().any(|s| {
        s.id == leader
            && s.mode == ReplicationMode::PrimaryBackup
            && s.role == ReplicaRole::Leader
            && s.ready
            && s.leader == Some(leader)
            && s.epoch == epoch
            && s.commits != Some(false)
    });
    leads && answered().all(|s| s.epoch <= epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_api::log::Position;

    fn status(
        id: u8,
        mode: ReplicationMode,
        role: ReplicaRole,
        epoch: u64,
    ) -> (ReplicaId, Option<ReplicaStatus>) {
        (
            ReplicaId(id),
            Some(ReplicaStatus {
                id: ReplicaId(id),
                mode,
                role,
                ready: role != ReplicaRole::Recovering,
                leader: (role == ReplicaRole::Leader).then_some(ReplicaId(id)),
                epoch: Epoch(epoch),
                position: Position(0),
                last_number: None,
                visible: None,
                commits: (role == ReplicaRole::Leader).then_some(true),
            }),
        )
    }

    const PB: ReplicationMode = ReplicationMode::PrimaryBackup;
    const RAFT: ReplicationMode = ReplicationMode::Raft;

    #[test]
    fn primary_backup_appoints_the_highest_ready_id_above_every_epoch() {
        let statuses = [
            status(3, PB, ReplicaRole::Recovering, 9),
            status(2, PB, ReplicaRole::Follower, 4),
            (ReplicaId(1), None),
        ];
        assert_eq!(
            choose(&statuses, &[]),
            Choice::Appoint {
                candidate: ReplicaId(2),
                epoch: Epoch(10),
                live: vec![ReplicaId(3), ReplicaId(2)],
            }
        );
        assert!(matches!(
            choose(&statuses, &[ReplicaId(2)]),
            Choice::Wait(_)
        ));
    }

    #[test]
    fn a_primary_backup_leader_still_leads_only_its_own_epoch_unchallenged() {
        let steady = [
            status(3, PB, ReplicaRole::Leader, 7),
            status(2, PB, ReplicaRole::Follower, 7),
            (ReplicaId(1), None),
        ];
        assert!(still_leads(&steady, ReplicaId(3), Epoch(7)));
        assert!(
            !still_leads(&steady, ReplicaId(3), Epoch(6)),
            "another choice was made since"
        );
        assert!(!still_leads(&steady, ReplicaId(2), Epoch(7)), "a follower");
        let superseded = [
            status(3, PB, ReplicaRole::Leader, 7),
            status(2, PB, ReplicaRole::Follower, 8),
        ];
        assert!(
            !still_leads(&superseded, ReplicaId(3), Epoch(7)),
            "a replica has seen a newer epoch"
        );
        let silent = [
            (ReplicaId(3), None),
            status(2, PB, ReplicaRole::Follower, 7),
        ];
        assert!(!still_leads(&silent, ReplicaId(3), Epoch(7)), "no answer");
        let raft = [status(3, RAFT, ReplicaRole::Leader, 7)];
        assert!(!still_leads(&raft, ReplicaId(3), Epoch(7)), "raft elects");
        let mut cut_off = steady.clone();
        if let (_, Some(leader)) = &mut cut_off[0] {
            leader.commits = Some(false);
        }
        assert!(
            !still_leads(&cut_off, ReplicaId(3), Epoch(7)),
            "a leader that cannot commit (its followers out of reach) is replaced"
        );
    }

    #[test]
    fn raft_finds_the_newest_leader_or_says_why_not() {
        let both = [
            status(3, RAFT, ReplicaRole::Leader, 4),
            status(2, RAFT, ReplicaRole::Leader, 5),
            status(1, RAFT, ReplicaRole::Follower, 5),
        ];
        assert_eq!(
            choose(&both, &[]),
            Choice::Found {
                leader: ReplicaId(2),
                epoch: Epoch(5)
            }
        );
        let electing = [
            status(3, RAFT, ReplicaRole::Candidate, 6),
            status(2, RAFT, ReplicaRole::Follower, 6),
            (ReplicaId(1), None),
        ];
        assert!(matches!(choose(&electing, &[]), Choice::Wait(_)));
        let alone = [
            status(3, RAFT, ReplicaRole::Leader, 6),
            (ReplicaId(2), None),
            (ReplicaId(1), None),
        ];
        assert_eq!(
            choose(&alone, &[]),
            Choice::NoMajority {
                answered: 1,
                needed: 2
            }
        );
    }
}
