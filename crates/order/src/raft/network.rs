//! Raft messages between replicas: JSON over the shared pooled HTTP client, to the
//! `/internal/raft/...` routes of [`super::http`]. A reply is `{"data": {"Ok": ..}}` or
//! `{"data": {"Err": <RaftError>}}`: the remote node's verdict travels inside a successful
//! response, so transport failures and Raft refusals never mix.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::client::{ClientError, Http};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{NodeId, TypeConfig};

/// Pause before retrying a replica that refused the connection. openraft's default (500 ms)
/// would delay a restarted replica's catch-up, and the quorum a lone leader regains with it.
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// Makes a link to each peer; every link shares one connection pool.
#[derive(Debug, Clone)]
pub struct Network {
    me: NodeId,
    http: Http,
    /// Peers' base URLs from `--peers`, which take precedence over the addresses stored in the
    /// membership log (fixed when the cluster was first formed).
    urls: Arc<BTreeMap<NodeId, String>>,
    /// Whether each peer answered its last message, so a peer going away or coming back is
    /// logged once rather than at every retry.
    reachable: Arc<Mutex<BTreeMap<NodeId, bool>>>,
}

impl Network {
    /// Links from `me` to the replicas at `urls`, over `http`.
    #[must_use]
    pub fn new(me: NodeId, http: Http, urls: BTreeMap<NodeId, String>) -> Self {
        Self {
            me,
            http,
            urls: Arc::new(urls),
            reachable: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        let base = self
            .urls
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        PeerLink {
            me: self.me,
            target,
            base,
            http: self.http.clone(),
            reachable: Arc::clone(&self.reachable),
        }
    }
}

/// One replica as the Raft messages' destination.
#[derive(Debug, Clone)]
pub struct PeerLink {
    me: NodeId,
    target: NodeId,
    base: String,
    http: Http,
    reachable: Arc<Mutex<BTreeMap<NodeId, bool>>>,
}

impl PeerLink {
    /// Logs a change in whether the peer answers (first contact included only when it fails).
    fn note_reachable(&self, answered: bool, error: Option<&ClientError>) {
        let before = self
            .reachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.target, answered);
        match (before, answered, error) {
            (Some(false), true, _) => {
                tracing::info!(
                    replica = self.target,
                    from = self.me,
                    "replica answers again"
                );
            }
            (Some(true) | None, false, Some(e)) => {
                tracing::warn!(replica = self.target, from = self.me, error = %e, "replica does not answer; retrying");
            }
            _ => {}
        }
    }

    async fn call<Req, Resp, E>(
        &self,
        action: RPCTypes,
        route: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("{}/internal/raft/{route}", self.base);
        let sent: Result<Result<Resp, RaftError<NodeId, E>>, ClientError> =
            self.http.with_timeout(timeout).post(&url, request).await;
        match &sent {
            Ok(_) => self.note_reachable(true, None),
            Err(e) if e.is_unreachable() => self.note_reachable(false, Some(e)),
            Err(_) => {}
        }
        let reply = sent.map_err(|e| match e {
            // A refused or broken connection: the replica is down or restarting, so back
            // off (briefly) instead of hammering it.
            ClientError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            ClientError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout,
            }),
            // A 4xx/5xx (say, a replica running the other replication mode) or an
            // unreadable reply: retry at the next heartbeat.
            ClientError::Rejected { .. } | ClientError::Decode { .. } => {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        self.call(RPCTypes::AppendEntries, "append", &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.call(
            RPCTypes::InstallSnapshot,
            "snapshot",
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.call(RPCTypes::Vote, "vote", &rpc, option.hard_ttl())
            .await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
