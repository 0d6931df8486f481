//! One keep-alive HTTP/1.1 connection to the front-end, owned by one simulated client.
//!
//! A pooled client would add a lock, a pool lookup and often a task hop to every request; at
//! tens of thousands of requests per second that overhead would be measured instead of the
//! service. So each client drives its own hyper connection inside its own task: the
//! connection future is polled together with the request (no spawned task), and a broken
//! connection is replaced by the next request.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::endpoint::{Endpoint, Tls};
use crate::history::{ClientHistory, Sent};

/// Largest reply body read, in bytes; the API's replies are far smaller, and the bound keeps a
/// misbehaving server from exhausting memory.
pub const REPLY_LEN_MAX: usize = 1024 * 1024;

/// Default time one request may take, connecting included.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(15);

/// First and longest pause before sending a request again on a new connection, after the old
/// one closed under it. Short: the new connection, not time, is what cures this failure; the
/// pause only keeps a server that closes every connection at once from being hammered.
const RESEND_PAUSE_FIRST: Duration = Duration::from_millis(1);
const RESEND_PAUSE_MAX: Duration = Duration::from_millis(50);

/// A reply: status and the whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Connecting failed.
    #[error("cannot connect to {addr}: {detail}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// The OS's words.
        detail: String,
    },
    /// The connection broke before a full reply arrived.
    #[error("connection failed: {0}")]
    Transport(String),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// What a connection's bytes travel over: TCP, or TLS on it for an `https://` front-end.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Driver = http1::Connection<TokioIo<Box<dyn Stream>>, Full<Bytes>>;

/// An open connection: the handle requests are sent on, and the future that does the I/O.
struct Live {
    sender: http1::SendRequest<Full<Bytes>>,
    /// Polled beside every request; it finishes only when the connection closes, and is then
    /// dropped at once (see `exchange`).
    driver: Option<Pin<Box<Driver>>>,
}

/// A client's connection, reopened on demand.
pub struct Connection {
    /// Resolved address of the front-end.
    addr: SocketAddr,
    /// `Host` header of every request.
    authority: HeaderValue,
    /// For an `https://` front-end.
    tls: Option<Tls>,
    /// Bound on each request, connecting included.
    timeout: Duration,
    /// The open connection; `None` before the first request and after a failure.
    live: Option<Live>,
    /// Connections opened so far.
    connects: u64,
    /// Where every exchange is recorded, when the run keeps a history.
    history: Option<ClientHistory>,
    /// When set, every exchange is printed to stderr under this label.
    print_label: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("open", &self.live.is_some())
            .field("connects", &self.connects)
            .finish_non_exhaustive()
    }
}

/// Which request a send is; the body of a POST is shared, not copied.
enum Outgoing<'a> {
    Get(&'a Uri),
    PostJson(&'a Uri, Bytes),
}

impl Connection {
    /// A connection to `frontend` at `addr` (resolved from it), opened by the first request.
    #[must_use]
    pub fn new(addr: SocketAddr, frontend: &Endpoint, timeout: Duration) -> Self {
        Self {
            addr,
            authority: frontend.authority().clone(),
            tls: frontend.tls().cloned(),
            timeout,
            live: None,
            connects: 0,
            history: None,
            print_label: None,
        }
    }

    /// Prints every exchange from now on to stderr, one line each, under `label`
    /// (`bazaar client --verbose`).
    pub fn print_exchanges(&mut self, label: String) {
        self.print_label = Some(label);
    }

    /// Records every exchange from now on (request, reply or error, and when) in `history`.
    pub fn record_into(&mut self, history: ClientHistory) {
        self.history = Some(history);
    }

    /// Times the connection had to be opened again after it broke or timed out.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }

    /// `GET path`.
    ///
    /// # Errors
    /// No full reply within the timeout; the connection is then reopened by the next request.
    pub async fn get(&mut self, path: &Uri) -> Result<Reply, RequestError> {
        self.send(Outgoing::Get(path)).await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// As [`Connection::get`].
    pub async fn post_json(&mut self, path: &Uri, body: Bytes) -> Result<Reply, RequestError> {
        self.send(Outgoing::PostJson(path, body)).await
    }

    async fn send(&mut self, outgoing: Outgoing<'_>) -> Result<Reply, RequestError> {
        let (uri, body) = match &outgoing {
            Outgoing::Get(uri) => (*uri, None),
            Outgoing::PostJson(uri, body) => (*uri, Some(body.clone())),
        };
        let invoked = Instant::now();
        let method = match &outgoing {
            Outgoing::Get(_) => "GET",
            Outgoing::PostJson(..) => "POST",
        };
        let result = self.send_timed(outgoing).await;
        if let Some(label) = &self.print_label {
            eprintln!(
                "{}",
                exchange_line(
                    label,
                    method,
                    uri,
                    body.as_deref(),
                    invoked.elapsed(),
                    &result
                )
            );
        }
        if let Some(history) = &self.history {
            let sent = match &body {
                None => Sent::Get(uri.path()),
                Some(body) => Sent::PostJson(uri.path(), body),
            };
            history.record(&sent, invoked, Instant::now(), &result);
        }
        result
    }

    async fn send_timed(&mut self, outgoing: Outgoing<'_>) -> Result<Reply, RequestError> {
        let timeout = self.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.exchange(outgoing, deadline)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.live = None;
                Err(e)
            }
            Err(_) => {
                // hyper closes a connection whose request was abandoned; start afresh.
                self.live = None;
                Err(RequestError::Timeout(timeout))
            }
        }
    }

    fn request(&self, outgoing: &Outgoing<'_>) -> Request<Full<Bytes>> {
        let (method, uri, body) = match outgoing {
            Outgoing::Get(uri) => (Method::GET, *uri, Bytes::new()),
            Outgoing::PostJson(uri, body) => (Method::POST, *uri, body.clone()),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.authority.clone());
        if method == Method::POST {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        request
    }

    async fn connect(&mut self) -> Result<(), RequestError> {
        let connect_error = |e: &dyn std::fmt::Display| RequestError::Connect {
            addr: self.addr,
            detail: e.to_string(),
        };
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| connect_error(&e))?;
        // Requests are small and latency-bound: never let Nagle hold one back.
        stream.set_nodelay(true).map_err(|e| connect_error(&e))?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(stream),
            Some(tls) => Box::new(tls.connect(stream).await.map_err(|e| connect_error(&e))?),
        };
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(&e))?;
        self.connects += 1;
        self.live = Some(Live {
            sender,
            driver: Some(Box::pin(driver)),
        });
        Ok(())
    }

    /// Sends one request and reads the whole reply, polling the connection meanwhile.
    async fn exchange(
        &mut self,
        outgoing: Outgoing<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, RequestError> {
        let mut request = self.request(&outgoing);
        let mut backoff =
            bazaar_api::retry::Backoff::new(RESEND_PAUSE_FIRST, RESEND_PAUSE_MAX, deadline);
        // A request that hyper hands back was never written, so it is safe to send again on a
        // fresh connection even when it is a POST. One retry, after a short pause and within
        // the request's deadline: a second refusal is a real fault.
        for attempt in 0..2 {
            if attempt > 0 && !backoff.wait().await {
                return Err(RequestError::Timeout(self.timeout));
            }
            if self.live.as_ref().is_none_or(|l| l.sender.is_closed()) {
                self.connect().await?;
            }
            let (outcome, closed) = {
                let Live { sender, driver } = self.live.as_mut().expect("connected just above");
                let exchange = async {
                    sender.ready().await.map_err(Unsent::Refused)?;
                    let response =
                        sender.try_send_request(request).await.map_err(|mut e| {
                            match e.take_message() {
                                Some(request) => {
                                    Unsent::Returned(Box::new(request), e.into_error())
                                }
                                None => Unsent::Failed(e.into_error().to_string()),
                            }
                        })?;
                    let status = response.status();
                    let body = Limited::new(response.into_body(), REPLY_LEN_MAX)
                        .collect()
                        .await
                        .map_err(|e| Unsent::Failed(format!("reading the reply body: {e}")))?
                        .to_bytes();
                    Ok::<_, Unsent>(Reply { status, body })
                };
                let mut exchange = std::pin::pin!(exchange);
                let driver_ended = {
                    let drive = async {
                        match driver.as_mut() {
                            Some(d) => {
                                let _ = d.as_mut().await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        outcome = &mut exchange => Err(outcome),
                        () = drive => Ok(()),
                    }
                };
                match driver_ended {
                    Err(outcome) => (outcome, false),
                    Ok(()) => {
                        // The connection ended (a server may close right after its reply).
                        // Dropping its driver fails whatever it had not sent, handing the
                        // request back; keeping it would leave a queued request waiting for
                        // the timeout. What it had read is handed over already.
                        *driver = None;
                        (exchange.await, true)
                    }
                }
            };
            if closed {
                self.live = None;
            }
            match outcome {
                Ok(reply) => return Ok(reply),
                Err(Unsent::Returned(returned, e)) if attempt == 0 => {
                    tracing::debug!(error = %e, "unsent on a closing connection; reconnecting");
                    self.live = None;
                    request = *returned;
                }
                Err(Unsent::Refused(e)) if attempt == 0 => {
                    tracing::debug!(error = %e, "connection closed while idle; reconnecting");
                    self.live = None;
                    // `ready` failed before the request was handed over, so it is rebuilt.
                    request = self.request(&outgoing);
                }
                Err(Unsent::Returned(_, e) | Unsent::Refused(e)) => {
                    return Err(RequestError::Transport(e.to_string()));
                }
                Err(Unsent::Failed(detail)) => return Err(RequestError::Transport(detail)),
            }
        }
        Err(RequestError::Transport(
            "the connection closed twice before the request was sent".into(),
        ))
    }
}

/// How an exchange ended without a reply.
enum Unsent {
    /// The connection was closed before the request was handed over.
    Refused(hyper::Error),
    /// hyper gave the request back unsent.
    Returned(Box<Request<Full<Bytes>>>, hyper::Error),
    /// The request may have been sent: not safe to repeat.
    Failed(String),
}

/// Longest body shown in a printed exchange.
const PRINTED_BODY_MAX: usize = 300;

/// One exchange as `bazaar client --verbose` prints it.
fn exchange_line(
    label: &str,
    method: &str,
    uri: &Uri,
    body: Option<&[u8]>,
    took: Duration,
    result: &Result<Reply, RequestError>,
) -> String {
    let shown = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(PRINTED_BODY_MAX)]);
        let cut = if bytes.len() > PRINTED_BODY_MAX {
            "…"
        } else {
            ""
        };
        format!("{}{cut}", text.replace(['\n', '\r'], " "))
    };
    let sent = body.map(|b| format!(" {}", shown(b))).unwrap_or_default();
    let got = match result {
        Ok(reply) => format!("{} {}", reply.status.as_u16(), shown(&reply.body)),
        Err(e) => format!("failed: {e}"),
    };
    format!(
        "{label}: {method} {uri}{sent} -> {got} ({:.2} ms)",
        took.as_secs_f64() * 1e3
    )
}
