//! Resident memory of the stack's processes, and subscriptions held open
//! while events flow to them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Resident memory of a process in MiB (`VmRSS` of `/proc/<pid>/status`),
/// 0 when it is gone.
pub fn resident_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// One process's memory at two instants, and whether it stayed flat:
/// `ratio` is the first over the second, met at 0.9 or more (growth of
/// about a tenth at most).
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub name: String,
    pub first_mib: f64,
    pub last_mib: f64,
    pub ratio: f64,
}

impl Held {
    pub const TARGET: f64 = 0.9;

    pub fn new(name: String, first_mib: f64, last_mib: f64) -> Self {
        Self {
            name,
            first_mib,
            last_mib,
            ratio: first_mib / last_mib.max(f64::MIN_POSITIVE),
        }
    }

    pub fn verdict(&self) -> String {
        let verdict = if self.ratio >= Self::TARGET {
            "met"
        } else {
            "missed"
        };
        format!("≥ {:.2} ({verdict})", Self::TARGET)
    }
}

/// Subscriptions open on the API, each socket drained by a task of its own.
pub struct Subscriptions {
    sockets: Vec<JoinHandle<()>>,
    pub received: Arc<AtomicU64>,
}

const SUBSCRIBE: &str = "subscription { accountEvents { position eventType } }";

impl Subscriptions {
    /// Opens one socket per token, each running `per_socket` subscriptions
    /// to its user's own events.
    pub async fn open(ws_url: &str, tokens: &[String], per_socket: usize) -> anyhow::Result<Self> {
        let received = Arc::new(AtomicU64::new(0));
        let mut sockets = Vec::with_capacity(tokens.len());
        for token in tokens {
            let mut request = ws_url.into_client_request()?;
            request
                .headers_mut()
                .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
            let init = json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
            socket.send(Message::Text(init.to_string().into())).await?;
            let ack = socket
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("a socket closed before its acknowledgement"))??;
            anyhow::ensure!(
                ack.to_text()?.contains("connection_ack"),
                "a socket was not acknowledged: {ack}"
            );
            for id in 0..per_socket {
                let subscribe = json!({"type": "subscribe", "id": id.to_string(), "payload": {"query": SUBSCRIBE}});
                socket
                    .send(Message::Text(subscribe.to_string().into()))
                    .await?;
            }
            let received = received.clone();
            sockets.push(tokio::spawn(async move {
                while let Some(Ok(message)) = socket.next().await {
                    if message
                        .to_text()
                        .is_ok_and(|text| text.contains("\"next\""))
                    {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Self { sockets, received })
    }

    /// Waits until `count` events have reached the subscribers in all.
    pub async fn reached(&self, count: u64, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        while self.received.load(Ordering::Relaxed) < count {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} events reached the subscribers",
                self.received.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Closes every socket.
    pub fn close(self) {
        for socket in self.sockets {
            socket.abort();
        }
    }
}
