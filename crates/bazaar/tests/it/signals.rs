//! Issue 9: `bazaar up` and every service stop on SIGINT or SIGTERM whatever happened to their
//! output (`bazaar up 2>&1 | head -5`: the pipe breaks under them), and services do not
//! outlive an `up` that was killed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bazaar_cluster::ClusterFile;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::phase;
use crate::support::exe;

/// Generous: `up` gives each role 10 s after SIGTERM before it kills it.
const STOP_DEADLINE: Duration = Duration::from_secs(40);

fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

/// Kills whatever is still running when a test fails half-way.
struct Reaper {
    up: Child,
    data: std::path::PathBuf,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.up.kill();
        let _ = self.up.wait();
        if let Ok(file) = ClusterFile::read(&self.data.join("cluster.json")) {
            for service in file.services {
                if let Ok(pid) = i32::try_from(service.pid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

/// Starts `bazaar up` with stdout and stderr on a pipe, reads `lines` lines like `head`, then
/// closes the pipe, and waits until `up` has written `cluster.json`.
fn up_then_break_its_pipe(dir: &Path, lines: usize) -> (Reaper, Vec<u32>) {
    let data = dir.join("data");
    let (reader, writer) = std::io::pipe().expect("pipe");
    let up = Command::new(exe())
        .args(["up", "--base-port", "0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("pipe"))
        .stderr(writer)
        .spawn()
        .expect("spawn up");
    let reaper = Reaper {
        up,
        data: data.clone(),
    };
    let mut head = BufReader::new(reader);
    for _ in 0..lines {
        let mut line = String::new();
        assert!(
            head.read_line(&mut line).expect("read") > 0,
            "up ended early"
        );
    }
    drop(head);
    phase!("the pipe is closed after {lines} lines; up goes on starting the system");
    let deadline = Instant::now() + Duration::from_secs(60);
    let file = loop {
        if let Ok(file) = ClusterFile::read(&data.join("cluster.json")) {
            break file;
        }
        assert!(Instant::now() < deadline, "up never wrote cluster.json");
        std::thread::sleep(Duration::from_millis(50));
    };
    let pids: Vec<u32> = file.services.iter().map(|s| s.pid).collect();
    assert_eq!(pids.len(), 6, "two catalogs, three replicas, one front-end");
    (reaper, pids)
}

fn wait_all_gone(what: &str, pids: &[u32]) {
    let deadline = Instant::now() + STOP_DEADLINE;
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "{what}: still running after {STOP_DEADLINE:?}: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_with_a_broken_output_pipe_stops_on_sigint_and_sigterm() {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let dir = tempfile::tempdir().expect("tempdir");
        phase!("bazaar up 2>&1 | head -5, then {signal}");
        let (mut reaper, services) = up_then_break_its_pipe(dir.path(), 5);
        let up = reaper.up.id();
        assert!(services.iter().all(|pid| alive(*pid)));
        kill(Pid::from_raw(i32::try_from(up).expect("pid")), signal).expect("signal up");
        let deadline = Instant::now() + STOP_DEADLINE;
        let status = loop {
            if let Some(status) = reaper.up.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "up did not stop within {STOP_DEADLINE:?} of {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "a clean stop: {status}");
        wait_all_gone("every service up started", &services);
    }
}

#[test]
fn services_stop_by_themselves_when_up_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut reaper, services) = up_then_break_its_pipe(dir.path(), 1);
    phase!("SIGKILL up: nothing can stop its children for it");
    reaper.up.kill().expect("kill up");
    let _ = reaper.up.wait();
    wait_all_gone("the orphaned services", &services);
}
