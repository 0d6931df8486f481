//! The cluster credential and the TLS trust a process uses when it calls the other services of
//! its cluster.
//!
//! Every route of the catalog and the order replicas except `GET /health` and `GET /metrics`
//! requires `Authorization: Bearer <cluster key>`; the key is a shared secret that `bazaar up`
//! writes to `<data-dir>/cluster.key`. A [`ClientAuth`] carries the key (if any) and the
//! certificate authority to trust (if TLS is on); [`crate::client::Http`] and
//! [`crate::client::connect_websocket`] attach both to every call.

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Shortest cluster key accepted, in characters. `bazaar up` writes 64 hex digits (256 bits);
/// a hand-made key must still be long enough not to be guessed.
pub const CLUSTER_KEY_LEN_MIN: usize = 32;

/// Longest cluster key accepted: it travels in a header on every internal request.
pub const CLUSTER_KEY_LEN_MAX: usize = 256;

/// The environment variables of the services' key and TLS flags
/// (`bazaar_service::SecurityArgs`). `bazaar up` clears them for its children so that each
/// child's command line alone says how it runs.
pub const SECURITY_ENV: [&str; 6] = [
    "BAZAAR_CLUSTER_KEY_FILE",
    "BAZAAR_CLUSTER_KEY",
    "BAZAAR_INSECURE",
    "BAZAAR_TLS_CERT",
    "BAZAAR_TLS_KEY",
    "BAZAAR_TLS_CA",
];

/// The shared secret that authenticates one service of a cluster to another. Its `Debug` never
/// shows the secret, so it can sit in configs that are logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(String);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl ClusterKey {
    /// Checks a key as written in a flag, a variable or a file (surrounding whitespace, such as
    /// a file's final newline, is ignored).
    ///
    /// # Errors
    /// A sentence saying what is wrong, without repeating the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let key = text.trim();
        if key.len() < CLUSTER_KEY_LEN_MIN {
            return Err(format!(
                "the cluster key is {} characters long; it must have at least {CLUSTER_KEY_LEN_MIN}",
                key.len()
            ));
        }
        if key.len() > CLUSTER_KEY_LEN_MAX {
            return Err(format!(
                "the cluster key is {} characters long; the limit is {CLUSTER_KEY_LEN_MAX}",
                key.len()
            ));
        }
        // It is sent in a header: visible ASCII only, no spaces.
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the cluster key must be printable ASCII without spaces (bazaar up writes hex)"
                    .into(),
            );
        }
        Ok(Self(key.to_owned()))
    }

    /// A key made of `bytes` written in hex (for `bazaar up`, which draws 32 random bytes).
    ///
    /// # Errors
    /// Fewer bytes than a key needs.
    pub fn from_random_bytes(bytes: &[u8]) -> Result<Self, String> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self::parse(&hex)
    }

    /// The key as written to a key file.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value that carries this key.
    #[must_use]
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value presents this key. The comparison takes the
    /// same time wherever the first difference is, so response times do not leak the key.
    #[must_use]
    pub fn matches_authorization(&self, header: &[u8]) -> bool {
        let Some(presented) = header.strip_prefix(b"Bearer ") else {
            return false;
        };
        constant_time_eq(presented, self.0.as_bytes())
    }
}

/// Compares two byte strings in time that depends only on their lengths (the length of a key
/// is no secret: `bazaar up` always writes 64 characters).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// What a process presents and trusts when it calls the services of its cluster: the cluster
/// key (none with `--insecure`) and the TLS configuration (trusting the cluster's certificate
/// authority when one is given, and nothing otherwise).
#[derive(Clone)]
pub struct ClientAuth {
    key: Option<ClusterKey>,
    tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Default for ClientAuth {
    fn default() -> Self {
        Self::none()
    }
}

impl ClientAuth {
    /// No key and no trusted certificate authority: plain `http://` calls to public routes.
    #[must_use]
    pub fn none() -> Self {
        Self {
            key: None,
            tls: Arc::new(client_tls(rustls::RootCertStore::empty())),
        }
    }

    /// Presents `key` on every call.
    #[must_use]
    pub fn with_key(mut self, key: Option<ClusterKey>) -> Self {
        self.key = key;
        self
    }

    /// Trusts the certificate authorities in `pem` (and only them) for `https://` and `wss://`.
    ///
    /// # Errors
    /// The text holds no certificate, or one that cannot be used as a trust anchor.
    pub fn trusting_ca_pem(mut self, pem: &[u8]) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("holds no PEM certificate".into());
        }
        self.tls = Arc::new(client_tls(roots));
        Ok(self)
    }

    /// The key presented, if any.
    #[must_use]
    pub fn key(&self) -> Option<&ClusterKey> {
        self.key.as_ref()
    }

    /// The TLS client configuration (ring provider, HTTP/1.1 only).
    #[must_use]
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }
}

/// The one crypto provider of every TLS endpoint: ring builds quickly and offline.
#[must_use]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_tls(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn keys_are_long_printable_and_trimmed() {
        assert_eq!(
            ClusterKey::parse(&format!("  {KEY}\n")).map(|k| k.expose().to_owned()),
            Ok(KEY.to_owned())
        );
        assert!(ClusterKey::parse("short").is_err());
        assert!(ClusterKey::parse(&"k".repeat(CLUSTER_KEY_LEN_MAX + 1)).is_err());
        assert!(ClusterKey::parse(&format!("{KEY} {KEY}")).is_err());
        assert!(ClusterKey::from_random_bytes(&[7; 32]).is_ok());
        assert!(ClusterKey::from_random_bytes(&[7; 8]).is_err());
    }

    #[test]
    fn only_the_exact_bearer_key_matches() {
        let key = ClusterKey::parse(KEY).expect("valid");
        assert!(key.matches_authorization(key.bearer().as_bytes()));
        assert!(!key.matches_authorization(KEY.as_bytes()), "no scheme");
        assert!(!key.matches_authorization(format!("Basic {KEY}").as_bytes()));
        let mut wrong = key.bearer().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] ^= 1;
        assert!(!key.matches_authorization(&wrong));
        assert!(!key.matches_authorization(format!("{} ", key.bearer()).as_bytes()));
        assert!(!key.matches_authorization(b"Bearer "));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = ClusterKey::parse(KEY).expect("valid");
        let auth = ClientAuth::none().with_key(Some(key.clone()));
        assert!(!format!("{key:?} {auth:?}").contains("0123"));
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        assert!(ClientAuth::none().trusting_ca_pem(b"nothing here").is_err());
    }
}
