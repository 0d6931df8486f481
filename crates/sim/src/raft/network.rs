//! openraft's network between the simulated replicas, in memory: each message is handed to the
//! target's `Raft` handle after a delay, and its reply comes back after another. While faults
//! are on, a message may be dropped (the sender times out), delayed past the sender's timeout
//! (it still arrives, late, after newer ones: reordering), duplicated (the copy arrives later,
//! its reply is discarded) or cut by a partition. A message to a replica that is down is
//! refused at once, as a closed port is.
//!
//! Each message's fate is drawn from a generator seeded by the run's seed, the link, the kind
//! of message and its number on that link, so it does not depend on how other links' traffic
//! interleaves.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bazaar_order::raft::types::{NodeId, Raft, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::oneshot;

use super::checker::Shared;

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// Pause before retrying a replica that refused a message (the real network's).
const UNREACHABLE_BACKOFF: Duration = bazaar_order::raft::network::UNREACHABLE_BACKOFF;

/// How a message fares.
#[derive(Debug, Clone, Copy)]
struct Fate {
    /// Delay to the target; `None`: lost.
    request: Option<Duration>,
    /// Delay of the reply; `None`: lost.
    reply: Option<Duration>,
    /// A copy delivered after this delay, if duplicated.
    copy: Option<Duration>,
}

/// Messages that met a fault, for the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetCounts {
    /// Messages sent.
    pub sent: u64,
    /// Requests or replies lost (dropped or cut).
    pub lost: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// Requests delayed past the sender's timeout.
    pub late: u64,
}

struct State {
    seed: u64,
    /// The live replicas' Raft handles.
    nodes: BTreeMap<NodeId, Raft>,
    /// Links cut by a partition: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: bool,
    /// Messages sent on each link, by kind: numbers each message for its fate.
    sequence: BTreeMap<(NodeId, NodeId, u8), u64>,
    counts: NetCounts,
}

/// The network; cheap to clone.
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<State>>,
    checker: Shared,
}

impl Net {
    /// A network with faults on, drawing from `seed`.
    pub fn new(seed: u64, checker: Shared) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                seed,
                nodes: BTreeMap::new(),
                cut: BTreeSet::new(),
                faults: true,
                sequence: BTreeMap::new(),
                counts: NetCounts::default(),
            })),
            checker,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replica `id` is up, answering on `raft`.
    pub fn attach(&self, id: NodeId, raft: Raft) {
        self.state().nodes.insert(id, raft);
    }

    /// Replica `id` is down: messages to it are refused.
    pub fn detach(&self, id: NodeId) {
        self.state().nodes.remove(&id);
    }

    /// Cuts the links `(from, to)`.
    pub fn cut(&self, links: impl IntoIterator<Item = (NodeId, NodeId)>) {
        self.state().cut.extend(links);
    }

    /// Heals every partition.
    pub fn heal(&self) {
        self.state().cut.clear();
    }

    /// Stops (or starts) dropping, duplicating and long delays.
    pub fn set_faults(&self, on: bool) {
        self.state().faults = on;
    }

    /// What the network did so far.
    pub fn counts(&self) -> NetCounts {
        self.state().counts
    }

    /// The link from `me` to each replica.
    pub fn factory(&self, me: NodeId) -> Links {
        Links {
            me,
            net: self.clone(),
        }
    }

    fn fate(&self, from: NodeId, to: NodeId, kind: u8) -> Fate {
        let mut state = self.state();
        let sequence = state.sequence.entry((from, to, kind)).or_default();
        *sequence += 1;
        let sequence = *sequence;
        let mut hasher = DefaultHasher::new();
        (state.seed, from, to, kind, sequence).hash(&mut hasher);
        let mut rng = StdRng::seed_from_u64(hasher.finish());
        state.counts.sent += 1;
        if !state.faults {
            return Fate {
                request: Some(micros(rng.random_range(100..2_000))),
                reply: Some(micros(rng.random_range(100..2_000))),
                copy: None,
            };
        }
        let delay = |rng: &mut StdRng| {
            let roll = rng.random_range(0..100);
            if roll < 3 {
                None
            } else if roll < 88 {
                Some(micros(rng.random_range(100..3_000)))
            } else if roll < 97 {
                Some(micros(rng.random_range(3_000..30_000)))
            } else {
                Some(micros(rng.random_range(30_000..300_000)))
            }
        };
        let request = delay(&mut rng);
        let reply = delay(&mut rng);
        let copy = (request.is_some() && rng.random_bool(0.03))
            .then(|| request.unwrap_or_default() + micros(rng.random_range(1_000..100_000)));
        if request.is_none() || reply.is_none() {
            state.counts.lost += 1;
        }
        if copy.is_some() {
            state.counts.duplicated += 1;
        }
        Fate {
            request,
            reply,
            copy,
        }
    }

    /// The target's handle, if it is up and `from` reaches it.
    fn reach(&self, from: NodeId, to: NodeId) -> Reach {
        let state = self.state();
        match state.nodes.get(&to) {
            None => Reach::Down,
            Some(_) if state.cut.contains(&(from, to)) => Reach::Cut,
            Some(raft) => Reach::Up(raft.clone()),
        }
    }

    fn is_up(&self, id: NodeId) -> bool {
        self.state().nodes.contains_key(&id)
    }
}

enum Reach {
    Up(Raft),
    Down,
    Cut,
}

/// Makes the link from one replica to each other.
#[derive(Clone)]
pub struct Links {
    me: NodeId,
    net: Net,
}

impl RaftNetworkFactory<TypeConfig> for Links {
    type Network = Link;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Link {
        Link {
            me: self.me,
            target,
            net: self.net.clone(),
        }
    }
}

/// The link from one replica to another.
pub struct Link {
    me: NodeId,
    target: NodeId,
    net: Net,
}

/// Why a message did not get through.
#[derive(Debug)]
struct LinkError(String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LinkError {}

/// The kinds of message, numbered for their fates.
const APPEND: u8 = 0;
const VOTE: u8 = 1;
const SNAPSHOT: u8 = 2;

impl Link {
    /// Sends `request` to the target's `handle`, as the network lets it, and waits at most
    /// `ttl` for the reply.
    async fn call<Req, Resp, E, F, Fut>(
        &self,
        kind: u8,
        what: String,
        request: Req,
        ttl: Duration,
        handle: F,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        E: std::error::Error + Send + 'static,
        F: Fn(Raft, Req) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Resp, RaftError<NodeId, E>>> + Send + 'static,
    {
        let (me, target) = (self.me, self.target);
        let action = match kind {
            APPEND => RPCTypes::AppendEntries,
            VOTE => RPCTypes::Vote,
            _ => RPCTypes::InstallSnapshot,
        };
        let timeout = || {
            RPCError::Timeout(Timeout {
                action,
                id: me,
                target,
                timeout: ttl,
            })
        };
        if !self.net.is_up(me) {
            return Err(RPCError::Network(NetworkError::new(&LinkError(format!(
                "replica {me} is down"
            )))));
        }
        if let Reach::Down = self.net.reach(me, target) {
            return Err(RPCError::Unreachable(Unreachable::new(&LinkError(
                format!("replica {target} refuses connections (down)"),
            ))));
        }
        let fate = self.net.fate(me, target, kind);
        let noteworthy = kind != APPEND || !what.is_empty();
        if noteworthy || fate.request.is_none() || fate.copy.is_some() {
            let what = if what.is_empty() { "heartbeat" } else { &what };
            let fault = match (fate.request, fate.reply, fate.copy) {
                (None, _, _) => " DROPPED".to_owned(),
                (Some(_), None, _) => " (its reply is DROPPED)".to_owned(),
                (Some(d), _, Some(c)) => format!(
                    " in {} ms, DUPLICATED in {} ms",
                    d.as_millis(),
                    c.as_millis()
                ),
                (Some(d), Some(r), None) if d + r > ttl => format!(
                    " in {} ms (LATE: the sender waits {} ms)",
                    d.as_millis(),
                    ttl.as_millis()
                ),
                _ => String::new(),
            };
            self.net
                .checker
                .note(format!("net {me}->{target}: {what}{fault}"));
        }
        if fate
            .request
            .zip(fate.reply)
            .is_some_and(|(a, b)| a + b > ttl)
        {
            self.net.state().counts.late += 1;
        }
        let (reply, answer) = oneshot::channel();
        if let Some(delay) = fate.copy {
            let (net, handle, request) = (self.net.clone(), handle.clone(), request.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Reach::Up(raft) = net.reach(me, target) {
                    // The copy's reply goes nowhere: the sender took the first one's.
                    let _ = handle(raft, request).await;
                }
            });
        }
        if let Some(delay) = fate.request {
            let net = self.net.clone();
            let back = fate.reply;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Reach::Up(raft) = net.reach(me, target) else {
                    return;
                };
                let answered = handle(raft, request).await;
                let Some(back) = back else {
                    return;
                };
                tokio::time::sleep(back).await;
                if matches!(net.reach(target, me), Reach::Up(_)) {
                    let _ = reply.send(answered);
                }
            });
        }
        // A lost message is noticed only by the timeout, as on a real network.
        let waited = tokio::time::timeout(ttl, async move {
            match answer.await {
                Ok(answered) => answered,
                Err(_) => std::future::pending().await,
            }
        })
        .await;
        match waited {
            Err(_) => Err(timeout()),
            Ok(Ok(response)) => Ok(response),
            // The target stopped while handling it: the connection broke.
            Ok(Err(RaftError::Fatal(fatal))) => Err(RPCError::Unreachable(Unreachable::new(
                &LinkError(format!("replica {target} stopped: {fatal}")),
            ))),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(target, e))),
        }
    }
}

fn micros(n: u64) -> Duration {
    Duration::from_micros(n)
}

impl RaftNetwork<TypeConfig> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let what = match (rpc.entries.first(), rpc.entries.last()) {
            (Some(first), Some(last)) => format!(
                "append {}..={} after {:?} (term {}, leader {}, commit {:?})",
                first.log_id.index,
                last.log_id.index,
                rpc.prev_log_id.map(|l| l.index),
                rpc.vote.leader_id.term,
                rpc.vote.leader_id.node_id,
                rpc.leader_commit.map(|l| l.index)
            ),
            _ => String::new(),
        };
        self.call(
            APPEND,
            what,
            rpc,
            option.hard_ttl(),
            |raft: Raft, rpc| async move { raft.append_entries(rpc).await },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        let what = format!(
            "snapshot up to {:?}, bytes {}..{}{}",
            rpc.meta.last_log_id.map(|l| l.index),
            rpc.offset,
            rpc.offset.saturating_add(rpc.data.len() as u64),
            if rpc.done { " (last)" } else { "" }
        );
        self.call(
            SNAPSHOT,
            what,
            rpc,
            option.hard_ttl(),
            |raft: Raft, rpc| async move { raft.install_snapshot(rpc).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let what = format!("vote request {rpc}");
        self.call(
            VOTE,
            what,
            rpc,
            option.hard_ttl(),
            |raft: Raft, rpc| async move { raft.vote(rpc).await },
        )
        .await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
