//! A client in the raft simulation: it trades through a replica's writer (what the order
//! service's route calls, without HTTP) one operation at a time, buys, sells and restocks, and
//! retries each with the same request id until it is decided: after a timeout, a broken
//! connection, "not leader" (it follows the hint), "not ready", "no quorum" or "uncertain".
//! It never gives up: in the liveness phase every operation must finish.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::log::{Command, TradeCommand};
use bazaar_api::{ReplicaId, RequestId, TradeType};
use bazaar_order::Error;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;

use super::checker::{REPLICAS, Shared, replica};
use super::cluster::Board;

/// Stocks the clients trade (all in the simulation's genesis).
pub const STOCKS: [&str; 3] = ["A", "B", "C"];

/// How long one attempt may take: longer than a write's commit timeout and release deadline
/// together, so an attempt that times out here was lost, not slow.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);

/// Operations each client finishes once the faults stop.
pub const LIVENESS_OPS: u64 = 3;

/// Which phase the run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Faults on: trade on.
    Faults,
    /// Faults stopped: finish the current operation and [`LIVENESS_OPS`] more.
    Liveness,
}

/// What each client is doing, for the liveness report.
#[derive(Clone, Default)]
pub struct Doing(Arc<Mutex<Vec<Option<String>>>>);

impl Doing {
    /// Room for `clients` clients.
    pub fn new(clients: usize) -> Self {
        Self(Arc::new(Mutex::new(vec![None; clients])))
    }

    fn set(&self, client: usize, what: Option<String>) {
        if let Some(slot) = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(client)
        {
            *slot = what;
        }
    }

    /// Every client still busy, and with what.
    pub fn busy(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_ref().map(|w| format!("client {i}: {w}")))
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Trade(TradeCommand),
    Restock(u64),
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Trade(t) => write!(
                f,
                "{:?} {} {} (request {})",
                t.kind, t.quantity, t.name, t.request_id
            ),
            Self::Restock(to) => write!(f, "restock to {to}"),
        }
    }
}

/// One client.
pub struct Client {
    /// Its number.
    pub index: usize,
    rng: StdRng,
    board: Board,
    checker: Shared,
    doing: Doing,
    /// The replica it believes leads.
    target: ReplicaId,
}

impl Client {
    /// Client `index` of the run `seed`.
    pub fn new(index: usize, seed: u64, board: Board, checker: Shared, doing: Doing) -> Self {
        let stream = u64::try_from(index).unwrap_or(0).wrapping_add(1);
        Self {
            index,
            rng: StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            board,
            checker,
            doing,
            target: replica(index % REPLICAS + 1),
        }
    }

    /// Trades until the liveness phase, then finishes [`LIVENESS_OPS`] more operations.
    pub async fn run(mut self, mut phase: watch::Receiver<Phase>) {
        let mut left: Option<u64> = None;
        loop {
            if *phase.borrow_and_update() == Phase::Liveness {
                let left = left.get_or_insert(LIVENESS_OPS);
                if *left == 0 {
                    break;
                }
                *left -= 1;
            }
            let op = self.next_op();
            self.doing.set(self.index, Some(op.to_string()));
            self.submit(&op).await;
            self.doing.set(self.index, None);
            let think = self.rng.random_range(0..20_000);
            tokio::time::sleep(Duration::from_micros(think)).await;
        }
    }

    fn next_op(&mut self) -> Op {
        let roll = self.rng.random_range(0..100);
        if roll < 8 {
            return Op::Restock(self.rng.random_range(5..20));
        }
        let bytes: [u8; 16] = self.rng.random();
        Op::Trade(TradeCommand {
            request_id: RequestId(uuid::Uuid::from_bytes(bytes)),
            name: STOCKS[self.rng.random_range(0..STOCKS.len())].to_owned(),
            kind: if roll < 55 {
                TradeType::Buy
            } else {
                TradeType::Sell
            },
            quantity: self.rng.random_range(1..=5),
        })
    }

    fn next_target(&mut self) {
        let next = usize::from(self.target.0) % REPLICAS + 1;
        self.target = replica(next);
    }

    async fn pause(&mut self) {
        let pause = self.rng.random_range(5_000..40_000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }

    /// Submits `op` until it is decided.
    async fn submit(&mut self, op: &Op) {
        let index = self.index;
        loop {
            let Some((writer, killed)) = self.board.get(self.target) else {
                self.next_target();
                self.pause().await;
                continue;
            };
            let attempt = async {
                match op {
                    Op::Trade(trade) => writer
                        .trade(Command::Trade(trade.clone()))
                        .await
                        .map(|receipt| Some((receipt.transaction_number, receipt.position))),
                    Op::Restock(to) => writer
                        .write(Command::Restock { to: *to })
                        .await
                        .map(|_| None),
                }
            };
            let answered = tokio::select! {
                answered = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt) => answered.ok(),
                () = killed.cancelled() => None,
            };
            let target = self.target;
            match answered {
                Some(Ok(Some((number, position)))) => {
                    if let Op::Trade(trade) = op {
                        self.checker
                            .lock()
                            .acked(index, trade.request_id, number, position);
                    }
                    return;
                }
                Some(Ok(None)) => {
                    self.checker
                        .note(format!("client {index}: {op} done by replica {target}"));
                    return;
                }
                Some(Err(Error::Refused(refusal))) => {
                    let mut checker = self.checker.lock();
                    checker.counts.refused += 1;
                    checker.note(format!("client {index}: {op} refused: {refusal}"));
                    return;
                }
                Some(Err(Error::NotLeader {
                    leader: Some(hint), ..
                })) if hint.id != target => {
                    self.target = hint.id;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Some(Err(Error::Uncertain(why))) => {
                    self.checker.note(format!(
                        "client {index}: {op} uncertain at replica {target}: {why}"
                    ));
                    self.pause().await;
                }
                Some(Err(_)) => {
                    self.next_target();
                    self.pause().await;
                }
                None => {
                    self.checker.note(format!(
                        "client {index}: {op} got no answer from replica {target}"
                    ));
                    self.next_target();
                    self.pause().await;
                }
            }
        }
    }
}
