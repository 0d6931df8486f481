//! Invalid requests mixed into a load (`bazaar client --bad-requests F`), each checked against
//! the error the API documents for it (docs/openapi.yaml): the status and the error `kind`.
//!
//! Only requests that cannot change anything are sent: a lookup of a stock that does not exist,
//! trades the front-end must refuse before they reach a replica, and a query for an order number
//! no run reaches. So a load with bad requests verifies exactly as one without.

use std::fmt;

use bazaar_api::ErrorKind;
use bytes::Bytes;
use hyper::{StatusCode, Uri};
use rand::RngExt;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::connection::Reply;

/// An order number far past anything a run makes, still inside what the API accepts.
const UNKNOWN_ORDER: u64 = 1 << 50;

/// The kinds of invalid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// `GET /stocks/{name}` of a name no catalog lists: 404 `unknown_stock`.
    UnknownStock,
    /// `POST /orders` with a type other than buy or sell: 400 `bad_request`.
    BadType,
    /// `POST /orders` with a negative quantity: 400 `bad_request`.
    NegativeQuantity,
    /// `GET /orders/{number}` of a number no order has: 404 `unknown_order`.
    UnknownOrder,
}

impl BadRequest {
    /// Every kind, drawn from uniformly.
    pub const ALL: [Self; 4] = [
        Self::UnknownStock,
        Self::BadType,
        Self::NegativeQuantity,
        Self::UnknownOrder,
    ];

    /// One kind, at random.
    pub fn draw(rng: &mut StdRng) -> Self {
        Self::ALL[rng.random_range(0..Self::ALL.len())]
    }

    /// The request: a path and, for a POST, its JSON body. `stock` is a listed stock, so a
    /// refused trade is refused for the reason meant, not for its name.
    #[must_use]
    pub fn request(self, stock: &str) -> (Uri, Option<Bytes>) {
        let trade = |kind: serde_json::Value, quantity: serde_json::Value| {
            let body = serde_json::json!({"name": stock, "type": kind, "quantity": quantity});
            Some(Bytes::from(body.to_string()))
        };
        match self {
            Self::UnknownStock => (Uri::from_static("/stocks/NoSuchStock"), None),
            Self::BadType => (Uri::from_static("/orders"), trade("steal".into(), 1.into())),
            Self::NegativeQuantity => (
                Uri::from_static("/orders"),
                trade("buy".into(), (-3).into()),
            ),
            Self::UnknownOrder => (
                format!("/orders/{UNKNOWN_ORDER}")
                    .parse()
                    .expect("a path of digits parses"),
                None,
            ),
        }
    }

    /// The documented answer.
    #[must_use]
    pub fn expected(self) -> ErrorKind {
        match self {
            Self::UnknownStock => ErrorKind::UnknownStock,
            Self::BadType | Self::NegativeQuantity => ErrorKind::BadRequest,
            Self::UnknownOrder => ErrorKind::UnknownOrder,
        }
    }

    /// Checks a reply against the documented answer.
    ///
    /// # Errors
    /// What came instead, in a sentence.
    pub fn check(self, reply: &Reply) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Envelope {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: u16,
            kind: ErrorKind,
        }
        let expected = self.expected();
        let status = StatusCode::from_u16(expected.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::from_slice::<Envelope>(&reply.body);
        match body {
            Ok(Envelope { error })
                if reply.status == status
                    && error.kind == expected
                    && error.code == status.as_u16() =>
            {
                Ok(())
            }
            Ok(Envelope { error }) => Err(format!(
                "{self}: expected HTTP {} {expected:?}, got HTTP {} with kind {:?} (code {})",
                status.as_u16(),
                reply.status.as_u16(),
                error.kind,
                error.code
            )),
            Err(e) => Err(format!(
                "{self}: expected HTTP {} {expected:?}, got HTTP {} with a body that is not the \
                 error envelope ({e})",
                status.as_u16(),
                reply.status.as_u16()
            )),
        }
    }
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownStock => "lookup of an unknown stock",
            Self::BadType => "trade of type \"steal\"",
            Self::NegativeQuantity => "trade of quantity -3",
            Self::UnknownOrder => "query of an unknown order",
        })
    }
}

/// What the bad requests of a run got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRequestSummary {
    /// Invalid requests sent.
    pub sent: u64,
    /// Answered with the documented status and kind.
    pub as_documented: u64,
    /// The first few that were not, described (a failed request counts here too).
    pub samples: Vec<String>,
}

impl BadRequestSummary {
    /// Bad requests answered otherwise than documented.
    #[must_use]
    pub fn wrong(&self) -> u64 {
        self.sent.saturating_sub(self.as_documented)
    }

    /// Adds another client's results, keeping at most `samples_max` samples.
    pub fn merge(&mut self, other: &Self, samples_max: usize) {
        self.sent += other.sent;
        self.as_documented += other.as_documented;
        let room = samples_max.saturating_sub(self.samples.len());
        self.samples
            .extend(other.samples.iter().take(room).cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).expect("status"),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn only_the_documented_status_and_kind_pass() {
        let check = BadRequest::UnknownStock.check(&reply(
            404,
            r#"{"error":{"code":404,"kind":"unknown_stock","message":"no stock NoSuchStock"}}"#,
        ));
        assert_eq!(check, Ok(()));
        let wrong_kind = BadRequest::UnknownStock.check(&reply(
            404,
            r#"{"error":{"code":404,"kind":"unknown_route","message":"no route"}}"#,
        ));
        assert!(wrong_kind.is_err_and(|e| e.contains("UnknownRoute")));
        let wrong_status = BadRequest::BadType.check(&reply(
            500,
            r#"{"error":{"code":500,"kind":"bad_request","message":"?"}}"#,
        ));
        assert!(wrong_status.is_err());
        let no_envelope = BadRequest::NegativeQuantity.check(&reply(400, "bad"));
        assert!(no_envelope.is_err_and(|e| e.contains("not the error envelope")));
    }

    #[test]
    fn requests_are_invalid_for_the_reason_named() {
        let (path, body) = BadRequest::NegativeQuantity.request("FishCo");
        assert_eq!(path.path(), "/orders");
        let body: serde_json::Value = serde_json::from_slice(&body.expect("a body")).expect("JSON");
        assert_eq!(body["name"], "FishCo");
        assert_eq!(body["quantity"], -3);
        let (path, body) = BadRequest::UnknownOrder.request("FishCo");
        assert!(body.is_none());
        assert!(path.path().ends_with(&UNKNOWN_ORDER.to_string()));
        assert!(
            i64::try_from(UNKNOWN_ORDER).is_ok(),
            "inside what the API accepts"
        );
    }
}
