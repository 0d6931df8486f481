//! `bazaar client`, `bazaar eval` and `bazaar chaos` run as processes, the way people run them:
//! against real systems started from the debug binary, on free ports, in temporary directories.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use bazaar_cluster::{Cluster, ClusterSpec, LogTarget};

const BAZAAR: &str = env!("CARGO_BIN_EXE_bazaar");

/// Generous for a debug build on a shared machine; a healthy run takes a few seconds.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

async fn bazaar(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(BAZAAR);
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(COMMAND_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("bazaar {args:?} did not finish within {COMMAND_DEADLINE:?}"))
        .expect("bazaar runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn start_system(dir: &Path) -> Cluster {
    let mut spec = ClusterSpec::new(BAZAAR.into(), dir.join("data"), 0);
    spec.logs = LogTarget::Dir(dir.join("logs"));
    Cluster::start(spec).await.expect("the system starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_trades_verifies_and_writes_json_against_a_real_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("phase: start a system so the client has something real to verify");
    let cluster = start_system(dir.path()).await;
    let json = dir.path().join("report.json");
    let history = dir.path().join("history.jsonl");
    let frontend = cluster.frontend_url();

    eprintln!("phase: run 2 clients x 20 iterations with trades");
    let out = bazaar(&[
        "client",
        "--frontend",
        &frontend,
        "--clients",
        "2",
        "--iterations",
        "20",
        "--p",
        "0.5",
        "--seed",
        "3",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--history",
        history.to_str().expect("utf-8 path"),
    ])
    .await;
    cluster.shutdown().await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("result: OK"), "{stdout}");
    assert!(stdout.contains("lookup"), "{stdout}");

    eprintln!("phase: the JSON holds the same numbers");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid JSON");
    assert_eq!(report["lookup"]["count"], 40);
    assert_eq!(report["seed"], 3);
    assert_eq!(report["mismatches"], 0);
    let acknowledged = report["orders_recorded"].as_u64().expect("a number");
    assert!(acknowledged > 0, "p = 0.5 over 40 iterations trades");
    assert_eq!(report["orders_verified"].as_u64(), Some(acknowledged));

    eprintln!("phase: the history holds every request, and it is linearizable");
    let ops = bazaar_client::history::read_jsonl(&history).expect("history written");
    let count = |f: fn(&bazaar_client::history::Call) -> bool| {
        ops.iter().filter(|op| f(&op.call)).count() as u64
    };
    use bazaar_client::history::Call;
    assert_eq!(count(|c| matches!(c, Call::StockList)), 1);
    assert_eq!(count(|c| matches!(c, Call::Lookup { .. })), 40);
    assert_eq!(
        count(|c| matches!(c, Call::OrderQuery { .. })),
        acknowledged
    );
    assert!(count(|c| matches!(c, Call::Trade { .. })) >= acknowledged);
    let checked =
        bazaar_client::linearizable::check(&ops, None, std::time::Duration::from_secs(60));
    assert!(checked.ok(), "{checked}");
}

#[tokio::test]
async fn bad_client_flags_give_one_line_and_exit_2() {
    for (args, needle) in [
        (vec!["--p", "1.5"], "--p 1.5"),
        (vec!["--clients", "0"], "--clients 0"),
        (vec!["--iterations", "0"], "--iterations 0"),
        (vec!["--frontend", "ftp://127.0.0.1:1"], "only http"),
        (vec!["--frontend", "127.0.0.1:8080"], "no scheme"),
        (vec!["--bad-requests", "1.5"], "--bad-requests 1.5"),
        (vec!["--bad-requests=-0.1"], "--bad-requests -0.1"),
    ] {
        let mut full = vec!["client"];
        full.extend(&args);
        let out = bazaar(&full).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_writes_every_row_and_readable_plots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("eval");
    let out_arg = out_dir.to_str().expect("utf-8 path");

    eprintln!("phase: a tiny sweep, which starts and stops two systems itself");
    let out = bazaar(&[
        "eval",
        "--out",
        out_arg,
        "--clients",
        "2",
        "--iterations",
        "5",
        "--timeline",
        "1s",
    ])
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("eval: OK"), "{stdout}");
    assert!(stdout.contains("verify: OK"), "{stdout}");

    eprintln!("phase: one CSV row per cache setting x p x request type");
    let csv = std::fs::read_to_string(out_dir.join("results.csv")).expect("results.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "cache,p,request,count,errors,rejected,mean_us,p50_us,p90_us,p99_us,max_us"
    );
    let mut keys: Vec<(String, String, String)> = lines[1..]
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 11, "{line}");
            (fields[0].into(), fields[1].into(), fields[2].into())
        })
        .collect();
    keys.sort();
    let mut expected = Vec::new();
    for cache in ["off", "on"] {
        for p in ["0.0", "0.2", "0.4", "0.6", "0.8"] {
            for request in ["lookup", "order_query", "trade"] {
                expected.push((cache.into(), p.into(), request.into()));
            }
        }
    }
    expected.sort();
    assert_eq!(keys, expected);
    for line in &lines[1..] {
        if line.contains(",lookup,") {
            assert!(
                line.contains(",10,0,"),
                "2 clients x 5 lookups, no errors: {line}"
            );
        }
    }

    eprintln!("phase: every figure exists as a real PNG and SVG");
    for figure in [
        "latency_lookup",
        "latency_trade",
        "latency_order_query",
        "cache_timeline",
    ] {
        let png = std::fs::read(out_dir.join(format!("{figure}.png"))).expect("png written");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{figure}.png is not a PNG"
        );
        assert!(png.len() > 5_000, "{figure}.png is suspiciously small");
        let svg = std::fs::read_to_string(out_dir.join(format!("{figure}.svg"))).expect("svg");
        assert!(svg.contains("<svg"), "{figure}.svg has no <svg>");
        assert!(
            svg.trim_end().ends_with("</svg>"),
            "{figure}.svg is cut short"
        );
        assert!(svg.contains("<text"), "{figure}.svg has no text");
    }
    assert!(out_dir.join("logs/cache-on/frontend.log").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_passes_on_a_healthy_system_and_catches_a_tampered_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let healthy = dir.path().join("healthy");
    let json = dir.path().join("chaos.json");
    let args = |data: &Path| {
        vec![
            "chaos".to_owned(),
            "--rounds".into(),
            "2".into(),
            "--clients".into(),
            "3".into(),
            "--down".into(),
            "500ms".into(),
            "--settle".into(),
            "300ms".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ]
    };
    let mut healthy_args = args(&healthy);
    healthy_args.extend(["--json".into(), json.display().to_string()]);
    let refs: Vec<&str> = healthy_args.iter().map(String::as_str).collect();
    let output = bazaar(&refs).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("verdict: OK"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0]["leader_killed"], true, "round 1 kills the leader");
    assert!(rounds[0]["failover_ms"].as_f64().is_some(), "{report}");
    assert_eq!(report["load"]["mismatches"], 0);
    assert!(report["load"]["orders_recorded"].as_u64() > Some(0));

    // A directory that already holds a system is refused before anything starts.
    let again = args(&healthy);
    let refs: Vec<&str> = again.iter().map(String::as_str).collect();
    let output = bazaar(&refs).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stdout));
    assert!(
        text(&output.stderr).contains("already holds a system; chaos needs a fresh directory"),
        "{}",
        text(&output.stderr)
    );

    let tampered = dir.path().join("tampered");
    let mut tampered_args = args(&tampered);
    tampered_args.push("--sabotage".into());
    let refs: Vec<&str> = tampered_args.iter().map(String::as_str).collect();
    let output = bazaar(&refs).await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("verdict: FAILED"), "{stdout}");
    assert!(stdout.contains("the table says"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_prints_each_command_with_what_it_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("phase: a raft system with one trade made and one refused");
    // Raft logs a refused buy (the apply step refuses it); a primary-backup leader refuses
    // before it appends, so its log never holds one.
    let mut spec = ClusterSpec::new(BAZAAR.into(), dir.path().join("data"), 0);
    spec.logs = LogTarget::Dir(dir.path().join("logs"));
    spec.replication = "raft".into();
    let cluster = Cluster::start(spec).await.expect("the system starts");
    let frontend = cluster.frontend_url();
    let http = bazaar_api::client::reqwest_builder(&bazaar_api::auth::ClientAuth::none())
        .build()
        .expect("client");
    let trade = |quantity: u64| {
        http.post(format!("{frontend}/orders"))
            .json(&serde_json::json!({"name": "FishCo", "type": "buy", "quantity": quantity}))
            .send()
    };
    let made = trade(3).await.expect("trade");
    assert_eq!(made.status(), 200);
    let refused = trade(999_999).await.expect("trade");
    assert_eq!(refused.status(), 409, "more than there is");
    cluster.shutdown().await;
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");

    eprintln!("phase: --json lists the genesis, the order and the refusal");
    let out = bazaar(&["log", "--data-dir", data, "--replica", "2", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(log["mode"], "raft");
    assert_eq!(log["orders"], 1);
    let entries = log["entries"].as_array().expect("entries");
    assert!(
        entries.iter().any(|e| e["command"]["op"] == "genesis"),
        "{log}"
    );
    let trades: Vec<_> = entries
        .iter()
        .filter(|e| e["command"]["op"] == "trade")
        .map(|e| (e["command"]["quantity"].clone(), e["outcome"].clone()))
        .collect();
    assert_eq!(
        trades,
        [
            (
                serde_json::json!(3),
                serde_json::json!({"result": "order", "number": 0})
            ),
            (
                serde_json::json!(999_999),
                serde_json::json!({"result": "refused"})
            ),
        ],
        "{log}"
    );

    eprintln!("phase: text names the term column, CSV has a header and one row per command");
    let out = bazaar(&["log", "--data-dir", data, "--replica", "1"]).await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("raft log"), "{stdout}");
    assert!(stdout.contains("term"), "{stdout}");
    assert!(stdout.contains("order #0"), "{stdout}");
    assert!(stdout.contains("refused"), "{stdout}");
    let out = bazaar(&["log", "--data-dir", data, "--replica", "3", "--csv"]).await;
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("index,term,op,name,type,quantity,request_id,outcome,number,moved_aside")
    );
    assert_eq!(lines.count(), entries.len(), "{stdout}");

    eprintln!("phase: a replica with no file is named with the ones that exist");
    let out = bazaar(&["log", "--data-dir", data, "--replica", "7"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("replicas in"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mixes_in_invalid_requests_and_prints_every_exchange() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start_system(dir.path()).await;
    let frontend = cluster.frontend_url();
    let out = bazaar(&[
        "client",
        "--frontend",
        &frontend,
        "--clients",
        "2",
        "--iterations",
        "30",
        "--seed",
        "5",
        "--bad-requests",
        "0.5",
        "--verbose",
    ])
    .await;
    cluster.shutdown().await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");

    eprintln!("phase: every invalid request got its documented error");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("invalid requests:"))
        .unwrap_or_else(|| panic!("no invalid-request line: {stdout}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert!(numbers[0] > 10, "p = 0.5 over 60 iterations: {line}");
    assert_eq!(numbers[0], numbers[1], "{line}");

    eprintln!("phase: --verbose printed each exchange, the invalid ones with their errors");
    let exchanges: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("client "))
        .collect();
    assert!(
        exchanges.len() as u64 >= 60 + numbers[0],
        "{} lines: {stderr}",
        exchanges.len()
    );
    for needle in [
        "GET /stocks/NoSuchStock -> 404",
        "\"type\":\"steal\"",
        "-> 400",
        "\"kind\":\"unknown_order\"",
    ] {
        assert!(
            exchanges.iter().any(|l| l.contains(needle)),
            "no exchange with {needle:?}: {stderr}"
        );
    }
    assert!(
        exchanges
            .iter()
            .any(|l| l.contains("GET /stocks/") && l.contains("-> 200")),
        "{stderr}"
    );
}
