//! The front-end a load run talks to: a parsed `http://host:port` (or `https://`) base URL.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bazaar_api::auth::ClientAuth;
use hyper::Uri;
use hyper::header::HeaderValue;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::error::{Error, Result};

/// Port used when the URL names none.
const HTTP_PORT_DEFAULT: u16 = 80;
const HTTPS_PORT_DEFAULT: u16 = 443;

/// TLS towards an `https://` front-end: whom to trust, and the name its certificate must carry.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Runs the TLS handshake on a connected socket.
    ///
    /// # Errors
    /// The handshake fails, for example because the certificate is not trusted.
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

/// A front-end base URL, checked once so the hot path never parses.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or address, as written.
    host: String,
    /// TCP port.
    port: u16,
    /// `host:port`, sent as the `Host` header of every request.
    authority: HeaderValue,
    /// For `https://`: TLS on every connection.
    tls: Option<Tls>,
}

impl Endpoint {
    /// Parses a base URL such as `http://127.0.0.1:8080` (a trailing `/` is fine). An
    /// `https://` URL trusts no certificate authority until [`Self::trusting`] names one.
    ///
    /// # Errors
    /// [`Error::Config`] naming the URL when it is not `http` or `https` with a host and no
    /// path, query or credentials.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::Config(format!("--frontend {url:?} {why}"));
        let uri: Uri = url
            .parse()
            .map_err(|_| bad("is not a URL like http://127.0.0.1:8080"))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(bad(&format!(
                    "uses {other}; only http:// and https:// are supported"
                )));
            }
            None => return Err(bad("has no scheme; write it like http://127.0.0.1:8080")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("must not contain credentials"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("must be a base URL without a path or query"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = authority.port_u16().unwrap_or(if secure {
            HTTPS_PORT_DEFAULT
        } else {
            HTTP_PORT_DEFAULT
        });
        let tls = if secure {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| bad("has a host that cannot name a TLS certificate"))?;
            Some(Tls {
                connector: TlsConnector::from(ClientAuth::none().tls()),
                name,
            })
        } else {
            None
        };
        let authority = HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad("has a host that cannot be sent in a Host header"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
            authority,
            tls,
        })
    }

    /// Trusts `auth`'s certificate authority for an `https://` front-end (no effect on
    /// `http://`).
    #[must_use]
    pub fn trusting(mut self, auth: &ClientAuth) -> Self {
        if let Some(tls) = &mut self.tls {
            tls.connector = TlsConnector::from(Arc::clone(&auth.tls()));
        }
        self
    }

    /// TLS towards the front-end, for `https://`.
    #[must_use]
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The `Host` header value.
    #[must_use]
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// Resolves the host to one socket address, preferring IPv4 (the services listen on
    /// 127.0.0.1).
    ///
    /// # Errors
    /// [`Error::Unreachable`] when the name does not resolve.
    pub async fn resolve(&self) -> Result<SocketAddr> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| Error::Unreachable {
                url: self.to_string(),
                detail: format!("cannot resolve {}: {e}", self.host),
            })?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| Error::Unreachable {
                url: self.to_string(),
                detail: format!("{} resolves to no address", self.host),
            })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The authority was checked to be printable ASCII when parsed.
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority.to_str().unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse() {
        let e = Endpoint::parse("http://127.0.0.1:8080/").expect("valid");
        assert_eq!(e.port, 8080);
        assert_eq!(e.to_string(), "http://127.0.0.1:8080");
        let e = Endpoint::parse("http://localhost").expect("valid");
        assert_eq!((e.host.as_str(), e.port), ("localhost", 80));
        let e = Endpoint::parse("http://[::1]:9000").expect("valid");
        assert_eq!(e.host, "::1");
        let e = Endpoint::parse("https://127.0.0.1").expect("valid");
        assert_eq!((e.port, e.tls().is_some()), (443, true));
        assert_eq!(e.to_string(), "https://127.0.0.1");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (url, needle) in [
            ("127.0.0.1:8080", "scheme"),
            ("ftp://127.0.0.1:8080", "only http:// and https://"),
            ("http://127.0.0.1:8080/stocks", "path"),
            ("http://u:p@127.0.0.1:8080", "credentials"),
            ("not a url", "not a URL"),
            ("", "not a URL"),
        ] {
            let err = Endpoint::parse(url).expect_err(url).to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
