//! `bazaar status`: the cluster table, as the dashboard's cluster panel shows it, from
//! `cluster.json` and each service's `GET /health`. Exits 0 when every service answers and none
//! is recovering, 1 otherwise (so scripts can wait on it).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use bazaar_api::auth::ClientAuth;
use bazaar_api::client::{Http, LeaderView};
use bazaar_cluster::{ClusterFile, Role, ServiceRecord};
use bazaar_frontend::dashboard::cluster::{self, ClusterView, LeaderRef, State};

use crate::Failure;

/// How long each service may take to answer; a healthy one answers in about a millisecond.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Flags of `bazaar status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data directory `bazaar up` wrote cluster.json to.
    #[arg(long, env = "BAZAAR_DATA_DIR", default_value = "bazaar-data")]
    data_dir: PathBuf,
}

/// Prints the table; fails when a service is down or recovering.
pub async fn run(args: Args) -> Result<(), Failure> {
    let path = args.data_dir.join("cluster.json");
    let file = ClusterFile::read(&path).map_err(|e| {
        Failure::Runtime(anyhow!(
            "{e} (start the system with `bazaar up --data-dir {}`)",
            args.data_dir.display()
        ))
    })?;
    let auth = bazaar_cluster::security::client_auth_of(&args.data_dir)
        .map_err(|e| Failure::Runtime(anyhow!("{e}")))?;
    let view = probe_all(&file, &auth).await;
    super::print_out(&render(&file, &args.data_dir, &view)).map_err(Failure::Runtime)?;
    if view.all_up() {
        Ok(())
    } else {
        Err(Failure::Check)
    }
}

async fn probe_all(file: &ClusterFile, auth: &ClientAuth) -> ClusterView {
    let http = Http::with_auth(HEALTH_TIMEOUT, auth);
    let of = |role: Role| file.services.iter().filter(move |s| s.role == role);
    let frontends = futures::future::join_all(of(Role::Frontend).map(|s| {
        let http = &http;
        async move {
            let leader_url = format!("{}/leader", s.url);
            let (probe, leader) = tokio::join!(
                cluster::probe(http, &s.url),
                http.get::<LeaderView>(&leader_url)
            );
            let leader = leader.ok().map(|l| LeaderRef {
                id: u64::from(l.id.0),
                url: l.url,
            });
            (probe, leader)
        }
    }));
    let replicas = futures::future::join_all(of(Role::Order).filter_map(|s| {
        let http = &http;
        let id = s.id?;
        Some(async move { (id, cluster::probe(http, &s.url).await) })
    }));
    let catalogs =
        futures::future::join_all(of(Role::Catalog).map(|s| cluster::probe(&http, &s.url)));
    let (frontends, replicas, catalogs) = tokio::join!(frontends, replicas, catalogs);
    ClusterView::build(frontends, replicas, catalogs)
}

fn dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

fn address(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

/// The table, one row per service in the dashboard's order: front-ends, replicas, catalogs.
fn render(file: &ClusterFile, data_dir: &std::path::Path, view: &ClusterView) -> String {
    let pid = |url: &str| {
        file.services
            .iter()
            .find(|s: &&ServiceRecord| s.url == url)
            .map_or_else(|| "-".into(), |s| s.pid.to_string())
    };
    let mut rows: Vec<[String; 10]> = vec![
        [
            "SERVICE", "ADDRESS", "PID", "HEALTH", "ROLE", "EPOCH", "POSITION", "LAST", "LAG",
            "NOTE",
        ]
        .map(str::to_owned),
    ];
    for f in &view.frontends {
        let note = match (&f.error, f.caching) {
            (Some(e), _) => e.clone(),
            (None, Some(true)) => "cache on".into(),
            (None, Some(false)) => "cache off".into(),
            (None, None) => String::new(),
        };
        rows.push([
            f.name.clone(),
            address(&f.url),
            pid(&f.url),
            f.state.as_str().into(),
            "front-end".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            note,
        ]);
    }
    for r in &view.replicas {
        rows.push([
            r.name.clone(),
            address(&r.url),
            pid(&r.url),
            r.state.as_str().into(),
            if r.state == State::Down {
                "-".into()
            } else {
                dash(r.role.clone())
            },
            dash(r.epoch),
            dash(r.position),
            dash(r.last),
            dash(r.lag),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    for c in &view.catalogs {
        rows.push([
            c.name.clone(),
            address(&c.url),
            pid(&c.url),
            c.state.as_str().into(),
            "catalog".into(),
            "-".into(),
            dash(c.position),
            "-".into(),
            "-".into(),
            c.error.clone().unwrap_or_default(),
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mode = file
        .replication
        .clone()
        .or_else(|| view.mode.clone())
        .unwrap_or_else(|| "unknown".into());
    let mut out = format!(
        "Stock Bazaar, {mode} replication (data: {})\n\n",
        data_dir.display()
    );
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    let leader = view.leader.and_then(|id| {
        view.replicas
            .iter()
            .find(|r| u64::from(r.id) == id)
            .map(|r| (r, id))
    });
    let chosen = view.frontends.iter().any(|f| f.leader.is_some());
    match leader {
        Some((r, _)) => {
            let _ = writeln!(
                out,
                "leader: {}{}{}",
                r.name,
                r.epoch.map(|e| format!(" (epoch {e})")).unwrap_or_default(),
                match (chosen, r.state) {
                    (_, State::Down) => ", which is down",
                    (true, _) => ", as the front-end chose it",
                    (false, _) => ", as it says itself",
                }
            );
        }
        None => out.push_str("leader: none\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use bazaar_frontend::dashboard::cluster::Probe;
    use serde_json::json;

    use super::*;

    fn record(role: Role, id: Option<u8>, url: &str, pid: u32) -> ServiceRecord {
        ServiceRecord {
            role,
            id,
            url: url.into(),
            pid,
            command: vec![],
        }
    }

    #[test]
    fn the_table_lines_up_and_names_the_leader_and_what_is_down() {
        let file = ClusterFile {
            replication: Some("primary-backup".into()),
            services: vec![
                record(Role::Catalog, Some(1), "http://127.0.0.1:8081", 10),
                record(Role::Order, Some(1), "http://127.0.0.1:8091", 11),
                record(Role::Order, Some(2), "http://127.0.0.1:8092", 12),
                record(Role::Frontend, None, "http://127.0.0.1:8080", 13),
            ],
        };
        let ok = |url: &str, health: serde_json::Value| Probe {
            url: url.into(),
            health: Ok(health),
        };
        let view = ClusterView::build(
            vec![(
                ok("http://127.0.0.1:8080", json!({"caching": true})),
                Some(LeaderRef {
                    id: 2,
                    url: "http://127.0.0.1:8092".into(),
                }),
            )],
            vec![
                (
                    1,
                    Probe {
                        url: "http://127.0.0.1:8091".into(),
                        health: Err("connection refused".into()),
                    },
                ),
                (
                    2,
                    ok(
                        "http://127.0.0.1:8092",
                        json!({"role": "leader", "epoch": 4, "position": 12, "last_number": 9, "ready": true}),
                    ),
                ),
            ],
            vec![ok(
                "http://127.0.0.1:8081",
                json!({"stocks": 12, "position": 11}),
            )],
        );
        let text = render(&file, std::path::Path::new("bazaar-data"), &view);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Stock Bazaar, primary-backup replication (data: bazaar-data)"
        );
        assert!(
            lines[2].starts_with("SERVICE    ADDRESS         PID  HEALTH  ROLE"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("frontend   127.0.0.1:8080  13   up      front-end"),
            "{text}"
        );
        assert!(
            lines[4].contains("order-1    127.0.0.1:8091  11   down"),
            "{text}"
        );
        assert!(lines[4].ends_with("connection refused"), "{text}");
        assert!(
            lines[5].contains("up      leader     4      12        9     0"),
            "{text}"
        );
        assert!(
            lines[6].starts_with("catalog-1  127.0.0.1:8081  10   up      catalog    -      11"),
            "{text}"
        );
        assert_eq!(
            lines.last().copied(),
            Some("leader: order-2 (epoch 4), as the front-end chose it")
        );
    }
}
