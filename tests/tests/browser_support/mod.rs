//! A real browser for the console's tests: Debian's Chromium, headless, driven through
//! ChromeDriver with the W3C WebDriver protocol (JSON over HTTP; the few commands the tests use
//! are written out here, over the same HTTP client as the API tests).
//!
//! Chromium and ChromeDriver are installed with `apt-get` when missing (these machines run the
//! tests as root; `.ci/run` installs them first anyway): a test that needs them never skips.
//! Screenshots go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The element key of the W3C WebDriver protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for the page polls before the test fails.
pub(crate) const PAGE_WAIT: Duration = Duration::from_secs(20);

/// Installs Chromium and ChromeDriver if `chromedriver` is not on the machine.
fn ensure_chromium() {
    let present = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present("chromedriver") && present("chromium") {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            updated && install(),
            "the console tests need Chromium and ChromeDriver: `apt-get install chromium \
             chromium-driver` failed (run it as root)"
        );
    }
}

/// A ChromeDriver process and one headless Chromium session; both end when it drops.
pub(crate) struct Browser {
    driver: Child,
    url: String,
    session: String,
    client: awc::Client,
    shots: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a session (a 1280×900 window).
    pub(crate) async fn start() -> Browser {
        ensure_chromium();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let ready = match client.get(format!("{url}/status")).send().await {
                Ok(mut r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .is_some_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&shots).expect("the screenshot directory");
        let mut browser = Browser {
            driver,
            url,
            session: String::new(),
            client,
            shots,
        };
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"]
            }
        }}});
        let created = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    /// One WebDriver command; panics with the driver's error if it fails.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        };
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None if method == "POST" => request.send_json(&json!({})).await,
            None => request.send().await,
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value: Value = response
            .json()
            .limit(64 * 1024 * 1024)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert!(
            response.status().is_success(),
            "WebDriver {method} {path}: {}",
            value["value"]
        );
        value["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url`.
    pub(crate) async fn open(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its result.
    pub(crate) async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null` or `false`, for at most
    /// [`PAGE_WAIT`]; fails the test with `what` otherwise.
    pub(crate) async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let value = self.eval(script, args.clone()).await;
            if !(value.is_null() || value == Value::Bool(false)) {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self.eval("return document.body.innerText", json!([])).await;
                panic!("waited {PAGE_WAIT:?} for {what}; the page shows:\n{page}");
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page has finished its first load (`body[data-ready=true]`).
    pub(crate) async fn ready(&self) {
        self.wait_for(
            "the page to be ready",
            "return document.body.dataset.ready === 'true'",
            json!([]),
        )
        .await;
    }

    /// The element `selector` finds (the first), waiting for it.
    pub(crate) async fn find(&self, selector: &str) -> String {
        self.wait_for(
            &format!("an element {selector}"),
            "return document.querySelector(arguments[0]) !== null",
            json!([selector]),
        )
        .await;
        let found = self
            .call(
                "POST",
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .expect("an element reference")
            .to_owned()
    }

    /// Clicks the element `selector` finds.
    pub(crate) async fn click(&self, selector: &str) {
        let element = self.find(selector).await;
        self.call("POST", &self.at(&format!("/element/{element}/click")), None)
            .await;
    }

    /// Types `text` into the element `selector` finds.
    pub(crate) async fn type_into(&self, selector: &str, text: &str) {
        let element = self.find(selector).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{element}/value")),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Saves a screenshot of the window as `target/console-screenshots/{name}.png`.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.call("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("a valid base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot is saved");
        path
    }

    /// Ends the session and the driver.
    pub(crate) async fn close(mut self) {
        let session = self.at("");
        self.call("DELETE", &session, None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test: the driver goes, and takes its browser with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
