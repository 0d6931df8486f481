//! The core driven by hand: three replicas, storage and network in memory, every message
//! delivered when the test says so. Each test is a scenario of the protocol, named by what it
//! shows. (The seeded simulator explores random interleavings; these pin the rules.)

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bazaar_api::log::{Command, LogIndex, Position, StockDef, TradeCommand};
use bazaar_api::replica::{AppendReply, LeaderNotice, LogEntry, ReplicaRole};
use bazaar_api::{Epoch, Price, ReplicaId, RequestId, TradeType, TxnNumber};
use bazaar_ledger::{Book, Outcome, Refusal};

use super::*;

fn settings(id: u8) -> Settings {
    Settings {
        id: ReplicaId(id),
        peers: (1..=3).filter(|p| *p != id).map(ReplicaId).collect(),
        min_copies: 1,
        append_timeout: Duration::from_millis(500),
        heartbeat: Duration::from_millis(100),
        sync_timeout: Duration::from_millis(500),
        commit_timeout: Duration::from_secs(2),
        genesis: vec![StockDef {
            name: "A".into(),
            price: Price::from_cents(100),
            quantity: 10,
        }],
        window_len_max: 4,
    }
}

/// What a replica's storage holds durably.
#[derive(Debug, Clone, Default)]
struct Disk {
    term: Term,
    log: Vec<LogEntry>,
    conflicts: Vec<LogEntry>,
}

impl Disk {
    fn runs(&self) -> Vec<bazaar_api::replica::EpochRun> {
        let mut runs: Vec<bazaar_api::replica::EpochRun> = Vec::new();
        for e in &self.log {
            if runs.last().is_none_or(|r| r.epoch != e.epoch) {
                runs.push(bazaar_api::replica::EpochRun {
                    start: e.index,
                    epoch: e.epoch,
                });
            }
        }
        runs
    }

    fn book(&self) -> Book {
        Book::replay(
            self.log
                .iter()
                .map(|e| (e.index, std::slice::from_ref(&e.command))),
        )
        .expect("dense log")
    }
}

/// A message or storage completion waiting to be delivered.
#[derive(Debug)]
enum Pending {
    Event(ReplicaId, Event),
    Reply(ReplicaId, Token, Reply),
}

struct World {
    now: Instant,
    replicas: BTreeMap<ReplicaId, Replica>,
    disks: BTreeMap<ReplicaId, Disk>,
    down: Vec<ReplicaId>,
    /// Links that drop everything: (from, to).
    cut: Vec<(ReplicaId, ReplicaId)>,
    queue: VecDeque<Pending>,
    /// Append tokens answered by a follower: (follower, token) -> (leader, request).
    appends: BTreeMap<(ReplicaId, Token), (ReplicaId, RequestNumber)>,
    /// Status tokens answered by a peer: (peer, token) -> (asker, request).
    statuses: BTreeMap<(ReplicaId, Token), (ReplicaId, RequestNumber)>,
    replies: BTreeMap<Token, Reply>,
    next_token: Token,
}

impl World {
    fn new() -> Self {
        let mut world = Self {
            now: Instant::now(),
            replicas: BTreeMap::new(),
            disks: BTreeMap::new(),
            down: Vec::new(),
            cut: Vec::new(),
            queue: VecDeque::new(),
            appends: BTreeMap::new(),
            statuses: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_token: 1000,
        };
        for id in 1..=3 {
            world.disks.insert(ReplicaId(id), Disk::default());
            world.boot(ReplicaId(id));
        }
        world.settle();
        world
    }

    fn boot(&mut self, id: ReplicaId) {
        let disk = self.disks[&id].clone();
        let len = Position(disk.log.len() as u64);
        let replica = Replica::new(
            settings(id.0),
            disk.term,
            disk.runs(),
            len,
            disk.log.clone(),
            disk.book(),
        );
        self.replicas.insert(id, replica);
        self.down.retain(|d| *d != id);
        self.queue.push_back(Pending::Event(id, Event::Start));
    }

    fn crash(&mut self, id: ReplicaId) {
        self.replicas.remove(&id);
        self.down.push(id);
        self.queue
            .retain(|p| !matches!(p, Pending::Event(to, _) if *to == id));
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    fn send(&mut self, to: ReplicaId, event: Event) {
        self.queue.push_back(Pending::Event(to, event));
    }

    /// Delivers everything queued (and what that produces) in order.
    fn settle(&mut self) {
        let mut steps = 0;
        while let Some(pending) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the protocol does not settle");
            match pending {
                Pending::Event(to, event) => self.deliver(to, event),
                Pending::Reply(from, token, reply) => self.answer(from, token, reply),
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let ids: Vec<ReplicaId> = self.replicas.keys().copied().collect();
        for id in ids {
            self.deliver(id, Event::Tick);
        }
        self.settle();
    }

    fn deliver(&mut self, to: ReplicaId, event: Event) {
        let now = self.now;
        let Some(replica) = self.replicas.get_mut(&to) else {
            return;
        };
        let actions = replica.step(now, event);
        for action in actions {
            self.carry_out(to, action);
        }
    }

    fn peer_down(&self, id: ReplicaId) -> bool {
        self.down.contains(&id)
    }

    fn carry_out(&mut self, me: ReplicaId, action: Action) {
        match action {
            Action::Persist {
                request,
                term,
                truncate_from,
                entries,
            } => {
                let disk = self.disks.get_mut(&me).expect("disk");
                if let Some(term) = term {
                    disk.term = term;
                }
                if let Some(from) = truncate_from {
                    let keep = usize::try_from(from.0).expect("small");
                    if keep < disk.log.len() {
                        let moved = disk.log.split_off(keep);
                        disk.conflicts.extend(moved);
                    }
                }
                disk.log.extend(entries);
                self.send(me, Event::Persisted { request });
            }
            Action::Send {
                to,
                request,
                append,
            } => {
                if self.peer_down(to) || self.cut.contains(&(me, to)) {
                    self.send(
                        me,
                        Event::AppendReplied {
                            from: to,
                            request,
                            reply: Err(PeerError::Unreachable),
                        },
                    );
                } else {
                    let token = self.token();
                    self.appends.insert((to, token), (me, request));
                    self.send(
                        to,
                        Event::Append {
                            token,
                            request: append,
                        },
                    );
                }
            }
            Action::AskStatus { to, request, fence } => {
                if self.peer_down(to) || self.cut.contains(&(me, to)) {
                    self.send(
                        me,
                        Event::Status {
                            from: to,
                            request,
                            status: Err(PeerError::Unreachable),
                        },
                    );
                } else {
                    let token = self.token();
                    self.statuses.insert((to, token), (me, request));
                    self.send(to, Event::StatusRequest { token, fence });
                }
            }
            Action::Fetch {
                from,
                request,
                start,
                limit,
            } => {
                let entries = if self.peer_down(from) {
                    Err(PeerError::Unreachable)
                } else {
                    Ok(self.disks[&from]
                        .log
                        .iter()
                        .skip(usize::try_from(start.0).expect("small"))
                        .take(limit)
                        .cloned()
                        .collect())
                };
                self.send(
                    me,
                    Event::Fetched {
                        from,
                        request,
                        entries,
                    },
                );
            }
            Action::Load { to, start, limit } => {
                let entries = self.disks[&me]
                    .log
                    .iter()
                    .skip(usize::try_from(start.0).expect("small"))
                    .take(limit)
                    .cloned()
                    .collect();
                self.send(me, Event::Loaded { to, entries });
            }
            Action::LoadBook => {
                let book = self.disks[&me].book();
                self.send(me, Event::BookLoaded { book });
            }
            Action::Reply { token, reply } => {
                self.queue.push_back(Pending::Reply(me, token, reply))
            }
            Action::Sequenced { .. }
            | Action::Committed { .. }
            | Action::Lead { .. }
            | Action::Resign { .. } => {}
        }
    }

    fn answer(&mut self, from: ReplicaId, token: Token, reply: Reply) {
        if let Some((asker, request)) = self.statuses.remove(&(from, token)) {
            let status = match reply {
                Reply::Status(Ok(s)) => Ok(s),
                Reply::Status(Err(Failure::StaleEpoch { newest, .. })) => {
                    Err(PeerError::Stale { newest })
                }
                Reply::Status(Err(f)) => Err(PeerError::Refused(format!("{f:?}"))),
                other => panic!("a status request answered with {other:?}"),
            };
            self.send(
                asker,
                Event::Status {
                    from,
                    request,
                    status,
                },
            );
            return;
        }
        if let Some((leader, request)) = self.appends.remove(&(from, token)) {
            let reply = match reply {
                Reply::Append(Ok(r)) => Ok(r),
                Reply::Append(Err(Failure::StaleEpoch { newest, .. })) => {
                    Err(PeerError::Stale { newest })
                }
                Reply::Append(Err(Failure::NotReady(_))) => Err(PeerError::NotReady),
                Reply::Append(Err(f)) => Err(PeerError::Refused(format!("{f:?}"))),
                other => panic!("an append answered with {other:?}"),
            };
            self.send(
                leader,
                Event::AppendReplied {
                    from,
                    request,
                    reply,
                },
            );
        } else {
            self.replies.insert(token, reply);
        }
    }

    fn notice(&mut self, leader: u8, epoch: u64) {
        let live: Vec<ReplicaId> = (1..=3)
            .map(ReplicaId)
            .filter(|id| !self.peer_down(*id))
            .collect();
        let ids: Vec<ReplicaId> = live.clone();
        for id in ids
            .into_iter()
            .filter(|id| id.0 != leader)
            .chain([ReplicaId(leader)])
        {
            let token = self.token();
            self.send(
                id,
                Event::Notice {
                    token,
                    notice: LeaderNotice {
                        leader: ReplicaId(leader),
                        epoch: Epoch(epoch),
                        live: live.clone(),
                    },
                },
            );
            self.settle();
            if id.0 == leader {
                assert_eq!(
                    self.replies.get(&token),
                    Some(&Reply::Notice(Ok(()))),
                    "the leader takes over"
                );
            }
        }
    }

    fn trade(&mut self, at: u8, kind: TradeType, quantity: u64) -> Reply {
        self.trade_with(at, RequestId::new(), kind, quantity)
    }

    fn trade_with(
        &mut self,
        at: u8,
        request_id: RequestId,
        kind: TradeType,
        quantity: u64,
    ) -> Reply {
        let token = self.token();
        self.send(
            ReplicaId(at),
            Event::Trade {
                token,
                trade: TradeCommand {
                    request_id,
                    name: "A".into(),
                    kind,
                    quantity,
                },
            },
        );
        self.settle();
        self.replies.remove(&token).expect("a trade is answered")
    }

    fn role(&self, id: u8) -> ReplicaRole {
        self.replicas[&ReplicaId(id)].role()
    }

    fn log(&self, id: u8) -> Vec<(u64, u64)> {
        self.disks[&ReplicaId(id)]
            .log
            .iter()
            .map(|e| (e.index.0, e.epoch.0))
            .collect()
    }
}

fn traded(reply: &Reply) -> Option<TxnNumber> {
    match reply {
        Reply::Write(Ok(Decided {
            outcome: Outcome::Traded(number) | Outcome::Duplicate(number),
            ..
        })) => Some(*number),
        _ => None,
    }
}

#[test]
fn a_chosen_leader_writes_the_genesis_and_numbers_trades_densely_on_every_replica() {
    let mut world = World::new();
    assert!(
        (1..=3).all(|id| world.role(id) == ReplicaRole::Follower),
        "recovered"
    );
    world.notice(3, 1);
    assert_eq!(world.role(3), ReplicaRole::Leader);
    for n in 0..3 {
        assert_eq!(
            traded(&world.trade(3, TradeType::Buy, 2)),
            Some(TxnNumber(n))
        );
    }
    for id in 1..=3 {
        assert_eq!(
            world.log(id),
            vec![(0, 1), (1, 1), (2, 1), (3, 1)],
            "replica {id}"
        );
    }
    assert_eq!(
        world.trade(3, TradeType::Buy, 5),
        Reply::Write(Ok(Decided {
            outcome: Outcome::Refused(Refusal::InsufficientStock {
                name: "A".into(),
                wanted: 5,
                available: 4
            }),
            position: Position(4),
        })),
        "a refused buy takes no number and no entry"
    );
    assert_eq!(world.log(1).len(), 4);
}

#[test]
fn a_retried_trade_gets_its_first_number() {
    let mut world = World::new();
    world.notice(3, 1);
    let id = RequestId::new();
    let first = world.trade_with(3, id, TradeType::Sell, 1);
    let again = world.trade_with(3, id, TradeType::Sell, 1);
    assert_eq!(traded(&first), Some(TxnNumber(0)));
    assert_eq!(traded(&again), Some(TxnNumber(0)));
    assert_eq!(world.log(2).len(), 2);
}

#[test]
fn followers_refuse_trades_and_name_the_leader() {
    let mut world = World::new();
    world.notice(3, 1);
    assert_eq!(
        world.trade(1, TradeType::Sell, 1),
        Reply::Write(Err(Failure::NotLeader {
            leader: Some(ReplicaId(3))
        }))
    );
}

#[test]
fn a_follower_that_was_down_is_caught_up_by_the_leader_beyond_its_window() {
    let mut world = World::new();
    world.notice(3, 1);
    world.crash(ReplicaId(1));
    for _ in 0..9 {
        assert!(traded(&world.trade(3, TradeType::Sell, 1)).is_some());
    }
    world.boot(ReplicaId(1));
    world.settle();
    world.advance(Duration::from_millis(50));
    world.advance(Duration::from_millis(200));
    assert_eq!(
        world.log(1),
        world.log(3),
        "recovery and catch-up copied all ten entries"
    );
    assert_eq!(world.log(1).len(), 10);
}

#[test]
fn a_new_leader_copies_the_most_up_to_date_log_first() {
    let mut world = World::new();
    world.notice(3, 1);
    // Replica 1 misses two trades.
    world.crash(ReplicaId(1));
    world.trade(3, TradeType::Sell, 1);
    world.trade(3, TradeType::Sell, 1);
    world.boot(ReplicaId(1));
    // It comes back while 3 is down and recovers from 2 (the most up-to-date it can reach).
    world.crash(ReplicaId(3));
    world.settle();
    world.notice(2, 2);
    let next = traded(&world.trade(2, TradeType::Sell, 1));
    assert_eq!(next, Some(TxnNumber(2)), "numbers continue; none forks");
    assert_eq!(world.log(1), world.log(2));
}

#[test]
fn a_lone_leaders_divergent_suffix_moves_aside_when_it_rejoins() {
    let mut world = World::new();
    world.notice(3, 1);
    world.trade(3, TradeType::Sell, 1);
    // 3 is cut off from both followers (they are "down" for it), acknowledges alone.
    world.crash(ReplicaId(1));
    world.crash(ReplicaId(2));
    assert!(traded(&world.trade(3, TradeType::Sell, 1)).is_some());
    assert_eq!(world.log(3).len(), 3);
    // 3 dies; 1 and 2 come back and 2 leads epoch 2, writing other entries at index 2.
    world.crash(ReplicaId(3));
    world.boot(ReplicaId(1));
    world.boot(ReplicaId(2));
    world.settle();
    world.notice(2, 2);
    world.trade(2, TradeType::Buy, 3);
    world.boot(ReplicaId(3));
    world.settle();
    world.advance(Duration::from_millis(300));
    assert_eq!(world.log(3), world.log(2), "3 adopted the leader's log");
    assert_eq!(
        world.disks[&ReplicaId(3)].conflicts.len(),
        1,
        "and kept its own entry aside"
    );
    assert_eq!(world.log(3)[2], (2, 2));
}

#[test]
fn a_deposed_leader_steps_down_when_a_follower_knows_the_newer_epoch() {
    let mut world = World::new();
    world.notice(3, 1);
    // The front-end chooses 2 while 3 is unreachable to it and to 2 (3 stays up).
    world.cut.push((ReplicaId(2), ReplicaId(3)));
    for id in [1, 2] {
        let token = world.token();
        world.send(
            ReplicaId(id),
            Event::Notice {
                token,
                notice: LeaderNotice {
                    leader: ReplicaId(2),
                    epoch: Epoch(2),
                    live: vec![ReplicaId(1), ReplicaId(2)],
                },
            },
        );
        world.settle();
    }
    assert_eq!(world.role(2), ReplicaRole::Leader);
    let reply = world.trade(3, TradeType::Sell, 1);
    assert!(
        matches!(reply, Reply::Write(Err(Failure::Uncertain(_)))),
        "{reply:?}"
    );
    assert_eq!(world.role(3), ReplicaRole::Follower);
    assert_eq!(world.replicas[&ReplicaId(3)].term().epoch, Epoch(2));
}

#[test]
fn stale_and_absurd_epochs_are_refused() {
    let mut world = World::new();
    world.notice(3, 5);
    for (epoch, want_stale) in [
        (4, true),
        (u64::MAX, false),
        (5 + EPOCH_STEP_MAX + 1, false),
    ] {
        let token = world.token();
        world.send(
            ReplicaId(1),
            Event::Notice {
                token,
                notice: LeaderNotice {
                    leader: ReplicaId(2),
                    epoch: Epoch(epoch),
                    live: vec![],
                },
            },
        );
        world.settle();
        let reply = world.replies.remove(&token);
        if want_stale {
            assert!(
                matches!(reply, Some(Reply::Notice(Err(Failure::StaleEpoch { .. })))),
                "{reply:?}"
            );
        } else {
            assert!(
                matches!(reply, Some(Reply::Notice(Err(Failure::Invalid(_))))),
                "{reply:?}"
            );
        }
    }
    assert_eq!(world.replicas[&ReplicaId(1)].term().epoch, Epoch(5));
}

#[test]
fn with_two_copies_required_a_lone_leader_does_not_acknowledge() {
    let mut world = World::new();
    for r in world.replicas.values_mut() {
        r.settings.min_copies = 2;
    }
    world.notice(3, 1);
    assert!(traded(&world.trade(3, TradeType::Sell, 1)).is_some());
    world.crash(ReplicaId(1));
    world.crash(ReplicaId(2));
    let token = world.token();
    world.send(
        ReplicaId(3),
        Event::Trade {
            token,
            trade: TradeCommand {
                request_id: RequestId::new(),
                name: "A".into(),
                kind: TradeType::Sell,
                quantity: 1,
            },
        },
    );
    world.settle();
    assert!(
        !world.replies.contains_key(&token),
        "held while one copy exists"
    );
    world.advance(Duration::from_secs(3));
    let reply = world.replies.remove(&token);
    assert!(
        matches!(reply, Some(Reply::Write(Err(Failure::Uncertain(_))))),
        "{reply:?}"
    );
}

#[test]
fn a_candidate_fences_off_the_old_leader_before_copying_from_its_followers() {
    let mut world = World::new();
    for r in world.replicas.values_mut() {
        r.settings.min_copies = 2;
    }
    world.notice(3, 1);
    world.trade(3, TradeType::Sell, 1);
    // The front-end's notices never reach 1; 2 is chosen and asks 1 for its status with the
    // new term: 1 adopts it and refuses 3 from then on.
    world.cut.push((ReplicaId(2), ReplicaId(3)));
    world.cut.push((ReplicaId(3), ReplicaId(2)));
    let token = world.token();
    world.send(
        ReplicaId(2),
        Event::Notice {
            token,
            notice: LeaderNotice {
                leader: ReplicaId(2),
                epoch: Epoch(2),
                live: vec![ReplicaId(1), ReplicaId(2)],
            },
        },
    );
    world.settle();
    assert_eq!(world.replies.remove(&token), Some(Reply::Notice(Ok(()))));
    assert_eq!(world.replicas[&ReplicaId(1)].term().epoch, Epoch(2));
    let reply = world.trade(3, TradeType::Sell, 1);
    assert!(
        matches!(reply, Reply::Write(Err(Failure::Uncertain(_)))),
        "the old leader cannot commit with two copies required: {reply:?}"
    );
}

#[test]
fn with_two_copies_required_a_candidate_that_hears_from_nobody_does_not_lead() {
    let mut world = World::new();
    for r in world.replicas.values_mut() {
        r.settings.min_copies = 2;
    }
    world.notice(3, 1);
    world.trade(3, TradeType::Sell, 1);
    world.crash(ReplicaId(3));
    world.crash(ReplicaId(2));
    let token = world.token();
    world.send(
        ReplicaId(1),
        Event::Notice {
            token,
            notice: LeaderNotice {
                leader: ReplicaId(1),
                epoch: Epoch(2),
                live: vec![ReplicaId(1)],
            },
        },
    );
    world.settle();
    for _ in 0..20 {
        world.advance(Duration::from_millis(300));
    }
    assert!(
        matches!(world.replies.get(&token), Some(Reply::Notice(Err(_)))),
        "{:?}",
        world.replies.get(&token)
    );
    assert_ne!(world.role(1), ReplicaRole::Leader);
}

#[test]
fn appends_with_malformed_batches_are_refused() {
    let mut world = World::new();
    world.notice(3, 1);
    let token = world.token();
    world.send(
        ReplicaId(1),
        Event::Append {
            token,
            request: AppendRequest {
                epoch: Epoch(1),
                leader: ReplicaId(3),
                prev: None,
                entries: vec![LogEntry {
                    index: LogIndex(5),
                    epoch: Epoch(1),
                    command: Command::Restock { to: 1 },
                }],
            },
        },
    );
    world.settle();
    assert!(matches!(
        world.replies.remove(&token),
        Some(Reply::Append(Err(Failure::Invalid(_))))
    ));
    let _ = AppendReply::Appended { len: Position(0) };
}
