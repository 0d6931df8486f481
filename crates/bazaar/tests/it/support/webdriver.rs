//! A small W3C WebDriver client over reqwest, driving Debian's headless `chromium` through
//! `chromedriver`: enough to load a page, find elements, click, type with a real keyboard,
//! resize the window, run a script, take screenshots and read the browser's console.
//!
//! Each [`Driver`] runs its own `chromedriver` in a process group of its own; dropping it kills
//! that group, so a failing test leaves no browser behind.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C key for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// WebDriver's codes for special keys.
pub mod key {
    /// Tab.
    pub const TAB: char = '\u{E004}';
    /// Enter.
    pub const ENTER: char = '\u{E007}';
    /// Control.
    pub const CONTROL: char = '\u{E009}';
}

/// A running chromedriver.
pub struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    profiles: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver starts the browsers in its own process group: end the whole group.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Driver {
    /// Starts chromedriver and waits until it is ready.
    ///
    /// # Panics
    /// When chromedriver or chromium is missing (`.ci/browser` installs them).
    pub async fn start() -> Self {
        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver runs (apt-get install chromium chromium-driver)")
        };
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: bazaar_api::client::reqwest_builder(&bazaar_api::auth::ClientAuth::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            profiles: tempfile::tempdir().expect("tempdir"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .ok();
            if let Some(response) = ready
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == true
            {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens a headless browser whose window is `width` x `height`.
    pub async fn session(&self, width: u32, height: u32) -> Session {
        let profile = tempfile::tempdir_in(self.profiles.path()).expect("profile dir");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let reply = call(
            &self.http,
            "POST",
            &format!("{}/session", self.url),
            Some(capabilities),
        )
        .await;
        let id = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_owned();
        let session = Session {
            http: self.http.clone(),
            base: format!("{}/session/{id}", self.url),
            _profile: profile,
        };
        session.set_viewport(width, height).await;
        session
    }
}

fn chromium_binary() -> String {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("/usr/bin/chromium")
    .to_owned()
}

async fn call(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = http.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(&body);
    } else if method == reqwest::Method::POST {
        request = request.json(&json!({}));
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: unreadable reply: {e}"));
    assert!(status.is_success(), "{method} {url}: {status} {body}");
    body["value"].clone()
}

/// An element on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// One entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, ...
    pub level: String,
    /// `console-api`, `javascript`, `network`, ...
    pub source: String,
    /// The text.
    pub message: String,
}

/// One browser with one window.
pub struct Session {
    http: reqwest::Client,
    base: String,
    _profile: tempfile::TempDir,
}

impl Session {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    /// Loads `url` and waits for its load event.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script`, whose last argument is a callback it calls with its result.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `script` every 50 ms until it returns something other than null or false;
    /// panics naming `what` after `deadline`.
    pub async fn wait_for(&self, what: &str, deadline: Duration, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let value = self.execute(script, vec![]).await;
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Element {
        let value = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        Element(
            value[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css}: {value}"))
                .to_owned(),
        )
    }

    /// Clicks an element as a user would (the browser scrolls it into view first).
    pub async fn click(&self, element: &Element) {
        self.call("POST", &format!("/element/{}/click", element.0), None)
            .await;
    }

    /// Types `text` with the keyboard, one key press per character (special keys from
    /// [`key`] included; CONTROL is held until the next character is pressed).
    pub async fn keys(&self, text: &str) {
        let mut actions = Vec::new();
        let mut held = None;
        for c in text.chars() {
            if c == key::CONTROL {
                actions.push(json!({"type": "keyDown", "value": c.to_string()}));
                held = Some(c);
                continue;
            }
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
            if let Some(h) = held.take() {
                actions.push(json!({"type": "keyUp", "value": h.to_string()}));
            }
        }
        self.call(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
        self.call("DELETE", "/actions", None).await;
    }

    /// The id of the focused element ("" for none).
    pub async fn focused_id(&self) -> String {
        self.execute(
            "return document.activeElement ? document.activeElement.id : ''",
            vec![],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Presses Tab until the element with `id` has focus; panics after `presses_max`.
    pub async fn tab_to(&self, id: &str, presses_max: usize) {
        for _ in 0..presses_max {
            if self.focused_id().await == id {
                return;
            }
            self.keys(&key::TAB.to_string()).await;
        }
        assert_eq!(
            self.focused_id().await,
            id,
            "Tab did not reach #{id} in {presses_max} presses"
        );
    }

    /// Resizes the window so the page's viewport is `width` x `height` CSS pixels.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        for _ in 0..3 {
            let inner = self
                .execute("return [window.innerWidth, window.innerHeight]", vec![])
                .await;
            let (w, h) = (
                inner[0].as_i64().unwrap_or(0),
                inner[1].as_i64().unwrap_or(0),
            );
            if w == i64::from(width) && h == i64::from(height) {
                return;
            }
            let rect = self.call("GET", "/window/rect", None).await;
            let outer_w = rect["width"].as_i64().unwrap_or(0) + i64::from(width) - w;
            let outer_h = rect["height"].as_i64().unwrap_or(0) + i64::from(height) - h;
            self.call(
                "POST",
                "/window/rect",
                Some(json!({"width": outer_w, "height": outer_h})),
            )
            .await;
        }
        let inner = self
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await;
        assert_eq!(
            inner,
            json!([width, height]),
            "the browser would not size its viewport"
        );
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        decode_png(&self.call("GET", "/screenshot", None).await)
    }

    /// A PNG of one element.
    pub async fn element_screenshot(&self, element: &Element) -> Vec<u8> {
        decode_png(
            &self
                .call("GET", &format!("/element/{}/screenshot", element.0), None)
                .await,
        )
    }

    /// Console entries since the last call (chromedriver hands each out once).
    pub async fn browser_log(&self) -> Vec<LogEntry> {
        let value = self
            .call("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        value
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| LogEntry {
                        level: e["level"].as_str().unwrap_or_default().to_owned(),
                        source: e["source"].as_str().unwrap_or_default().to_owned(),
                        message: e["message"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closes the browser.
    pub async fn quit(self) {
        self.call("DELETE", "", None).await;
    }
}

fn decode_png(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64 screenshot"))
        .expect("valid base64")
}
