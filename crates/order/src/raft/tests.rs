//! The SQLite store against openraft's storage conformance suite, and the state machine's own
//! rules: the ledger decides at apply (numbers, refusals, one number per request id), the
//! stocks and orders survive a restart, snapshots carry both, and the mode guard.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::Path;

use bazaar_api::log::{Command as LogCommand, StockDef, TradeCommand};
use bazaar_api::{Price, RequestId, TradeType, TxnNumber};
use bazaar_ledger::{Outcome, Refusal};
use bazaar_service::Fatal;
use openraft::RaftLogReader;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftSnapshotBuilder};

use super::log_store::LogStore;
use super::state_machine::{SnapshotCounters, StateMachine};
use super::store::Db;
use super::types::{Applied, Command, Entry, LogId, StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sender, _) = tokio::sync::mpsc::unbounded_channel();
        let (db, _writer) =
            Db::open(&dir.path().join("order-1.db"), Fatal::new(), sender).expect("open");
        Ok((
            dir,
            LogStore::new(db.clone()),
            StateMachine::new(db, SnapshotCounters::default()),
        ))
    }
}

/// openraft's suite runs each case on a runtime of its own (multi-threaded, which the store's
/// blocking reads need), so it is a plain test, not a tokio one.
#[test]
fn the_sqlite_store_passes_openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn normal(commands: Vec<LogCommand>) -> Entry {
    Entry {
        log_id: LogId::default(),
        payload: EntryPayload::Normal(Command(commands)),
    }
}

fn genesis() -> LogCommand {
    LogCommand::Genesis {
        stocks: vec![StockDef {
            name: "FishCo".into(),
            price: Price::from_cents(2250),
            quantity: 5,
        }],
    }
}

fn trade(id: RequestId, kind: TradeType, quantity: u64) -> LogCommand {
    LogCommand::Trade(TradeCommand {
        request_id: id,
        name: "FishCo".into(),
        kind,
        quantity,
    })
}

fn order(id: RequestId) -> Entry {
    normal(vec![trade(id, TradeType::Sell, 2)])
}

fn at(mut entry: Entry, term: u64, index: u64) -> Entry {
    entry.log_id = log_id(term, index);
    entry
}

fn open(path: &Path) -> (Db, std::thread::JoinHandle<()>) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    // Nobody releases anything in these tests.
    drop(receiver);
    Db::open(path, Fatal::new(), sender).expect("open raft db")
}

fn numbers(applied: &[Applied]) -> Vec<Vec<Option<u64>>> {
    applied
        .iter()
        .map(|a| {
            a.outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Traded(n) | Outcome::Duplicate(n) => Some(n.0),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_decides_at_apply_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("order-1.db");
    let (a, b, c) = (RequestId::new(), RequestId::new(), RequestId::new());
    {
        let (db, writer) = open(&path);
        let mut sm = StateMachine::new(db.clone(), SnapshotCounters::default());
        let applied = sm
            .apply(vec![
                at(Entry::default(), 1, 0),
                at(normal(vec![genesis()]), 1, 1),
                at(normal(vec![trade(a, TradeType::Buy, 3)]), 1, 2),
                at(normal(vec![trade(a, TradeType::Buy, 3)]), 1, 3),
                at(
                    normal(vec![
                        trade(b, TradeType::Buy, 3),
                        trade(c, TradeType::Sell, 1),
                    ]),
                    2,
                    4,
                ),
            ])
            .await
            .expect("apply");
        assert_eq!(
            numbers(&applied),
            [
                vec![],
                vec![None],
                vec![Some(0)],
                vec![Some(0)],
                vec![None, Some(1)]
            ],
            "a repeat keeps its number; a buy of 3 out of 2 takes none"
        );
        assert_eq!(
            applied[4].outcomes[0],
            Outcome::Refused(Refusal::InsufficientStock {
                name: "FishCo".into(),
                wanted: 3,
                available: 2
            })
        );
        let (last, _) = sm.applied_state().await.expect("applied");
        assert_eq!(last, Some(log_id(2, 4)));
        drop((sm, db));
        writer.join().expect("writer ends");
    }
    let (db, _writer) = open(&path);
    let state = db.state();
    assert_eq!(
        state.book.next_number,
        TxnNumber(2),
        "numbering resumes after a restart"
    );
    assert_eq!(state.book.stocks[0].quantity, 3, "5 - 3 + 1");
    assert_eq!(state.applied, Some(log_id(2, 4)));
    let row = db.order(TxnNumber(1)).await.expect("read").expect("c");
    assert_eq!(
        (row.request_id, row.epoch.0),
        (c, 2),
        "the term is the order's epoch"
    );
    let contents = crate::file::read(&path).expect("verify reads raft files");
    assert_eq!(contents.orders.len(), 2);
    assert_eq!(contents.mode, bazaar_api::replica::ReplicationMode::Raft);
    assert_eq!(contents.applied, Some(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_carries_the_orders_and_installs_on_a_fresh_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader_db, _w1) = open(&dir.path().join("order-1.db"));
    let (follower_db, _w2) = open(&dir.path().join("order-2.db"));
    let mut leader = StateMachine::new(leader_db.clone(), SnapshotCounters::default());
    let members = Membership::new(vec![BTreeSet::from([1, 2, 3])], ());
    leader
        .apply(vec![Entry {
            log_id: log_id(1, 0),
            payload: EntryPayload::Membership(members),
        }])
        .await
        .expect("membership");
    let mut entries = Vec::new();
    let ids: Vec<RequestId> = (0..5).map(|_| RequestId::new()).collect();
    entries.extend(
        ids.iter()
            .enumerate()
            .map(|(i, id)| at(order(*id), 1, i as u64 + 2)),
    );
    leader
        .apply(vec![at(normal(vec![genesis()]), 1, 1)])
        .await
        .expect("genesis");
    leader.apply(entries).await.expect("apply");
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 6)));
    phase_more_orders(&mut leader, &ids).await;
    let current = leader
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    assert_eq!(
        current.meta, built.meta,
        "later applies do not change the snapshot"
    );

    let counters = SnapshotCounters::default();
    let mut follower = StateMachine::new(follower_db.clone(), counters.clone());
    follower
        .install_snapshot(
            &current.meta,
            Box::new(Cursor::new(current.snapshot.into_inner())),
        )
        .await
        .expect("install");
    assert_eq!(counters.installed.get(), 1);
    let state = follower_db.state();
    assert_eq!(state.book.next_number, TxnNumber(5));
    assert_eq!(state.book.stocks[0].quantity, 15, "5 + five sells of 2");
    assert_eq!(state.applied, Some(log_id(1, 6)));
    assert_eq!(
        follower_db
            .order(TxnNumber(4))
            .await
            .expect("read")
            .map(|r| r.request_id),
        Some(ids[4])
    );
    let (applied, membership) = follower.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(1, 6)));
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), [1, 2, 3]);
}

/// Orders applied after a snapshot, one of them a repeat of a request id the snapshot holds.
async fn phase_more_orders(sm: &mut StateMachine, ids: &[RequestId]) {
    let applied = sm
        .apply(vec![
            at(order(RequestId::new()), 2, 7),
            at(order(ids[0]), 2, 8),
        ])
        .await
        .expect("apply");
    assert_eq!(numbers(&applied), [vec![Some(5)], vec![Some(0)]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_survives_a_restart_and_truncates_and_purges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("order-1.db");
    {
        let (db, writer) = open(&path);
        let mut log = LogStore::new(db.clone());
        db.append((0..10).map(|i| at(Entry::default(), 1, i)).collect())
            .await
            .expect("append");
        log.truncate(log_id(1, 8)).await.expect("truncate");
        log.purge(log_id(1, 2)).await.expect("purge");
        drop((log, db));
        writer.join().expect("writer ends");
    }
    let (db, _writer) = open(&path);
    let mut log = LogStore::new(db.clone());
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    let entries = db.entries(0, 100).await.expect("read");
    assert_eq!(
        entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [3, 4, 5, 6, 7]
    );
    let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    assert_eq!(
        indexes(log.limited_get_log_entries(3, 5).await.expect("read")),
        [3, 4]
    );
    assert!(
        log.limited_get_log_entries(1, 5)
            .await
            .expect("read")
            .is_empty(),
        "a replication read whose start was compacted gets nothing, not entries that skip it"
    );
}

#[test]
fn a_raft_database_is_refused_in_primary_backup_mode_and_the_reverse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft = dir.path().join("raft.db");
    drop(open(&raft));
    let err = crate::primary_backup::storage::Storage::open(&raft, 16, Fatal::new())
        .expect_err("a raft file in primary-backup mode");
    assert!(err.to_string().contains("raft order log"), "{err}");
    let pb = dir.path().join("pb.db");
    drop(crate::primary_backup::storage::Storage::open(&pb, 16, Fatal::new()).expect("open"));
    let (sender, _) = tokio::sync::mpsc::unbounded_channel();
    let err = Db::open(&pb, Fatal::new(), sender).expect_err("a primary-backup file in raft mode");
    assert!(err.to_string().contains("primary-backup"), "{err}");
}

/// The replica's log store, except that an append panics. openraft 0.9 runs the log store
/// inside its core task, so the core dies of it without reporting a stop.
#[derive(Clone)]
struct PanickingLog(LogStore);

impl RaftLogReader<TypeConfig> for PanickingLog {
    async fn try_get_log_entries<
        RB: std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + openraft::OptionalSend,
    >(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.0.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for PanickingLog {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<openraft::LogState<TypeConfig>, StorageError> {
        self.0.get_log_state().await
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.0.get_log_reader().await
    }

    async fn save_vote(&mut self, vote: &super::types::Vote) -> Result<(), StorageError> {
        self.0.save_vote(vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<super::types::Vote>, StorageError> {
        self.0.read_vote().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.0.save_committed(committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.0.read_committed().await
    }

    async fn append<I>(
        &mut self,
        _entries: I,
        _callback: openraft::storage::LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        panic!("planted: the log store panics on append");
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.0.truncate(log_id).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.0.purge(log_id).await
    }
}

/// A Raft core that panics leaves its metrics saying "running"; the watcher must still see it
/// gone (its metrics channel closed) and stop the replica, not answer on with a dead Raft.
#[tokio::test(flavor = "multi_thread")]
async fn a_raft_core_that_panics_stops_the_replica() {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bazaar_api::ReplicaId;
    use bazaar_api::client::Http;
    use openraft::BasicNode;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::network::Network;
    use super::types::node_id;
    use super::{InProcess, RaftReplica, RaftSettings};

    let dir = tempfile::tempdir().expect("tempdir");
    let fatal = Fatal::new();
    let (db, applied, _writer) =
        RaftReplica::open(&dir.path().join("order-1.db"), &fatal).expect("open");
    let id = ReplicaId(1);
    let url = "http://127.0.0.1:9".to_owned();
    let node = InProcess {
        id,
        urls: BTreeMap::from([(id, url.clone())]),
        settings: RaftSettings {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            snapshot_every: 1_000,
            keep_logs: 100,
        },
        genesis: Vec::new(),
        log_store: PanickingLog(LogStore::new(db.clone())),
        state_machine: StateMachine::new(db.clone(), SnapshotCounters::default()),
        db,
        applied,
        // A group of one never sends.
        network: Network::new(
            node_id(id),
            Http::new(Duration::from_secs(1)),
            BTreeMap::new(),
        ),
    };
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    let feed = crate::FeedTiming {
        lease: Duration::from_millis(400),
        ack_timeout: Duration::from_secs(1),
    };
    let writer = crate::start_raft_in_process(node, feed, &tasks, &stop, &fatal)
        .await
        .expect("start");
    let crate::replica::Replica::Raft(replica) = &writer.replica else {
        panic!("an in-process replica runs raft");
    };
    assert!(!fatal.is_raised());
    // Forming the group appends its membership: the core panics there.
    let members = BTreeMap::from([(node_id(id), BasicNode::new(url))]);
    let _ = replica.raft().initialize(members).await;
    let raised = tokio::time::timeout(Duration::from_secs(10), fatal.raised())
        .await
        .expect("the watcher stops the replica whose core panicked");
    assert!(raised.contains("panicked"), "{raised}");
    assert!(
        replica.raft().metrics().borrow().running_state.is_ok(),
        "openraft reported nothing: only the closed metrics channel tells"
    );
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}
