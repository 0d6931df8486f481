//! Issue 9: bounded resources on every listener. Half-open connections cannot starve a service
//! that runs with few file descriptors, and malformed or oversized requests get the envelope at
//! once.

use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::phase;
use crate::support::{Api, System, exe, wait_until};

/// Half-open connections the test opens: more than the service's descriptor limit.
const HALF_OPEN: usize = 300;

/// The service's open-file limit.
const FD_LIMIT: u32 = 128;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn half_open_connections_do_not_starve_a_service_with_few_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    phase!("an order replica limited to {FD_LIMIT} open files, with short client timeouts");
    let log = std::fs::File::create(dir.path().join("order.log")).expect("log");
    let script = format!(
        "ulimit -n {FD_LIMIT} && exec \"$0\" order --insecure --id 1 --listen {addr} --db {} \
         --header-timeout 1s --body-timeout 1s --idle-timeout 2s",
        dir.path().join("order-1.db").display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .arg(exe())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn");
    let replica = Killed(child);
    let api = Api::new(format!("http://{addr}"));
    wait_until("the replica serves", Duration::from_secs(30), || async {
        api.try_get("/health").await.is_some_and(|(s, _)| s == 200)
    })
    .await;

    phase!("{HALF_OPEN} connections: a third half a head, a third half a body, a third idle");
    let mut half_open = Vec::new();
    for i in 0..HALF_OPEN {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("the kernel queues it");
        let partial: &[u8] = match i % 3 {
            0 => b"GET /orders/0 HTTP/1.1\r\nhost: x\r\nx-slow: ",
            1 => b"POST /trades HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"request_id\":",
            _ => b"",
        };
        stream.write_all(partial).await.expect("write");
        half_open.push(stream);
    }

    phase!("normal requests are still served");
    let started = Instant::now();
    wait_until(
        "a normal request is answered",
        Duration::from_secs(20),
        || async {
            matches!(api.try_get("/health").await, Some((200, body)) if body["data"]["id"] == 1)
        },
    )
    .await;
    phase!("served after {:?}", started.elapsed());

    phase!("every half-open connection is closed by the timeouts");
    for (i, mut stream) in half_open.into_iter().enumerate() {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "connection {i} is still open");
    }
    for _ in 0..20 {
        let (status, _) = api.get("/health").await;
        assert_eq!(status, 200);
    }
    drop(replica);
}

/// Sends raw bytes to `addr` and reads the reply until the server closes (at most `within`).
fn raw(addr: &str, bytes: &[u8], within: Duration) -> String {
    use std::io::{Read, Write};
    let mut stream = StdTcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(within)).expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

fn enveloped(reply: &str) -> (u16, Value) {
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {reply:?}"));
    assert_eq!(json["error"]["code"], status, "{reply}");
    (status, json)
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_requests_get_the_envelope_at_once() {
    let system = System::start().await;
    let base = system.api().base;
    let addr = base.trim_start_matches("http://").to_owned();
    let within = Duration::from_secs(5);
    phase!("hyper's own refusals carry the envelope");
    assert_eq!(enveloped(&raw(&addr, b"BLAH\r\n\r\n", within)).0, 400);
    let huge_head = format!(
        "GET /stocks/FishCo HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "p".repeat(64 * 1024)
    );
    assert_eq!(enveloped(&raw(&addr, huge_head.as_bytes(), within)).0, 431);
    let long_target = format!(
        "GET /stocks/{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "s".repeat(10_000)
    );
    assert_eq!(
        enveloped(&raw(&addr, long_target.as_bytes(), within)).0,
        414
    );

    phase!("a declared body of a gigabyte gets 413 before anything is read");
    let started = Instant::now();
    let reply = raw(
        &addr,
        b"POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n",
        within,
    );
    assert_eq!(enveloped(&reply).0, 413);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );

    phase!("nothing was traded");
    assert_eq!(system.api().quantity("FishCo").await, 100);
}
