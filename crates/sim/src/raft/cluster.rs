//! The three simulated replicas: each runs the order crate's raft replica (openraft, the
//! proposer, the release gate) inside this process, over its own SQLite file, the simulated
//! network and the observing storage.
//!
//! A crash is a kill -9: the replica's storage refuses every call from that instant (so the
//! file keeps exactly the transactions that committed, which is what a killed process leaves:
//! SQLite's committed frames are in the page cache), its connections break, and its tasks and
//! database handles are then shut down in the background. A restart opens the same file. After
//! each crash the checker compares the file with what the storage reported durable.
//!
//! The planted lying disk (see [`super::Plant`]) instead keeps, for one replica, a copy of its
//! file taken at random moments ("the last time the disk really synced"), and a crash puts
//! that copy back: every write since, though acknowledged as durable, is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::ReplicaId;
use bazaar_api::log::StockDef;
use bazaar_order::raft::types::{NodeId, Raft, node_id};
use bazaar_order::raft::{InProcess, RaftReplica, RaftSettings};
use bazaar_order::replica::{Replica, Writer};
use bazaar_order::{FeedTiming, start_raft_in_process};
use bazaar_service::Fatal;
use openraft::{BasicNode, ServerState};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::checker::{Durable, REPLICAS, Shared, replica};
use super::network::Net;
use super::storage::{Alive, SimLog, SimStateMachine};

/// The release gate's timing: the order service's defaults.
const FEED: FeedTiming = FeedTiming {
    lease: Duration::from_millis(400),
    ack_timeout: Duration::from_secs(1),
};

/// How long a crashed replica's tasks and database may take to stop, simulated.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// What the clients see of the replicas: each live one's writer, and a token cancelled when it
/// dies (the client's connection to it breaks).
#[derive(Clone, Default)]
pub struct Board(Arc<Mutex<BTreeMap<ReplicaId, (Writer, CancellationToken)>>>);

impl Board {
    /// Replica `id`'s writer, if it is up.
    pub fn get(&self, id: ReplicaId) -> Option<(Writer, CancellationToken)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn set(&self, id: ReplicaId, entry: Option<(Writer, CancellationToken)>) {
        let mut board = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match entry {
            Some(entry) => board.insert(id, entry),
            None => board.remove(&id),
        };
    }
}

/// A replica that runs.
struct Running {
    writer: Writer,
    raft: Raft,
    alive: Alive,
    stop: CancellationToken,
    tasks: TaskTracker,
    fatal: Fatal,
    db_thread: std::thread::JoinHandle<()>,
    killed: CancellationToken,
    /// Its role as last noted.
    seen: Option<(ServerState, u64, Option<NodeId>)>,
}

enum Slot {
    Up(Box<Running>),
    /// Crashed; its tasks and database are being stopped.
    Closing(JoinHandle<Result<(), String>>),
    Down,
}

/// The replicas.
pub struct Cluster {
    dir: PathBuf,
    settings: RaftSettings,
    genesis: Vec<StockDef>,
    net: Net,
    checker: Shared,
    board: Board,
    slots: BTreeMap<ReplicaId, Slot>,
    /// The replica whose disk lies, if the bug is planted.
    liar: Option<ReplicaId>,
    /// Terms in which some replica was seen leading.
    pub leader_terms: std::collections::BTreeSet<u64>,
}

impl Cluster {
    /// Three replicas with files in `dir`, none started.
    pub fn new(
        dir: &Path,
        settings: RaftSettings,
        genesis: Vec<StockDef>,
        net: Net,
        checker: Shared,
        liar: Option<ReplicaId>,
    ) -> Self {
        Self {
            dir: dir.to_owned(),
            settings,
            genesis,
            net,
            checker,
            board: Board::default(),
            slots: (1..=REPLICAS).map(|i| (replica(i), Slot::Down)).collect(),
            liar,
            leader_terms: std::collections::BTreeSet::new(),
        }
    }

    /// What the clients see.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    fn path(&self, id: ReplicaId) -> PathBuf {
        self.dir.join(format!("order-{id}.db"))
    }

    fn urls() -> BTreeMap<ReplicaId, String> {
        (1..=REPLICAS)
            .map(|i| (replica(i), format!("sim://replica-{i}")))
            .collect()
    }

    /// Replicas that run.
    pub fn up(&self) -> Vec<ReplicaId> {
        self.slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Up(_)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether `id` is down and done stopping (it can start again).
    pub fn can_start(&self, id: ReplicaId) -> bool {
        match &self.slots[&id] {
            Slot::Down => true,
            Slot::Closing(cleanup) => cleanup.is_finished(),
            Slot::Up(_) => false,
        }
    }

    /// Starts replica `id` over its file; the first start of the cluster forms it.
    ///
    /// # Errors
    /// A sentence: the file or the node could not be opened.
    pub async fn start(&mut self, id: ReplicaId, form: bool) -> Result<(), String> {
        match self.slots.insert(id, Slot::Down) {
            Some(Slot::Up(running)) => {
                self.slots.insert(id, Slot::Up(running));
                return Ok(());
            }
            Some(Slot::Closing(cleanup)) => cleanup
                .await
                .map_err(|e| format!("replica {id}'s shutdown failed: {e}"))??,
            Some(Slot::Down) | None => {}
        }
        let path = self.path(id);
        if path.exists() {
            let contents = bazaar_order::file::read(&path)?;
            self.checker
                .lock()
                .reload(id, Durable::from_file(&contents), false);
        }
        let fatal = Fatal::new();
        let (db, applied, db_thread) =
            RaftReplica::open(&path, &fatal).map_err(|e| e.to_string())?;
        let alive = Alive::new();
        let killed = CancellationToken::new();
        let node = InProcess {
            id,
            urls: Self::urls(),
            settings: self.settings,
            genesis: self.genesis.clone(),
            db: db.clone(),
            applied,
            network: self.net.factory(node_id(id)),
            log_store: SimLog::new(db.clone(), id, alive.clone(), self.checker.clone()),
            state_machine: SimStateMachine::new(db, id, alive.clone(), self.checker.clone()),
        };
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let writer = start_raft_in_process(node, FEED, &tasks, &stop, &fatal)
            .await
            .map_err(|e| format!("replica {id} did not start: {e}"))?;
        let Replica::Raft(raft_replica) = &writer.replica else {
            return Err("an in-process replica runs raft".into());
        };
        let raft = raft_replica.raft().clone();
        self.net.attach(node_id(id), raft.clone());
        self.board.set(id, Some((writer.clone(), killed.clone())));
        self.checker.note(format!("replica {id} STARTS"));
        if form {
            let members: BTreeMap<NodeId, BasicNode> = Self::urls()
                .into_iter()
                .map(|(id, url)| (node_id(id), BasicNode::new(url)))
                .collect();
            // Every replica of a new group may form it with the same membership (the
            // order service's bootstrap does the same once a majority answers).
            if let Err(e) = raft.initialize(members).await {
                self.checker
                    .note(format!("replica {id} does not form the group: {e}"));
            }
        }
        self.slots.insert(
            id,
            Slot::Up(Box::new(Running {
                writer,
                raft,
                alive,
                stop,
                tasks,
                fatal,
                db_thread,
                killed,
                seen: None,
            })),
        );
        Ok(())
    }

    /// Kills replica `id` (nothing more reaches its file from now on) and stops what is left
    /// of it in the background.
    pub fn crash(&mut self, id: ReplicaId) {
        let Some(Slot::Up(running)) = self.slots.insert(id, Slot::Down) else {
            return;
        };
        running.alive.kill();
        running.killed.cancel();
        self.net.detach(node_id(id));
        self.board.set(id, None);
        self.checker.note(format!("CRASH replica {id}"));
        let cleanup = tokio::spawn(stop(
            id,
            running,
            self.path(id),
            self.liar == Some(id),
            self.checker.clone(),
        ));
        self.slots.insert(id, Slot::Closing(cleanup));
    }

    /// Waits until every crashed replica has stopped.
    ///
    /// # Errors
    /// A replica's tasks or database did not stop.
    pub async fn settle(&mut self) -> Result<(), String> {
        let closing: Vec<ReplicaId> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Closing(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in closing {
            if let Some(Slot::Closing(cleanup)) = self.slots.insert(id, Slot::Down) {
                cleanup
                    .await
                    .map_err(|e| format!("replica {id}'s shutdown failed: {e}"))??;
            }
        }
        Ok(())
    }

    /// The planted lying disk "really syncs": what the liar's file holds now survives its
    /// next crash, what it writes later does not.
    pub fn sync_liar(&self) -> Result<(), String> {
        let Some(liar) = self.liar else {
            return Ok(());
        };
        if !matches!(self.slots[&liar], Slot::Up(_)) {
            return Ok(());
        }
        let path = self.path(liar);
        let copy = synced_copy(&path);
        let fresh = copy.with_extension("db.new");
        let _ = std::fs::remove_file(&fresh);
        let conn = rusqlite::Connection::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        conn.execute("VACUUM INTO ?1", [fresh.to_string_lossy()])
            .map_err(|e| format!("cannot copy {}: {e}", path.display()))?;
        drop(conn);
        std::fs::rename(&fresh, &copy)
            .map_err(|e| format!("cannot keep the copy of {}: {e}", path.display()))
    }

    /// Notes role changes, and reports a replica whose Raft stopped on its own (a panic or a
    /// storage failure that was not a crash).
    pub fn observe(&mut self) {
        for (id, slot) in &mut self.slots {
            let Slot::Up(running) = slot else {
                continue;
            };
            let receiver = running.raft.metrics();
            // Closed first, then read: a core that stops on its own sends its error before it
            // drops the sender, so only a core that panicked leaves "running" behind.
            let core_gone = receiver.has_changed().is_err();
            let metrics = receiver.borrow().clone();
            if let Err(e) = &metrics.running_state {
                self.checker
                    .lock()
                    .fail(format!("replica {id}'s Raft stopped on its own: {e}"));
                continue;
            }
            if core_gone {
                self.checker.lock().fail(format!(
                    "replica {id}'s Raft core ended without a report: it panicked (the panic \
                     is printed above)"
                ));
                continue;
            }
            if running.fatal.is_raised() {
                self.checker
                    .lock()
                    .fail(format!("replica {id} raised a fatal error"));
                continue;
            }
            let now = (metrics.state, metrics.current_term, metrics.current_leader);
            if running.seen != Some(now) {
                running.seen = Some(now);
                if metrics.state == ServerState::Leader {
                    self.leader_terms.insert(metrics.current_term);
                }
                self.checker.note(format!(
                    "replica {id} is {:?} in term {} (leader {:?})",
                    metrics.state, metrics.current_term, metrics.current_leader
                ));
            }
        }
    }

    /// Stops every replica (as crashes: the checker compares each file with its model).
    ///
    /// # Errors
    /// A replica's tasks or database did not stop.
    pub async fn stop_all(&mut self) -> Result<(), String> {
        for id in self.up() {
            self.crash(id);
        }
        self.settle().await
    }
}

/// The file a lying disk's crash falls back to.
fn synced_copy(path: &Path) -> PathBuf {
    path.with_extension("db.synced")
}

/// Stops a crashed replica's tasks and database, then compares its file with the checker's
/// model (or, on the lying disk, puts the last synced copy back and reloads the model).
async fn stop(
    id: ReplicaId,
    running: Box<Running>,
    path: PathBuf,
    liar: bool,
    checker: Shared,
) -> Result<(), String> {
    let Running {
        writer,
        raft,
        stop,
        tasks,
        db_thread,
        alive,
        ..
    } = *running;
    stop.cancel();
    let _ = tokio::time::timeout(STOP_DEADLINE, raft.shutdown()).await;
    tasks.close();
    let _ = tokio::time::timeout(STOP_DEADLINE, tasks.wait()).await;
    drop((writer, raft));
    // The database's writer thread ends once the last handle (held by openraft's tasks that
    // are still finishing a network call) is gone.
    let deadline = Instant::now() + STOP_DEADLINE;
    while !db_thread.is_finished() {
        if Instant::now() > deadline {
            return Err(format!(
                "replica {id}'s database is still open {STOP_DEADLINE:?} after its crash: a \
                 handle leaked ({} handles to its storage are alive, this one included)",
                alive.holders()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = db_thread.join();
    if liar {
        let copy = synced_copy(&path);
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
        let restored = std::fs::copy(&copy, &path).is_ok();
        checker.note(format!(
            "the lying disk of replica {id} loses every write since its last sync{}",
            if restored {
                ""
            } else {
                " (it never synced: the file is gone)"
            }
        ));
    }
    let file = if path.exists() {
        Durable::from_file(&bazaar_order::file::read(&path)?)
    } else {
        Durable::default()
    };
    checker.lock().reload(id, file, !liar);
    Ok(())
}
