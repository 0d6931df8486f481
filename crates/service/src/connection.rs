//! One accepted connection: optional TLS, HTTP/1.1 with keep-alive and upgrades (the feed's
//! WebSocket), and the timers that keep a slow or silent client from holding it for long.
//!
//! Three clocks bound a connection:
//! - idle: hyper's header-read timer, which in hyper 1 starts when the connection waits for a
//!   request head (after accept, or after the previous response) and is set to the idle
//!   timeout;
//! - head: from the first byte of a request head to its dispatch, watched here through the
//!   bytes [`ConnIo`] reads (the TLS handshake has the same bound);
//! - body: from dispatch to the end of the request body ([`crate::admission`]).
//!
//! A listener at its connection cap makes room for a new client by closing its longest-idle
//! keep-alive connection ([`Registry::evict_longest_idle`]): idle connections are the cheapest
//! for their clients to open again, and otherwise a crowd of them would keep new clients out
//! for a whole idle timeout.
//!
//! hyper answers a request it cannot parse (400, 414, 431) itself, with an empty body.
//! [`ConnIo`] replaces those replies with the JSON envelope every other error has: hyper writes
//! them while a request head is arriving and nothing has been dispatched, and a service's own
//! error replies always have a body, so a 400/414/431 with `content-length: 0` written then
//! is one of hyper's.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::limits::{HEAD_LEN_MAX, Limits};

/// What every connection of one listener shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub router: Router,
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub in_flight: Arc<Semaphore>,
    pub shed_logged_s: Arc<AtomicU64>,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
}

/// The open HTTP connections of one listener (not those still in a TLS handshake, nor those
/// upgraded to a WebSocket).
#[derive(Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Registered>>,
}

struct Registered {
    phase: Arc<Phase>,
    evict: Arc<Notify>,
}

/// Removes a connection from its registry when it ends.
struct Membership {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Registered>> {
        // The map stays consistent whatever a panicking holder did: entries are inserted and
        // removed whole.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn join(self: &Arc<Self>, phase: &Arc<Phase>) -> (Membership, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        self.lock().insert(
            id,
            Registered {
                phase: Arc::clone(phase),
                evict: Arc::clone(&evict),
            },
        );
        (
            Membership {
                registry: Arc::clone(self),
                id,
            },
            evict,
        )
    }

    /// Asks the connection that has been idle longest (no request in progress, no head
    /// arriving) to close. False when no connection is idle.
    pub(crate) fn evict_longest_idle(&self) -> bool {
        let open = self.lock();
        let victim = open
            .values()
            .filter_map(|c| c.phase.idle_since().map(|since| (since, c)))
            .min_by_key(|(since, _)| *since);
        match victim {
            Some((_, connection)) => {
                connection.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves one accepted connection until it closes, times out, or shutdown has drained it.
/// `permit` is its place under the connection cap, held as long as the socket is open
/// (through a WebSocket upgrade too).
pub(crate) async fn serve(stream: TcpStream, permit: OwnedSemaphorePermit, shared: Shared) {
    // Requests and replies are small and latency-bound.
    let _ = stream.set_nodelay(true);
    match &shared.tls {
        None => serve_http(stream, permit, &shared).await,
        Some(acceptor) => {
            match tokio::time::timeout(shared.limits.header_timeout, acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => serve_http(tls, permit, &shared).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<S>(stream: S, permit: OwnedSemaphorePermit, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(Phase::new());
    let (_membership, evict) = shared.registry.join(&phase);
    let io = ConnIo {
        inner: stream,
        phase: Arc::clone(&phase),
        replacement: None,
        _permit: permit,
    };
    let admission = Admission::new(
        shared.router.clone(),
        shared.limits,
        Arc::clone(&shared.in_flight),
        Arc::clone(&shared.shed_logged_s),
        Arc::clone(&phase),
    );
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.idle_timeout)
        .max_buf_size(HEAD_LEN_MAX)
        // One flat buffer per write, so hyper's own error replies arrive whole (see ConnIo).
        .writev(false)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), admission)
        .with_upgrades();
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = shared.shutdown.cancelled(), if !draining => {
                // Finish the request in progress, then close; idle connections close now.
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
            () = evict.notified(), if !draining => {
                tracing::debug!("closing an idle connection to make room for a new client");
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
            () = head_overdue(&phase, shared.limits.header_timeout) => {
                tracing::debug!("request head not complete in time; closing the connection");
                return;
            }
        }
    }
}

/// Resolves when a request head has been arriving for longer than `timeout`.
async fn head_overdue(phase: &Phase, timeout: Duration) {
    loop {
        let now = Instant::now();
        match phase.head_started() {
            Some(started) if now >= started + timeout => return,
            Some(started) => tokio::time::sleep_until(started + timeout).await,
            None => tokio::time::sleep(timeout).await,
        }
    }
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// Where a connection is in its request cycle, shared by the I/O (which sees bytes arrive) and
/// [`Admission`] (which sees requests dispatched and answered).
pub(crate) struct Phase {
    state: AtomicU8,
    /// When the current head started, in microseconds after `origin`.
    head_started_us: AtomicU64,
    /// When the connection last became idle (accepted, or answered), likewise.
    idle_since_us: AtomicU64,
    origin: Instant,
}

impl Phase {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            head_started_us: AtomicU64::new(0),
            idle_since_us: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: if no request was in progress, a head starts now.
    fn bytes_read(&self) {
        if self.state.load(Ordering::Relaxed) == IDLE {
            self.head_started_us.store(self.now_us(), Ordering::Relaxed);
            self.state.store(HEAD, Ordering::Release);
        }
    }

    /// A request was dispatched to the router.
    pub(crate) fn dispatched(&self) {
        self.state.store(BUSY, Ordering::Release);
    }

    /// Its response head is ready.
    pub(crate) fn answered(&self) {
        self.idle_since_us.store(self.now_us(), Ordering::Relaxed);
        self.state.store(IDLE, Ordering::Release);
    }

    /// Since when the connection has been idle, if it is.
    fn idle_since(&self) -> Option<Instant> {
        (self.state.load(Ordering::Acquire) == IDLE).then(|| {
            self.origin + Duration::from_micros(self.idle_since_us.load(Ordering::Relaxed))
        })
    }

    /// A request head has started arriving and has not been dispatched: the only time hyper
    /// writes a reply of its own.
    fn is_reading_head(&self) -> bool {
        self.state.load(Ordering::Acquire) == HEAD
    }

    fn head_started(&self) -> Option<Instant> {
        (self.state.load(Ordering::Acquire) == HEAD).then(|| {
            self.origin + Duration::from_micros(self.head_started_us.load(Ordering::Relaxed))
        })
    }
}

/// The connection's byte stream as hyper sees it: it notes when request bytes arrive, holds
/// the connection's place under the cap, and envelopes hyper's own error replies.
struct ConnIo<S> {
    inner: S,
    phase: Arc<Phase>,
    /// An enveloped reply being written in place of one of hyper's, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacement.is_none()
            && self.phase.is_reading_head()
            && let Some(envelope) = enveloped_parse_error(buf)
        {
            self.replacement = Some((envelope, 0));
        }
        let this = &mut *self;
        let Some((bytes, written)) = &mut this.replacement else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *written < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        // hyper's reply counts as written; it closes the connection after it.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// If `head` is one of hyper's automatic replies to a request it could not parse, the same
/// reply with the JSON envelope.
fn enveloped_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    use bazaar_api::ErrorKind;
    let (kind, message) = if head.starts_with(b"HTTP/1.1 400 ") {
        (
            ErrorKind::BadRequest,
            "the request is not valid HTTP/1.1".to_owned(),
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        (
            ErrorKind::UriTooLong,
            "the request target is too long".to_owned(),
        )
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (
            ErrorKind::HeadersTooLarge,
            format!("the request head is larger than the limit of {HEAD_LEN_MAX} bytes"),
        )
    } else {
        return None;
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let fields = head[..end].to_ascii_lowercase();
    if !fields
        .windows(b"\r\ncontent-length: 0".len() + 2)
        .any(|w| w == b"\r\ncontent-length: 0\r\n")
        && !fields.ends_with(b"\r\ncontent-length: 0")
    {
        return None;
    }
    let status = kind.status();
    let body = serde_json::to_vec(&bazaar_api::ErrorBody::new(kind, message))
        .expect("an error body always serialises");
    let reason = match kind {
        ErrorKind::BadRequest => "Bad Request",
        ErrorKind::UriTooLong => "URI Too Long",
        _ => "Request Header Fields Too Large",
    };
    let mut reply = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_parse_error_replies_are_rewritten() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let reply = enveloped_parse_error(hyper_400).expect("rewritten");
        let text = String::from_utf8(reply).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["error"]["code"], 400);
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(enveloped_parse_error(hyper_431).is_some());
        for not_hyper in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0",
            b"partial",
        ] {
            assert!(enveloped_parse_error(not_hyper).is_none());
        }
    }
}
