//! A plain Kafka consumer, as a downstream service reads the topic.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Headers, Message};
use serde_json::Value;

/// A message as a downstream consumer sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub headers: HashMap<String, String>,
    pub value: Value,
    pub partition: i32,
    pub offset: i64,
}

/// The next message before `until`, if any. Consumer errors (such as a
/// topic the relay has not created yet) are transient and skipped.
pub async fn next_message(
    consumer: &StreamConsumer,
    until: tokio::time::Instant,
) -> Option<Received> {
    loop {
        let message = match tokio::time::timeout_at(until, consumer.recv()).await {
            Err(_) => return None,
            Ok(Err(_)) => continue,
            Ok(Ok(message)) => message,
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Some(Received {
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            headers,
            // A tombstone (no value) reads as null.
            value: message.payload().map_or(Value::Null, |payload| {
                serde_json::from_slice(payload).expect("a JSON value")
            }),
            partition: message.partition(),
            offset: message.offset(),
        });
    }
}

/// Reads messages until `done` holds for what was read, or fails at the
/// deadline.
pub async fn consume_until(
    consumer: &StreamConsumer,
    deadline: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let mut received = Vec::new();
    let until = tokio::time::Instant::now() + deadline;
    while !done(&received) {
        let message = next_message(consumer, until).await.unwrap_or_else(|| {
            panic!(
                "condition not met within {deadline:?}; read {} messages (is the broker running?)",
                received.len()
            )
        });
        received.push(message);
    }
    received
}
