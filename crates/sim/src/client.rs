//! A front-end in the simulation: it chooses the leader with the real front-end's decisions
//! (`bazaar_frontend::leader::choice`), sends one trade at a time with a request id it keeps
//! across retries, and fails over as the real one does (a timeout or "not leader": choose
//! again; "busy": retry after a pause).

use std::collections::BTreeMap;

use bazaar_api::log::TradeCommand;
use bazaar_api::replica::{LeaderNotice, ReplicaStatus};
use bazaar_api::{Epoch, ReplicaId, RequestId, TradeType};
use bazaar_frontend::leader::choice::{Choice, choose};
use rand::RngExt;
use rand::rngs::StdRng;

/// Stocks the clients trade (all listed in the simulation's genesis).
pub const STOCKS: [&str; 3] = ["A", "B", "C"];

/// Simulated microseconds.
pub type Micros = u64;

/// How long a client waits for health answers in a selection round.
const STATUS_WAIT: Micros = 300_000;
/// How long it waits for the other replicas' notices before the candidate's.
const NOTICE_OTHERS_WAIT: Micros = 300_000;
/// How long the candidate may take to answer its notice.
const NOTICE_WAIT: Micros = 5_000_000;
/// How long one attempt of a trade may take.
const ATTEMPT_WAIT: Micros = 1_500_000;
/// Pause before retrying a busy leader or a fruitless selection.
const PAUSE: Micros = 50_000;
/// How long one trade keeps being retried before the client gives up on it (its outcome then
/// stays unknown).
pub const OP_DEADLINE: Micros = 30_000_000;

/// A message a client sends.
#[derive(Debug, Clone)]
pub enum Out {
    /// Ask a replica's health.
    Health { to: ReplicaId, round: u64 },
    /// Tell a replica who leads.
    Notice {
        to: ReplicaId,
        round: u64,
        notice: LeaderNotice,
    },
    /// Send a trade.
    Trade {
        to: ReplicaId,
        op: u64,
        trade: TradeCommand,
    },
}

/// What became of a trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Acknowledged with this number.
    Acked(u64),
    /// Refused by the ledger.
    Refused,
    /// Given up after [`OP_DEADLINE`]: may or may not have been applied.
    Unknown,
}

#[derive(Debug, Clone)]
enum Selecting {
    Asking {
        round: u64,
        statuses: BTreeMap<ReplicaId, Option<ReplicaStatus>>,
        until: Micros,
    },
    NotifyingOthers {
        round: u64,
        notice: LeaderNotice,
        waiting: usize,
        until: Micros,
    },
    NotifyingCandidate {
        round: u64,
        candidate: ReplicaId,
        epoch: Epoch,
        until: Micros,
    },
    Pausing {
        until: Micros,
    },
}

#[derive(Debug, Clone)]
struct Op {
    id: u64,
    trade: TradeCommand,
    started: Micros,
    /// When the attempt in flight times out; `None` when none is in flight.
    in_flight: Option<Micros>,
    /// Not before this time (after a busy answer).
    not_before: Micros,
}

/// One simulated front-end.
#[derive(Debug)]
pub struct Client {
    replicas: Vec<ReplicaId>,
    leader: Option<(ReplicaId, Epoch)>,
    selecting: Option<Selecting>,
    refused: Vec<ReplicaId>,
    round: u64,
    op: Option<Op>,
    next_op: u64,
    /// Trades still to start; `None`: as many as the run lasts.
    pub remaining: Option<u64>,
}

impl Client {
    /// A client of `replicas`.
    #[must_use]
    pub fn new(replicas: Vec<ReplicaId>) -> Self {
        Self {
            replicas,
            leader: None,
            selecting: None,
            refused: Vec::new(),
            round: 0,
            op: None,
            next_op: 0,
            remaining: None,
        }
    }

    /// Whether it has nothing left to do.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.op.is_none() && self.remaining == Some(0)
    }

    /// The request id of the trade under way, if any.
    #[must_use]
    pub fn current_request(&self) -> Option<RequestId> {
        self.op.as_ref().map(|o| o.trade.request_id)
    }

    /// When it next needs to act, if it waits for time.
    #[must_use]
    pub fn next_wake(&self) -> Option<Micros> {
        let idle = (self.op.is_none() && self.remaining != Some(0))
            || (self.leader.is_none() && self.selecting.is_none());
        if idle {
            return Some(0);
        }
        let mut wake = match &self.selecting {
            Some(
                Selecting::Asking { until, .. }
                | Selecting::NotifyingOthers { until, .. }
                | Selecting::NotifyingCandidate { until, .. }
                | Selecting::Pausing { until },
            ) => Some(*until),
            None => None,
        };
        if let Some(op) = &self.op {
            let t = match op.in_flight {
                Some(timeout) => Some(timeout),
                // Ready to send once a leader is known.
                None if self.leader.is_some() => Some(op.not_before),
                None => None,
            };
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            // Give up on it at its deadline even while no leader is known.
            let t = op.started + OP_DEADLINE;
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        wake
    }

    /// Acts on the passing of time: starts work, times out what waited too long.
    pub fn tick(
        &mut self,
        now: Micros,
        rng: &mut StdRng,
        done: &mut Vec<(RequestId, Done)>,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        if self.op.is_none() && self.remaining != Some(0) {
            self.remaining = self.remaining.map(|r| r - 1);
            self.next_op += 1;
            let kind = if rng.random_bool(0.5) {
                TradeType::Buy
            } else {
                TradeType::Sell
            };
            self.op = Some(Op {
                id: self.next_op,
                trade: TradeCommand {
                    request_id: RequestId(uuid_from(rng)),
                    name: STOCKS[rng.random_range(0..STOCKS.len())].to_owned(),
                    kind,
                    quantity: rng.random_range(1..4),
                },
                started: now,
                in_flight: None,
                not_before: now,
            });
        }
        if let Some(op) = &mut self.op {
            if now >= op.started + OP_DEADLINE && op.in_flight.is_none() {
                done.push((op.trade.request_id, Done::Unknown));
                self.op = None;
                return self.tick(now, rng, done);
            }
            if op.in_flight.is_some_and(|t| now >= t) {
                // Silent too long: choose again, then retry the same trade.
                op.in_flight = None;
                self.leader = None;
            }
        }
        match self.selecting.clone() {
            Some(Selecting::Asking {
                round,
                statuses,
                until,
            }) if now >= until => {
                out.extend(self.decide(now, round, &statuses));
            }
            Some(Selecting::NotifyingOthers {
                round,
                notice,
                until,
                ..
            }) if now >= until => out.extend(self.notify_candidate(now, round, notice)),
            Some(Selecting::NotifyingCandidate { until, .. } | Selecting::Pausing { until })
                if now >= until =>
            {
                self.selecting = None;
            }
            _ => {}
        }
        if self.leader.is_none() && self.selecting.is_none() {
            self.round += 1;
            self.selecting = Some(Selecting::Asking {
                round: self.round,
                statuses: self.replicas.iter().map(|id| (*id, None)).collect(),
                until: now + STATUS_WAIT,
            });
            out.extend(self.replicas.iter().map(|to| Out::Health {
                to: *to,
                round: self.round,
            }));
        }
        if let (Some((leader, _)), Some(op)) = (self.leader, &mut self.op)
            && op.in_flight.is_none()
            && now >= op.not_before
        {
            op.in_flight = Some(now + ATTEMPT_WAIT);
            out.push(Out::Trade {
                to: leader,
                op: op.id,
                trade: op.trade.clone(),
            });
        }
        out
    }

    fn decide(
        &mut self,
        now: Micros,
        round: u64,
        statuses: &BTreeMap<ReplicaId, Option<ReplicaStatus>>,
    ) -> Vec<Out> {
        let list: Vec<(ReplicaId, Option<ReplicaStatus>)> =
            statuses.iter().map(|(id, s)| (*id, s.clone())).collect();
        match choose(&list, &self.refused) {
            Choice::Appoint {
                candidate,
                epoch,
                live,
            } => {
                let notice = LeaderNotice {
                    leader: candidate,
                    epoch,
                    live: live.clone(),
                };
                let others: Vec<ReplicaId> =
                    live.iter().copied().filter(|id| *id != candidate).collect();
                if others.is_empty() {
                    return self.notify_candidate(now, round, notice);
                }
                self.selecting = Some(Selecting::NotifyingOthers {
                    round,
                    notice: notice.clone(),
                    waiting: others.len(),
                    until: now + NOTICE_OTHERS_WAIT,
                });
                others
                    .into_iter()
                    .map(|to| Out::Notice {
                        to,
                        round,
                        notice: notice.clone(),
                    })
                    .collect()
            }
            Choice::Found { leader, epoch } => {
                self.found(leader, epoch);
                Vec::new()
            }
            Choice::NoMajority { .. } | Choice::Wait(_) => {
                // Everyone refused or nobody answered: start over with a clean slate.
                self.refused.clear();
                self.selecting = Some(Selecting::Pausing { until: now + PAUSE });
                Vec::new()
            }
        }
    }

    fn notify_candidate(&mut self, now: Micros, round: u64, notice: LeaderNotice) -> Vec<Out> {
        self.selecting = Some(Selecting::NotifyingCandidate {
            round,
            candidate: notice.leader,
            epoch: notice.epoch,
            until: now + NOTICE_WAIT,
        });
        vec![Out::Notice {
            to: notice.leader,
            round,
            notice,
        }]
    }

    fn found(&mut self, leader: ReplicaId, epoch: Epoch) {
        self.leader = Some((leader, epoch));
        self.selecting = None;
        self.refused.clear();
    }

    /// A replica's health answer.
    pub fn on_health(
        &mut self,
        now: Micros,
        from: ReplicaId,
        round: u64,
        status: ReplicaStatus,
    ) -> Vec<Out> {
        let Some(Selecting::Asking {
            round: asked,
            statuses,
            ..
        }) = &mut self.selecting
        else {
            return Vec::new();
        };
        if *asked != round {
            return Vec::new();
        }
        statuses.insert(from, Some(status));
        if statuses.values().all(Option::is_some) {
            let statuses = statuses.clone();
            return self.decide(now, round, &statuses);
        }
        Vec::new()
    }

    /// A replica's answer to a notice.
    pub fn on_notice(&mut self, now: Micros, from: ReplicaId, round: u64, ok: bool) -> Vec<Out> {
        match self.selecting.clone() {
            Some(Selecting::NotifyingOthers {
                round: r,
                notice,
                waiting,
                until,
            }) if r == round => {
                if waiting <= 1 {
                    return self.notify_candidate(now, round, notice);
                }
                self.selecting = Some(Selecting::NotifyingOthers {
                    round,
                    notice,
                    waiting: waiting - 1,
                    until,
                });
            }
            Some(Selecting::NotifyingCandidate {
                round: r,
                candidate,
                epoch,
                ..
            }) if r == round && candidate == from => {
                if ok {
                    self.found(candidate, epoch);
                } else {
                    self.refused.push(candidate);
                    self.selecting = None;
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// A trade's answer: `Ok(Some(done))` when the trade finished, `Err` for a failure the
    /// client retries.
    pub fn on_trade(
        &mut self,
        now: Micros,
        from: ReplicaId,
        op: u64,
        answer: TradeAnswer,
    ) -> Option<(RequestId, Done)> {
        let current = self.op.as_mut()?;
        if current.id != op || current.in_flight.is_none() {
            return None;
        }
        current.in_flight = None;
        let request = current.trade.request_id;
        match answer {
            TradeAnswer::Acked(n) => {
                self.op = None;
                Some((request, Done::Acked(n)))
            }
            TradeAnswer::Refused => {
                self.op = None;
                Some((request, Done::Refused))
            }
            TradeAnswer::NotLeader => {
                if self.leader.is_some_and(|(l, _)| l == from) {
                    self.leader = None;
                }
                None
            }
            TradeAnswer::Busy => {
                current.not_before = now + PAUSE;
                None
            }
        }
    }
}

/// A trade's answer as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeAnswer {
    /// The order's number.
    Acked(u64),
    /// The ledger refused it.
    Refused,
    /// Not the leader (or unreachable): choose again.
    NotLeader,
    /// Not ready or uncertain: retry shortly.
    Busy,
}

fn uuid_from(rng: &mut StdRng) -> uuid::Uuid {
    let bytes: [u8; 16] = rng.random();
    uuid::Uuid::from_bytes(bytes)
}
