//! The cluster table (the dashboard's cluster panel, and `bazaar status`), read loosely from
//! each service's `GET /health`.
//!
//! Health replies are kept as JSON values, not typed structs: the services add fields as they
//! grow (a replica's `visible` position, say), and a table that refused an
//! unknown shape would go blank exactly when an operator needs it. Each column is read from the
//! fields this module knows, with a fallback (`None`, shown as a dash) when a field is missing;
//! the raw reply travels along for the fields it does not know.

use bazaar_api::client::{ClientError, Http};
use serde::Serialize;
use serde_json::Value;

/// What one service's health request found: its `data` object, or why there was none.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Base URL of the service.
    pub url: String,
    /// The reply's `data`, or a sentence saying why it did not come.
    pub health: Result<Value, String>,
}

/// Asks one service for its health.
pub async fn probe(http: &Http, url: &str) -> Probe {
    let health = http
        .get::<Value>(&format!("{}/health", url.trim_end_matches('/')))
        .await
        .map_err(|e| describe(&e));
    Probe {
        url: url.to_owned(),
        health,
    }
}

/// A short reason for a failed health request, for a table cell.
#[must_use]
pub fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { detail, .. } if detail.contains("onnection refused") => {
            "connection refused".into()
        }
        ClientError::Unreachable { .. } => "unreachable".into(),
        ClientError::Timeout { .. } => "no answer in time".into(),
        ClientError::Rejected {
            status, message, ..
        } => format!("HTTP {status}: {message}"),
        ClientError::Decode { .. } => "unreadable reply".into(),
    }
}

/// Whether a service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// It answered and serves.
    Up,
    /// It answered but is still recovering (an order replica catching up).
    Recovering,
    /// It did not answer.
    Down,
}

impl State {
    /// The word shown in tables.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Recovering => "recovering",
            Self::Down => "down",
        }
    }
}

/// A leader as a front-end names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderRef {
    /// Replica id.
    pub id: u64,
    /// Base URL.
    pub url: String,
}

/// One front-end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontendRow {
    /// `frontend`.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Up or down.
    pub state: State,
    /// Whether its cache serves entries now.
    pub caching: Option<bool>,
    /// The order leader it sends trades to.
    pub leader: Option<LeaderRef>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Its health reply as it came.
    pub health: Value,
}

/// One order replica.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaRow {
    /// Replica id.
    pub id: u8,
    /// `order-<id>`.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Up, recovering or down.
    pub state: State,
    /// `leader`, `follower`, `candidate`, `recovering`, as the replica says.
    pub role: Option<String>,
    /// Replication mode it runs.
    pub mode: Option<String>,
    /// Its epoch (the Raft term in raft mode).
    pub epoch: Option<u64>,
    /// Log entries it holds (raft: has applied).
    pub position: Option<u64>,
    /// Number of the last order in its log; `None` when the log has none or it is unknown.
    pub last: Option<u64>,
    /// Log entries it lacks that the leader holds; `None` when either is unknown.
    pub lag: Option<u64>,
    /// The leader it follows.
    pub follows: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Its health reply as it came.
    pub health: Value,
}

/// One catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogRow {
    /// `catalog-<n>`, numbered from 1 in the order given.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Up or down.
    pub state: State,
    /// The log position its view reflects, when it reports one.
    pub position: Option<u64>,
    /// Stocks it holds, when it reports them.
    pub stocks: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Its health reply as it came.
    pub health: Value,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    /// Replication mode, as the replicas report it.
    pub mode: Option<String>,
    /// The leader trades go to: the first front-end's choice, else a replica that says it
    /// leads.
    pub leader: Option<u64>,
    /// Front-ends.
    pub frontends: Vec<FrontendRow>,
    /// Order replicas, by id.
    pub replicas: Vec<ReplicaRow>,
    /// Catalogs.
    pub catalogs: Vec<CatalogRow>,
}

fn field_u64(health: &Value, names: &[&str]) -> Option<u64> {
    names
        .iter()
        .find_map(|n| health.get(*n).and_then(Value::as_u64))
}

fn field_str(health: &Value, name: &str) -> Option<String> {
    health.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// The number of the replica's last order (absent or null: it holds none).
fn last_number(health: &Value) -> Option<u64> {
    health.get("last_number").and_then(Value::as_u64)
}

/// How many log entries the replica holds (raft: has applied).
fn log_len(health: &Value) -> Option<u64> {
    health.get("position").and_then(Value::as_u64)
}

fn split(probe: &Probe) -> (Value, Option<String>) {
    match &probe.health {
        Ok(health) => (health.clone(), None),
        Err(e) => (Value::Null, Some(e.clone())),
    }
}

impl ClusterView {
    /// Builds the table from probes: front-ends with the leader each names, replicas by id,
    /// catalogs in order.
    #[must_use]
    pub fn build(
        frontends: Vec<(Probe, Option<LeaderRef>)>,
        replicas: Vec<(u8, Probe)>,
        catalogs: Vec<Probe>,
    ) -> Self {
        let frontends: Vec<FrontendRow> = frontends
            .into_iter()
            .map(|(probe, leader)| {
                let (health, error) = split(&probe);
                FrontendRow {
                    name: "frontend".into(),
                    url: probe.url,
                    state: if error.is_none() {
                        State::Up
                    } else {
                        State::Down
                    },
                    caching: health.get("caching").and_then(Value::as_bool),
                    leader,
                    error,
                    health,
                }
            })
            .collect();
        let mut replicas: Vec<ReplicaRow> = replicas
            .into_iter()
            .map(|(id, probe)| {
                let (health, error) = split(&probe);
                let role = field_str(&health, "role");
                let state = if error.is_some() {
                    State::Down
                } else if health.get("ready").and_then(Value::as_bool) == Some(false)
                    || role.as_deref() == Some("recovering")
                {
                    State::Recovering
                } else {
                    State::Up
                };
                ReplicaRow {
                    id,
                    name: format!("order-{id}"),
                    url: probe.url,
                    state,
                    role,
                    mode: field_str(&health, "mode"),
                    epoch: field_u64(&health, &["epoch", "term"]),
                    position: log_len(&health),
                    last: last_number(&health),
                    lag: None,
                    follows: field_u64(&health, &["leader"]),
                    error,
                    health,
                }
            })
            .collect();
        replicas.sort_by_key(|r| r.id);
        let catalogs = catalogs
            .into_iter()
            .enumerate()
            .map(|(i, probe)| {
                let (health, error) = split(&probe);
                CatalogRow {
                    name: format!("catalog-{}", i + 1),
                    url: probe.url,
                    state: if error.is_none() {
                        State::Up
                    } else {
                        State::Down
                    },
                    position: field_u64(&health, &["position", "log_position"]),
                    stocks: field_u64(&health, &["stocks"]),
                    error,
                    health,
                }
            })
            .collect();
        let chosen = frontends
            .iter()
            .find_map(|f| f.leader.as_ref().map(|l| l.id));
        let self_declared = replicas
            .iter()
            .find(|r| r.state != State::Down && r.role.as_deref() == Some("leader"))
            .map(|r| u64::from(r.id));
        let leader = chosen.or(self_declared);
        // Lag is measured against the leader's log when it answers.
        let leader_len = replicas
            .iter()
            .find(|r| Some(u64::from(r.id)) == leader && r.state != State::Down)
            .and_then(|r| log_len(&r.health));
        for replica in &mut replicas {
            replica.lag = match (leader_len, log_len(&replica.health)) {
                (Some(l), Some(mine)) if replica.state != State::Down => {
                    Some(l.saturating_sub(mine))
                }
                _ => None,
            };
        }
        let mode = replicas.iter().find_map(|r| r.mode.clone());
        Self {
            mode,
            leader,
            frontends,
            replicas,
            catalogs,
        }
    }

    /// True when every service answered and none is recovering.
    #[must_use]
    pub fn all_up(&self) -> bool {
        self.frontends.iter().all(|f| f.state == State::Up)
            && self.replicas.iter().all(|r| r.state == State::Up)
            && self.catalogs.iter().all(|c| c.state == State::Up)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn up(url: &str, health: Value) -> Probe {
        Probe {
            url: url.into(),
            health: Ok(health),
        }
    }

    fn down(url: &str) -> Probe {
        Probe {
            url: url.into(),
            health: Err("connection refused".into()),
        }
    }

    fn replica(id: u8, role: &str, epoch: u64, position: u64, last: Value) -> (u8, Probe) {
        (
            id,
            up(
                &format!("http://r{id}"),
                json!({"id": id, "mode": "primary-backup", "role": role, "ready": true,
                       "leader": 3, "epoch": epoch, "position": position,
                       "last_number": last}),
            ),
        )
    }

    #[test]
    fn replicas_are_read_from_todays_health_shape_with_lag_behind_the_leader() {
        let view = ClusterView::build(
            vec![(
                up("http://fe", json!({"status": "ok", "caching": true})),
                Some(LeaderRef {
                    id: 3,
                    url: "http://r3".into(),
                }),
            )],
            vec![
                replica(3, "leader", 2, 45, json!(41)),
                replica(1, "follower", 2, 42, json!(38)),
                replica(2, "follower", 2, 3, Value::Null),
            ],
            vec![up(
                "http://c",
                json!({"status": "ok", "stocks": 12, "position": 44}),
            )],
        );
        assert_eq!(view.leader, Some(3));
        assert_eq!(view.mode.as_deref(), Some("primary-backup"));
        let ids: Vec<u8> = view.replicas.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3], "sorted by id");
        let r1 = &view.replicas[0];
        assert_eq!(
            (r1.role.as_deref(), r1.epoch, r1.last, r1.lag),
            (Some("follower"), Some(2), Some(38), Some(3))
        );
        assert_eq!(view.replicas[1].last, None, "no orders yet");
        assert_eq!(view.replicas[1].lag, Some(42), "it lacks 42 entries");
        assert_eq!(view.replicas[2].lag, Some(0));
        assert_eq!(view.frontends[0].caching, Some(true));
        assert_eq!(view.catalogs[0].name, "catalog-1");
        assert_eq!(view.catalogs[0].stocks, Some(12));
        assert_eq!(view.catalogs[0].position, Some(44));
        assert!(view.all_up());
    }

    #[test]
    fn unknown_and_future_fields_fall_back_instead_of_failing() {
        let view = ClusterView::build(
            vec![(up("http://fe", json!({})), None)],
            vec![
                (
                    1,
                    up(
                        "http://r1",
                        json!({"role": "leader", "term": 7, "last_number": 9,
                               "position": 12, "visible": 12}),
                    ),
                ),
                (2, up("http://r2", json!({"something": "else"}))),
                (3, down("http://r3")),
            ],
            vec![up("http://c1", json!({"position": 10})), down("http://c2")],
        );
        assert_eq!(
            view.leader,
            Some(1),
            "no front-end choice: the self-declared leader"
        );
        let r1 = &view.replicas[0];
        assert_eq!((r1.epoch, r1.last, r1.lag), (Some(7), Some(9), Some(0)));
        assert_eq!(r1.health["visible"], 12, "unknown fields travel along");
        let r2 = &view.replicas[1];
        assert_eq!((r2.state, r2.role.clone(), r2.lag), (State::Up, None, None));
        let r3 = &view.replicas[2];
        assert_eq!(r3.state, State::Down);
        assert_eq!(r3.error.as_deref(), Some("connection refused"));
        assert_eq!(r3.lag, None);
        let names: Vec<&str> = view.catalogs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["catalog-1", "catalog-2"]);
        assert_eq!(view.catalogs[0].position, Some(10));
        assert_eq!(view.catalogs[1].state, State::Down);
        assert!(!view.all_up());
    }

    #[test]
    fn a_recovering_replica_is_neither_up_nor_down_and_a_dead_leader_gives_no_lag() {
        let view = ClusterView::build(
            vec![(
                up("http://fe", json!({})),
                Some(LeaderRef {
                    id: 2,
                    url: "http://r2".into(),
                }),
            )],
            vec![
                (
                    1,
                    up(
                        "http://r1",
                        json!({"role": "recovering", "ready": false, "last": 3}),
                    ),
                ),
                (2, down("http://r2")),
            ],
            vec![],
        );
        assert_eq!(view.replicas[0].state, State::Recovering);
        assert_eq!(view.replicas[0].lag, None, "the leader's log is unknown");
        assert_eq!(view.leader, Some(2), "still the front-end's choice");
        assert!(!view.all_up());
    }
}
