//! Who may call a service: the cluster key on every route of a back-end service except
//! `GET /health` and `GET /metrics`, and nothing on the front-end's public API.
//!
//! The check is a layer that [`crate::finish_router`] puts around every route, so a route added
//! later is covered by construction. It runs before any handler and before the body is read: a
//! request without the key changes nothing and reads nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bazaar_api::ErrorKind;
use bazaar_api::auth::{ClientAuth, ClusterKey};

use crate::error::ApiError;

/// How a process learns the cluster key and the TLS material. Every service flattens this into
/// its flags (each also an environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// File holding the cluster key that authenticates internal calls (`bazaar up` writes
    /// `<data-dir>/cluster.key`).
    #[arg(long, env = "BAZAAR_CLUSTER_KEY_FILE", value_name = "PATH")]
    pub cluster_key_file: Option<PathBuf>,

    /// The cluster key itself (prefer --cluster-key-file: a command line is visible to other
    /// users of the machine).
    #[arg(
        long,
        env = "BAZAAR_CLUSTER_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub cluster_key: Option<String>,

    /// Run without a cluster key: internal routes accept anyone. Only for a private network
    /// that nobody else can reach.
    #[arg(long, env = "BAZAAR_INSECURE")]
    pub insecure: bool,

    /// Serve TLS with this certificate chain (PEM); needs --tls-key. URLs become https://.
    #[arg(
        long,
        env = "BAZAAR_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "BAZAAR_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Trust this certificate authority (PEM) for https:// and wss:// calls to other services.
    #[arg(long, env = "BAZAAR_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
}

/// The resolved security settings of a process.
#[derive(Debug, Clone)]
pub struct Security {
    /// The cluster key; `None` only with `--insecure`.
    pub key: Option<ClusterKey>,
    /// The listener's TLS configuration, when it serves TLS.
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    /// What calls to other services present and trust.
    pub client: ClientAuth,
}

impl SecurityArgs {
    /// Arguments of a process that runs without a key and without TLS (`--insecure`), for
    /// in-process tests.
    #[must_use]
    pub fn insecure() -> Self {
        Self {
            insecure: true,
            ..Self::default()
        }
    }

    /// Arguments that present `key_file`.
    #[must_use]
    pub fn with_key_file(key_file: PathBuf) -> Self {
        Self {
            cluster_key_file: Some(key_file),
            ..Self::default()
        }
    }

    /// Reads the key and the TLS files.
    ///
    /// # Errors
    /// One line naming the flag and what is wrong: no key without `--insecure`, a key given
    /// twice or together with `--insecure`, an unreadable or malformed file.
    pub fn resolve(&self) -> Result<Security, String> {
        let key = match (&self.cluster_key_file, &self.cluster_key, self.insecure) {
            (Some(_), Some(_), _) => {
                return Err("give either --cluster-key-file or --cluster-key, not both".into());
            }
            (Some(_), None, true) | (None, Some(_), true) => {
                return Err(
                    "--insecure turns the cluster key off; do not give a key with it".into(),
                );
            }
            (Some(path), None, false) => Some(read_key_file(path)?),
            (None, Some(text), false) => {
                Some(ClusterKey::parse(text).map_err(|e| format!("--cluster-key: {e}"))?)
            }
            (None, None, true) => None,
            (None, None, false) => {
                return Err(
                    "no cluster key: give --cluster-key-file PATH (bazaar up writes \
                     <data-dir>/cluster.key) or --cluster-key KEY, or --insecure to run \
                     without one on a private network"
                        .into(),
                );
            }
        };
        let server_tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        let mut client = ClientAuth::none().with_key(key.clone());
        if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            client = client
                .trusting_ca_pem(&pem)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        Ok(Security {
            key,
            server_tls,
            client,
        })
    }
}

fn read_key_file(path: &Path) -> Result<ClusterKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--cluster-key-file {}: {e}", path.display()))?;
    warn_if_readable_by_others(path);
    ClusterKey::parse(&text).map_err(|e| format!("--cluster-key-file {}: {e}", path.display()))
}

/// A key file others can read is a key others can use; say so (but start: the operator may
/// have a reason, such as a container volume).
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the cluster key file is readable by other users; chmod 600 it"
        );
    }
}

/// Which requests a router lets through.
#[derive(Debug, Clone)]
pub enum Access {
    /// Everything: the front-end's public API.
    Public,
    /// Only requests that present the cluster key, except `GET /health` and `GET /metrics`: a
    /// back-end service.
    ClusterKey(ClusterKey),
    /// Everything, on a back-end service started with `--insecure`.
    Insecure,
}

impl Access {
    /// The access of a back-end service with `security`: the cluster key, or open with
    /// `--insecure`.
    #[must_use]
    pub fn backend(security: &Security) -> Self {
        security
            .key
            .clone()
            .map_or(Self::Insecure, Self::ClusterKey)
    }
}

/// Routes anyone may call on a back-end service: liveness and metrics carry no secrets, and
/// orchestrators and dashboards poll them without the key.
fn is_open_route(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && matches!(path, "/health" | "/metrics")
}

/// The middleware: 401 in the envelope unless the request presents the key.
pub(crate) async fn check(State(access): State<Access>, request: Request, next: Next) -> Response {
    let Access::ClusterKey(key) = &access else {
        return next.run(request).await;
    };
    if is_open_route(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request.headers().get(header::AUTHORIZATION);
    if presented.is_some_and(|value| key.matches_authorization(value.as_bytes())) {
        return next.run(request).await;
    }
    let message = if presented.is_some() {
        "the cluster key presented is wrong"
    } else {
        "this route is internal: present the cluster key as Authorization: Bearer <key>"
    };
    let mut response = ApiError::new(ErrorKind::Unauthorized, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"bazaar-cluster\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_backend_needs_a_key_or_insecure() {
        let err = SecurityArgs::default().resolve().expect_err("no key");
        assert!(err.contains("--insecure"), "{err}");
        let open = SecurityArgs::insecure().resolve().expect("insecure");
        assert!(open.key.is_none());
        assert!(matches!(Access::backend(&open), Access::Insecure));
        let keyed = SecurityArgs {
            cluster_key: Some(KEY.into()),
            ..SecurityArgs::default()
        }
        .resolve()
        .expect("key");
        assert!(matches!(Access::backend(&keyed), Access::ClusterKey(_)));
        assert!(keyed.client.key().is_some());
    }

    #[test]
    fn contradictions_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cluster.key");
        std::fs::write(&file, format!("{KEY}\n")).expect("write");
        let both = SecurityArgs {
            cluster_key_file: Some(file.clone()),
            cluster_key: Some(KEY.into()),
            ..SecurityArgs::default()
        };
        assert!(both.resolve().expect_err("both").contains("not both"));
        let insecure_with_key = SecurityArgs {
            cluster_key_file: Some(file.clone()),
            insecure: true,
            ..SecurityArgs::default()
        };
        assert!(insecure_with_key.resolve().is_err());
        let from_file = SecurityArgs::with_key_file(file).resolve().expect("file");
        assert_eq!(
            from_file.key.map(|k| k.expose().to_owned()),
            Some(KEY.into())
        );
        let missing = SecurityArgs::with_key_file(dir.path().join("nope"));
        let err = missing.resolve().expect_err("missing file");
        assert!(err.contains("--cluster-key-file"), "{err}");
        let short = SecurityArgs {
            cluster_key: Some("short".into()),
            ..SecurityArgs::default()
        };
        assert!(
            short
                .resolve()
                .expect_err("short")
                .contains("--cluster-key")
        );
    }

    #[test]
    fn every_security_variable_is_one_bazaar_up_clears() {
        use clap::Args;
        let command = SecurityArgs::augment_args(clap::Command::new("x"));
        let names: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), bazaar_api::auth::SECURITY_ENV.len());
        for name in names {
            assert!(
                bazaar_api::auth::SECURITY_ENV.contains(&name.as_str()),
                "{name}"
            );
        }
    }

    #[test]
    fn only_health_and_metrics_are_open() {
        assert!(is_open_route(&Method::GET, "/health"));
        assert!(is_open_route(&Method::GET, "/metrics"));
        assert!(!is_open_route(&Method::POST, "/health"));
        assert!(!is_open_route(&Method::GET, "/internal/feed"));
        assert!(!is_open_route(&Method::GET, "/orders/1"));
    }
}
