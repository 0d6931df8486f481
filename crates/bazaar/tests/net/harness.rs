//! The lab does what it claims: every name it made is gone after it (also after a panic), a
//! cut blocks traffic until healed, a one-way rule blocks one direction only, a paused service
//! answers nothing until continued, and the sweep removes only dead runs' namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bazaar_cluster::{ClusterSpec, Role};
use bazaar_netlab::{Lab, Services, shell};

use crate::lab_available;

const PORT: u16 = 7000;
const PATIENCE: Duration = Duration::from_millis(400);

fn namespaces_of(lab_prefix: &str) -> Vec<String> {
    shell::namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(lab_prefix))
        .collect()
}

/// A TCP server in `host` that answers every connection with one byte, until dropped.
struct Echo {
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start(lab: &Lab, host: &str) -> Self {
        let host = lab.host(host).expect("host").clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&stop);
        bazaar_netlab::spawn_in(&host.namespace, move || {
            let listener = TcpListener::bind((host.addr, PORT)).expect("bind in host");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("test waits");
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(b"!");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
        .expect("thread in host");
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server bound");
        Self { stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether a TCP connection from `from` to `to`'s echo server gets its byte.
fn tcp_reaches(lab: &Lab, from: &str, to: &str) -> bool {
    let target = SocketAddr::from((lab.host(to).expect("host").addr, PORT));
    let namespace = lab.host(from).expect("host").namespace.clone();
    bazaar_netlab::spawn_in(&namespace, move || {
        let Ok(mut stream) = TcpStream::connect_timeout(&target, PATIENCE) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(PATIENCE));
        let mut byte = [0_u8; 1];
        stream.read_exact(&mut byte).is_ok()
    })
    .expect("thread")
    .join()
    .expect("no panic")
    .expect("entered the host")
}

/// Whether a UDP datagram from `from` arrives at `to` (no reply needed, so one direction is
/// tested alone).
fn udp_arrives(lab: &Lab, from: &str, to: &str) -> bool {
    let (from, to) = (
        lab.host(from).expect("host").clone(),
        lab.host(to).expect("host").clone(),
    );
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = bazaar_netlab::spawn_in(&to.namespace, move || {
        let socket = UdpSocket::bind((to.addr, PORT)).expect("bind");
        socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
        ready_tx.send(()).expect("test waits");
        let mut buf = [0_u8; 16];
        socket.recv(&mut buf).is_ok()
    })
    .expect("thread");
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("bound");
    let target = SocketAddr::from((to.addr, PORT));
    bazaar_netlab::spawn_in(&from.namespace, move || {
        let socket = UdpSocket::bind((from.addr, 0)).expect("bind");
        socket.send_to(b"hello", target).expect("send");
    })
    .expect("thread")
    .join()
    .expect("no panic")
    .expect("entered");
    receiver.join().expect("no panic").expect("entered")
}

#[test]
fn a_lab_leaves_nothing_behind_also_after_a_panic() {
    if !lab_available("a_lab_leaves_nothing_behind_also_after_a_panic") {
        return;
    }
    let lab = Lab::new(&["a", "b"]).expect("lab");
    let prefix = lab.run().to_string();
    assert_eq!(namespaces_of(&prefix).len(), 3, "switch and two hosts");
    drop(lab);
    assert!(
        namespaces_of(&prefix).is_empty(),
        "{:?}",
        namespaces_of(&prefix)
    );

    // A failing test unwinds through the lab, with a process still running inside a host.
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let lab = Lab::new(&["a", "b"]).expect("lab");
        let sleeper = std::process::Command::new(shell::find_tool("ip").expect("ip"))
            .args([
                "netns",
                "exec",
                &lab.host("a").expect("a").namespace,
                "sleep",
                "600",
            ])
            .spawn()
            .expect("sleep in host a");
        tx.send((lab.run().to_string(), sleeper))
            .expect("test waits");
        panic!("planted failure");
    });
    assert!(outcome.is_err());
    let (prefix, mut sleeper) = rx.recv().expect("sent before the panic");
    assert!(
        namespaces_of(&prefix).is_empty(),
        "{:?}",
        namespaces_of(&prefix)
    );
    let status = sleeper.try_wait().expect("wait");
    assert!(
        status.is_some(),
        "the process inside the lab was killed with it"
    );
}

#[test]
fn a_cut_blocks_traffic_until_healed() {
    if !lab_available("a_cut_blocks_traffic_until_healed") {
        return;
    }
    let mut lab = Lab::new(&["a", "b", "c"]).expect("lab");
    let _echo_a = Echo::start(&lab, "a");
    let _echo_b = Echo::start(&lab, "b");
    assert!(tcp_reaches(&lab, "b", "a"), "healthy lab: b reaches a");
    assert!(tcp_reaches(&lab, "c", "b"), "healthy lab: c reaches b");
    lab.cut("a").expect("cut");
    assert!(!tcp_reaches(&lab, "b", "a"), "a is cut off");
    assert!(!tcp_reaches(&lab, "c", "a"), "a is cut off");
    assert!(tcp_reaches(&lab, "c", "b"), "others still talk");
    lab.heal().expect("heal");
    assert!(tcp_reaches(&lab, "b", "a"), "healed");
}

#[test]
fn a_split_separates_two_sides_and_spares_the_rest() {
    if !lab_available("a_split_separates_two_sides_and_spares_the_rest") {
        return;
    }
    let mut lab = Lab::new(&["a", "b", "c", "d"]).expect("lab");
    let _echo_a = Echo::start(&lab, "a");
    let _echo_c = Echo::start(&lab, "c");
    lab.split(&["a", "b"], &["c"]).expect("split");
    assert!(tcp_reaches(&lab, "b", "a"), "same side");
    assert!(!tcp_reaches(&lab, "b", "c"), "across");
    assert!(!tcp_reaches(&lab, "c", "a"), "across");
    assert!(tcp_reaches(&lab, "d", "a"), "d is on neither side");
    assert!(tcp_reaches(&lab, "d", "c"), "d is on neither side");
}

#[test]
fn a_one_way_rule_blocks_one_direction_only() {
    if !lab_available("a_one_way_rule_blocks_one_direction_only") {
        return;
    }
    let mut lab = Lab::new(&["a", "b"]).expect("lab");
    assert!(udp_arrives(&lab, "a", "b"));
    assert!(udp_arrives(&lab, "b", "a"));
    lab.block("a", "b").expect("block");
    assert!(!udp_arrives(&lab, "a", "b"), "a can no longer reach b");
    assert!(udp_arrives(&lab, "b", "a"), "b still reaches a");
    assert_eq!(lab.blocked(), [("a".to_owned(), "b".to_owned())]);
    lab.heal().expect("heal");
    assert!(udp_arrives(&lab, "a", "b"));
}

/// `GET /health` from `from` to `url`'s host: the status line, or `None` without a reply.
fn health(lab: &Lab, from: &str, addr: SocketAddr) -> Option<String> {
    let namespace = lab.host(from).expect("host").namespace.clone();
    bazaar_netlab::spawn_in(&namespace, move || {
        let mut stream = TcpStream::connect_timeout(&addr, PATIENCE).ok()?;
        stream.set_read_timeout(Some(PATIENCE)).ok()?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply.lines().next().map(str::to_owned)
    })
    .expect("thread")
    .join()
    .expect("no panic")
    .expect("entered")
}

#[test]
fn a_paused_service_answers_nothing_until_continued_and_a_killed_one_restarts() {
    if !lab_available("a_paused_service_answers_nothing_until_continued") {
        return;
    }
    let lab = Lab::new(&["catalog-1", "client"]).expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = ClusterSpec::new(
        env!("CARGO_BIN_EXE_bazaar").into(),
        dir.path().to_owned(),
        8080,
    );
    spec.hosts.insert(
        "catalog-1".into(),
        std::net::IpAddr::V4(lab.host("catalog-1").expect("host").addr),
    );
    let catalog = spec
        .services()
        .expect("services")
        .into_iter()
        .find(|s| s.role == Role::Catalog)
        .expect("a catalog");
    let addr: SocketAddr = catalog
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let mut services = Services::new(dir.path().join("logs"), Vec::new());
    services
        .start(catalog, lab.host("catalog-1").expect("host"))
        .expect("start");
    let serving = |lab: &Lab| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if health(lab, "client", addr).is_some_and(|l| l.contains("200")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(
        serving(&lab),
        "catalog serves in its host: {}",
        services.log_tail("catalog-1", 20)
    );
    services.pause("catalog-1").expect("pause");
    assert_eq!(
        health(&lab, "client", addr),
        None,
        "a paused catalog is silent"
    );
    services.resume("catalog-1").expect("resume");
    assert!(serving(&lab), "it answers again once continued");

    let pid = services.pid("catalog-1").expect("pid");
    services.kill("catalog-1").expect("kill");
    assert_eq!(
        health(&lab, "client", addr),
        None,
        "a killed catalog is gone"
    );
    let new_pid = services.restart("catalog-1").expect("restart");
    assert_ne!(pid, new_pid);
    assert!(
        serving(&lab),
        "restarted with the same command, it serves again"
    );
    services.stop_all(Duration::from_secs(10));
}

#[test]
fn the_sweep_removes_dead_runs_only() {
    if !lab_available("the_sweep_removes_dead_runs_only") {
        return;
    }
    let live = Lab::new(&["a"]).expect("lab");
    // No process has this pid (it is above the kernel's pid limit).
    let stale = "bzlab-999999999-abcdef-a";
    let foreign = format!("notours-{}", std::process::id());
    shell::ip(&["netns", "add", stale]).expect("stale namespace");
    shell::ip(&["netns", "add", &foreign]).expect("foreign namespace");
    let removed = bazaar_netlab::sweep_stale().expect("sweep");
    let left = shell::namespaces().expect("list");
    let _ = shell::ip(&["netns", "del", &foreign]);
    assert!(removed.contains(&stale.to_owned()), "{removed:?}");
    assert!(!left.contains(&stale.to_owned()));
    assert!(
        left.contains(&foreign),
        "a namespace without our prefix is not touched"
    );
    for namespace in live.namespaces() {
        assert!(
            left.contains(namespace),
            "a live run is not touched: {namespace}"
        );
    }
}
