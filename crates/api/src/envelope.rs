//! Response bodies. Every success is `{"data": ..}`; every failure is
//! `{"error": {"code": <HTTP status>, "message": ..}}`, on public and internal routes alike.

use serde::{Deserialize, Serialize};

use crate::ids::ReplicaId;

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
    /// A sentence for a human.
    pub message: String,
    /// On a "not leader" reply from an order replica: who the replica believes leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderHint>,
}

impl ErrorBody {
    /// An error body with the given status code and message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
                leader: None,
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
