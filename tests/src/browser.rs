//! A headless Chromium for the dashboard's tests, driven over WebDriver:
//! Debian's `chromedriver` (installed by `scripts/browser`) speaks the W3C
//! protocol over HTTP, so a few JSON requests with reqwest are the whole
//! client.
//!
//! ```text
//!  test ──HTTP/JSON──► chromedriver (port 0 → free port) ──► chromium --headless
//! ```
//!
//! [`Browser::start`] fails (never skips) when the driver cannot be run:
//! run `scripts/browser` to install it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The W3C key of an element reference in a WebDriver answer.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One Chromium session, 1280×800, headless.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    driver: Child,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

impl Browser {
    /// Starts chromedriver and a session (window 1280×800, the browser's
    /// console kept for [`Browser::console_errors`]).
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("run chromedriver: install it with scripts/browser (Debian's chromium-driver)");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["value"]["ready"].as_bool())
                    .unwrap_or(false),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready on port {port} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium_binary(),
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,800",
                        "--hide-scrollbars", "--force-device-scale-factor=1",
                        "--no-first-run", "--no-default-browser-check",
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
                "unhandledPromptBehavior": "ignore",
            } }
        });
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .expect("a WebDriver answer");
        let Some(id) = answer["value"]["sessionId"].as_str() else {
            panic!("chromedriver refused the session: {answer}");
        };
        let browser = Self {
            http,
            session: format!("{base}/session/{id}"),
            driver,
        };
        // The viewport (what a screenshot shows) at 1280×800: the window's
        // size less its frame, whatever the frame is.
        let frame = browser
            .eval("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]")
            .await;
        let (fw, fh) = (
            frame[0].as_i64().unwrap_or(0),
            frame[1].as_i64().unwrap_or(0),
        );
        browser
            .command(
                "POST",
                "/window/rect",
                Some(json!({ "width": 1280 + fw, "height": 800 + fh })),
            )
            .await;
        browser
    }

    /// One WebDriver command; panics with the driver's message on an error.
    pub async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path} answered {status}: {answer}"
        );
        answer["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body: `return …`) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Polls `script` until it returns something truthy (not null, false,
    /// 0 or ""), and returns that; panics naming `what` after `timeout`,
    /// with the last value seen.
    pub async fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self
                    .eval("return document.body.innerText.slice(0, 2000)")
                    .await;
                panic!("timed out after {timeout:?} waiting for {what}; the page reads: {text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The element `css` selects (it must exist).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .command(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Clicks the element `css` selects, as a user would; an element the
    /// page replaced between finding and clicking is found again.
    pub async fn click(&self, css: &str) {
        for _ in 0..10 {
            let el = self.find(css).await;
            let response = self
                .http
                .post(format!("{}/element/{el}/click", self.session))
                .json(&json!({}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("WebDriver click {css}: {e}"));
            if response.status().is_success() {
                return;
            }
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                answer["value"]["error"], "stale element reference",
                "click {css}: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} kept being replaced: cannot click it");
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.command(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The browser console's entries since the last call (chromedriver's
    /// log extension: `/se/log`, or the older `/log`).
    pub async fn console(&self) -> Vec<Value> {
        for path in ["/se/log", "/log"] {
            let response = self
                .http
                .post(format!("{}{path}", self.session))
                .json(&json!({ "type": "browser" }))
                .send()
                .await
                .unwrap_or_else(|e| panic!("WebDriver POST {path}: {e}"));
            if !response.status().is_success() {
                continue;
            }
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match &answer["value"] {
                Value::Array(entries) => return entries.clone(),
                other => panic!("the browser log is not a list: {other}"),
            }
        }
        panic!("chromedriver gives no browser log (neither /se/log nor /log)");
    }

    /// The console's errors (level `SEVERE`) since the last call.
    pub async fn console_errors(&self) -> Vec<Value> {
        self.console()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .collect()
    }

    /// A PNG of the viewport; saved as `name` under the directory
    /// `TRIBUTARY_UI_SCREENSHOTS` names, if it is set (the README's
    /// pictures come from `TRIBUTARY_UI_SCREENSHOTS=docs/ui`).
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        let v = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 screenshot"))
            .expect("base64");
        if let Some(dir) = std::env::var_os("TRIBUTARY_UI_SCREENSHOTS") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("screenshot directory");
            std::fs::write(dir.join(name), &png).expect("save the screenshot");
        }
        png
    }

    /// Ends the session (and its Chromium), then the driver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
    }
}

/// Debian's Chromium (`/usr/bin/chromium`), or `CHROMIUM` if set.
fn chromium_binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// The width and height a PNG's header declares.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (be(16), be(20))
}
