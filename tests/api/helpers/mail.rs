//! A real SMTP server for a test (aiosmtpd, from `tests/peers/smtp_server.py`),
//! on a loopback port of its own, and the messages it received.

use std::path::PathBuf;
use std::time::Duration;

use accountable::config::Secret;

use super::*;

/// An SMTP server that keeps every message it takes as a file.
pub struct MailServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
}

impl MailServer {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("accountable-mail-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a folder for the mail");
        let mut server = Self {
            port: crate::servers::free_port(),
            dir,
            child: None,
        };
        server.start_again().await;
        server
    }

    /// `smtp://127.0.0.1:<port>`, as the service's `ACCOUNTABLE_SMTP_URL`.
    pub fn url(&self) -> Secret {
        Secret::new(format!("smtp://127.0.0.1:{}", self.port))
    }

    /// Starts the server (again) on its port, and waits until it answers.
    pub async fn start_again(&mut self) {
        let python = python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smtp_server.py");
        let child = tokio::process::Command::new(&python)
            .args([script, "--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("the test SMTP server needs {python} with aiosmtpd (scripts/test.sh installs it): {e}")
            });
        self.child = Some(child);
        let port = self.port;
        eventually(
            "the SMTP server answers",
            Duration::from_secs(30),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
    }

    /// Stops the server: nothing listens on its port until it starts again.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("the SMTP server stops");
        }
    }

    /// From now on, the server keeps each message and then waits, without
    /// answering, until [`MailServer::release`].
    pub fn hold(&self) {
        std::fs::write(self.dir.join("hold"), b"").expect("the hold flag");
    }

    pub fn release(&self) {
        std::fs::remove_file(self.dir.join("hold")).expect("the hold flag is lifted");
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .expect("the mail folder")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".eml"))
            .collect();
        names.sort_by_key(|name| {
            name.split('-')
                .next()
                .and_then(|n| n.parse::<u128>().ok())
                .unwrap_or_default()
        });
        names
            .iter()
            .map(|name| Mail {
                raw: std::fs::read_to_string(self.dir.join(name)).expect("a message"),
            })
            .collect()
    }

    /// The messages to `address` once there are at least `count`.
    pub async fn wait_for(&self, address: &str, count: usize) -> Vec<Mail> {
        eventually(
            &format!("{count} messages to {address}"),
            Duration::from_secs(30),
            || async {
                let to: Vec<_> = self
                    .messages()
                    .into_iter()
                    .filter(|mail| mail.to() == address)
                    .collect();
                (to.len() >= count).then_some(to)
            },
        )
        .await
    }
}

/// The Python the peers run on (`scripts/python.sh` makes it).
pub fn python() -> String {
    std::env::var("ACCOUNTABLE_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/.data/venv/bin/python").to_owned()
    })
}

/// The code an authenticator app shows for `secret` (base32), `offset`
/// seconds from now: computed by pyotp, an implementation not ours.
pub async fn pyotp_code(secret: &str, offset: i64) -> String {
    let output = tokio::process::Command::new(python())
        .args([
            "-c",
            "import sys, time, pyotp; print(pyotp.TOTP(sys.argv[1]).at(time.time() + int(sys.argv[2])))",
            secret,
            &offset.to_string(),
        ])
        .output()
        .await
        .expect("pyotp runs (scripts/test.sh installs it)");
    assert!(output.status.success(), "pyotp: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Mail {
    /// The value of a header, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    pub fn to(&self) -> String {
        self.header("To").unwrap_or_default()
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    pub fn message_id(&self) -> String {
        self.header("Message-ID").expect("a Message-ID")
    }

    /// The body, quoted-printable soft breaks and `=3D` undone.
    pub fn body(&self) -> String {
        let body = self.raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        body.replace("=\r\n", "").replace("=3D", "=")
    }

    /// The `token` of the first link in the mail.
    pub fn token(&self) -> String {
        let body = self.body();
        let start = body.find("?token=").expect("a link with a token") + "?token=".len();
        body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}
