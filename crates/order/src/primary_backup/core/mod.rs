//! The primary-backup replica as a pure state machine: `Replica::step(now, event)` returns the
//! actions the runtime must carry out. No tokio, no SQLite, no HTTP, no clock of its own: the
//! runtime (`super`) and the simulator (the `bazaar-sim` crate) feed it events and carry out its
//! actions, each in its own way.
//!
//! ```text
//!  front-end          leader (epoch e)                               followers
//!  ---------          ----------------                               ---------
//!  Trade -----------> decide on the book at the log's tip
//!                     (duplicate: the first number; refused: 409,
//!                      both once everything before is committed)
//!                     append entry i, epoch e, to the log
//!                       |-- Persist (local, group-committed) ------.
//!                       |-- Send Append{e, prev, entries} ----------+--> holds prev? append,
//!                       |                                           |    Persist, then reply
//!                       '-- committed once durable here and on <----'    Appended{len}
//!                           every live follower (and on at least
//!                           min_copies replicas)
//!  <----------------- Reply (number, position)
//! ```
//!
//! Rules the runtime relies on:
//! - Actions are carried out in the order given. A reply that promises durability (an append's
//!   `Appended`, a trade's number, a notice's answer after adopting an epoch) is only emitted
//!   after the `Persisted` event that made it true. A leader sends entries to followers while its
//!   own copy is still being written: the entry is acknowledged only once both are durable.
//! - Epochs only grow, and one epoch has one leader. A replica refuses appends and notices from
//!   an older epoch; a leader that hears of a newer one steps down and answers every waiting
//!   trade "uncertain" (the front-end retries with the same request id; exactly once holds).
//! - The log matching rule: a follower appends only on top of an entry it holds with the same
//!   index and epoch, so two logs that share an entry share everything before it.
//! - A chosen leader first copies the most up-to-date reachable log (newest last epoch, then
//!   longest), and only then numbers anything: numbers never fork among the replicas it reached.
//! - A replica that restarts asks its peers for their logs and copies what it missed before it
//!   serves (recovery); the leader's catch-up finishes whatever recovery could not.
//!
//! # Layout
//! - [`log`] — the in-memory side of the log: epoch runs, durability, the newest entries.

pub mod log;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bazaar_api::log::{
    AppliedEntry, BookSnapshot, Command, LogIndex, Position, StockDef, TradeCommand,
};
use bazaar_api::replica::{
    AppendReply, AppendRequest, EntryId, EpochRun, LeaderNotice, LogEntry, PeerStatus, ReplicaRole,
};
use bazaar_api::{Epoch, ReplicaId, TxnNumber};
use bazaar_ledger::{Book, Outcome};

use self::log::{Log, agreement, last_epoch, more_up_to_date, valid_runs};

/// Largest step an epoch may take in one notice or append. Epochs grow by one per leader
/// selection; a replica that slept through many still sees a step far below this, while a
/// forged epoch near the top of the range (which would make the next one wrap) is refused.
pub const EPOCH_STEP_MAX: u64 = 1 << 32;

/// Largest epoch accepted: what SQLite's signed integers hold, minus room for
/// [`EPOCH_STEP_MAX`] more selections.
pub const EPOCH_MAX: u64 = (i64::MAX as u64) - EPOCH_STEP_MAX;

/// Most entries one append, one fetch page or one load carries.
pub const BATCH_LEN_MAX: usize = 512;

/// Most epoch runs a peer may report: one per leadership that wrote entries.
pub const RUNS_LEN_MAX: usize = 100_000;

/// Attempts a recovering replica makes to copy what it missed before it serves anyway (the
/// leader's catch-up then finishes the job).
const RECOVERY_ATTEMPTS: u32 = 5;

/// Attempts a chosen leader makes to copy the most up-to-date log before it gives up leading.
const CANDIDATE_ATTEMPTS: u32 = 5;

/// First and longest pause between retries (catch-up probes, sync attempts).
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(1000);

/// The timing and shape of one replica.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This replica.
    pub id: ReplicaId,
    /// The other replicas.
    pub peers: Vec<ReplicaId>,
    /// Copies (the leader's included) an entry needs before it is acknowledged. 1 is the lab's
    /// design: a leader whose followers are all unreachable acknowledges alone.
    pub min_copies: usize,
    /// A live follower that has not answered an append within this is marked behind.
    pub append_timeout: Duration,
    /// An idle leader sends an empty append this often: followers learn it is alive, and it
    /// learns of a newer epoch.
    pub heartbeat: Duration,
    /// How long a peer may take to answer a status or fetch request during a sync.
    pub sync_timeout: Duration,
    /// How long a trade may wait to be committed before it is answered "uncertain".
    pub commit_timeout: Duration,
    /// The catalog the first leader writes into the log's first entry.
    pub genesis: Vec<StockDef>,
    /// Newest entries kept in memory for appends and catch-up.
    pub window_len_max: usize,
}

/// The newest epoch a replica has seen and its leader; durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Term {
    /// Epoch.
    pub epoch: Epoch,
    /// Its leader, if known.
    pub leader: Option<ReplicaId>,
}

/// The runtime's handle for a request that waits for a [`Reply`].
pub type Token = u64;

/// Names one persist, append, status round or fetch, so late answers can be told apart.
pub type RequestNumber = u64;

/// What happens to a replica.
#[derive(Debug, Clone)]
pub enum Event {
    /// The replica opened its storage: start recovering.
    Start,
    /// Nothing happened; time passed (see [`Replica::next_wake`]).
    Tick,
    /// A front-end's trade.
    Trade {
        /// Where the reply goes.
        token: Token,
        /// The trade.
        trade: TradeCommand,
    },
    /// A catalog's restock.
    Restock {
        /// Where the reply goes.
        token: Token,
        /// What sold-out stocks get back.
        to: u64,
    },
    /// A leader notice from the front-end's selection.
    Notice {
        /// Where the reply goes.
        token: Token,
        /// The notice.
        notice: LeaderNotice,
    },
    /// A peer asks for this replica's status (fenced by a chosen leader's term, or not).
    StatusRequest {
        /// Where the reply goes.
        token: Token,
        /// The term to adopt first.
        fence: Option<Term>,
    },
    /// An append from a leader.
    Append {
        /// Where the reply goes.
        token: Token,
        /// The append.
        request: AppendRequest,
    },
    /// A follower answered an append (or the runtime gave up on it).
    AppendReplied {
        /// The follower.
        from: ReplicaId,
        /// Which append.
        request: RequestNumber,
        /// Its answer.
        reply: Result<AppendReply, PeerError>,
    },
    /// A peer's status, asked for by a sync.
    Status {
        /// The peer.
        from: ReplicaId,
        /// Which status round.
        request: RequestNumber,
        /// Its status.
        status: Result<PeerStatus, PeerError>,
    },
    /// A page of a peer's log, asked for by a sync.
    Fetched {
        /// The peer.
        from: ReplicaId,
        /// Which fetch.
        request: RequestNumber,
        /// The entries.
        entries: Result<Vec<LogEntry>, PeerError>,
    },
    /// Storage made a persist durable (persists complete in the order they were issued).
    Persisted {
        /// Which persist.
        request: RequestNumber,
    },
    /// Entries read back from storage for a follower's catch-up.
    Loaded {
        /// The follower.
        to: ReplicaId,
        /// The entries (from the start asked for).
        entries: Vec<LogEntry>,
    },
    /// The book replayed from storage after a truncation.
    BookLoaded {
        /// The book at the durable end of the log.
        book: Book,
    },
}

/// How a request to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// No connection, or no answer in time.
    Unreachable,
    /// The peer knows a newer epoch.
    Stale {
        /// Its newest epoch.
        newest: Epoch,
    },
    /// The peer is recovering or syncing.
    NotReady,
    /// The peer refused for another reason (a malformed request, a claimed epoch).
    Refused(String),
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write to storage, in order, durably: the term if given, then move the entries from
    /// `truncate_from` on aside (to the conflicts table), then append `entries`; storage
    /// derives the orders table from the log it holds. Answer with [`Event::Persisted`].
    Persist {
        /// Names this persist.
        request: RequestNumber,
        /// A new term to store.
        term: Option<Term>,
        /// Entries from here on are moved aside.
        truncate_from: Option<LogIndex>,
        /// Entries to append.
        entries: Vec<LogEntry>,
    },
    /// Send an append to a follower; answer with [`Event::AppendReplied`].
    Send {
        /// The follower.
        to: ReplicaId,
        /// Names this append.
        request: RequestNumber,
        /// The append.
        append: AppendRequest,
    },
    /// Ask a peer for its [`PeerStatus`]; answer with [`Event::Status`]. With a fence (a
    /// chosen leader's new term), the peer first adopts the term, so that once it has answered
    /// it refuses every older leader: what it reported cannot grow behind the candidate's back.
    AskStatus {
        /// The peer.
        to: ReplicaId,
        /// Names this status round.
        request: RequestNumber,
        /// The term the peer must adopt before answering.
        fence: Option<Term>,
    },
    /// Ask a peer for durable entries from `start`; answer with [`Event::Fetched`].
    Fetch {
        /// The peer.
        from: ReplicaId,
        /// Names this fetch.
        request: RequestNumber,
        /// First index wanted.
        start: LogIndex,
        /// Most entries wanted.
        limit: usize,
    },
    /// Read durable entries from `start` from storage; answer with [`Event::Loaded`].
    Load {
        /// The follower they are for.
        to: ReplicaId,
        /// First index wanted.
        start: LogIndex,
        /// Most entries wanted.
        limit: usize,
    },
    /// Replay the durable log into a book; answer with [`Event::BookLoaded`]. Emitted only when
    /// no persist is outstanding.
    LoadBook,
    /// Answer a request.
    Reply {
        /// Whose.
        token: Token,
        /// The answer.
        reply: Reply,
    },
    /// Leader: entries just appended, with what they change. Followers of the log may be told
    /// of the changes now (invalidations); the entries are not committed yet.
    Sequenced {
        /// The entries' effects.
        entries: Vec<AppliedEntry>,
    },
    /// Leader: every entry below `position` is committed.
    Committed {
        /// The committed prefix.
        position: Position,
    },
    /// This replica now leads `epoch`, from its log as it was when it took over.
    Lead {
        /// Its epoch.
        epoch: Epoch,
        /// The stock table at the end of its log when it took over.
        base: BookSnapshot,
    },
    /// This replica stopped leading.
    Resign {
        /// The epoch it led.
        epoch: Epoch,
    },
}

/// A request's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// To a trade or a restock: what the ledger decided, and the position a state must reach to
    /// show it (for a refusal or a duplicate: everything it was decided on).
    Write(Result<Decided, Failure>),
    /// To a notice: the replica follows (or, when chosen, leads) the notice's epoch.
    Notice(Result<(), Failure>),
    /// To an append.
    Append(Result<AppendReply, Failure>),
    /// To a status request.
    Status(Result<PeerStatus, Failure>),
}

/// A write the ledger decided on, committed up to `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The ledger's verdict.
    pub outcome: Outcome,
    /// A state at this position shows it.
    pub position: Position,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not the leader; `leader` is who this replica believes leads.
    NotLeader {
        /// The believed leader.
        leader: Option<ReplicaId>,
    },
    /// Recovering, syncing as a chosen leader, or reloading its book.
    NotReady(&'static str),
    /// The write may or may not have been committed (leadership lost, no quorum in time):
    /// retry with the same request id.
    Uncertain(String),
    /// The sender's epoch is older than this replica's.
    StaleEpoch {
        /// The sender's.
        got: Epoch,
        /// This replica's.
        newest: Epoch,
    },
    /// Another replica already leads this epoch.
    EpochClaimed {
        /// The epoch.
        epoch: Epoch,
        /// Its known leader.
        known: ReplicaId,
        /// The other claimant.
        claimed: ReplicaId,
    },
    /// The request itself is malformed.
    Invalid(String),
}

/// Whether a replica can vouch that it still leads (see [`Replica::vouching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vouching {
    /// It does not lead, or could not commit anything.
    No,
    /// It leads with no live follower, and one copy is enough.
    Alone,
    /// Every live follower confirmed its epoch for a request sent at this time or later.
    Since(Instant),
}

/// What to make of a message claiming `leader` leads `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochVerdict {
    /// Older than what we know: refuse it.
    Stale,
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
        return EpochVerdict::Stale;
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

/// The leader's view of one follower.
#[derive(Debug, Clone)]
struct Follower {
    /// Live followers are waited for; behind ones are caught up in the background.
    live: bool,
    /// The next entry to send it.
    next: LogIndex,
    /// It durably holds our entries below this.
    matched: Position,
    /// The append in flight: its number, the position it sends up to, when it was sent.
    in_flight: Option<(RequestNumber, Position, Instant)>,
    /// A storage read for it is under way.
    loading: bool,
    /// When the request behind its last successful answer was sent (the lease basis).
    acked_sent_at: Option<Instant>,
    /// When a behind follower is probed next.
    retry_at: Instant,
    /// Pause before the next probe of a behind follower.
    pause: Duration,
}

/// Entries just appended, and (when the book is loaded) their effects and outcomes.
#[derive(Debug, Default)]
struct Appended {
    entries: Vec<LogEntry>,
    effects: Vec<AppliedEntry>,
    outcomes: Vec<Outcome>,
}

/// A reply held until the committed prefix reaches `position`.
#[derive(Debug, Clone)]
struct Waiting {
    position: Position,
    token: Token,
    reply: Reply,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Leader {
    epoch: Epoch,
    followers: BTreeMap<ReplicaId, Follower>,
    commit: Position,
    waiting: Vec<Waiting>,
}

/// Copying the most up-to-date log from a peer: what a restarted replica and a chosen leader do.
#[derive(Debug, Clone)]
struct Sync {
    stage: SyncStage,
    attempts: u32,
}

#[derive(Debug, Clone)]
enum SyncStage {
    /// Waiting for [`Event::Start`].
    NotStarted,
    /// Asked every peer for its status; collecting answers until `deadline`.
    Asking {
        request: RequestNumber,
        deadline: Instant,
        statuses: BTreeMap<ReplicaId, PeerStatus>,
        unanswered: usize,
    },
    /// The truncation (if any) is being made durable and the book reloaded before fetching.
    Reloading { source: ReplicaId, until: Position },
    /// Fetching pages from `source` until our log reaches `until`.
    Fetching {
        source: ReplicaId,
        until: Position,
        request: RequestNumber,
        deadline: Instant,
    },
    /// Waiting before another attempt.
    Pausing { until: Instant },
    /// Copied; the book is being reloaded (or will be, once persists are done).
    Finishing,
}

#[derive(Debug, Clone)]
enum Role {
    Recovering(Sync),
    Follower,
    Candidate {
        sync: Sync,
        live: Vec<ReplicaId>,
        token: Token,
    },
    Leader(Leader),
}

/// One primary-backup replica's protocol state.
#[derive(Debug, Clone)]
pub struct Replica {
    settings: Settings,
    term: Term,
    role: Role,
    log: Log,
    /// The ledger at the end of the log; `None` while it is reloaded after a truncation.
    book: Option<Book>,
    /// A book reload was asked for and not yet answered.
    book_requested: bool,
    next_request: RequestNumber,
    /// Persists in flight, oldest first, with the position each makes durable.
    persists: VecDeque<(RequestNumber, Position)>,
    /// Replies held until a persist is durable.
    held: Vec<(RequestNumber, Token, Reply)>,
    actions: Vec<Action>,
}

impl Replica {
    /// A replica over what storage holds: its term, its log (runs, length, newest entries) and
    /// the book replayed from it. Call `step` with [`Event::Start`] first.
    ///
    /// # Panics
    /// If the book does not reflect the whole log, or the settings name this replica as a peer.
    #[must_use]
    pub fn new(
        settings: Settings,
        term: Term,
        runs: Vec<EpochRun>,
        len: Position,
        recent: Vec<LogEntry>,
        book: Book,
    ) -> Self {
        assert_eq!(book.position(), len, "the book reflects the whole log");
        assert!(
            !settings.peers.contains(&settings.id),
            "a replica is not its own peer"
        );
        let log = Log::new(runs, len, recent, settings.window_len_max);
        Self {
            settings,
            term,
            role: Role::Recovering(Sync {
                stage: SyncStage::NotStarted,
                attempts: 0,
            }),
            log,
            book: Some(book),
            book_requested: false,
            next_request: 0,
            persists: VecDeque::new(),
            held: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// This replica.
    #[must_use]
    pub fn id(&self) -> ReplicaId {
        self.settings.id
    }

    /// Its term.
    #[must_use]
    pub fn term(&self) -> Term {
        self.term
    }

    /// Its role as the status reports it.
    #[must_use]
    pub fn role(&self) -> ReplicaRole {
        match self.role {
            Role::Recovering(_) => ReplicaRole::Recovering,
            Role::Follower => ReplicaRole::Follower,
            Role::Candidate { .. } => ReplicaRole::Candidate,
            Role::Leader(_) => ReplicaRole::Leader,
        }
    }

    /// Entries in its log (some perhaps not durable yet).
    #[must_use]
    pub fn len(&self) -> Position {
        self.log.len()
    }

    /// The number of its last order, when the book is loaded and holds one.
    #[must_use]
    pub fn last_number(&self) -> Option<TxnNumber> {
        let next = self.book.as_ref()?.next_number();
        next.0.checked_sub(1).map(TxnNumber)
    }

    /// On a leader, the committed prefix.
    #[must_use]
    pub fn committed(&self) -> Option<Position> {
        match &self.role {
            Role::Leader(leader) => Some(leader.commit),
            _ => None,
        }
    }

    /// The book at the end of the log, when loaded.
    #[must_use]
    pub fn book(&self) -> Option<&Book> {
        self.book.as_ref()
    }

    /// What this replica tells its peers.
    #[must_use]
    pub fn peer_status(&self) -> PeerStatus {
        PeerStatus {
            id: self.settings.id,
            role: self.role(),
            epoch: self.term.epoch,
            leader: self.term.leader,
            len: self.log.durable(),
            runs: self.log.durable_runs(),
        }
    }

    /// Whether, and since when, this replica can vouch that it leads: the send time of the
    /// oldest request behind the latest answer of every live follower. A lease granted on that
    /// basis cannot outlive a newer epoch by more than the lease, because a live follower that
    /// adopted a newer epoch would have refused. A leader with no live follower vouches for
    /// itself when one copy is enough (the lab's choice of availability), and not at all when
    /// it could not commit anything.
    #[must_use]
    pub fn vouching(&self) -> Vouching {
        let Role::Leader(leader) = &self.role else {
            return Vouching::No;
        };
        let live: Vec<&Follower> = leader.followers.values().filter(|f| f.live).collect();
        if live.len() + 1 < self.settings.min_copies {
            return Vouching::No;
        }
        let mut basis: Option<Instant> = None;
        for follower in live {
            let Some(acked) = follower.acked_sent_at else {
                return Vouching::No;
            };
            basis = Some(basis.map_or(acked, |b| b.min(acked)));
        }
        basis.map_or(Vouching::Alone, Vouching::Since)
    }

    /// When the replica next needs a [`Event::Tick`], if it is waiting for time to pass.
    #[must_use]
    pub fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        match &self.role {
            Role::Recovering(sync) | Role::Candidate { sync, .. } => match &sync.stage {
                SyncStage::Asking { deadline, .. } | SyncStage::Fetching { deadline, .. } => {
                    at(*deadline);
                }
                SyncStage::Pausing { until } => at(*until),
                SyncStage::NotStarted | SyncStage::Reloading { .. } | SyncStage::Finishing => {}
            },
            Role::Follower => {}
            Role::Leader(leader) => {
                // A follower whose entries are being read needs no timer: the read answers.
                for follower in leader.followers.values().filter(|f| !f.loading) {
                    match follower.in_flight {
                        Some((_, _, sent)) => at(sent + self.settings.append_timeout),
                        None if follower.live => {
                            let last = follower.acked_sent_at.unwrap_or(follower.retry_at);
                            at(last + self.settings.heartbeat);
                        }
                        None => at(follower.retry_at),
                    }
                }
                if let Some(first) = leader.waiting.iter().map(|w| w.deadline).min() {
                    at(first);
                }
            }
        }
        wake
    }

    fn request_number(&mut self) -> RequestNumber {
        self.next_request += 1;
        self.next_request
    }

    /// Handles one event; returns what the runtime must do, in order.
    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        match event {
            Event::Start => self.start_sync(now),
            Event::Tick => self.tick(now),
            Event::Trade { token, trade } => self.on_write(now, token, Command::Trade(trade)),
            Event::Restock { token, to } => self.on_write(now, token, Command::Restock { to }),
            Event::Notice { token, notice } => self.on_notice(now, token, &notice),
            Event::Append { token, request } => self.on_append(now, token, request),
            Event::StatusRequest { token, fence } => self.on_status_request(token, fence),
            Event::AppendReplied {
                from,
                request,
                reply,
            } => self.on_append_replied(now, from, request, reply),
            Event::Status {
                from,
                request,
                status,
            } => self.on_status(now, from, request, status),
            Event::Fetched {
                from,
                request,
                entries,
            } => self.on_fetched(now, from, request, entries),
            Event::Persisted { request } => self.on_persisted(now, request),
            Event::Loaded { to, entries } => self.on_loaded(now, to, entries),
            Event::BookLoaded { book } => self.on_book_loaded(now, book),
        }
        self.check_invariants();
        std::mem::take(&mut self.actions)
    }

    /// Asserted after every step: a broken invariant is a bug, and the process must stop
    /// rather than serve on a state it cannot trust.
    fn check_invariants(&self) {
        assert!(
            valid_runs(self.log.runs(), self.log.len()),
            "epoch runs describe the log"
        );
        assert!(
            self.log.durable() <= self.log.len(),
            "durable is a prefix of the log"
        );
        if let Some(book) = &self.book {
            assert_eq!(
                book.position(),
                self.log.len(),
                "the book is at the end of the log"
            );
        }
        if let Some(epoch) = last_epoch(self.log.runs()) {
            assert!(epoch <= self.term.epoch, "no entry is newer than the term");
        }
        if let Role::Leader(leader) = &self.role {
            assert_eq!(
                self.term.leader,
                Some(self.settings.id),
                "a leader leads its term"
            );
            assert_eq!(
                leader.epoch, self.term.epoch,
                "a leader leads the newest epoch"
            );
            assert!(
                leader.commit <= self.log.durable(),
                "committed entries are durable here"
            );
            assert!(self.book.is_some(), "a leader has its book");
        }
    }

    // ----- storage -----

    fn persist(
        &mut self,
        term: Option<Term>,
        truncate_from: Option<LogIndex>,
        entries: Vec<LogEntry>,
    ) -> RequestNumber {
        let request = self.request_number();
        if let Some(from) = truncate_from {
            // Persists issued before the truncation cannot make the new entries durable.
            for (_, position) in &mut self.persists {
                *position = (*position).min(Position(from.0));
            }
        }
        self.persists.push_back((request, self.log.len()));
        self.actions.push(Action::Persist {
            request,
            term,
            truncate_from,
            entries,
        });
        request
    }

    /// Replies now if nothing is being persisted, else once everything persisted so far is.
    fn reply_when_durable(&mut self, token: Token, reply: Reply) {
        match self.persists.back() {
            Some(&(request, _)) => self.held.push((request, token, reply)),
            None => self.actions.push(Action::Reply { token, reply }),
        }
    }

    fn adopt_term(&mut self, term: Term) {
        if term != self.term {
            self.term = term;
            self.persist(Some(term), None, Vec::new());
        }
    }

    fn on_persisted(&mut self, now: Instant, request: RequestNumber) {
        while let Some(&(done, position)) = self.persists.front() {
            if done > request {
                break;
            }
            self.persists.pop_front();
            self.log.made_durable(position);
        }
        let (ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(after, _, _)| *after <= request);
        self.held = held;
        for (_, token, reply) in ready {
            self.actions.push(Action::Reply { token, reply });
        }
        self.request_book_if_needed();
        if matches!(self.role, Role::Leader(_)) {
            self.advance_commit(now);
        }
    }

    /// A truncated log needs its book replayed from storage once the truncation is durable.
    fn request_book_if_needed(&mut self) {
        if self.book.is_none() && !self.book_requested && self.persists.is_empty() {
            self.book_requested = true;
            self.actions.push(Action::LoadBook);
        }
    }

    fn on_book_loaded(&mut self, now: Instant, book: Book) {
        self.book_requested = false;
        if self.book.is_some() {
            return;
        }
        if book.position() != self.log.len() {
            // The log moved while the book was read (another append was taken in meanwhile).
            self.request_book_if_needed();
            return;
        }
        self.book = Some(book);
        self.continue_sync(now);
    }

    /// Appends entries to the log and, when it is loaded, the book; returns them with what
    /// they changed. Storage numbers the orders itself (from the log it holds), so entries
    /// appended while the book is being reloaded lose nothing.
    fn append_local(&mut self, entries: Vec<LogEntry>) -> Appended {
        self.log.append(&entries);
        let mut appended = Appended::default();
        for entry in entries {
            if let Some(book) = &mut self.book {
                let (mut outcomes, applied) =
                    book.apply(entry.index, std::slice::from_ref(&entry.command));
                appended.effects.push(applied);
                appended
                    .outcomes
                    .push(outcomes.pop().unwrap_or(Outcome::Unchanged));
            }
            appended.entries.push(entry);
        }
        appended
    }

    fn truncate_local(&mut self, from: LogIndex) {
        self.log.truncate(from);
        self.book = None;
    }

    // ----- writes (leader) -----

    fn on_write(&mut self, now: Instant, token: Token, command: Command) {
        let Role::Leader(leader) = &self.role else {
            let failure = match self.role {
                Role::Recovering(_) => {
                    Failure::NotReady("recovering: copying missed orders from the other replicas")
                }
                Role::Candidate { .. } => {
                    Failure::NotReady("chosen leader, still copying orders from the other replicas")
                }
                _ => Failure::NotLeader {
                    leader: self.term.leader.filter(|l| *l != self.settings.id),
                },
            };
            self.actions.push(Action::Reply {
                token,
                reply: Reply::Write(Err(failure)),
            });
            return;
        };
        let epoch = leader.epoch;
        let book = self.book.as_ref().expect("a leader has its book");
        let deadline = now + self.settings.commit_timeout;
        let outcome = book.decide(&command);
        // Answers that reveal state wait until everything they were decided on is committed:
        // a refusal must not rest on an entry that could still be lost.
        let decided = match outcome {
            Outcome::Duplicate(_) | Outcome::Refused(_) | Outcome::Unchanged => Decided {
                outcome,
                position: self.log.len(),
            },
            Outcome::Traded(_) | Outcome::Restocked(_) | Outcome::Listed => {
                let index = self.log.len().next_index();
                let outcome = self.sequence(vec![LogEntry {
                    index,
                    epoch,
                    command,
                }]);
                Decided {
                    outcome: outcome.into_iter().next().unwrap_or(Outcome::Unchanged),
                    position: index.position(),
                }
            }
        };
        let position = decided.position;
        let reply = Reply::Write(Ok(decided));
        if let Role::Leader(leader) = &mut self.role {
            leader.waiting.push(Waiting {
                position,
                token,
                reply,
                deadline,
            });
        }
        self.advance_commit(now);
        self.replicate(now);
    }

    /// Appends entries as leader: to the log and the book, to storage, and announces what they
    /// change. Returns each entry's outcome.
    fn sequence(&mut self, entries: Vec<LogEntry>) -> Vec<Outcome> {
        let Appended {
            entries,
            effects,
            outcomes,
        } = self.append_local(entries);
        self.persist(None, None, entries);
        self.actions.push(Action::Sequenced { entries: effects });
        outcomes
    }

    fn advance_commit(&mut self, now: Instant) {
        let durable = self.log.durable();
        let min_copies = self.settings.min_copies;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let mut candidate = durable;
        let mut matched: Vec<Position> = Vec::new();
        for follower in leader.followers.values() {
            if follower.live {
                candidate = candidate.min(follower.matched);
            }
            matched.push(follower.matched);
        }
        // Enough copies: the leader's and the (min_copies - 1) best followers'.
        matched.sort_unstable_by(|a, b| b.cmp(a));
        if min_copies > 1 {
            let needed = min_copies - 1;
            let nth = matched.get(needed - 1).copied().unwrap_or(Position(0));
            candidate = candidate.min(nth);
        }
        if candidate > leader.commit {
            leader.commit = candidate;
            self.actions.push(Action::Committed {
                position: candidate,
            });
        }
        let commit = leader.commit;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut leader.waiting)
            .into_iter()
            .partition(|w| w.position <= commit);
        leader.waiting = waiting;
        for w in ready {
            self.actions.push(Action::Reply {
                token: w.token,
                reply: w.reply,
            });
        }
        // Trades that waited too long: the quorum they need is not there.
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut leader.waiting)
            .into_iter()
            .partition(|w| w.deadline <= now);
        leader.waiting = waiting;
        for w in expired {
            self.actions.push(Action::Reply {
                token: w.token,
                reply: Reply::Write(Err(Failure::Uncertain(format!(
                    "not stored on {min_copies} replicas within {:?}; it may still be",
                    self.settings.commit_timeout
                )))),
            });
        }
    }

    /// Sends every follower that has nothing in flight what it lacks (or a heartbeat).
    fn replicate(&mut self, now: Instant) {
        let Role::Leader(leader) = &self.role else {
            return;
        };
        let due: Vec<ReplicaId> = leader
            .followers
            .iter()
            .filter(|(_, f)| f.in_flight.is_none() && !f.loading)
            .filter(|(_, f)| {
                if f.live {
                    f.next < self.log.len().next_index()
                        || f.acked_sent_at
                            .is_none_or(|t| now >= t + self.settings.heartbeat)
                } else {
                    now >= f.retry_at
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.send_to(now, id);
        }
    }

    fn send_to(&mut self, now: Instant, id: ReplicaId) {
        let Role::Leader(leader) = &self.role else {
            return;
        };
        let Some(follower) = leader.followers.get(&id) else {
            return;
        };
        let next = follower.next;
        match self.log.window_from(next, BATCH_LEN_MAX) {
            Some(entries) => self.send_entries(now, id, next, entries),
            None => {
                if let Role::Leader(leader) = &mut self.role
                    && let Some(f) = leader.followers.get_mut(&id)
                {
                    f.loading = true;
                }
                self.actions.push(Action::Load {
                    to: id,
                    start: next,
                    limit: BATCH_LEN_MAX,
                });
            }
        }
    }

    fn send_entries(
        &mut self,
        now: Instant,
        id: ReplicaId,
        start: LogIndex,
        entries: Vec<LogEntry>,
    ) {
        let prev = self.log.id_before(start);
        let request = self.request_number();
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(follower) = leader.followers.get_mut(&id) else {
            return;
        };
        let upto = entries
            .last()
            .map_or(Position(start.0), |e| e.index.position());
        follower.in_flight = Some((request, upto, now));
        let append = AppendRequest {
            epoch: leader.epoch,
            leader: self.settings.id,
            prev,
            entries,
        };
        self.actions.push(Action::Send {
            to: id,
            request,
            append,
        });
    }

    fn on_loaded(&mut self, now: Instant, to: ReplicaId, entries: Vec<LogEntry>) {
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(follower) = leader.followers.get_mut(&to) else {
            return;
        };
        follower.loading = false;
        let start = follower.next;
        let consecutive = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index.0 == start.0 + i as u64);
        if entries.first().is_some_and(|e| e.index == start) && consecutive {
            self.send_entries(now, to, start, entries);
        } else {
            // The log moved under the read (a leader never truncates, so this is only the
            // follower's next moving); try again.
            self.send_to(now, to);
        }
    }

    fn on_append_replied(
        &mut self,
        now: Instant,
        from: ReplicaId,
        request: RequestNumber,
        reply: Result<AppendReply, PeerError>,
    ) {
        let len = self.log.len();
        let our_runs = self.log.runs().to_vec();
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let epoch = leader.epoch;
        let Some(follower) = leader.followers.get_mut(&from) else {
            return;
        };
        let Some((in_flight, upto, sent_at)) = follower.in_flight else {
            return;
        };
        if in_flight != request {
            return;
        }
        follower.in_flight = None;
        match reply {
            Ok(AppendReply::Appended { len: theirs }) if theirs == upto => {
                follower.matched = theirs;
                follower.next = theirs.next_index();
                follower.acked_sent_at = Some(sent_at);
                follower.pause = RETRY_PAUSE_MIN;
                if !follower.live && theirs == len {
                    follower.live = true;
                }
            }
            Ok(AppendReply::Appended { len: theirs }) => {
                // A follower answering with another length than the batch ends at is confused
                // (or not ours): catch it up from scratch in the background.
                Self::behind(
                    follower,
                    now,
                    &format!("answered with length {theirs}, expected {upto}"),
                );
                follower.next = LogIndex(0);
                follower.matched = Position(0);
            }
            Ok(AppendReply::Mismatch { len: theirs, runs }) => {
                if runs.len() > RUNS_LEN_MAX || !valid_runs(&runs, theirs) {
                    Self::behind(follower, now, "sent epoch runs that describe no log");
                } else {
                    let agreed = agreement(&our_runs, len, &runs, theirs);
                    follower.matched = agreed;
                    follower.next = agreed.next_index();
                    follower.acked_sent_at = Some(sent_at);
                }
            }
            Err(PeerError::Stale { newest }) => {
                let newest = if newest > epoch {
                    newest
                } else {
                    Epoch(epoch.0.saturating_add(1))
                };
                self.step_down(
                    Term {
                        epoch: newest,
                        leader: None,
                    },
                    "a follower knows a newer epoch",
                );
                return;
            }
            Err(e) => Self::behind(follower, now, &format!("{e:?}")),
        }
        self.advance_commit(now);
        self.replicate(now);
    }

    fn behind(follower: &mut Follower, now: Instant, _why: &str) {
        follower.live = false;
        follower.retry_at = now + follower.pause;
        follower.pause = (follower.pause * 2).min(RETRY_PAUSE_MAX);
    }

    /// Stops leading (or syncing to lead): every waiting write is answered "uncertain".
    fn step_down(&mut self, term: Term, why: &str) {
        let role = std::mem::replace(&mut self.role, Role::Follower);
        match role {
            Role::Leader(leader) => {
                for w in leader.waiting {
                    self.actions.push(Action::Reply {
                        token: w.token,
                        reply: Reply::Write(Err(Failure::Uncertain(format!(
                            "replica {} stopped leading ({why}); the write may or may not have been committed",
                            self.settings.id
                        )))),
                    });
                }
                self.actions.push(Action::Resign {
                    epoch: leader.epoch,
                });
            }
            Role::Candidate { token, .. } => {
                self.actions.push(Action::Reply {
                    token,
                    reply: Reply::Notice(Err(Failure::Uncertain(format!(
                        "replica {} was superseded while copying orders ({why})",
                        self.settings.id
                    )))),
                });
            }
            Role::Recovering(sync) => self.role = Role::Recovering(sync),
            Role::Follower => {}
        }
        self.adopt_term(term);
    }

    // ----- leader notices -----

    fn on_notice(&mut self, now: Instant, token: Token, notice: &LeaderNotice) {
        if let Err(failure) = self.check_claim(notice.epoch, notice.leader) {
            self.actions.push(Action::Reply {
                token,
                reply: Reply::Notice(Err(failure)),
            });
            return;
        }
        match judge_epoch(self.term, notice.epoch, notice.leader) {
            EpochVerdict::Stale => self.actions.push(Action::Reply {
                token,
                reply: Reply::Notice(Err(Failure::StaleEpoch {
                    got: notice.epoch,
                    newest: self.term.epoch,
                })),
            }),
            EpochVerdict::Claimed { known } => self.actions.push(Action::Reply {
                token,
                reply: Reply::Notice(Err(Failure::EpochClaimed {
                    epoch: notice.epoch,
                    known,
                    claimed: notice.leader,
                })),
            }),
            EpochVerdict::Current if notice.leader != self.settings.id => {
                self.reply_when_durable(token, Reply::Notice(Ok(())));
            }
            EpochVerdict::Current => match &mut self.role {
                Role::Leader(_) => self.reply_when_durable(token, Reply::Notice(Ok(()))),
                Role::Candidate { token: waiting, .. } => {
                    // A repeated notice (the front-end retried): answer the old one now and
                    // this one when leading.
                    let old = std::mem::replace(waiting, token);
                    self.actions.push(Action::Reply {
                        token: old,
                        reply: Reply::Notice(Err(Failure::NotReady(
                            "still copying orders; a newer notice takes over",
                        ))),
                    });
                }
                Role::Recovering(_) | Role::Follower => self.actions.push(Action::Reply {
                    token,
                    reply: Reply::Notice(Err(Failure::NotReady(
                        "recovering; choose another replica",
                    ))),
                }),
            },
            EpochVerdict::Adopt => {
                let term = Term {
                    epoch: notice.epoch,
                    leader: Some(notice.leader),
                };
                if notice.leader == self.settings.id {
                    if matches!(self.role, Role::Recovering(_)) {
                        // Fenced all the same: nobody may lead an older epoch here.
                        self.adopt_term(term);
                        self.actions.push(Action::Reply {
                            token,
                            reply: Reply::Notice(Err(Failure::NotReady(
                                "recovering; choose another replica",
                            ))),
                        });
                        return;
                    }
                    self.step_down(term, "a newer epoch was chosen");
                    let live = notice
                        .live
                        .iter()
                        .copied()
                        .filter(|id| self.settings.peers.contains(id))
                        .collect();
                    self.role = Role::Candidate {
                        sync: Sync {
                            stage: SyncStage::Pausing { until: now },
                            attempts: 0,
                        },
                        live,
                        token,
                    };
                    self.start_sync(now);
                } else {
                    self.step_down(term, "another replica was chosen");
                    self.reply_when_durable(token, Reply::Notice(Ok(())));
                }
            }
        }
    }

    /// Refuses claims the cluster cannot hold: a leader that is no member, an epoch that
    /// jumps so far that the next one would wrap.
    fn check_claim(&self, epoch: Epoch, leader: ReplicaId) -> Result<(), Failure> {
        if leader != self.settings.id && !self.settings.peers.contains(&leader) {
            return Err(Failure::Invalid(format!(
                "replica {leader} is not a member of this cluster (see --peers)"
            )));
        }
        if epoch.0 > EPOCH_MAX || epoch.0.saturating_sub(self.term.epoch.0) > EPOCH_STEP_MAX {
            return Err(Failure::Invalid(format!(
                "epoch {epoch} is too far ahead of epoch {} (at most {EPOCH_STEP_MAX} more, and at most {EPOCH_MAX})",
                self.term.epoch
            )));
        }
        Ok(())
    }

    // ----- status requests -----

    fn on_status_request(&mut self, token: Token, fence: Option<Term>) {
        let Some(fence) = fence else {
            let status = self.peer_status();
            self.actions.push(Action::Reply {
                token,
                reply: Reply::Status(Ok(status)),
            });
            return;
        };
        let Some(leader) = fence.leader else {
            self.actions.push(Action::Reply {
                token,
                reply: Reply::Status(Err(Failure::Invalid("a fence names its leader".into()))),
            });
            return;
        };
        let refuse = |this: &mut Self, failure: Failure| {
            this.actions.push(Action::Reply {
                token,
                reply: Reply::Status(Err(failure)),
            });
        };
        if let Err(failure) = self.check_claim(fence.epoch, leader) {
            return refuse(self, failure);
        }
        if leader == self.settings.id {
            return refuse(
                self,
                Failure::Invalid("a fence from this replica to itself".into()),
            );
        }
        match judge_epoch(self.term, fence.epoch, leader) {
            EpochVerdict::Stale => refuse(
                self,
                Failure::StaleEpoch {
                    got: fence.epoch,
                    newest: self.term.epoch,
                },
            ),
            EpochVerdict::Claimed { known } => refuse(
                self,
                Failure::EpochClaimed {
                    epoch: fence.epoch,
                    known,
                    claimed: leader,
                },
            ),
            EpochVerdict::Adopt | EpochVerdict::Current => {
                if fence != self.term {
                    self.step_down(fence, "a newer leader is copying the logs");
                }
                // Answered once the term is durable: after a restart this replica still
                // refuses the leaders it fenced off.
                let status = self.peer_status();
                self.reply_when_durable(token, Reply::Status(Ok(status)));
            }
        }
    }

    // ----- appends (follower) -----

    fn on_append(&mut self, now: Instant, token: Token, request: AppendRequest) {
        let refuse = |this: &mut Self, failure: Failure| {
            this.actions.push(Action::Reply {
                token,
                reply: Reply::Append(Err(failure)),
            });
        };
        if let Err(failure) = self.check_claim(request.epoch, request.leader) {
            return refuse(self, failure);
        }
        if request.leader == self.settings.id {
            return refuse(
                self,
                Failure::Invalid("an append from this replica to itself".into()),
            );
        }
        if let Err(why) = check_batch(&request) {
            return refuse(self, Failure::Invalid(why));
        }
        match judge_epoch(self.term, request.epoch, request.leader) {
            EpochVerdict::Stale => {
                return refuse(
                    self,
                    Failure::StaleEpoch {
                        got: request.epoch,
                        newest: self.term.epoch,
                    },
                );
            }
            EpochVerdict::Claimed { known } => {
                return refuse(
                    self,
                    Failure::EpochClaimed {
                        epoch: request.epoch,
                        known,
                        claimed: request.leader,
                    },
                );
            }
            EpochVerdict::Adopt => {
                let term = Term {
                    epoch: request.epoch,
                    leader: Some(request.leader),
                };
                self.step_down(term, "another replica leads a newer epoch");
            }
            EpochVerdict::Current => {}
        }
        if matches!(self.role, Role::Recovering(_)) {
            return refuse(
                self,
                Failure::NotReady("recovering: copying missed orders from the other replicas"),
            );
        }
        if self.book.is_none() {
            self.request_book_if_needed();
            return refuse(
                self,
                Failure::NotReady("reloading its ledger after moving divergent entries aside"),
            );
        }
        if !self.log.holds(request.prev) {
            let reply = AppendReply::Mismatch {
                len: self.log.durable(),
                runs: self.log.durable_runs(),
            };
            self.actions.push(Action::Reply {
                token,
                reply: Reply::Append(Ok(reply)),
            });
            return;
        }
        // What this replica now shares with the leader: everything up to the batch's end. It
        // may hold more (entries of an older leader the new one never had); those are not
        // vouched for, and the leader's next entries at those indexes replace them.
        let shared = Position(
            request
                .prev
                .map_or(0, |p| p.index.0 + 1)
                .saturating_add(request.entries.len() as u64),
        );
        // Skip what we already hold; move aside what conflicts; append the rest.
        let mut fresh = Vec::new();
        let mut truncate_from = None;
        for entry in request.entries {
            match self.log.epoch_at(entry.index) {
                Some(epoch) if epoch == entry.epoch && truncate_from.is_none() => {}
                Some(_) if truncate_from.is_none() => {
                    truncate_from = Some(entry.index);
                    fresh.push(entry);
                }
                _ => fresh.push(entry),
            }
        }
        if let Some(from) = truncate_from {
            self.truncate_local(from);
        }
        let _ = now;
        if !fresh.is_empty() || truncate_from.is_some() {
            let appended = self.append_local(fresh);
            self.persist(None, truncate_from, appended.entries);
        }
        self.reply_when_durable(
            token,
            Reply::Append(Ok(AppendReply::Appended { len: shared })),
        );
    }

    // ----- recovery and candidate sync -----

    fn sync_mut(&mut self) -> Option<&mut Sync> {
        match &mut self.role {
            Role::Recovering(sync) | Role::Candidate { sync, .. } => Some(sync),
            Role::Follower | Role::Leader(_) => None,
        }
    }

    fn start_sync(&mut self, now: Instant) {
        let request = self.request_number();
        let peers = self.settings.peers.clone();
        let deadline = now + self.settings.sync_timeout;
        let fence = matches!(self.role, Role::Candidate { .. }).then_some(self.term);
        let Some(sync) = self.sync_mut() else {
            return;
        };
        sync.attempts += 1;
        sync.stage = SyncStage::Asking {
            request,
            deadline,
            statuses: BTreeMap::new(),
            unanswered: peers.len(),
        };
        if peers.is_empty() {
            self.choose_source(now);
            return;
        }
        for to in peers {
            self.actions.push(Action::AskStatus { to, request, fence });
        }
    }

    fn on_status(
        &mut self,
        now: Instant,
        from: ReplicaId,
        request: RequestNumber,
        status: Result<PeerStatus, PeerError>,
    ) {
        let Some(sync) = self.sync_mut() else {
            return;
        };
        let SyncStage::Asking {
            request: asked,
            statuses,
            unanswered,
            ..
        } = &mut sync.stage
        else {
            return;
        };
        if *asked != request {
            return;
        }
        *unanswered = unanswered.saturating_sub(1);
        let done = *unanswered == 0;
        match status {
            Ok(status)
                if status.id == from
                    && status.runs.len() <= RUNS_LEN_MAX
                    && valid_runs(&status.runs, status.len)
                    && status.epoch.0 <= EPOCH_MAX =>
            {
                statuses.insert(from, status);
            }
            Err(PeerError::Stale { newest }) if newest > self.term.epoch => {
                // A newer leader exists: this one cannot lead (or must learn the term first).
                let term = Term {
                    epoch: newest,
                    leader: None,
                };
                if matches!(self.role, Role::Candidate { .. }) {
                    self.step_down(term, "a peer knows a newer epoch");
                } else {
                    self.adopt_term(term);
                }
                return;
            }
            _ => {}
        }
        if done {
            self.choose_source(now);
        }
    }

    fn choose_source(&mut self, now: Instant) {
        let recovering = matches!(self.role, Role::Recovering(_));
        let quorum = self.sync_quorum();
        let Some(sync) = self.sync_mut() else {
            return;
        };
        let SyncStage::Asking { statuses, .. } =
            std::mem::replace(&mut sync.stage, SyncStage::Finishing)
        else {
            return;
        };
        if !recovering && statuses.len() + 1 < quorum {
            // Too few answered to be sure no acknowledged entry is missed: an entry needs
            // min_copies copies, so any sync_quorum replicas hold at least one of them.
            self.retry_sync(now);
            return;
        }
        if recovering
            && let Some(newest) = statuses.values().max_by_key(|s| s.epoch)
            && newest.epoch > self.term.epoch
        {
            // Learn the newest epoch (and its leader) before serving: a deposed leader's
            // appends must be refused from the first moment.
            let leader = statuses
                .values()
                .find(|s| s.epoch == newest.epoch && s.role == ReplicaRole::Leader)
                .map(|s| s.id)
                .or(newest.leader.filter(|l| *l != self.settings.id));
            self.adopt_term(Term {
                epoch: newest.epoch,
                leader,
            });
        }
        let mine = (last_epoch(self.log.runs()), self.log.durable());
        // A recovering replica copies from the leader when one answered; a chosen leader (and a
        // replica with no leader to ask) from the most up-to-date log.
        let leader = statuses
            .values()
            .find(|s| recovering && s.role == ReplicaRole::Leader && s.epoch == self.term.epoch);
        let best = statuses
            .values()
            .max_by(|a, b| (last_epoch(&a.runs), a.len).cmp(&(last_epoch(&b.runs), b.len)));
        let source = leader
            .or(best)
            .filter(|s| {
                more_up_to_date((last_epoch(&s.runs), s.len), mine)
                    || leader.is_some_and(|l| l.id == s.id)
            })
            .cloned();
        let Some(source) = source else {
            self.finish_sync(now);
            return;
        };
        let agreed = agreement(self.log.runs(), self.log.len(), &source.runs, source.len);
        if agreed < self.log.len() {
            self.truncate_local(agreed.next_index());
            self.persist(None, Some(agreed.next_index()), Vec::new());
            if let Some(sync) = self.sync_mut() {
                sync.stage = SyncStage::Reloading {
                    source: source.id,
                    until: source.len,
                };
            }
            self.request_book_if_needed();
            return;
        }
        self.fetch(now, source.id, source.len);
    }

    /// How many replicas (this one included) a chosen leader must hear from before it may
    /// lead: with `min_copies` > 1, every acknowledged entry is on `min_copies` replicas, so any
    /// `replicas - min_copies + 1` of them hold each one. With one copy (the lab's choice of
    /// availability) a leader leads with whatever it can reach.
    fn sync_quorum(&self) -> usize {
        let replicas = self.settings.peers.len() + 1;
        if self.settings.min_copies > 1 {
            replicas + 1 - self.settings.min_copies.min(replicas)
        } else {
            1
        }
    }

    fn fetch(&mut self, now: Instant, source: ReplicaId, until: Position) {
        if self.log.len() >= until {
            self.finish_sync(now);
            return;
        }
        let request = self.request_number();
        let start = self.log.len().next_index();
        let deadline = now + self.settings.sync_timeout;
        if let Some(sync) = self.sync_mut() {
            sync.stage = SyncStage::Fetching {
                source,
                until,
                request,
                deadline,
            };
        }
        self.actions.push(Action::Fetch {
            from: source,
            request,
            start,
            limit: BATCH_LEN_MAX,
        });
    }

    fn on_fetched(
        &mut self,
        now: Instant,
        from: ReplicaId,
        request: RequestNumber,
        entries: Result<Vec<LogEntry>, PeerError>,
    ) {
        let term_epoch = self.term.epoch;
        let start = self.log.len().next_index();
        let last = last_epoch(self.log.runs());
        let Some(sync) = self.sync_mut() else {
            return;
        };
        let SyncStage::Fetching {
            source,
            until,
            request: asked,
            ..
        } = sync.stage.clone()
        else {
            return;
        };
        if asked != request || source != from {
            return;
        }
        let entries = match entries {
            Ok(entries) => entries,
            Err(_) => return self.retry_sync(now),
        };
        let fits = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index.0 == start.0 + i as u64)
            && entries.windows(2).all(|w| w[0].epoch <= w[1].epoch)
            && entries
                .first()
                .is_none_or(|e| last.is_none_or(|l| l <= e.epoch))
            && entries.last().is_none_or(|e| e.epoch <= term_epoch);
        if !fits {
            return self.retry_sync(now);
        }
        if entries.is_empty() {
            // The source holds less than it said (it was truncated meanwhile): take what it has.
            self.finish_sync(now);
            return;
        }
        let appended = self.append_local(entries);
        self.persist(None, None, appended.entries);
        self.fetch(now, source, until);
    }

    fn retry_sync(&mut self, now: Instant) {
        let recovering = matches!(self.role, Role::Recovering(_));
        let Some(sync) = self.sync_mut() else {
            return;
        };
        let limit = if recovering {
            RECOVERY_ATTEMPTS
        } else {
            CANDIDATE_ATTEMPTS
        };
        if sync.attempts >= limit {
            if recovering {
                // Serve with what we hold: the leader's catch-up brings the rest.
                self.finish_sync(now);
            } else {
                let epoch = self.term.epoch;
                self.step_down(
                    Term {
                        epoch,
                        leader: None,
                    },
                    "could not copy the most up-to-date log",
                );
            }
            return;
        }
        let pause = RETRY_PAUSE_MIN * 2_u32.saturating_pow(sync.attempts.min(6));
        sync.stage = SyncStage::Pausing {
            until: now + pause.min(RETRY_PAUSE_MAX),
        };
    }

    /// After a book reload, or when nothing more is to be copied.
    fn continue_sync(&mut self, now: Instant) {
        let Some(sync) = self.sync_mut() else {
            return;
        };
        match sync.stage.clone() {
            SyncStage::Reloading { source, until } => self.fetch(now, source, until),
            SyncStage::Finishing => self.finish_sync(now),
            _ => {}
        }
    }

    fn finish_sync(&mut self, now: Instant) {
        if let Some(sync) = self.sync_mut() {
            sync.stage = SyncStage::Finishing;
        }
        if self.book.is_none() {
            self.request_book_if_needed();
            return;
        }
        match std::mem::replace(&mut self.role, Role::Follower) {
            Role::Recovering(_) => {}
            Role::Candidate { live, token, .. } => self.lead(now, &live, token),
            other => self.role = other,
        }
    }

    fn lead(&mut self, now: Instant, live: &[ReplicaId], token: Token) {
        let next = self.log.len().next_index();
        let followers = self
            .settings
            .peers
            .iter()
            .map(|id| {
                (
                    *id,
                    Follower {
                        live: live.contains(id),
                        next,
                        matched: Position(0),
                        in_flight: None,
                        loading: false,
                        acked_sent_at: None,
                        retry_at: now,
                        pause: RETRY_PAUSE_MIN,
                    },
                )
            })
            .collect();
        let epoch = self.term.epoch;
        self.role = Role::Leader(Leader {
            epoch,
            followers,
            commit: Position(0),
            waiting: Vec::new(),
        });
        let base = self
            .book
            .as_ref()
            .expect("a leader has its book")
            .snapshot();
        self.actions.push(Action::Lead { epoch, base });
        if self.book.as_ref().is_some_and(|b| !b.is_listed()) {
            let genesis = Command::Genesis {
                stocks: self.settings.genesis.clone(),
            };
            let index = self.log.len().next_index();
            self.sequence(vec![LogEntry {
                index,
                epoch,
                command: genesis,
            }]);
        }
        self.reply_when_durable(token, Reply::Notice(Ok(())));
        self.advance_commit(now);
        self.replicate(now);
    }

    // ----- time -----

    fn tick(&mut self, now: Instant) {
        match &mut self.role {
            Role::Recovering(sync) | Role::Candidate { sync, .. } => match &sync.stage {
                SyncStage::Asking { deadline, .. } if now >= *deadline => self.choose_source(now),
                SyncStage::Fetching { deadline, .. } if now >= *deadline => self.retry_sync(now),
                SyncStage::Pausing { until } if now >= *until => self.start_sync(now),
                _ => {}
            },
            Role::Follower => {}
            Role::Leader(leader) => {
                let timeout = self.settings.append_timeout;
                for follower in leader.followers.values_mut() {
                    if let Some((_, _, sent)) = follower.in_flight
                        && now >= sent + timeout
                    {
                        follower.in_flight = None;
                        Self::behind(follower, now, "no answer in time");
                    }
                }
                self.advance_commit(now);
                self.replicate(now);
            }
        }
    }
}

/// Checks a batch's shape before anything else looks at it: consecutive indexes after `prev`,
/// epochs that never go back and never pass the sender's.
fn check_batch(request: &AppendRequest) -> Result<(), String> {
    let first = request.prev.map_or(Some(0), |p| p.index.0.checked_add(1));
    let Some(first) = first else {
        return Err("prev is the last possible index".into());
    };
    for (i, entry) in request.entries.iter().enumerate() {
        let expected = first.checked_add(i as u64);
        if expected != Some(entry.index.0) {
            return Err(format!(
                "batch entry {i} has index {}, not {expected:?}",
                entry.index
            ));
        }
        if entry.epoch > request.epoch {
            return Err(format!(
                "entry {} has epoch {}, newer than the sender's {}",
                entry.index, entry.epoch, request.epoch
            ));
        }
    }
    let epochs = request
        .prev
        .map(|p: EntryId| p.epoch)
        .into_iter()
        .chain(request.entries.iter().map(|e| e.epoch));
    let mut last = Epoch(0);
    for epoch in epochs {
        if epoch < last {
            return Err("epochs in a batch never go back".into());
        }
        last = epoch;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
