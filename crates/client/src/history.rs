//! Histories: every operation a client ran, with when it was invoked and when it completed
//! (on one monotonic clock), what it asked and what it got, for the linearizability check
//! ([`crate::linearizable`]) and for timelines of what clients saw during faults.
//!
//! Recording happens at the one place every request passes: [`crate::connection::Connection`]
//! hands each exchange to its [`ClientHistory`], which turns the HTTP exchange into an
//! [`Op`]. An outcome is only as certain as the reply makes it:
//!
//! | reply | lookup | trade | order query |
//! |---|---|---|---|
//! | 200 | `quantity` | `traded` (its number) | `found` (the order) |
//! | 409 | - | `refused` (not enough stock) | - |
//! | other 4xx | `not_found` / `rejected` | `rejected`: not applied | `not_found` / `rejected` |
//! | connection refused, nothing sent | `not_sent` | `not_sent`: not applied | `not_sent` |
//! | timeout, broken connection, 5xx | `unknown` | `unknown`: may or may not have been applied, now or later | `unknown` |
//!
//! A 503 is "unknown", not "refused": the front-end may have handed the trade to a leader
//! before giving up, and the trade may still commit.
//!
//! Files are JSON lines, one [`Op`] per line, sorted by invocation time.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bazaar_api::order::TradeType;
use bazaar_api::replica::TradeAck;
use bazaar_api::{Data, Order, RequestId, Stock};
use bytes::Bytes;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::connection::{Reply, RequestError};
use crate::error::{Error, Result};

/// Longest error detail kept per operation.
const DETAIL_LEN_MAX: usize = 160;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// `GET /stocks/{stock}`.
    Lookup {
        /// The stock.
        stock: String,
    },
    /// `GET /stocks`: every stock at once.
    StockList,
    /// `POST /orders`.
    Trade {
        /// The stock.
        stock: String,
        /// Buy or sell.
        kind: TradeType,
        /// Shares.
        quantity: u64,
        /// The request id the client named the trade with, if it did: the logs tell whether a
        /// trade without a reply took effect.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<RequestId>,
    },
    /// `GET /orders/{number}`.
    OrderQuery {
        /// The transaction number asked for.
        number: u64,
    },
    /// Any other request (not checked).
    Other {
        /// Method and path.
        request: String,
    },
}

/// What it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// A lookup's answer.
    Quantity {
        /// Shares available.
        quantity: u64,
    },
    /// `GET /stocks`'s answer: quantity by stock.
    Stocks {
        /// Quantity by stock name.
        stocks: BTreeMap<String, u64>,
    },
    /// A trade was acknowledged with this transaction number.
    Traded {
        /// Its number.
        number: u64,
    },
    /// A buy was refused for want of shares (409).
    Refused,
    /// An order query's answer.
    Found {
        /// The order.
        order: Order,
    },
    /// 404: no such stock or order.
    NotFound,
    /// Another 4xx: the request was refused as invalid and changed nothing.
    Rejected {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        detail: String,
    },
    /// The connection could not be opened: nothing was sent.
    NotSent {
        /// Why.
        detail: String,
    },
    /// No usable reply: the request may or may not have taken effect.
    Unknown {
        /// Why (timeout, broken connection, the 5xx and its message).
        detail: String,
    },
}

impl Outcome {
    /// True when the outcome says nothing about whether the request took effect.
    #[must_use]
    pub fn is_unknown(&self) -> bool {
        matches!(self, Self::Unknown { .. })
    }

    /// True for answers the API promises for good requests (not an error of any kind).
    #[must_use]
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            Self::Quantity { .. }
                | Self::Stocks { .. }
                | Self::Traded { .. }
                | Self::Refused
                | Self::Found { .. }
                | Self::NotFound
        )
    }
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client that ran it (its operations never overlap).
    pub client: usize,
    /// When it was invoked, in microseconds since the recorder started.
    pub invoked_us: u64,
    /// When its outcome was known (reply, error or timeout), same clock.
    pub completed_us: u64,
    /// What was asked.
    #[serde(flatten)]
    pub call: Call,
    /// What came back.
    pub outcome: Outcome,
}

impl Op {
    /// One line for people: `[12.345 s +3.1 ms] client 2: buy 3 GameStart -> traded #17`.
    #[must_use]
    pub fn describe(&self) -> String {
        let call = match &self.call {
            Call::Lookup { stock } => format!("lookup {stock}"),
            Call::StockList => "list stocks".to_owned(),
            Call::Trade {
                stock,
                kind,
                quantity,
                ..
            } => format!("{kind} {quantity} {stock}"),
            Call::OrderQuery { number } => format!("query order {number}"),
            Call::Other { request } => request.clone(),
        };
        let outcome = match &self.outcome {
            Outcome::Quantity { quantity } => format!("quantity {quantity}"),
            Outcome::Stocks { stocks } => format!("{} stocks", stocks.len()),
            Outcome::Traded { number } => format!("traded #{number}"),
            Outcome::Refused => "refused (not enough stock)".to_owned(),
            Outcome::Found { order } => format!(
                "order #{} {} {} {}",
                order.number, order.kind, order.quantity, order.name
            ),
            Outcome::NotFound => "not found".to_owned(),
            Outcome::Rejected { status, detail } => format!("rejected {status}: {detail}"),
            Outcome::NotSent { detail } => format!("not sent: {detail}"),
            Outcome::Unknown { detail } => format!("UNKNOWN: {detail}"),
        };
        format!(
            "[{:>9.3} s +{:>7.1} ms] client {}: {call} -> {outcome}",
            self.invoked_us as f64 / 1e6,
            self.completed_us.saturating_sub(self.invoked_us) as f64 / 1e3,
            self.client
        )
    }
}

struct Shared {
    origin: Instant,
    ops: Mutex<Vec<Op>>,
}

/// Collects the operations of every client of a run. Cheap to clone; all clones share one
/// history and one clock origin.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("ops", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty history whose clock starts now.
    #[must_use]
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// An empty history whose clock started at `origin` (to share a clock with a fault
    /// schedule).
    #[must_use]
    pub fn starting_at(origin: Instant) -> Self {
        Self {
            shared: Arc::new(Shared {
                origin,
                ops: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Time zero of every timestamp.
    #[must_use]
    pub fn origin(&self) -> Instant {
        self.shared.origin
    }

    /// Microseconds from the origin to `at` (0 before it).
    #[must_use]
    pub fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.shared.origin).as_micros())
            .unwrap_or(u64::MAX)
    }

    /// The handle one client records with.
    #[must_use]
    pub fn client(&self, client: usize) -> ClientHistory {
        ClientHistory {
            client,
            recorder: self.clone(),
        }
    }

    /// Operations recorded so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True before the first operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Op>> {
        // A client that panicked mid-push cannot leave the vector half-written.
        self.shared
            .ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, op: Op) {
        self.lock().push(op);
    }

    /// Every operation so far, by invocation time.
    #[must_use]
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.lock().clone();
        sort(&mut ops);
        ops
    }
}

/// Sorts operations by invocation time, then client.
pub fn sort(ops: &mut [Op]) {
    ops.sort_by_key(|op| (op.invoked_us, op.client, op.completed_us));
}

/// Writes a history as JSON lines.
///
/// # Errors
/// The file cannot be written.
pub fn write_jsonl(ops: &[Op], path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    for op in ops {
        let line = serde_json::to_string(op).expect("operations always serialise");
        writeln!(out, "{line}").map_err(|e| Error::io(path, e))?;
    }
    out.flush().map_err(|e| Error::io(path, e))
}

/// Reads a history written by [`write_jsonl`].
///
/// # Errors
/// The file cannot be read, or a line is not an operation (the message names the line).
pub fn read_jsonl(path: &Path) -> Result<Vec<Op>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut ops = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|e| {
            Error::Config(format!(
                "{} line {}: not an operation: {e}",
                path.display(),
                i + 1
            ))
        })?;
        ops.push(op);
    }
    sort(&mut ops);
    Ok(ops)
}

/// One client's handle on the shared history.
#[derive(Clone, Debug)]
pub struct ClientHistory {
    client: usize,
    recorder: Recorder,
}

/// A request as the connection sends it, for classification.
#[derive(Debug)]
pub(crate) enum Sent<'a> {
    /// `GET path`.
    Get(&'a str),
    /// `POST path` with a JSON body.
    PostJson(&'a str, &'a Bytes),
}

impl ClientHistory {
    /// Records one exchange: what was sent, when, and how it ended.
    pub(crate) fn record(
        &self,
        sent: &Sent<'_>,
        invoked: Instant,
        completed: Instant,
        result: &Result<Reply, RequestError>,
    ) {
        let call = call_of(sent);
        let outcome = outcome_of(&call, result);
        self.recorder.push(Op {
            client: self.client,
            invoked_us: self.recorder.micros(invoked),
            completed_us: self.recorder.micros(completed),
            call,
            outcome,
        });
    }
}

/// The body of `POST /orders` as the load generator sends it.
#[derive(Deserialize)]
struct TradeBody {
    name: String,
    #[serde(rename = "type")]
    kind: TradeType,
    quantity: u64,
    #[serde(default)]
    request_id: Option<RequestId>,
}

fn call_of(sent: &Sent<'_>) -> Call {
    match sent {
        Sent::Get("/stocks") => Call::StockList,
        Sent::Get(path) => {
            if let Some(name) = path.strip_prefix("/stocks/") {
                return Call::Lookup {
                    stock: percent_decode(name),
                };
            }
            if let Some(number) = path
                .strip_prefix("/orders/")
                .and_then(|n| n.parse::<u64>().ok())
            {
                return Call::OrderQuery { number };
            }
            Call::Other {
                request: format!("GET {path}"),
            }
        }
        Sent::PostJson("/orders", body) => match serde_json::from_slice::<TradeBody>(body) {
            Ok(trade) => Call::Trade {
                stock: trade.name,
                kind: trade.kind,
                quantity: trade.quantity,
                request_id: trade.request_id,
            },
            Err(_) => Call::Other {
                request: "POST /orders (not a trade)".to_owned(),
            },
        },
        Sent::PostJson(path, _) => Call::Other {
            request: format!("POST {path}"),
        },
    }
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(DETAIL_LEN_MAX)]);
    text.into_owned()
}

fn outcome_of(call: &Call, result: &Result<Reply, RequestError>) -> Outcome {
    let reply = match result {
        Ok(reply) => reply,
        Err(RequestError::Connect { detail, .. }) => {
            return Outcome::NotSent {
                detail: detail.clone(),
            };
        }
        Err(e) => {
            return Outcome::Unknown {
                detail: e.to_string(),
            };
        }
    };
    let unreadable = |what: &str, e: serde_json::Error| Outcome::Unknown {
        detail: format!("HTTP 200 with an unreadable {what}: {e}"),
    };
    match (call, reply.status) {
        (Call::Lookup { .. }, StatusCode::OK) => {
            match serde_json::from_slice::<Data<Stock>>(&reply.body) {
                Ok(stock) => Outcome::Quantity {
                    quantity: stock.data.quantity,
                },
                Err(e) => unreadable("stock", e),
            }
        }
        (Call::StockList, StatusCode::OK) => {
            match serde_json::from_slice::<Data<Vec<Stock>>>(&reply.body) {
                Ok(stocks) => Outcome::Stocks {
                    stocks: stocks
                        .data
                        .into_iter()
                        .map(|s| (s.name, s.quantity))
                        .collect(),
                },
                Err(e) => unreadable("stock list", e),
            }
        }
        (Call::Trade { .. }, StatusCode::OK) => {
            match serde_json::from_slice::<Data<TradeAck>>(&reply.body) {
                Ok(ack) => Outcome::Traded {
                    number: ack.data.transaction_number.0,
                },
                Err(e) => unreadable("acknowledgement", e),
            }
        }
        (Call::Trade { .. }, StatusCode::CONFLICT) => Outcome::Refused,
        (Call::OrderQuery { .. }, StatusCode::OK) => {
            match serde_json::from_slice::<Data<Order>>(&reply.body) {
                Ok(order) => Outcome::Found { order: order.data },
                Err(e) => unreadable("order", e),
            }
        }
        (_, StatusCode::NOT_FOUND) => Outcome::NotFound,
        (_, status) if status.is_client_error() => Outcome::Rejected {
            status: status.as_u16(),
            detail: excerpt(&reply.body),
        },
        (_, status) => Outcome::Unknown {
            detail: format!("HTTP {}: {}", status.as_u16(), excerpt(&reply.body)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Result<Reply, RequestError> {
        Ok(Reply {
            status: StatusCode::from_u16(status).expect("status"),
            body: Bytes::from(body.to_owned()),
        })
    }

    fn trade() -> Call {
        Call::Trade {
            stock: "FishCo".into(),
            kind: TradeType::Buy,
            quantity: 2,
            request_id: None,
        }
    }

    #[test]
    fn requests_are_classified_by_path_and_body() {
        assert_eq!(call_of(&Sent::Get("/stocks")), Call::StockList);
        assert_eq!(
            call_of(&Sent::Get("/stocks/Game%20Start")),
            Call::Lookup {
                stock: "Game Start".into()
            }
        );
        assert_eq!(
            call_of(&Sent::Get("/orders/17")),
            Call::OrderQuery { number: 17 }
        );
        let body = Bytes::from_static(br#"{"name":"FishCo","type":"buy","quantity":2}"#);
        assert_eq!(call_of(&Sent::PostJson("/orders", &body)), trade());
        assert!(matches!(call_of(&Sent::Get("/cache")), Call::Other { .. }));
    }

    #[test]
    fn only_replies_that_say_so_are_certain() {
        let t = trade();
        assert_eq!(
            outcome_of(&t, &reply(200, r#"{"data":{"transaction_number":5}}"#)),
            Outcome::Traded { number: 5 }
        );
        assert_eq!(
            outcome_of(&t, &reply(409, r#"{"error":{}}"#)),
            Outcome::Refused
        );
        assert!(outcome_of(&t, &reply(503, "no replica")).is_unknown());
        assert!(outcome_of(&t, &reply(500, "")).is_unknown());
        assert!(outcome_of(&t, &reply(200, "garbage")).is_unknown());
        assert!(
            outcome_of(
                &t,
                &Err(RequestError::Timeout(std::time::Duration::from_secs(1)))
            )
            .is_unknown()
        );
        assert!(outcome_of(&t, &Err(RequestError::Transport("reset".into()))).is_unknown());
        assert!(matches!(
            outcome_of(
                &t,
                &Err(RequestError::Connect {
                    addr: "10.0.0.1:1".parse().expect("addr"),
                    detail: "refused".into()
                })
            ),
            Outcome::NotSent { .. }
        ));
        assert!(matches!(
            outcome_of(&t, &reply(400, "bad")),
            Outcome::Rejected { status: 400, .. }
        ));
        let lookup = Call::Lookup {
            stock: "FishCo".into(),
        };
        assert_eq!(
            outcome_of(
                &lookup,
                &reply(
                    200,
                    r#"{"data":{"name":"FishCo","price":1.00,"quantity":7}}"#
                )
            ),
            Outcome::Quantity { quantity: 7 }
        );
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let recorder = Recorder::new();
        let client = recorder.client(3);
        let t0 = recorder.origin();
        let body = Bytes::from_static(br#"{"name":"FishCo","type":"sell","quantity":1}"#);
        client.record(
            &Sent::PostJson("/orders", &body),
            t0 + std::time::Duration::from_millis(5),
            t0 + std::time::Duration::from_millis(7),
            &reply(200, r#"{"data":{"transaction_number":0}}"#),
        );
        client.record(
            &Sent::Get("/orders/0"),
            t0 + std::time::Duration::from_millis(1),
            t0 + std::time::Duration::from_millis(2),
            &reply(404, "{}"),
        );
        let ops = recorder.ops();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].invoked_us, 1000, "sorted by invocation");
        assert_eq!(ops[1].completed_us, 7000);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        write_jsonl(&ops, &path).expect("write");
        assert_eq!(read_jsonl(&path).expect("read"), ops);
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.contains(r#""op":"order_query""#)),
            "{text}"
        );
    }
}
