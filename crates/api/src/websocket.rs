//! Opening a WebSocket to a service of the cluster (the invalidation feed): the upgrade request
//! carries the cluster key like every other internal call, and `wss://` URLs go over TLS with
//! the cluster's certificate authority.

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};

use crate::auth::ClientAuth;
use crate::client::{ClientError, ClientResult};

/// A byte stream a WebSocket runs over: plain TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open WebSocket to a cluster service.
pub type ClusterWebSocket = WebSocketStream<Box<dyn Io>>;

/// Opens a WebSocket to `url` (`ws://host:port/path` or `wss://...`), presenting `auth`'s key.
///
/// # Errors
/// [`ClientError::Unreachable`] when the URL is unusable, the connection or the TLS handshake
/// fails, or the server refuses the upgrade (a 401 included, with its status in the detail).
pub async fn connect_websocket(url: &str, auth: &ClientAuth) -> ClientResult<ClusterWebSocket> {
    let unreachable = |detail: String| ClientError::Unreachable {
        url: url.to_owned(),
        detail,
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| unreachable(format!("not a WebSocket URL: {e}")))?;
    if let Some(key) = auth.key() {
        let mut value = HeaderValue::from_str(&key.bearer())
            .map_err(|_| unreachable("the cluster key cannot be sent in a header".into()))?;
        value.set_sensitive(true);
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let uri = request.uri().clone();
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => {
            return Err(unreachable(
                "the URL must start with ws:// or wss://".into(),
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| unreachable("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    // Invalidations are tiny and latency-bound.
    tcp.set_nodelay(true)
        .map_err(|e| unreachable(e.to_string()))?;
    let stream: Box<dyn Io> = if secure {
        let name = ServerName::try_from(host.clone())
            .map_err(|e| unreachable(format!("{host:?} is not a TLS server name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(auth.tls())
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS handshake failed: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (socket, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(socket)
}
