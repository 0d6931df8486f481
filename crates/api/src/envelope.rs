//! Response bodies. Every success is `{"data": ..}`; every failure is
//! `{"error": {"code": <HTTP status>, "kind": <stable word>, "message": ..}}`, on public and
//! internal routes alike. Callers match on the kind; the status is derived from it in one place,
//! [`ErrorKind::status`].

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, ReplicaId};

/// What went wrong, as a stable word a caller can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed (a bad field, bad JSON, a value out of range).
    BadRequest,
    /// An internal route without the cluster credential.
    Unauthorized,
    /// No such route.
    UnknownRoute,
    /// The route does not take this method.
    MethodNotAllowed,
    /// The body is larger than the limit.
    PayloadTooLarge,
    /// The body declares a type other than JSON.
    UnsupportedMediaType,
    /// The headers are larger than the limit.
    HeadersTooLarge,
    /// The request target (path and query) is longer than the limit.
    UriTooLong,
    /// The client sent its request (head or body) too slowly.
    RequestTimeout,
    /// No stock of that name.
    UnknownStock,
    /// No order with that number.
    UnknownOrder,
    /// A buy larger than the quantity available.
    InsufficientStock,
    /// A sell that would push a quantity or volume past what can be stored.
    AmountLimit,
    /// A trade whose request id already names a different trade.
    RequestIdReused,
    /// This order replica is not the leader (the body may name it).
    NotLeader,
    /// A replica message from an epoch older than the receiver's (the body names the newest).
    StaleEpoch,
    /// Another replica already leads this epoch.
    EpochClaimed,
    /// A route of the other replication mode.
    WrongMode,
    /// Recovering, electing, or catching up: try again shortly (or another replica).
    NotReady,
    /// The replica cannot reach a majority of its peers (raft): nothing can be committed until
    /// a partition heals, so retrying soon does not help.
    NoQuorum,
    /// No service of that name in the cluster (the demonstration controls of `bazaar up`).
    UnknownService,
    /// The service is already in the state asked for: killing a stopped one, starting a
    /// running one.
    ServiceState,
    /// A write that may or may not have taken effect: retry it with the same request id.
    Uncertain,
    /// No replica or catalog could serve the request in time.
    Unavailable,
    /// Too many requests at once: try again after the `Retry-After` delay.
    Overloaded,
    /// A bug or a storage failure; the details are in the service's log.
    Internal,
    /// A kind this build does not know (from a newer peer).
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// The HTTP status of this kind. Every service answers with this status, and nothing else
    /// decides one.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::UnknownRoute | Self::UnknownStock | Self::UnknownOrder | Self::UnknownService => {
                404
            }
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::InsufficientStock
            | Self::AmountLimit
            | Self::EpochClaimed
            | Self::WrongMode
            | Self::ServiceState
            | Self::RequestIdReused => 409,
            Self::StaleEpoch => 412,
            Self::PayloadTooLarge => 413,
            Self::UriTooLong => 414,
            Self::UnsupportedMediaType => 415,
            Self::NotLeader => 421,
            Self::HeadersTooLarge => 431,
            Self::Internal | Self::Other => 500,
            Self::NotReady
            | Self::NoQuorum
            | Self::Uncertain
            | Self::Unavailable
            | Self::Overloaded => 503,
        }
    }

    /// The kind a bare status most likely means, for bodies that carry no kind.
    #[must_use]
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            404 => Self::UnknownRoute,
            405 => Self::MethodNotAllowed,
            408 => Self::RequestTimeout,
            412 => Self::StaleEpoch,
            413 => Self::PayloadTooLarge,
            414 => Self::UriTooLong,
            415 => Self::UnsupportedMediaType,
            421 => Self::NotLeader,
            431 => Self::HeadersTooLarge,
            503 => Self::Unavailable,
            _ => Self::Other,
        }
    }
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data<T> {
    /// The payload.
    pub data: T,
}

impl<T> Data<T> {
    /// Wraps a payload.
    pub fn new(data: T) -> Self {
        Self { data }
    }
}

/// A failed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Equal to the HTTP status.
    pub code: u16,
    /// What went wrong, for callers to match on (absent from older peers' bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    /// A sentence for a human.
    pub message: String,
    /// On a "not leader" reply from an order replica: who the replica believes leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderHint>,
    /// On a "stale epoch" reply: the newest epoch the replica knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
}

impl ErrorBody {
    /// An error body of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: kind.status(),
                kind: Some(kind),
                message: message.into(),
                leader: None,
                epoch: None,
            },
        }
    }
}

/// A replica's belief about the current leader, sent with "not leader" replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's replica id.
    pub id: ReplicaId,
    /// Its base URL, when the replica knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
