//! A TCP relay whose link can stall: it stands between a front-end and an order replica so a
//! test can model "the link to the leader stops carrying bytes" without closing anything.
//!
//! Several relays share one [`Link`]. While the link is paused, no relay forwards a byte in
//! either direction and every connection stays open: bytes already read wait in the relay,
//! the rest wait in the kernel's buffers (so the sender's writes back up as on a congested
//! path), a peer's close waits too, and a new connection is accepted (the kernel does that on
//! its own) but not connected onwards until the link resumes. On resume everything held flows
//! on, in order: late, never lost, reordered or cut. That is what a stalled path looks like to
//! both ends, unlike a refused or reset connection, which they would notice at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Bytes read per forwarding step.
const CHUNK_LEN: usize = 16 * 1024;

/// The pause switch and byte counter several relays share; cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    paused: Arc<watch::Sender<bool>>,
    forwarded: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

impl Link {
    /// A link that carries bytes.
    #[must_use]
    pub fn new() -> Self {
        Self {
            paused: Arc::new(watch::Sender::new(false)),
            forwarded: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Stops forwarding, in both directions, on every connection of every relay on this link.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Forwards again whatever was held, then everything that follows.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Bytes delivered so far, both directions, every relay.
    #[must_use]
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, every relay.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Returns once the link is not paused.
    async fn carrying(&self) {
        let mut watching = self.paused.subscribe();
        // The sender lives as long as `self`, so the wait ends only when the link carries.
        let _ = watching.wait_for(|paused| !*paused).await;
    }
}

/// One listening relay to one upstream address; stops (closing its connections) on drop.
#[derive(Debug)]
pub struct Relay {
    /// `http://127.0.0.1:port`: give this to a service instead of the upstream's URL.
    pub url: String,
    stop: CancellationToken,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `upstream`, a base URL
    /// such as `http://127.0.0.1:4321`, over `link`.
    pub async fn start(upstream: &str, link: &Link) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .expect("a bound listener has an address")
        );
        let stop = CancellationToken::new();
        let (link, accepting) = (link.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = accepting.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else {
                    continue;
                };
                link.connections.fetch_add(1, Ordering::SeqCst);
                let (link, upstream, stop) = (link.clone(), upstream.clone(), accepting.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = relay_connection(inbound, &upstream, &link) => {}
                    }
                });
            }
        });
        Self { url, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Carries one connection until both directions have ended.
async fn relay_connection(inbound: TcpStream, upstream: &str, link: &Link) {
    // A stalled path carries no handshake either: connect onwards only while it carries.
    link.carrying().await;
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        // The upstream is down: closing the inbound side is what a refused connection
        // looks like through a relay.
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::join!(
        pump(in_read, out_write, link),
        pump(out_read, in_write, link)
    );
}

/// Copies one direction, holding everything while the link is paused, and passes the end of
/// the stream on (also only while the link carries).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: &Link) {
    let mut chunk = vec![0_u8; CHUNK_LEN];
    loop {
        link.carrying().await;
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Read just before a pause: held until the link carries again.
        link.carrying().await;
        if to.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        link.forwarded.fetch_add(n as u64, Ordering::SeqCst);
    }
    link.carrying().await;
    let _ = to.shutdown().await;
}
