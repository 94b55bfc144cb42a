//! Debian's Chromium driven by playwright-core: with a virtual WebAuthn
//! authenticator (tests/browser/authenticator.mjs), the browser side of the
//! passkey tests; on the account pages and the console
//! (tests/browser/pages.mjs), a person using them.

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A Node.js script driving Chromium, one JSON request and answer per line.
struct Driver {
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl Driver {
    /// Starts `tests/browser/<script>` and reads its first line; fails,
    /// never skips, when Chromium or playwright-core is missing
    /// (scripts/browser.sh installs both).
    async fn start(script: &str) -> (Self, Value) {
        let script = format!("{}/tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (scripts/browser.sh installs the browser test's needs)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = stdout
            .next_line()
            .await
            .unwrap()
            .expect("the browser started (is Chromium installed? run scripts/browser.sh)");
        let first =
            serde_json::from_str(&first).unwrap_or_else(|_| panic!("the browser said {first}"));
        (
            Self {
                stdin,
                stdout,
                _child: child,
            },
            first,
        )
    }

    async fn call(&mut self, request: Value) -> Value {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = self
            .stdout
            .next_line()
            .await
            .unwrap()
            .expect("the browser answers");
        serde_json::from_str(&answer).unwrap()
    }
}

pub struct Browser {
    /// The port of the page the browser is on, at `http://localhost:…`.
    pub port: u16,
    driver: Driver,
}

impl Browser {
    /// Starts the browser with its authenticator.
    pub async fn start() -> Self {
        let (driver, first) = Driver::start("authenticator.mjs").await;
        let port = first["port"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or_else(|| panic!("the browser said {first}"));
        Self { port, driver }
    }

    /// The page's origin on `host` (`localhost` or a name below it).
    pub fn origin(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
    }

    async fn call(&mut self, request: Value) -> Value {
        self.driver.call(request).await
    }

    /// `navigator.credentials.create` with a begin mutation's `options`, on
    /// a page of `host`: the credential's JSON, or the browser's error.
    pub async fn create_on(&mut self, host: &str, options: &Value) -> Result<String, String> {
        credential(
            self.call(json!({"op": "create", "options": options, "host": host}))
                .await,
        )
    }

    pub async fn create(&mut self, options: &Value) -> String {
        self.create_on("localhost", options)
            .await
            .unwrap_or_else(|error| panic!("create: {error}"))
    }

    /// `navigator.credentials.get` with a begin mutation's `options`.
    pub async fn get(&mut self, options: &Value) -> Result<String, String> {
        credential(
            self.call(json!({"op": "get", "options": options, "host": "localhost"}))
                .await,
        )
    }

    /// The credentials the authenticator holds (DevTools' form).
    pub async fn credentials(&mut self) -> Vec<Value> {
        let answer = self.call(json!({"op": "credentials"})).await;
        answer["credentials"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Sets the signature counter of a credential the authenticator holds.
    pub async fn set_sign_count(&mut self, credential_id: &str, sign_count: u64) {
        let answer = self
            .call(json!({"op": "set_sign_count", "credentialId": credential_id, "signCount": sign_count}))
            .await;
        assert!(answer.get("error").is_none(), "{answer}");
    }

    /// An empty authenticator in place of the one there was.
    pub async fn new_authenticator(&mut self) {
        let answer = self.call(json!({"op": "new_authenticator"})).await;
        assert!(answer.get("error").is_none(), "{answer}");
    }
}

fn credential(answer: Value) -> Result<String, String> {
    match answer["credential"].as_str() {
        Some(credential) => Ok(credential.to_owned()),
        None => Err(answer.to_string()),
    }
}

/// Chromium on the account pages and the console, used as a person would:
/// by labels, roles and visible text (tests/browser/pages.mjs). Each step
/// fails the test with what the browser said.
pub struct Pages {
    driver: Driver,
    /// Where screenshots go.
    shots: std::path::PathBuf,
}

impl Pages {
    /// Starts the browser; screenshots go to `target/pages/<test>/`.
    pub async fn start(test: &str) -> Self {
        let (driver, first) = Driver::start("pages.mjs").await;
        assert_eq!(first["ready"], true, "{first}");
        let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/pages")
            .join(test);
        std::fs::create_dir_all(&shots).unwrap();
        Self { driver, shots }
    }

    async fn step(&mut self, request: Value) -> Value {
        let answer = self.driver.call(request.clone()).await;
        if let Some(error) = answer.get("error") {
            let shot = self.shots.join("failure.png");
            self.driver
                .call(json!({"op": "screenshot", "path": shot}))
                .await;
            panic!("{request}: {error} (the page: {})", shot.display());
        }
        answer["ok"].clone()
    }

    pub async fn goto(&mut self, url: &str) {
        self.step(json!({"op": "goto", "url": url})).await;
    }

    pub async fn fill(&mut self, label: &str, value: &str) {
        self.step(json!({"op": "fill", "label": label, "value": value}))
            .await;
    }

    pub async fn click(&mut self, role: &str, name: &str) {
        self.click_nth(role, name, 0).await;
    }

    pub async fn click_nth(&mut self, role: &str, name: &str, nth: usize) {
        self.step(json!({"op": "click", "role": role, "name": name, "nth": nth}))
            .await;
    }

    /// Clicks what shows `text` (a `<summary>`, which has no role).
    pub async fn click_text(&mut self, text: &str) {
        self.step(json!({"op": "click_text", "text": text})).await;
    }

    /// Waits until `text` shows (in any case, within a longer text).
    pub async fn see(&mut self, text: &str) {
        self.step(json!({"op": "see", "text": text})).await;
    }

    /// Waits until an element whose whole text is `text` shows.
    pub async fn see_exactly(&mut self, text: &str) {
        self.step(json!({"op": "see", "text": text, "exact": true}))
            .await;
    }

    pub async fn text(&mut self, selector: &str) -> String {
        let text = self.step(json!({"op": "text", "selector": selector})).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    pub async fn count(&mut self, selector: &str) -> u64 {
        let count = self
            .step(json!({"op": "count", "selector": selector}))
            .await;
        count.as_u64().unwrap_or_default()
    }

    /// The whole page as `<name>.png` in the test's folder.
    pub async fn screenshot(&mut self, name: &str) {
        self.shot(name, true).await;
    }

    /// What the window shows of the page, as `<name>.png`.
    pub async fn screenshot_top(&mut self, name: &str) {
        self.shot(name, false).await;
    }

    async fn shot(&mut self, name: &str, full: bool) {
        let path = self.shots.join(format!("{name}.png"));
        self.step(json!({"op": "screenshot", "path": path, "full": full}))
            .await;
    }
}
