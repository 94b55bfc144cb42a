//! Kafka clients shared by the relay and the operators' tools.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;

/// Creates `topic` unless it exists.
pub async fn ensure_topic(
    bootstrap_servers: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    ensure_topic_with(bootstrap_servers, topic, partitions, replication, &[]).await
}

/// Creates `topic` with the topic configuration `settings` unless it
/// exists (an existing topic keeps its own).
pub async fn ensure_topic_with(
    bootstrap_servers: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
    settings: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .create()?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (key, value) in settings {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new_topic], &options).await? {
        match result {
            Ok(_) => tracing::info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// An idempotent producer: acks from all in-sync replicas, no duplicates or
/// reordering from its own retries, the user id hashed to the partition the
/// way Java clients do.
///
/// `batch_messages` caps the messages in one record batch. tansu 0.6 answers
/// a fetch that starts inside a record batch with the *next* batch, so a
/// consumer resuming from an offset in the middle of a batch silently skips
/// the rest of it; with one message per batch every offset is a batch
/// boundary. A real Kafka cluster returns the straddling batch, and a large
/// value is then right.
pub fn idempotent_producer(
    bootstrap_servers: &str,
    message_timeout: Duration,
    batch_messages: u32,
) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("batch.num.messages", batch_messages.to_string())
        .set("compression.type", "lz4")
        .set(
            "message.timeout.ms",
            message_timeout.as_millis().to_string(),
        )
        .create()?)
}

/// An idempotent producer that can be made anew. A broker that forgot the
/// producer's id (restarted, or its data lost) can leave it failing for good
/// or, with tansu, retrying under ever higher epochs without end; a new
/// producer gets a new id. What the old one still held is dropped, and sent
/// again by the caller: our messages carry their identity and order
/// (`ce_id`, `sequence`), so a duplicate is harmless.
pub struct RenewingProducer {
    producer: FutureProducer,
    bootstrap_servers: String,
    message_timeout: Duration,
    batch_messages: u32,
}

impl RenewingProducer {
    pub fn new(
        bootstrap_servers: &str,
        message_timeout: Duration,
        batch_messages: u32,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            producer: idempotent_producer(bootstrap_servers, message_timeout, batch_messages)?,
            bootstrap_servers: bootstrap_servers.to_owned(),
            message_timeout,
            batch_messages,
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Replaces the producer with a new one.
    pub fn renew(&mut self) -> anyhow::Result<()> {
        self.producer = idempotent_producer(
            &self.bootstrap_servers,
            self.message_timeout,
            self.batch_messages,
        )?;
        Ok(())
    }
}
