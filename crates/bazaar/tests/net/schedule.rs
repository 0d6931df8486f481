//! A short seeded fault schedule in each replication mode, run as `bazaar netchaos` would be
//! by an operator (about a minute each). What must hold (SPEC.md section 6, issue 11):
//!
//! - raft: the history is linearizable under every fault, every acknowledged order is in
//!   every replica's log, verify passes;
//! - primary-backup: whatever the faults make it lose is never silent: when the history shows
//!   an anomaly or an acknowledged order is missing from a log, `bazaar verify` fails too.
//!
//! The seed is printed; `bazaar netchaos --seed S --replication M` repeats a run.

use std::process::Command;

use crate::lab_available;

/// Seed of both runs; the same seed gives the same schedule.
const SEED: &str = "11";

/// Length of each run: enough for one fault of each kind.
const DURATION: &str = "45s";

fn netchaos(replication: &str) -> (bool, serde_json::Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .args([
            "netchaos",
            "--replication",
            replication,
            "--seed",
            SEED,
            "--duration",
            DURATION,
            "--data-dir",
        ])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .output()
        .expect("bazaar runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("{stdout}");
    let report = std::fs::read_to_string(data.join("report.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("no report (seed {SEED}): {stdout}\n{stderr}"));
    if !output.status.success() {
        // Keep everything for whoever looks at the failure.
        let kept = dir.keep();
        println!("seed {SEED}: data kept in {}", kept.display());
    }
    (output.status.success(), report, stdout)
}

#[test]
fn raft_stays_linearizable_under_a_short_fault_schedule() {
    if !lab_available("raft_stays_linearizable_under_a_short_fault_schedule") {
        return;
    }
    let (ok, report, stdout) = netchaos("raft");
    assert!(
        report["schedule"].as_array().is_some_and(|s| s.len() >= 4),
        "a fault of each kind ran: {stdout}"
    );
    assert!(
        ok,
        "raft must come through every fault (seed {SEED}):\n{stdout}"
    );
}

#[test]
fn primary_backup_never_loses_anything_silently_under_a_short_fault_schedule() {
    if !lab_available("primary_backup_never_loses_anything_silently") {
        return;
    }
    let (ok, report, stdout) = netchaos("primary-backup");
    if ok {
        return;
    }
    let anomalies = report["history"]["anomalies"]
        .as_array()
        .map_or(0, Vec::len);
    let missing: u64 = ["missing", "different"]
        .iter()
        .filter_map(|k| report["acked"][k].as_object())
        .flat_map(|m| m.values().filter_map(serde_json::Value::as_u64))
        .sum();
    let verify_ok = report["verify_ok"].as_bool().unwrap_or(true);
    assert!(
        anomalies == 0 && missing == 0 || !verify_ok,
        "clients saw {anomalies} anomalies and {missing} acknowledged orders are not in every log, but verify passed (seed {SEED}):\n{stdout}"
    );
}
