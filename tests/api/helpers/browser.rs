//! Debian's Chromium with a virtual WebAuthn authenticator, driven by
//! tests/browser/authenticator.mjs (playwright-core over the DevTools
//! protocol): the browser and authenticator side of the passkey tests.

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub struct Browser {
    /// The port of the page the browser is on, at `http://localhost:…`.
    pub port: u16,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl Browser {
    /// Starts the browser; fails, never skips, when Chromium or
    /// playwright-core is missing (scripts/browser.sh installs both).
    pub async fn start() -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/authenticator.mjs"
        );
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
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or_else(|| panic!("the browser said {first}"));
        Self {
            port,
            stdin,
            stdout,
            _child: child,
        }
    }

    /// The page's origin on `host` (`localhost` or a name below it).
    pub fn origin(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
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
