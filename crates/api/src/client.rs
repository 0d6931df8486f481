//! Typed HTTP clients for each service, over one pooled keep-alive `reqwest::Client`.
//!
//! Every call has a timeout, and every failure is one of the [`ClientError`] kinds, which tell
//! the caller what to do next: failover retries only on [`ClientError::Unreachable`],
//! [`ClientError::Timeout`] and a "not leader" rejection; 404 and 409 pass straight through.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::ClientAuth;
use crate::catalog::{CatalogStatus, StockAt, StocksAt};
use crate::envelope::{Data, ErrorBody, ErrorKind, LeaderHint};
use crate::ids::{Epoch, ReplicaId, TxnNumber, Version};
use crate::log::{LogFollow, LogFollowQuery, LogIndex, Position, PositionReply};
use crate::order::Order;
use crate::replica::{
    AppendReply, AppendRequest, LeaderNotice, LogEntry, OrderTrade, PeerStatus, ReplicaStatus,
    RestockRequest, StatusFence, TradeAck, TradeReceipt,
};
use crate::stock::Stock;

/// HTTP status an order replica answers with when it is not the leader.
pub const STATUS_NOT_LEADER: u16 = 421;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No connection, or it broke before a full reply arrived. The request may or may not have
    /// been applied: retry with the same request id.
    #[error("{url} is unreachable: {detail}")]
    Unreachable {
        /// What was called.
        url: String,
        /// The transport's words.
        detail: String,
    },
    /// No reply within the timeout. As with `Unreachable`, the request may have been applied.
    #[error("{url} did not answer in time")]
    Timeout {
        /// What was called.
        url: String,
    },
    /// The service answered with an error status.
    #[error("{message} (HTTP {status})")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// What went wrong.
        kind: ErrorKind,
        /// The service's message.
        message: String,
        /// On `not_leader` from an order replica: the leader it believes in.
        leader: Option<LeaderHint>,
        /// On `stale_epoch` from an order replica: the newest epoch it knows.
        epoch: Option<Epoch>,
    },
    /// A success status with a body that is not what the API promises.
    #[error("{url} sent a reply that could not be read: {detail}")]
    Decode {
        /// What was called.
        url: String,
        /// The parser's words.
        detail: String,
    },
}

impl ClientError {
    /// The HTTP status of a rejection.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The kind of a rejection.
    #[must_use]
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Rejected { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// True when the peer could not be reached or did not answer in time.
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }
}

/// Shorthand for client results.
pub type ClientResult<T> = Result<T, ClientError>;

/// How long an idle pooled connection is kept. Below the services' idle keep-alive timeout
/// (`bazaar_service::limits::IDLE_TIMEOUT_DEFAULT`, 60 s), so a pooled connection is never
/// reused at the moment the server closes it.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A reqwest client builder that presents `auth`'s key on every request and uses its TLS
/// configuration. Every reqwest client in this workspace must start here: reqwest is built
/// without a default crypto provider (ring is ours, see [`crate::auth::crypto_provider`]), so a
/// bare `reqwest::Client::builder().build()` panics.
pub fn reqwest_builder(auth: &ClientAuth) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = auth.key()
        && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&key.bearer())
    {
        // Kept out of debug output.
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        // Services talk over loopback or a private network; a proxy from the environment
        // would only add a hop and surprise.
        .no_proxy()
        .default_headers(headers)
        .tls_backend_preconfigured((*auth.tls()).clone())
}

/// A pooled HTTP/1.1 client with keep-alive connections and a default per-request timeout. It
/// presents the cluster key (if it was built with one) on every request, and trusts the
/// cluster's certificate authority for `https://` URLs.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl Http {
    /// A client without a cluster key whose requests time out after `timeout`: enough for
    /// public routes and `/health`.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self::with_auth(timeout, &ClientAuth::none())
    }

    /// A client that presents `auth`'s key on every request and trusts its certificate
    /// authority.
    ///
    /// # Panics
    /// Only if reqwest cannot build a client from a ready TLS configuration, which needs no
    /// system resources.
    #[must_use]
    pub fn with_auth(timeout: Duration, auth: &ClientAuth) -> Self {
        let client = reqwest_builder(auth)
            .tcp_nodelay(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()
            .expect("building an HTTP client from a ready TLS configuration cannot fail");
        Self { client, timeout }
    }

    /// The same pool with another default timeout.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            client: self.client.clone(),
            timeout,
        }
    }

    /// The default timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET url`, decoding `{"data": T}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get<T: DeserializeOwned>(&self, url: &str) -> ClientResult<T> {
        let request = self.client.get(url).timeout(self.timeout);
        decode(url, request.send().await).await
    }

    /// `POST url` with a JSON body, decoding `{"data": T}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> ClientResult<T> {
        let request = self.client.post(url).timeout(self.timeout).json(body);
        decode(url, request.send().await).await
    }

    /// `POST url` with a raw body and content type, returning the status and body bytes as
    /// they came (for tests and tools that want to see exactly what the server sent).
    ///
    /// # Errors
    /// Transport failures only; any HTTP status is returned.
    pub async fn post_raw(
        &self,
        url: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> ClientResult<(u16, String)> {
        let mut request = self.client.post(url).timeout(self.timeout).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.map_err(|e| transport_error(url, &e))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| transport_error(url, &e))?;
        Ok((status, text))
    }

    /// `GET url`, returning the status and body text as they came.
    ///
    /// # Errors
    /// Transport failures only; any HTTP status is returned.
    pub async fn get_raw(&self, url: &str) -> ClientResult<(u16, String)> {
        let response = self
            .client
            .get(url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| transport_error(url, &e))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| transport_error(url, &e))?;
        Ok((status, text))
    }
}

fn transport_error(url: &str, e: &reqwest::Error) -> ClientError {
    if e.is_timeout() {
        ClientError::Timeout { url: url.into() }
    } else {
        // Connection refused, reset, or closed before the reply was complete: from the
        // caller's point of view the peer is gone.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        ClientError::Unreachable {
            url: url.into(),
            detail,
        }
    }
}

async fn decode<T: DeserializeOwned>(
    url: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> ClientResult<T> {
    let response = sent.map_err(|e| transport_error(url, &e))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(url, &e))?;
    if status.is_success() {
        return serde_json::from_slice::<Data<T>>(&bytes)
            .map(|d| d.data)
            .map_err(|e| ClientError::Decode {
                url: url.into(),
                detail: e.to_string(),
            });
    }
    Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => ClientError::Rejected {
            status: status.as_u16(),
            kind: body
                .error
                .kind
                .unwrap_or_else(|| ErrorKind::from_status(status.as_u16())),
            message: body.error.message,
            leader: body.error.leader,
            epoch: body.error.epoch,
        },
        Err(_) => ClientError::Rejected {
            status: status.as_u16(),
            kind: ErrorKind::from_status(status.as_u16()),
            message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            leader: None,
            epoch: None,
        },
    })
}

/// Joins a base URL and path segments, percent-encoding each segment (stock names may hold
/// spaces or slashes).
#[must_use]
pub fn url_with_segments(base: &str, segments: &[&str]) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    for segment in segments {
        url.push('/');
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                url.push(char::from(b));
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
    }
    url
}

/// Client of the catalog service.
#[derive(Debug, Clone)]
pub struct CatalogClient {
    http: Http,
    base: String,
}

impl CatalogClient {
    /// A client of the catalog at `base`.
    #[must_use]
    pub fn new(http: Http, base: impl Into<String>) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The catalog's base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /stocks/{name}?min_position=..`: the stock from a view at `min_position` or later.
    ///
    /// # Errors
    /// 404 unknown stock; 503 when the view has not reached `min_position` in time; transport
    /// errors.
    pub async fn stock_get(&self, name: &str, min_position: Position) -> ClientResult<StockAt> {
        let url = format!(
            "{}?min_position={}",
            url_with_segments(&self.base, &["stocks", name]),
            min_position.0
        );
        self.http.get(&url).await
    }

    /// `GET /stocks?min_position=..`: every stock.
    ///
    /// # Errors
    /// As [`Self::stock_get`].
    pub async fn stocks(&self, min_position: Position) -> ClientResult<StocksAt> {
        self.http
            .get(&format!(
                "{}/stocks?min_position={}",
                self.base, min_position.0
            ))
            .await
    }

    /// `GET /health`.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn status(&self) -> ClientResult<CatalogStatus> {
        self.http.get(&format!("{}/health", self.base)).await
    }
}

/// The WebSocket URL of `path` on the service at `base`: `http://` becomes `ws://` and
/// `https://` becomes `wss://`.
#[must_use]
pub fn websocket_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}{path}")
    } else {
        format!(
            "ws://{}{path}",
            base.strip_prefix("http://").unwrap_or(base)
        )
    }
}

/// Client of one order replica.
#[derive(Debug, Clone)]
pub struct ReplicaClient {
    http: Http,
    id: ReplicaId,
    base: String,
}

impl ReplicaClient {
    /// A client of replica `id` at `base`.
    #[must_use]
    pub fn new(http: Http, id: ReplicaId, base: impl Into<String>) -> Self {
        Self {
            http,
            id,
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The same replica with another default timeout.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            http: self.http.with_timeout(timeout),
            id: self.id,
            base: self.base.clone(),
        }
    }

    /// The replica's id.
    #[must_use]
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The replica's base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /health`.
    ///
    /// # Errors
    /// Transport errors; 503 while the replica is shutting down.
    pub async fn status(&self) -> ClientResult<ReplicaStatus> {
        self.http.get(&format!("{}/health", self.base)).await
    }

    /// `POST /internal/status`: what a primary-backup replica tells its peers; fenced by a
    /// chosen leader's term, it adopts the term first.
    ///
    /// # Errors
    /// `stale_epoch`, `epoch_claimed` for a fence it refuses; transport errors.
    pub async fn peer_status(&self, fence: Option<StatusFence>) -> ClientResult<PeerStatus> {
        self.http
            .post(&format!("{}/internal/status", self.base), &fence)
            .await
    }

    /// `POST /trades`: execute a trade on the leader.
    ///
    /// # Errors
    /// 404 unknown stock, 409 not enough stock; 421 when not the leader; 503 when the leader is
    /// not ready or the outcome is uncertain; transport errors.
    pub async fn trade(&self, trade: &OrderTrade) -> ClientResult<TradeReceipt> {
        self.http
            .post(&format!("{}/trades", self.base), trade)
            .await
    }

    /// `GET /orders/{number}` on the leader.
    ///
    /// # Errors
    /// 404 unknown order; 421 when not the leader; transport errors.
    pub async fn order_get(&self, number: TxnNumber) -> ClientResult<Order> {
        self.http
            .get(&format!("{}/orders/{number}", self.base))
            .await
    }

    /// `POST /internal/leader`.
    ///
    /// # Errors
    /// 412 when the notice's epoch is older than the replica's; transport errors.
    pub async fn leader_notice(&self, notice: &LeaderNotice) -> ClientResult<ReplicaStatus> {
        self.http
            .post(&format!("{}/internal/leader", self.base), notice)
            .await
    }

    /// `POST /internal/append`.
    ///
    /// # Errors
    /// 412 when the sender's epoch is stale; 503 while recovering; transport errors.
    pub async fn append(&self, request: &AppendRequest) -> ClientResult<AppendReply> {
        self.http
            .post(&format!("{}/internal/append", self.base), request)
            .await
    }

    /// `GET /internal/log/entries?from=..&limit=..`: a page of a primary-backup log.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn entries(&self, from: LogIndex, limit: u32) -> ClientResult<Vec<LogEntry>> {
        self.http
            .get(&format!(
                "{}/internal/log/entries?from={}&limit={limit}",
                self.base, from.0
            ))
            .await
    }

    /// `GET /internal/log?from=..&wait_ms=..` on the leader: what a catalog follows.
    ///
    /// # Errors
    /// 421 when not the leader; transport errors.
    pub async fn log_follow(&self, query: &LogFollowQuery) -> ClientResult<LogFollow> {
        let mut url = format!("{}/internal/log?from={}", self.base, query.from.0);
        if let Some(epoch) = query.epoch {
            url.push_str(&format!("&epoch={}", epoch.0));
        }
        if let Some(wait_ms) = query.wait_ms {
            url.push_str(&format!("&wait_ms={wait_ms}"));
        }
        self.http.get(&url).await
    }

    /// `GET /internal/position` on the leader.
    ///
    /// # Errors
    /// 421 when not the leader; 503 when it cannot vouch for its position; transport errors.
    pub async fn position(&self) -> ClientResult<PositionReply> {
        self.http
            .get(&format!("{}/internal/position", self.base))
            .await
    }

    /// `POST /internal/restock` on the leader.
    ///
    /// # Errors
    /// 421 when not the leader; transport errors.
    pub async fn restock(&self, request: &RestockRequest) -> ClientResult<Position> {
        self.http
            .post(&format!("{}/internal/restock", self.base), request)
            .await
    }

    /// The replica's invalidation feed: a `ws://` URL (`wss://` over TLS).
    #[must_use]
    pub fn feed_url(&self) -> String {
        websocket_url(&self.base, "/internal/feed")
    }
}

/// Asks every replica for its health at once and returns the one that says it leads the newest
/// epoch (raft replicas elect their leader; primary-backup replicas were told it), if any.
pub async fn find_leader(replicas: &[ReplicaClient]) -> Option<ReplicaClient> {
    let asks = replicas
        .iter()
        .map(|r| async move { (r, r.status().await) });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(r, status)| {
            let status = status.ok()?;
            (status.role == crate::replica::ReplicaRole::Leader && status.ready)
                .then_some((status.epoch, r))
        })
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, r)| r.clone())
}

/// `GET /cache` of the front-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CacheView {
    /// Most entries the cache holds.
    pub capacity: usize,
    /// Lookups answered from the cache since start.
    pub hits: u64,
    /// Lookups that went to the catalog since start.
    pub misses: u64,
    /// Entries evicted by LRU replacement since start.
    pub evictions: u64,
    /// Invalidations received from the catalog since start.
    pub invalidations: u64,
    /// True while the invalidation feed is up and entries may be served.
    pub enabled: bool,
    /// Cached stocks, most recently used first.
    pub entries: Vec<CacheEntryView>,
}

/// One cached stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CacheEntryView {
    /// Stock name.
    pub name: String,
    /// The stock's version in the cached value.
    pub version: Version,
    /// The log position of the view the value was read from.
    pub position: Position,
}

/// `GET /leader` of the front-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LeaderView {
    /// The leader's replica id.
    pub id: ReplicaId,
    /// Its base URL.
    pub url: String,
}

/// Client of the public front-end API.
#[derive(Debug, Clone)]
pub struct FrontendClient {
    http: Http,
    base: String,
}

impl FrontendClient {
    /// A client of the front-end at `base`.
    #[must_use]
    pub fn new(http: Http, base: impl Into<String>) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The front-end's base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client.
    #[must_use]
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// `GET /stocks/{name}`.
    ///
    /// # Errors
    /// 404 unknown stock, 400 bad name; transport errors.
    pub async fn stock_get(&self, name: &str) -> ClientResult<Stock> {
        self.http
            .get(&url_with_segments(&self.base, &["stocks", name]))
            .await
    }

    /// `POST /orders`.
    ///
    /// # Errors
    /// 400, 404, 409, 503 as in the spec; transport errors.
    pub async fn order_create(&self, trade: &crate::order::TradeRequest) -> ClientResult<TradeAck> {
        self.http
            .post(&format!("{}/orders", self.base), trade)
            .await
    }

    /// `GET /orders/{number}`.
    ///
    /// # Errors
    /// 404 unknown order; 503 no replica; transport errors.
    pub async fn order_get(&self, number: TxnNumber) -> ClientResult<Order> {
        self.http
            .get(&format!("{}/orders/{number}", self.base))
            .await
    }

    /// `GET /cache`.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn cache(&self) -> ClientResult<CacheView> {
        self.http.get(&format!("{}/cache", self.base)).await
    }

    /// `GET /leader`.
    ///
    /// # Errors
    /// 503 when no leader is known; transport errors.
    pub async fn leader(&self) -> ClientResult<LeaderView> {
        self.http.get(&format!("{}/leader", self.base)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            url_with_segments("http://h:1/", &["stocks", "Fish Co/x"]),
            "http://h:1/stocks/Fish%20Co%2Fx"
        );
    }
}
