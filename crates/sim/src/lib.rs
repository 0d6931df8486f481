//! A seeded, deterministic simulator of the primary-backup replication core
//! (`bazaar_order::primary_backup::core`), in the manner of TigerBeetle's VOPR: three replicas
//! and a few front-ends run on the real core and the real front-end decisions, over simulated
//! storage (which survives a crash and loses what was not yet durable), a simulated network
//! (which delays, reorders, duplicates, drops and partitions messages) and a simulated clock.
//! The same seed replays the same run.
//!
//! After every step it checks:
//! - exactly once: no replica's log stores one request id twice, and no request id is ever
//!   acknowledged with two numbers;
//! - numbers never fork: no number is acknowledged for two different trades;
//! - no acknowledged trade is lost: each is in some replica's durable log (and its number
//!   there is the one acknowledged);
//! - conservation: every durable log replays (the ledger asserts quantity = initial + restocks +
//!   sells - buys), and two logs that share an entry share everything before it;
//! - the core's own invariants (asserted inside every step).
//!
//! Then a liveness phase: faults stop, crashed replicas restart, and every front-end must finish
//! a few more trades and the logs must become identical.
//!
//! Profiles: `quorum` (`--min-copies 2`) under every fault; `lab` (`--min-copies 1`, the lab's
//! choice of availability) under crashes and an asynchronous but lossless network, the only
//! faults under which that choice keeps acknowledged trades. A planted bug (`lying-disk`: storage
//! that reports a write durable before it is) shows the checks catch what they claim to.
//!
//! Raft mode (`--mode raft`, [`raft`]) runs the same checks over three real openraft nodes with
//! the order crate's own SQLite storage, in one process, over an in-memory network with the
//! same faults; there a seed fixes the faults and the workload but not every interleaving (see
//! [`raft`] for where determinism ends).
//!
//! # Layout
//! - [`disk`] — simulated storage.
//! - [`client`] — a simulated front-end.
//! - [`raft`] — the raft-mode checker.

pub mod client;
pub mod disk;
pub mod raft;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bazaar_api::log::{Command, LogIndex, Position, StockDef, TradeCommand};
use bazaar_api::replica::{
    AppendReply, AppendRequest, LeaderNotice, LogEntry, PeerStatus, ReplicaRole, ReplicaStatus,
    ReplicationMode,
};
use bazaar_api::{Epoch, Price, ReplicaId, RequestId};
use bazaar_ledger::Outcome;
use bazaar_order::primary_backup::core::{
    Action, Decided, Event, Failure, PeerError, Replica, Reply, RequestNumber, Settings, Term,
    Token, Vouching,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::client::{Client, Done, Micros, Out, TradeAnswer};
use crate::disk::{Disk, Pending};

/// Entries recorded for the trace printed with a violation.
const TRACE_LEN: usize = 300;

/// How stale a leader's last confirmation by its followers may be before its health says it
/// cannot commit: five heartbeats, as the order service's release gate allows.
const VOUCH_GRACE: Duration = Duration::from_millis(250);

/// Which faults and settings a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `--min-copies 2` under every fault.
    Quorum,
    /// `--min-copies 1` under crashes and a lossless, asynchronous network.
    Lab,
}

/// A bug planted on purpose, to show the checks find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// Storage reports a write durable as soon as it is queued; it becomes durable only later
    /// (a crash before loses it). A follower then acknowledges an append before its persist.
    LyingDisk,
}

/// One run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Seeds every random choice.
    pub seed: u64,
    /// Steps of the fault phase.
    pub steps: u64,
    /// Faults and settings.
    pub profile: Profile,
    /// A planted bug, if any.
    pub plant: Option<Plant>,
    /// Simulated front-ends.
    pub clients: usize,
}

impl Config {
    /// A run of `steps` steps with seed `seed` in `profile`, two front-ends, no planted bug.
    #[must_use]
    pub fn new(seed: u64, steps: u64, profile: Profile) -> Self {
        Self {
            seed,
            steps,
            profile,
            plant: None,
            clients: 2,
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Steps taken, both phases.
    pub steps: u64,
    /// Trades acknowledged.
    pub acked: usize,
    /// Trades the ledger refused.
    pub refused: usize,
    /// Trades given up (outcome unknown).
    pub unknown: usize,
    /// Replica crashes.
    pub crashes: usize,
    /// Partitions.
    pub partitions: usize,
    /// Times a replica started leading.
    pub leaderships: usize,
    /// Simulated time, in milliseconds.
    pub simulated_ms: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} steps, {} ms simulated: {} trades acknowledged, {} refused, {} unknown; {} crashes, {} partitions, {} leaderships",
            self.steps,
            self.simulated_ms,
            self.acked,
            self.refused,
            self.unknown,
            self.crashes,
            self.partitions,
            self.leaderships
        )
    }
}

/// A broken invariant, with what led to it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The run's seed.
    pub seed: u64,
    /// The step it was found at.
    pub step: u64,
    /// What broke.
    pub what: String,
    /// The last events before it.
    pub trace: Vec<String>,
    /// The command that runs this seed again.
    pub replay: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VIOLATION at step {} (seed {}): {}",
            self.step, self.seed, self.what
        )?;
        writeln!(f, "last {} events:", self.trace.len())?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay: {}", self.replay)
    }
}

/// A message in flight.
#[derive(Debug, Clone)]
enum Msg {
    Append {
        from: ReplicaId,
        to: ReplicaId,
        request: RequestNumber,
        append: AppendRequest,
    },
    AppendReply {
        from: ReplicaId,
        to: ReplicaId,
        request: RequestNumber,
        reply: Result<AppendReply, PeerError>,
    },
    StatusRequest {
        from: ReplicaId,
        to: ReplicaId,
        request: RequestNumber,
        fence: Option<Term>,
    },
    StatusReply {
        from: ReplicaId,
        to: ReplicaId,
        request: RequestNumber,
        status: Result<PeerStatus, PeerError>,
    },
    FetchRequest {
        from: ReplicaId,
        to: ReplicaId,
        request: RequestNumber,
        start: LogIndex,
        limit: usize,
    },
    FetchReply {
        from: ReplicaId,
        to: ReplicaId,
        request: RequestNumber,
        entries: Vec<LogEntry>,
    },
    Health {
        client: usize,
        to: ReplicaId,
        round: u64,
    },
    HealthReply {
        client: usize,
        from: ReplicaId,
        round: u64,
        status: ReplicaStatus,
    },
    Notice {
        client: usize,
        to: ReplicaId,
        round: u64,
        notice: LeaderNotice,
    },
    NoticeReply {
        client: usize,
        from: ReplicaId,
        round: u64,
        ok: bool,
    },
    Trade {
        client: usize,
        to: ReplicaId,
        op: u64,
        trade: TradeCommand,
    },
    TradeReply {
        client: usize,
        from: ReplicaId,
        op: u64,
        answer: TradeAnswer,
    },
    /// A reply from storage to its own replica (a load), delivered like a message.
    Local { to: ReplicaId, event: Event },
}

/// Where a host is, for the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Host {
    Replica(ReplicaId),
    Client(usize),
}

impl Msg {
    fn route(&self) -> (Host, Host) {
        use Host::{Client as C, Replica as R};
        match self {
            Self::Append { from, to, .. }
            | Self::AppendReply { from, to, .. }
            | Self::StatusRequest { from, to, .. }
            | Self::StatusReply { from, to, .. }
            | Self::FetchRequest { from, to, .. }
            | Self::FetchReply { from, to, .. } => (R(*from), R(*to)),
            Self::Health { client, to, .. }
            | Self::Notice { client, to, .. }
            | Self::Trade { client, to, .. } => (C(*client), R(*to)),
            Self::HealthReply { client, from, .. }
            | Self::NoticeReply { client, from, .. }
            | Self::TradeReply { client, from, .. } => (R(*from), C(*client)),
            Self::Local { to, .. } => (R(*to), R(*to)),
        }
    }
}

/// Where a reply to a request the core answers goes.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Append {
        leader: ReplicaId,
        request: RequestNumber,
    },
    Status {
        asker: ReplicaId,
        request: RequestNumber,
    },
    Notice {
        client: usize,
        round: u64,
    },
    Trade {
        client: usize,
        op: u64,
    },
}

struct Node {
    replica: Option<Replica>,
    disk: Disk,
}

/// The whole simulated system.
struct World {
    config: Config,
    rng: StdRng,
    origin: Instant,
    now: Micros,
    step: u64,
    nodes: BTreeMap<ReplicaId, Node>,
    clients: Vec<Client>,
    queue: BinaryHeap<Reverse<(Micros, u64, usize)>>,
    messages: HashMap<usize, Msg>,
    next_msg: usize,
    seq: u64,
    /// Replies the cores owe: (replica, token) -> where they go.
    tokens: HashMap<(ReplicaId, Token), Origin>,
    next_token: Token,
    /// Directed links that drop everything.
    cut: BTreeSet<(Host, Host)>,
    faults_on: bool,
    /// Every acknowledgement: request id -> number, and the replicas holding it durably then,
    /// each with its crash count at the time.
    acked: HashMap<RequestId, (u64, Vec<(ReplicaId, u64)>)>,
    /// Crashes per replica so far.
    crash_count: BTreeMap<ReplicaId, u64>,
    /// Number -> request id, over every acknowledgement.
    by_number: HashMap<u64, RequestId>,
    down_until: BTreeMap<ReplicaId, Micros>,
    heal_at: Option<Micros>,
    next_fault: Micros,
    trace: VecDeque<String>,
    summary: Summary,
    /// Steps taken without time passing.
    stalled: u64,
}

/// Steps without time passing after which the run counts as stuck (a livelock in the code
/// under test, or in the simulator).
const STALL_STEPS_MAX: u64 = 100_000;

fn ms(n: u64) -> Micros {
    n * 1000
}

fn genesis() -> Vec<StockDef> {
    client::STOCKS
        .iter()
        .map(|name| StockDef {
            name: (*name).to_owned(),
            price: Price::from_cents(100),
            quantity: 20,
        })
        .collect()
}

fn settings(id: ReplicaId, min_copies: usize) -> Settings {
    Settings {
        id,
        peers: (1..=3).map(ReplicaId).filter(|p| *p != id).collect(),
        min_copies,
        append_timeout: Duration::from_millis(200),
        heartbeat: Duration::from_millis(50),
        sync_timeout: Duration::from_millis(200),
        commit_timeout: Duration::from_millis(2000),
        genesis: genesis(),
        window_len_max: 16,
    }
}

impl World {
    fn new(config: Config) -> Self {
        let mut world = Self {
            config,
            rng: StdRng::seed_from_u64(config.seed),
            origin: Instant::now(),
            now: 0,
            step: 0,
            nodes: BTreeMap::new(),
            clients: (0..config.clients)
                .map(|_| Client::new((1..=3).map(ReplicaId).collect()))
                .collect(),
            queue: BinaryHeap::new(),
            messages: HashMap::new(),
            next_msg: 0,
            seq: 0,
            tokens: HashMap::new(),
            next_token: 0,
            cut: BTreeSet::new(),
            faults_on: true,
            acked: HashMap::new(),
            crash_count: BTreeMap::new(),
            by_number: HashMap::new(),
            down_until: BTreeMap::new(),
            heal_at: None,
            next_fault: ms(300),
            trace: VecDeque::new(),
            summary: Summary::default(),
            stalled: 0,
        };
        for id in (1..=3).map(ReplicaId) {
            world.nodes.insert(
                id,
                Node {
                    replica: None,
                    disk: Disk::default(),
                },
            );
        }
        world
    }

    fn min_copies(&self) -> usize {
        match self.config.profile {
            Profile::Quorum => 2,
            Profile::Lab => 1,
        }
    }

    fn instant(&self, at: Micros) -> Instant {
        self.origin + Duration::from_micros(at)
    }

    fn note(&mut self, text: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>9.3} ms  {text}", self.now as f64 / 1000.0));
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.config.seed,
            step: self.step,
            what,
            trace: self.trace.iter().cloned().collect(),
            replay: format!("bazaar-sim --seed {}", self.config.seed),
        }
    }

    // ----- the network -----

    fn send(&mut self, msg: Msg) {
        let (from, to) = msg.route();
        let local = matches!(msg, Msg::Local { .. });
        if !local && self.faults_on && self.config.profile == Profile::Quorum {
            if self.cut.contains(&(from, to)) || self.rng.random_bool(0.03) {
                return;
            }
            if self.rng.random_bool(0.02) {
                let copy = msg.clone();
                self.enqueue(copy, false);
            }
        }
        self.enqueue(msg, local);
    }

    fn enqueue(&mut self, msg: Msg, local: bool) {
        let delay = if local {
            self.rng.random_range(10..200)
        } else {
            self.rng.random_range(100..3_000)
        };
        let id = self.next_msg;
        self.next_msg += 1;
        self.seq += 1;
        self.messages.insert(id, msg);
        self.queue.push(Reverse((self.now + delay, self.seq, id)));
    }

    // ----- replicas -----

    fn boot(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let min_copies = self.min_copies();
        let node = self.nodes.get_mut(&id).expect("node");
        node.disk.pending.clear();
        let book = node
            .disk
            .book()
            .map_err(|e| self.violation(format!("replica {id}'s log does not replay: {e}")))?;
        let node = self.nodes.get_mut(&id).expect("node");
        let recent: Vec<LogEntry> = node.disk.log.iter().rev().take(16).rev().cloned().collect();
        let replica = Replica::new(
            settings(id, min_copies),
            node.disk.term,
            node.disk.runs(),
            node.disk.len(),
            recent,
            book,
        );
        node.replica = Some(replica);
        self.note(format!("replica {id} starts"));
        self.deliver(id, Event::Start)
    }

    fn crash(&mut self, id: ReplicaId) {
        let node = self.nodes.get_mut(&id).expect("node");
        if node.replica.take().is_some() {
            *self.crash_count.entry(id).or_default() += 1;
            let lost = node.disk.pending.len();
            node.disk.pending.clear();
            self.summary.crashes += 1;
            self.tokens.retain(|(r, _), _| *r != id);
            self.note(format!(
                "CRASH replica {id} ({lost} writes not yet durable are lost)"
            ));
        }
    }

    fn deliver(&mut self, id: ReplicaId, event: Event) -> Result<(), Violation> {
        let now = self.instant(self.now);
        let summary = format!("{event:?}");
        let Some(replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) else {
            return Ok(());
        };
        let stepped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replica.step(now, event)));
        let actions = match stepped {
            Ok(actions) => actions,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                return Err(self.violation(format!(
                    "replica {id} broke an invariant on {}: {what}",
                    truncate(&summary)
                )));
            }
        };
        self.note(format!("replica {id} <- {}", truncate(&summary)));
        for action in actions {
            self.carry_out(id, action)?;
        }
        Ok(())
    }

    fn token(&mut self, id: ReplicaId, origin: Origin) -> Token {
        self.next_token += 1;
        self.tokens.insert((id, self.next_token), origin);
        self.next_token
    }

    fn carry_out(&mut self, me: ReplicaId, action: Action) -> Result<(), Violation> {
        match action {
            Action::Persist {
                request,
                term,
                truncate_from,
                entries,
            } => {
                let lying = self.config.plant == Some(Plant::LyingDisk);
                let disk = &self.nodes.get(&me).expect("node").disk;
                let after = disk.pending.back().map_or(self.now, |p| p.durable_at);
                let latency = if lying {
                    self.rng.random_range(20_000..200_000)
                } else {
                    self.rng.random_range(200..2_000)
                };
                let durable_at = after.max(self.now) + latency;
                let disk = &mut self.nodes.get_mut(&me).expect("node").disk;
                disk.pending.push_back(Pending {
                    request,
                    term,
                    truncate_from,
                    entries,
                    durable_at,
                    reported: lying,
                });
                if lying {
                    self.send(Msg::Local {
                        to: me,
                        event: Event::Persisted { request },
                    });
                }
            }
            Action::Send {
                to,
                request,
                append,
            } => self.send(Msg::Append {
                from: me,
                to,
                request,
                append,
            }),
            Action::AskStatus { to, request, fence } => self.send(Msg::StatusRequest {
                from: me,
                to,
                request,
                fence,
            }),
            Action::Fetch {
                from,
                request,
                start,
                limit,
            } => self.send(Msg::FetchRequest {
                from: me,
                to: from,
                request,
                start,
                limit,
            }),
            Action::Load { to, start, limit } => {
                let entries = self.nodes[&me].disk.entries(start, limit);
                self.send(Msg::Local {
                    to: me,
                    event: Event::Loaded { to, entries },
                });
            }
            Action::LoadBook => {
                let book = self.nodes[&me].disk.book().map_err(|e| {
                    self.violation(format!("replica {me}'s log does not replay: {e}"))
                })?;
                self.send(Msg::Local {
                    to: me,
                    event: Event::BookLoaded { book },
                });
            }
            Action::Reply { token, reply } => self.reply(me, token, reply),
            Action::Lead { epoch, .. } => {
                self.summary.leaderships += 1;
                self.note(format!("replica {me} LEADS epoch {epoch}"));
            }
            Action::Resign { epoch } => self.note(format!("replica {me} resigns epoch {epoch}")),
            Action::Sequenced { .. } | Action::Committed { .. } => {}
        }
        Ok(())
    }

    fn reply(&mut self, me: ReplicaId, token: Token, reply: Reply) {
        let Some(origin) = self.tokens.remove(&(me, token)) else {
            return;
        };
        let stale = |f: &Failure| match f {
            Failure::StaleEpoch { newest, .. } => Some(*newest),
            _ => None,
        };
        match (origin, reply) {
            (Origin::Append { leader, request }, Reply::Append(result)) => {
                let reply = result.map_err(|f| match (stale(&f), f) {
                    (Some(newest), _) => PeerError::Stale { newest },
                    (None, Failure::NotReady(_)) => PeerError::NotReady,
                    (None, f) => PeerError::Refused(format!("{f:?}")),
                });
                self.send(Msg::AppendReply {
                    from: me,
                    to: leader,
                    request,
                    reply,
                });
            }
            (Origin::Status { asker, request }, Reply::Status(result)) => {
                let status = result.map_err(|f| match stale(&f) {
                    Some(newest) => PeerError::Stale { newest },
                    None => PeerError::Refused(format!("{f:?}")),
                });
                self.send(Msg::StatusReply {
                    from: me,
                    to: asker,
                    request,
                    status,
                });
            }
            (Origin::Notice { client, round }, Reply::Notice(result)) => {
                self.send(Msg::NoticeReply {
                    client,
                    from: me,
                    round,
                    ok: result.is_ok(),
                });
            }
            (Origin::Trade { client, op }, Reply::Write(result)) => {
                let answer = match result {
                    Ok(Decided {
                        outcome: Outcome::Traded(n) | Outcome::Duplicate(n),
                        ..
                    }) => TradeAnswer::Acked(n.0),
                    Ok(_) => TradeAnswer::Refused,
                    Err(Failure::NotLeader { .. }) => TradeAnswer::NotLeader,
                    Err(_) => TradeAnswer::Busy,
                };
                self.send(Msg::TradeReply {
                    client,
                    from: me,
                    op,
                    answer,
                });
            }
            (origin, reply) => {
                self.note(format!("unexpected reply {reply:?} to {origin:?}"));
            }
        }
    }

    fn health(&self, id: ReplicaId) -> Option<ReplicaStatus> {
        let replica = self.nodes.get(&id)?.replica.as_ref()?;
        let term = replica.term();
        let role = replica.role();
        Some(ReplicaStatus {
            id,
            mode: ReplicationMode::PrimaryBackup,
            role,
            ready: role != ReplicaRole::Recovering,
            leader: term.leader,
            epoch: term.epoch,
            position: replica.len(),
            last_number: replica.last_number(),
            visible: replica.committed(),
            commits: (role == ReplicaRole::Leader).then(|| match replica.vouching() {
                Vouching::No => false,
                Vouching::Alone => true,
                Vouching::Since(basis) => {
                    self.instant(self.now).saturating_duration_since(basis) <= VOUCH_GRACE
                }
            }),
        })
    }

    fn up(&self, id: ReplicaId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.replica.is_some())
    }

    fn on_message(&mut self, msg: Msg) -> Result<(), Violation> {
        match msg {
            Msg::Append {
                from,
                to,
                request,
                append,
            } => {
                if self.up(to) {
                    let token = self.token(
                        to,
                        Origin::Append {
                            leader: from,
                            request,
                        },
                    );
                    self.deliver(
                        to,
                        Event::Append {
                            token,
                            request: append,
                        },
                    )?;
                }
            }
            Msg::AppendReply {
                from,
                to,
                request,
                reply,
            } => self.deliver(
                to,
                Event::AppendReplied {
                    from,
                    request,
                    reply,
                },
            )?,
            Msg::StatusRequest {
                from,
                to,
                request,
                fence,
            } => {
                if self.up(to) {
                    let token = self.token(
                        to,
                        Origin::Status {
                            asker: from,
                            request,
                        },
                    );
                    self.deliver(to, Event::StatusRequest { token, fence })?;
                }
            }
            Msg::StatusReply {
                from,
                to,
                request,
                status,
            } => self.deliver(
                to,
                Event::Status {
                    from,
                    request,
                    status,
                },
            )?,
            Msg::FetchRequest {
                from,
                to,
                request,
                start,
                limit,
            } => {
                if self.up(to) {
                    let entries = self.nodes[&to].disk.entries(start, limit);
                    self.send(Msg::FetchReply {
                        from: to,
                        to: from,
                        request,
                        entries,
                    });
                }
            }
            Msg::FetchReply {
                from,
                to,
                request,
                entries,
            } => self.deliver(
                to,
                Event::Fetched {
                    from,
                    request,
                    entries: Ok(entries),
                },
            )?,
            Msg::Health { client, to, round } => {
                if let Some(status) = self.health(to) {
                    self.send(Msg::HealthReply {
                        client,
                        from: to,
                        round,
                        status,
                    });
                }
            }
            Msg::HealthReply {
                client,
                from,
                round,
                status,
            } => {
                let out = self.clients[client].on_health(self.now, from, round, status);
                self.client_out(client, out);
            }
            Msg::Notice {
                client,
                to,
                round,
                notice,
            } => {
                if self.up(to) {
                    let token = self.token(to, Origin::Notice { client, round });
                    self.deliver(to, Event::Notice { token, notice })?;
                }
            }
            Msg::NoticeReply {
                client,
                from,
                round,
                ok,
            } => {
                let out = self.clients[client].on_notice(self.now, from, round, ok);
                self.client_out(client, out);
            }
            Msg::Trade {
                client,
                to,
                op,
                trade,
            } => {
                if self.up(to) {
                    let token = self.token(to, Origin::Trade { client, op });
                    self.deliver(to, Event::Trade { token, trade })?;
                }
            }
            Msg::TradeReply {
                client,
                from,
                op,
                answer,
            } => {
                if let Some((request, done)) =
                    self.clients[client].on_trade(self.now, from, op, answer)
                {
                    self.finished(client, request, done)?;
                }
            }
            Msg::Local { to, event } => self.deliver(to, event)?,
        }
        Ok(())
    }

    fn client_out(&mut self, client: usize, out: Vec<Out>) {
        for o in out {
            let msg = match o {
                Out::Health { to, round } => Msg::Health { client, to, round },
                Out::Notice { to, round, notice } => Msg::Notice {
                    client,
                    to,
                    round,
                    notice,
                },
                Out::Trade { to, op, trade } => Msg::Trade {
                    client,
                    to,
                    op,
                    trade,
                },
            };
            self.send(msg);
        }
    }

    fn finished(&mut self, client: usize, request: RequestId, done: Done) -> Result<(), Violation> {
        match done {
            Done::Acked(number) => {
                self.summary.acked += 1;
                self.note(format!("client {client}: {request} ACKED as {number}"));
                let holders: Vec<(ReplicaId, u64)> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.disk.numbers.get(&request).is_some_and(|m| m.0 == number))
                    .map(|(id, _)| (*id, self.crash_count.get(id).copied().unwrap_or(0)))
                    .collect();
                if let Some((first, _)) = self.acked.insert(request, (number, holders))
                    && first != number
                {
                    return Err(self.violation(format!(
                        "exactly once broken: request {request} acknowledged as {first} and as {number}"
                    )));
                }
                if let Some(other) = self.by_number.insert(number, request)
                    && other != request
                    && !self.lost_by_design(other)
                {
                    return Err(self.violation(format!(
                        "numbers forked: {number} acknowledged for request {other} and for request {request}"
                    )));
                }
                self.check_acked_present()
            }
            Done::Refused => {
                self.summary.refused += 1;
                Ok(())
            }
            Done::Unknown => {
                self.summary.unknown += 1;
                self.note(format!("client {client}: {request} gave up (unknown)"));
                Ok(())
            }
        }
    }

    // ----- storage -----

    fn next_durable(&self) -> Option<(Micros, ReplicaId)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.replica.is_some())
            .filter_map(|(id, n)| n.disk.pending.front().map(|p| (p.durable_at, *id)))
            .min()
    }

    fn make_durable(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(persist) = node.disk.pending.pop_front() else {
            return Ok(());
        };
        if let Err(e) = node.disk.apply(&persist) {
            return Err(self.violation(format!("replica {id}'s storage: {e}")));
        }
        self.check_disk(id)?;
        if !persist.reported {
            self.deliver(
                id,
                Event::Persisted {
                    request: persist.request,
                },
            )?;
        }
        Ok(())
    }

    // ----- invariants -----

    /// The durable log replays (conservation, asserted by the ledger) and agrees with every
    /// other log wherever they share an entry (the log matching rule).
    fn check_disk(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let disk = &self.nodes[&id].disk;
        let replayed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| disk.book()));
        match replayed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(self.violation(format!("replica {id}'s log: {e}"))),
            Err(_) => {
                return Err(self.violation(format!(
                    "replica {id}'s log breaks conservation when replayed"
                )));
            }
        }
        for (other, node) in &self.nodes {
            if *other == id {
                continue;
            }
            let (mine, theirs) = (&disk.log, &node.disk.log);
            let shared = mine.len().min(theirs.len());
            if let Some(last) = (0..shared)
                .rev()
                .find(|i| mine[*i].epoch == theirs[*i].epoch)
                && let Some(i) = (0..=last).find(|i| mine[*i] != theirs[*i])
            {
                return Err(self.violation(format!(
                    "log matching broken: replicas {id} and {other} share entry {last} (epoch {}) but differ at {i}",
                    mine[last].epoch
                )));
            }
        }
        self.check_acked_present()
    }

    /// Whether an acknowledged trade may be lost in this profile: with one copy (the lab's
    /// choice), a trade only a lone leader held is lost when every replica that held it crashed
    /// before a new leader was chosen without it. With two copies, never.
    fn lost_by_design(&self, request: RequestId) -> bool {
        if self.config.profile != Profile::Lab {
            return false;
        }
        self.acked.get(&request).is_some_and(|(_, holders)| {
            holders
                .iter()
                .all(|(id, crashes)| self.crash_count.get(id).copied().unwrap_or(0) > *crashes)
        })
    }

    /// Every acknowledged trade is in some durable log with the number it was acknowledged
    /// with (unless the profile allows losing it, see [`Self::lost_by_design`]).
    fn check_acked_present(&self) -> Result<(), Violation> {
        for (request, (number, _)) in &self.acked {
            let held = self
                .nodes
                .values()
                .any(|n| n.disk.numbers.get(request).is_some_and(|m| m.0 == *number));
            let pending = self.nodes.values().any(|n| {
                n.disk.pending.iter().any(|p| {
                    p.entries.iter().any(
                        |e| matches!(&e.command, Command::Trade(t) if t.request_id == *request),
                    )
                })
            });
            if !held && !pending && !self.lost_by_design(*request) {
                return Err(self.violation(format!(
                    "acknowledged trade {request} (number {number}) is in no replica's log, though a replica that held it never crashed since"
                )));
            }
        }
        Ok(())
    }

    // ----- faults -----

    fn inject(&mut self) -> Result<(), Violation> {
        self.next_fault = self.now + self.rng.random_range(ms(50)..ms(400));
        if let Some(at) = self.heal_at
            && self.now >= at
        {
            self.cut.clear();
            self.heal_at = None;
            self.note("HEAL the network".into());
        }
        let restart: Vec<ReplicaId> = self
            .down_until
            .iter()
            .filter(|(_, t)| **t <= self.now)
            .map(|(id, _)| *id)
            .collect();
        for id in restart {
            self.down_until.remove(&id);
            self.boot(id)?;
        }
        match self.rng.random_range(0..10) {
            0..=2 => {
                let up: Vec<ReplicaId> = self
                    .nodes
                    .keys()
                    .copied()
                    .filter(|id| self.up(*id))
                    .collect();
                if up.len() >= 2 {
                    let id = up[self.rng.random_range(0..up.len())];
                    self.crash(id);
                    let back = self.now + self.rng.random_range(ms(50)..ms(800));
                    self.down_until.insert(id, back);
                }
            }
            3 if self.config.profile == Profile::Quorum && self.heal_at.is_none() => {
                let hosts: Vec<Host> = (1..=3)
                    .map(|i| Host::Replica(ReplicaId(i)))
                    .chain((0..self.clients.len()).map(Host::Client))
                    .collect();
                let isolated = hosts[self.rng.random_range(0..hosts.len())];
                let one_way = self.rng.random_bool(0.3);
                for h in &hosts {
                    if *h != isolated {
                        self.cut.insert((*h, isolated));
                        if !one_way {
                            self.cut.insert((isolated, *h));
                        }
                    }
                }
                self.summary.partitions += 1;
                self.heal_at = Some(self.now + self.rng.random_range(ms(100)..ms(1500)));
                self.note(format!(
                    "PARTITION {isolated:?} cut off{}",
                    if one_way {
                        " (one way: it cannot hear)"
                    } else {
                        ""
                    }
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn stop_faults(&mut self) -> Result<(), Violation> {
        self.faults_on = false;
        self.cut.clear();
        self.heal_at = None;
        let down: Vec<ReplicaId> = self.down_until.keys().copied().collect();
        for id in down {
            self.down_until.remove(&id);
            self.boot(id)?;
        }
        self.note("FAULTS STOP: network healed, every replica up".into());
        Ok(())
    }

    // ----- the loop -----

    /// Takes the next step: whichever comes first of a message, a write becoming durable, a
    /// replica's timer, a client's timer, a fault. Returns false when nothing is left to do.
    fn next(&mut self) -> Result<bool, Violation> {
        let message = self.queue.peek().map(|Reverse((t, _, _))| *t);
        let durable = self.next_durable();
        let timer = self
            .nodes
            .iter()
            .filter_map(|(id, n)| {
                let wake = n.replica.as_ref()?.next_wake()?;
                let at =
                    u64::try_from(wake.saturating_duration_since(self.origin).as_micros()).ok()?;
                Some((at.max(self.now), *id))
            })
            .min();
        let client = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.next_wake().map(|t| (t.max(self.now), i)))
            .min();
        let fault = self.faults_on.then_some(self.next_fault);
        let mut candidates: Vec<(Micros, u8)> = Vec::new();
        if let Some(t) = message {
            candidates.push((t, 0));
        }
        if let Some((t, _)) = durable {
            candidates.push((t, 1));
        }
        if let Some((t, _)) = timer {
            candidates.push((t, 2));
        }
        if let Some((t, _)) = client {
            candidates.push((t, 3));
        }
        if let Some(t) = fault {
            candidates.push((t, 4));
        }
        let Some(&(at, kind)) = candidates.iter().min() else {
            return Ok(false);
        };
        if at <= self.now {
            self.stalled += 1;
            if self.stalled > STALL_STEPS_MAX {
                return Err(self.violation(format!(
                    "the simulation does not progress: {STALL_STEPS_MAX} steps without time passing (next: kind {kind})"
                )));
            }
        } else {
            self.stalled = 0;
        }
        self.now = self.now.max(at);
        self.step += 1;
        match kind {
            0 => {
                if let Some(Reverse((_, _, id))) = self.queue.pop()
                    && let Some(msg) = self.messages.remove(&id)
                {
                    self.on_message(msg)?;
                }
            }
            1 => {
                if let Some((_, id)) = durable {
                    self.make_durable(id)?;
                }
            }
            2 => {
                if let Some((_, id)) = timer {
                    self.deliver(id, Event::Tick)?;
                }
            }
            3 => {
                if let Some((_, i)) = client {
                    let mut done = Vec::new();
                    let out = self.clients[i].tick(self.now, &mut self.rng, &mut done);
                    for (request, d) in done {
                        self.finished(i, request, d)?;
                    }
                    self.client_out(i, out);
                }
            }
            _ => self.inject()?,
        }
        Ok(true)
    }
}

fn truncate(text: &str) -> String {
    const LEN_MAX: usize = 160;
    if text.len() <= LEN_MAX {
        text.to_owned()
    } else {
        let cut = (0..=LEN_MAX)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}...", &text[..cut])
    }
}

/// Trades each front-end must finish once the faults stop.
const LIVENESS_TRADES: u64 = 3;

/// How long the liveness phase may take, simulated.
const LIVENESS_DEADLINE: Micros = 60_000_000;

/// Runs one simulation.
///
/// # Errors
/// The first broken invariant, with the seed and the events that led to it.
pub fn run(config: Config) -> Result<Summary, Violation> {
    let mut world = World::new(config);
    for id in (1..=3).map(ReplicaId) {
        world.boot(id)?;
    }
    while world.step < config.steps {
        if !world.next()? {
            break;
        }
    }
    world.stop_faults()?;
    for client in &mut world.clients {
        client.remaining = Some(LIVENESS_TRADES);
    }
    let liveness_from = world.now;
    while !world.clients.iter().all(Client::finished) {
        if world.now > liveness_from + LIVENESS_DEADLINE || !world.next()? {
            let stuck: Vec<String> = world
                .clients
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.finished())
                .map(|(i, c)| format!("client {i} (trade {:?})", c.current_request()))
                .collect();
            return Err(world.violation(format!(
                "liveness: with every fault healed, {} did not finish within {} s",
                stuck.join(", "),
                LIVENESS_DEADLINE / 1_000_000
            )));
        }
    }
    // Quiet: every log becomes the leader's.
    let quiet_from = world.now;
    loop {
        let logs: Vec<Vec<(u64, Epoch)>> = world
            .nodes
            .values()
            .map(|n| n.disk.log.iter().map(|e| (e.index.0, e.epoch)).collect())
            .collect();
        if logs.windows(2).all(|w| w[0] == w[1])
            && world.nodes.values().all(|n| n.disk.pending.is_empty())
        {
            break;
        }
        if world.now > quiet_from + LIVENESS_DEADLINE || !world.next()? {
            let lens: Vec<usize> = logs.iter().map(Vec::len).collect();
            return Err(world.violation(format!(
                "liveness: the logs did not become identical (lengths {lens:?})"
            )));
        }
    }
    world.check_acked_present()?;
    let lens: BTreeSet<Position> = world.nodes.values().map(|n| n.disk.len()).collect();
    world.note(format!("quiet: logs identical ({lens:?})"));
    world.summary.steps = world.step;
    world.summary.simulated_ms = world.now / 1000;
    Ok(world.summary)
}
