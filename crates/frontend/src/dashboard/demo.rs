//! Demonstration controls (`bazaar up --demo`): the page can stop (SIGKILL) and start again an
//! order replica or a catalog, so a learner can watch failover and catch-up.
//!
//! `bazaar up --demo` runs a small control endpoint on loopback and writes its address and a
//! random token to a file (mode 0600) that the front-end reads at start
//! (`--demo-control-file`). The page calls `POST /dashboard/demo/{service}/{action}` here, and
//! the front-end forwards it to `POST <url>/<token>/services/{service}/{action}`; the browser
//! never learns the token, so only the front-end can reach the endpoint. Without the file the
//! route does not exist (404). `up` decides what may be stopped (not the front-end).
//!
//! The control file: `{"url": "http://127.0.0.1:PORT", "token": "<32 hex digits>"}`.
//! The endpoint: `GET <url>/<token>/services` lists `[{"name", "role", "id", "url",
//! "running"}]`; `POST <url>/<token>/services/{name}/kill|restart` acts and answers the
//! service's new entry.

use std::net::IpAddr;
use std::path::Path as FsPath;
use std::time::Duration;

use axum::extract::State;
use bazaar_api::client::{ClientError, ClientResult, Http, url_with_segments};
use bazaar_api::replica::validate_base_url;
use bazaar_api::{Data, ErrorKind};
use bazaar_service::{Json, Path};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Dashboard;
use crate::error::{Error, Result};

/// How long an action may take: a restart answers once the service serves again, which `up`
/// waits for up to a minute.
pub const DEMO_ACTION_TIMEOUT: Duration = Duration::from_secs(70);

/// How long listing the services may take.
const DEMO_LIST_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest service name accepted (`order-9`, `catalog-12`).
const SERVICE_NAME_LEN_MAX: usize = 32;

#[derive(Debug, Deserialize)]
struct ControlFile {
    url: String,
    token: String,
}

/// What the page may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL the service.
    Kill,
    /// Start it again with the command that started it.
    Restart,
}

impl Action {
    /// Parses the route segment.
    ///
    /// # Errors
    /// A sentence naming the accepted actions.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "kill" => Ok(Self::Kill),
            "restart" => Ok(Self::Restart),
            other => Err(format!(
                "unknown demonstration action {other:?}: kill or restart"
            )),
        }
    }

    /// The route segment.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Restart => "restart",
        }
    }
}

/// Checks a service name before it goes into a URL: `order-2`, `catalog`.
///
/// # Errors
/// A sentence saying what a name looks like.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= SERVICE_NAME_LEN_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "service name {name:?} is not of the form order-2 or catalog"
        ))
    }
}

/// Client of `bazaar up`'s control endpoint.
#[derive(Debug, Clone)]
pub struct DemoClient {
    http: Http,
    /// `<url>/<token>`.
    base: String,
}

impl DemoClient {
    /// Reads the control file written by `bazaar up --demo`.
    ///
    /// # Errors
    /// A sentence naming the file: unreadable, malformed, or not a loopback address.
    pub fn from_file(path: &FsPath, http: &Http) -> Result<Self, String> {
        let context = |e: String| format!("--demo-control-file {}: {e}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| context(e.to_string()))?;
        let file: ControlFile =
            serde_json::from_str(&text).map_err(|e| context(format!("not a control file: {e}")))?;
        let url = file.url.trim_end_matches('/');
        validate_base_url(url).map_err(context)?;
        let host = url
            .trim_start_matches("http://")
            .rsplit_once(':')
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or_default();
        if !host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            return Err(context(format!(
                "the control endpoint {url} is not on a loopback address"
            )));
        }
        if file.token.len() != 32 || !file.token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(context("the token is not 32 hexadecimal digits".into()));
        }
        Ok(Self {
            http: http.with_timeout(DEMO_ACTION_TIMEOUT),
            base: format!("{url}/{}", file.token),
        })
    }

    /// The services `up` supervises.
    ///
    /// # Errors
    /// Transport errors; `up` has stopped.
    pub async fn services(&self) -> ClientResult<Value> {
        self.http
            .with_timeout(DEMO_LIST_TIMEOUT)
            .get(&format!("{}/services", self.base))
            .await
    }

    /// Asks `up` to act on a service.
    ///
    /// # Errors
    /// 404 unknown service, 409 nothing to do (already stopped, still running), 400 a service
    /// that may not be stopped; transport errors.
    pub async fn act(&self, service: &str, action: Action) -> ClientResult<Value> {
        self.http
            .post(
                &url_with_segments(&self.base, &["services", service, action.as_str()]),
                &json!({}),
            )
            .await
    }
}

fn from_control(e: ClientError) -> Error {
    match e {
        ClientError::Rejected {
            kind:
                kind @ (ErrorKind::UnknownService | ErrorKind::ServiceState | ErrorKind::BadRequest),
            message,
            ..
        } => Error::Refused { kind, message },
        e => Error::Upstream(format!(
            "the demonstration control of `bazaar up` failed: {e}"
        )),
    }
}

/// `POST /dashboard/demo/{service}/{action}`: stop or start a service through `bazaar up`.
///
/// # Errors
/// 400 a bad service name or action; what `up` answered (404, 409, 400); 502 when `up` does not
/// answer.
pub async fn demo_post(
    State(dashboard): State<Dashboard>,
    Path((service, action)): Path<(String, String)>,
) -> Result<Json<Data<Value>>> {
    let demo = dashboard
        .inner
        .demo
        .as_ref()
        .ok_or_else(|| Error::Refused {
            kind: ErrorKind::UnknownRoute,
            message: "no demonstration controls".into(),
        })?;
    let action = Action::parse(&action).map_err(Error::BadRequest)?;
    validate_service_name(&service).map_err(Error::BadRequest)?;
    tracing::info!(%service, action = action.as_str(), "demonstration control from the dashboard");
    let reply = demo.act(&service, action).await.map_err(from_control)?;
    dashboard.inner.wake.notify_one();
    Ok(Json(Data::new(reply)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_service_names_are_checked_before_they_reach_a_url() {
        assert_eq!(Action::parse("kill"), Ok(Action::Kill));
        assert_eq!(Action::parse("restart"), Ok(Action::Restart));
        assert!(Action::parse("KILL").is_err());
        for good in ["order-2", "catalog", "catalog-12"] {
            assert!(validate_service_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "order 2", "Order-2", &"x".repeat(33)] {
            assert!(validate_service_name(bad).is_err(), "{bad:?}");
        }
    }

    fn client_from(text: &str) -> Result<DemoClient, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("demo-control.json");
        std::fs::write(&path, text).expect("write");
        DemoClient::from_file(&path, &Http::new(Duration::from_secs(1)))
    }

    #[test]
    fn the_control_file_must_name_a_loopback_endpoint_and_a_token() {
        let token = "0123456789abcdef0123456789abcdef";
        let ok = client_from(&format!(
            r#"{{"url": "http://127.0.0.1:4000/", "token": "{token}"}}"#
        ))
        .expect("valid");
        assert_eq!(ok.base, format!("http://127.0.0.1:4000/{token}"));
        assert!(
            client_from(&format!(
                r#"{{"url": "http://[::1]:4000", "token": "{token}"}}"#
            ))
            .is_ok()
        );
        for bad in [
            format!(r#"{{"url": "http://10.0.0.5:4000", "token": "{token}"}}"#),
            format!(r#"{{"url": "http://example.com:4000", "token": "{token}"}}"#),
            r#"{"url": "http://127.0.0.1:4000", "token": "short"}"#.to_owned(),
            r#"{"url": "http://127.0.0.1:4000"}"#.to_owned(),
            "not json".to_owned(),
        ] {
            let refused = client_from(&bad).expect_err(&bad);
            assert!(refused.contains("--demo-control-file"), "{refused}");
        }
        let missing = DemoClient::from_file(
            FsPath::new("/nonexistent/demo-control.json"),
            &Http::new(Duration::from_secs(1)),
        );
        assert!(missing.is_err());
    }
}
