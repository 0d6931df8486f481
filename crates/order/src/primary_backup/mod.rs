//! Primary-backup replication of the order log (the lab's design, made exact): the front-end
//! chooses the leader, the leader numbers every write and copies it to every live follower
//! before acknowledging it.
//!
//! The protocol is [`core`], a pure state machine. This module is its runtime: one task owns the
//! core, feeds it events (requests from the routes, answers from peers, storage completions,
//! time) and carries out its actions: persists go to [`storage`]'s writer thread, messages to
//! peers over HTTP, answers back to the waiting routes, and what the leader sequences and
//! commits to the release gate (`crate::release`).
//!
//! No lock is held across a network call or a disk write: the core is owned by one task, and
//! every peer call and read runs in a task of its own that reports back as an event.
//!
//! # Layout
//! - [`core`] — the protocol, pure.
//! - [`storage`] — the SQLite file under it.

pub mod core;
pub mod storage;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::client::{ClientError, Http, ReplicaClient};
use bazaar_api::log::{Command, LogIndex, Position, TradeCommand};
use bazaar_api::replica::{
    AppendReply, AppendRequest, LeaderNotice, LogEntry, PeerStatus, ReplicaRole, ReplicaStatus,
    ReplicationMode, StatusFence,
};
use bazaar_api::{Epoch, ErrorKind, LeaderHint, ReplicaId, TxnNumber};
use bazaar_ledger::Outcome;
use bazaar_service::Fatal;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::core::{Action, Event, Failure, PeerError, Replica, Reply, Token, Vouching};
use self::storage::{Persist, Storage};
use crate::error::{Error, Result};
use crate::release::{Release, Vouch};

/// Requests waiting for the core at most; beyond this, routes wait (backpressure).
const INPUT_QUEUE_LEN: usize = 4096;

/// Extra time an HTTP call to a peer gets beyond the core's own deadline, so the core's
/// timeout (not the transport's) decides.
const TRANSPORT_SLACK: Duration = Duration::from_millis(200);

/// What the routes see of the core, refreshed after every step.
#[derive(Debug, Clone)]
struct Published {
    status: ReplicaStatus,
    peer: PeerStatus,
    vouching: Vouching,
}

/// A request that waits for the core's reply.
enum Input {
    Request(Request, oneshot::Sender<Reply>),
}

enum Request {
    Trade(TradeCommand),
    Restock(u64),
    Notice(LeaderNotice),
    Append(AppendRequest),
    Status(Option<core::Term>),
}

/// A primary-backup replica's handle for the routes; cheap to clone.
#[derive(Clone)]
pub struct PrimaryBackup {
    inner: Arc<Inner>,
}

struct Inner {
    id: ReplicaId,
    /// Every replica's URL, for "not leader" hints.
    urls: BTreeMap<ReplicaId, String>,
    inputs: mpsc::Sender<Input>,
    published: Mutex<Published>,
    storage: Storage,
}

impl std::fmt::Debug for PrimaryBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryBackup")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// Everything the runtime needs to start.
pub struct Parts {
    /// The core's settings.
    pub settings: core::Settings,
    /// The opened storage and what it holds.
    pub storage: Storage,
    /// The state read at open.
    pub opened: storage::Opened,
    /// Every replica's URL, this one's included.
    pub urls: BTreeMap<ReplicaId, String>,
    /// Shared HTTP pool.
    pub http: Http,
    /// The release gate.
    pub release: Release,
}

impl PrimaryBackup {
    /// Starts the core's task (in `tasks`, until `stop`), recovering first.
    #[must_use]
    pub fn start(
        parts: Parts,
        tasks: &TaskTracker,
        stop: &CancellationToken,
        fatal: &Fatal,
    ) -> Self {
        let Parts {
            settings,
            storage,
            opened,
            urls,
            http,
            release,
        } = parts;
        let id = settings.id;
        let append_timeout = settings.append_timeout;
        let sync_timeout = settings.sync_timeout;
        let core = Replica::new(
            settings,
            opened.term,
            opened.runs,
            opened.len,
            opened.recent,
            opened.book,
        );
        let (inputs, queue) = mpsc::channel(INPUT_QUEUE_LEN);
        let (events, internal) = mpsc::unbounded_channel();
        let published = publish(&core, Instant::now().into_std());
        let this = Self {
            inner: Arc::new(Inner {
                id,
                urls: urls.clone(),
                inputs,
                published: Mutex::new(published),
                storage: storage.clone(),
            }),
        };
        let runner = Runner {
            core,
            this: this.clone(),
            storage,
            peers: urls
                .into_iter()
                .filter(|(peer, _)| *peer != id)
                .map(|(id, url)| (id, ReplicaClient::new(http.clone(), id, url)))
                .collect(),
            append_timeout,
            sync_timeout,
            release,
            events,
            tokens: HashMap::new(),
            next_token: 0,
            tasks: tasks.clone(),
            fatal: fatal.clone(),
        };
        let stop = stop.clone();
        tasks.spawn(async move { runner.run(queue, internal, stop).await }.in_current_span());
        this
    }

    fn published(&self) -> Published {
        self.inner
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `GET /health`.
    #[must_use]
    pub fn status(&self) -> ReplicaStatus {
        self.published().status
    }

    /// `POST /internal/status`: this replica's status for a peer. Fenced by a chosen leader's
    /// term, it first adopts the term (and answers once that is durable).
    ///
    /// # Errors
    /// The core's [`Failure`] (a stale or claimed term), as an [`Error`].
    pub async fn peer_status(&self, fence: Option<StatusFence>) -> Result<PeerStatus> {
        let Some(fence) = fence else {
            return Ok(self.published().peer);
        };
        let term = core::Term {
            epoch: fence.epoch,
            leader: fence.leader,
        };
        match self.ask(Request::Status(Some(term))).await? {
            Reply::Status(Ok(status)) => Ok(status),
            Reply::Status(Err(failure)) => Err(self.error(failure)),
            other => Err(Error::Storage(format!(
                "a status request was answered {other:?}"
            ))),
        }
    }

    async fn ask(&self, request: Request) -> Result<Reply> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .inputs
            .send(Input::Request(request, reply))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)
    }

    /// Decides a write (a trade or a restock) and, when it changes something, replicates it;
    /// answers once everything it was decided on is committed (not yet released).
    ///
    /// # Errors
    /// The core's [`Failure`], as an [`Error`].
    pub async fn write(&self, command: Command) -> Result<(Outcome, Position)> {
        let request = match command {
            Command::Trade(trade) => Request::Trade(trade),
            Command::Restock { to } => Request::Restock(to),
            Command::Genesis { .. } => {
                return Err(Error::BadRequest(
                    "the genesis is written by the first leader".into(),
                ));
            }
        };
        match self.ask(request).await? {
            Reply::Write(Ok(core::Decided { outcome, position })) => Ok((outcome, position)),
            Reply::Write(Err(failure)) => Err(self.error(failure)),
            other => Err(Error::Storage(format!("a write was answered {other:?}"))),
        }
    }

    /// A leader notice; answers once this replica follows the new epoch (or, when chosen, leads
    /// it).
    ///
    /// # Errors
    /// The core's [`Failure`], as an [`Error`].
    pub async fn notice(&self, notice: LeaderNotice) -> Result<ReplicaStatus> {
        match self.ask(Request::Notice(notice)).await? {
            Reply::Notice(Ok(())) => Ok(self.status()),
            Reply::Notice(Err(failure)) => Err(self.error(failure)),
            other => Err(Error::Storage(format!("a notice was answered {other:?}"))),
        }
    }

    /// An append from the leader.
    ///
    /// # Errors
    /// The core's [`Failure`], as an [`Error`].
    pub async fn append(&self, append: AppendRequest) -> Result<AppendReply> {
        match self.ask(Request::Append(append)).await? {
            Reply::Append(Ok(reply)) => Ok(reply),
            Reply::Append(Err(failure)) => Err(self.error(failure)),
            other => Err(Error::Storage(format!("an append was answered {other:?}"))),
        }
    }

    /// Up to `limit` durable entries from `from` on (`GET /internal/log/entries`).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn entries(&self, from: LogIndex, limit: usize) -> Result<Vec<LogEntry>> {
        self.inner.storage.entries(from, limit).await
    }

    /// An order by number from this replica's storage.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn order(&self, number: TxnNumber) -> Result<Option<crate::orders::OrderRow>> {
        self.inner.storage.order(number).await
    }

    /// The error a non-leader answers with, naming the leader it follows.
    #[must_use]
    pub fn not_leader(&self) -> Error {
        let status = self.status();
        self.error(Failure::NotLeader {
            leader: status.leader.filter(|l| *l != self.inner.id),
        })
    }

    /// The core's failure as the service's error.
    fn error(&self, failure: Failure) -> Error {
        let me = self.inner.id;
        match failure {
            Failure::NotLeader { leader } => Error::NotLeader {
                me,
                leader: leader.map(|id| LeaderHint {
                    id,
                    url: self.inner.urls.get(&id).cloned(),
                }),
            },
            Failure::NotReady(why) => Error::NotReady(why.to_owned()),
            Failure::Uncertain(why) => Error::Uncertain(why),
            Failure::StaleEpoch { got, newest } => Error::StaleEpoch { got, newest },
            Failure::EpochClaimed {
                epoch,
                known,
                claimed,
            } => Error::EpochClaimed {
                epoch,
                known,
                claimed,
            },
            Failure::Invalid(why) => Error::BadRequest(why),
        }
    }
}

impl Vouch for PrimaryBackup {
    fn vouches(&self, grace: Duration) -> bool {
        match self.published().vouching {
            Vouching::No => false,
            Vouching::Alone => true,
            Vouching::Since(basis) => basis.elapsed() <= grace,
        }
    }
}

fn publish(core: &Replica, now: std::time::Instant) -> Published {
    let term = core.term();
    let role = core.role();
    Published {
        status: ReplicaStatus {
            id: core.id(),
            mode: ReplicationMode::PrimaryBackup,
            role,
            ready: role != ReplicaRole::Recovering,
            leader: term.leader,
            epoch: term.epoch,
            position: core.len(),
            last_number: core.last_number(),
            visible: None,
            commits: None,
        },
        peer: core.peer_status(),
        vouching: match core.vouching() {
            // Only the leader's own clock matters, and a time in the future is a bug.
            Vouching::Since(t) if t > now => Vouching::No,
            v => v,
        },
    }
}

/// The task that owns the core.
struct Runner {
    core: Replica,
    this: PrimaryBackup,
    storage: Storage,
    peers: BTreeMap<ReplicaId, ReplicaClient>,
    append_timeout: Duration,
    sync_timeout: Duration,
    release: Release,
    events: mpsc::UnboundedSender<Event>,
    tokens: HashMap<Token, oneshot::Sender<Reply>>,
    next_token: Token,
    tasks: TaskTracker,
    fatal: Fatal,
}

impl Runner {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut internal: mpsc::UnboundedReceiver<Event>,
        stop: CancellationToken,
    ) {
        self.step(Event::Start).await;
        loop {
            let wake = self
                .core
                .next_wake()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let event = tokio::select! {
                () = stop.cancelled() => break,
                input = inputs.recv() => match input {
                    Some(Input::Request(request, reply)) => self.request(request, reply),
                    None => break,
                },
                event = internal.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                () = tokio::time::sleep_until(wake) => Event::Tick,
            };
            self.step(event).await;
        }
        // Answers still owed are dropped: their routes answer "shutting down".
        self.tokens.clear();
    }

    fn request(&mut self, request: Request, reply: oneshot::Sender<Reply>) -> Event {
        self.next_token += 1;
        let token = self.next_token;
        self.tokens.insert(token, reply);
        match request {
            Request::Trade(trade) => Event::Trade { token, trade },
            Request::Restock(to) => Event::Restock { token, to },
            Request::Notice(notice) => Event::Notice { token, notice },
            Request::Append(request) => Event::Append { token, request },
            Request::Status(fence) => Event::StatusRequest { token, fence },
        }
    }

    async fn step(&mut self, event: Event) {
        let now = std::time::Instant::now();
        let actions = self.core.step(now, event);
        *self
            .this
            .inner
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = publish(&self.core, now);
        for action in actions {
            self.carry_out(action).await;
        }
    }

    /// Carries out one action. Persists are queued on the writer in order; everything that
    /// talks to a peer or reads storage runs in a task of its own and reports back.
    async fn carry_out(&mut self, action: Action) {
        match action {
            Action::Persist {
                request,
                term,
                truncate_from,
                entries,
            } => {
                let events = self.events.clone();
                let queued = self
                    .storage
                    .persist(Persist {
                        request,
                        term,
                        truncate_from,
                        entries,
                        done: Box::new(move || {
                            let _ = events.send(Event::Persisted { request });
                        }),
                    })
                    .await;
                if !queued {
                    self.fatal.raise("the order log writer stopped");
                }
            }
            Action::Send {
                to,
                request,
                append,
            } => {
                let Some(peer) = self.peers.get(&to) else {
                    return;
                };
                let peer = peer.with_timeout(self.append_timeout + TRANSPORT_SLACK);
                let events = self.events.clone();
                self.tasks.spawn(
                    async move {
                        let reply = peer.append(&append).await.map_err(peer_error);
                        if let Err(PeerError::Refused(why)) = &reply {
                            // Retried with back-off by the core, but a refusal that repeats
                            // keeps a follower behind for good: say why.
                            tracing::warn!(follower = %to, first = ?append.entries.first().map(|e| e.index), entries = append.entries.len(), %why, "a follower refused an append");
                        }
                        let _ = events.send(Event::AppendReplied {
                            from: to,
                            request,
                            reply,
                        });
                    }
                    .in_current_span(),
                );
            }
            Action::AskStatus { to, request, fence } => {
                let Some(peer) = self.peers.get(&to) else {
                    return;
                };
                let peer = peer.with_timeout(self.sync_timeout);
                let events = self.events.clone();
                let fence = fence.map(|t| StatusFence {
                    epoch: t.epoch,
                    leader: t.leader,
                });
                self.tasks.spawn(
                    async move {
                        let status = peer.peer_status(fence).await.map_err(peer_error);
                        let _ = events.send(Event::Status {
                            from: to,
                            request,
                            status,
                        });
                    }
                    .in_current_span(),
                );
            }
            Action::Fetch {
                from,
                request,
                start,
                limit,
            } => {
                let Some(peer) = self.peers.get(&from) else {
                    return;
                };
                let peer = peer.with_timeout(self.sync_timeout);
                let events = self.events.clone();
                let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                self.tasks.spawn(
                    async move {
                        let entries = peer.entries(start, limit).await.map_err(peer_error);
                        let _ = events.send(Event::Fetched {
                            from,
                            request,
                            entries,
                        });
                    }
                    .in_current_span(),
                );
            }
            Action::Load { to, start, limit } => {
                let storage = self.storage.clone();
                let events = self.events.clone();
                let fatal = self.fatal.clone();
                self.tasks.spawn(
                    async move {
                        match storage.entries(start, limit).await {
                            Ok(entries) => {
                                let _ = events.send(Event::Loaded { to, entries });
                            }
                            Err(e) => fatal.raise(e.to_string()),
                        }
                    }
                    .in_current_span(),
                );
            }
            Action::LoadBook => {
                let storage = self.storage.clone();
                let events = self.events.clone();
                let fatal = self.fatal.clone();
                self.tasks.spawn(
                    async move {
                        match storage.book().await {
                            Ok(book) => {
                                let _ = events.send(Event::BookLoaded { book });
                            }
                            Err(e) => fatal.raise(e.to_string()),
                        }
                    }
                    .in_current_span(),
                );
            }
            Action::Reply { token, reply } => {
                if let Some(waiting) = self.tokens.remove(&token) {
                    // The route may have given up (its client went away); the outcome stands.
                    let _ = waiting.send(reply);
                }
            }
            Action::Sequenced { entries } => self.release.sequenced(entries),
            Action::Committed { position } => self.release.committed(position),
            Action::Lead { epoch, base } => {
                tracing::info!(%epoch, position = %base.position, "leading");
                self.release.lead(epoch, base);
            }
            Action::Resign { epoch } => {
                tracing::warn!(%epoch, "stopped leading");
                self.release.resign();
            }
        }
    }
}

fn peer_error(e: ClientError) -> PeerError {
    match e {
        ClientError::Rejected {
            kind: ErrorKind::StaleEpoch,
            epoch,
            ..
        } => PeerError::Stale {
            // Without a newest epoch in the body, the core steps down to its own plus one.
            newest: epoch.unwrap_or(Epoch(0)),
        },
        ClientError::Rejected {
            kind: ErrorKind::NotReady,
            ..
        } => PeerError::NotReady,
        ClientError::Rejected { message, .. }
        | ClientError::Decode {
            detail: message, ..
        } => PeerError::Refused(message),
        ClientError::Unreachable { .. } | ClientError::Timeout { .. } => PeerError::Unreachable,
    }
}
