//! The relay: publishes committed events from the event store to Kafka, in
//! `(transaction_id, position)` order, reading only below the xmin horizon
//! so that a transaction that commits late is never skipped. The cursor
//! moves only after Kafka acknowledged the batch; one relay leads at a time.

use std::time::Duration;

use cqrs_es::Aggregate;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::events::{stored_event_columns, Outgoing, StoredEvent};
use crate::kafka;
use crate::users::User;

/// The NOTIFY channel the event store's trigger signals on commit.
pub const EVENTS_CHANNEL: &str = "accountable_events";

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    pub partitions: i32,
    pub replication: i32,
    /// Most events published per batch (and per cursor update).
    pub batch_size: i64,
    /// How often to look for events without a notification: covers events
    /// held back by a transaction that was still running, and lost wake-ups.
    pub poll_interval: Duration,
    /// How long librdkafka keeps retrying one message before failing it.
    pub message_timeout: Duration,
    /// Most messages in one Kafka record batch (see [`kafka::idempotent_producer`]).
    pub batch_messages: u32,
}

/// Events after the cursor whose transaction is older than every running
/// one, so that nothing can later commit behind them.
const SELECT_BATCH: &str = concat!(
    "SELECT ",
    stored_event_columns!(),
    " FROM events
     WHERE aggregate_type = $2
       AND (transaction_id, position) >
           (SELECT transaction_id, position FROM relay_cursors WHERE name = $1)
       AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY transaction_id, position
     LIMIT $3"
);

const ENSURE_CURSOR: &str =
    "INSERT INTO relay_cursors (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";

const ADVANCE_CURSOR: &str = "
UPDATE relay_cursors
   SET transaction_id = $2::text::xid8, position = $3, published = published + $4, updated_at = now()
 WHERE name = $1";

const TRY_LEAD: &str = "SELECT pg_try_advisory_lock(hashtext('accountable.relay'), hashtext($1))";

pub struct Relay {
    pool: PgPool,
    config: RelayConfig,
    producer: FutureProducer,
}

impl Relay {
    pub fn new(pool: PgPool, config: RelayConfig) -> anyhow::Result<Self> {
        let producer = kafka::idempotent_producer(
            &config.bootstrap_servers,
            config.message_timeout,
            config.batch_messages,
        )?;
        Ok(Self {
            pool,
            config,
            producer,
        })
    }

    /// Waits for leadership, then publishes until `shutdown`; a failure
    /// (the database or the broker away) gives up leadership and starts
    /// over after a pause.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(topic = %self.config.topic, "relay started");
        while !shutdown.is_cancelled() {
            if let Err(error) = self.lead_when_possible(&shutdown).await {
                tracing::warn!(error = %error, "relay interrupted; starting over");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        tracing::info!("relay stopped");
        Ok(())
    }

    async fn lead_when_possible(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        // The session that holds the advisory lock does all the relay's
        // reads and cursor writes: if it dies, the lock goes with it, and so
        // does any chance of moving the cursor.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let leading: bool = sqlx::query_scalar(TRY_LEAD)
                .bind(&self.config.topic)
                .fetch_one(&mut conn)
                .await?;
            if leading {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        tracing::info!(topic = %self.config.topic, "relay leads");
        kafka::ensure_topic(
            &self.config.bootstrap_servers,
            &self.config.topic,
            self.config.partitions,
            self.config.replication,
        )
        .await?;
        let mut listener = crate::db::listener(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        sqlx::query(ENSURE_CURSOR)
            .bind(&self.config.topic)
            .execute(&mut conn)
            .await?;
        loop {
            let published = self.publish_batch(&mut conn).await?;
            if published == self.config.batch_size {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                notification = listener.recv() => { notification?; }
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Publishes the next batch and moves the cursor past it once Kafka has
    /// acknowledged every message. Returns how many were published.
    async fn publish_batch(&self, conn: &mut PgConnection) -> anyhow::Result<i64> {
        let batch: Vec<StoredEvent> = sqlx::query_as(SELECT_BATCH)
            .bind(&self.config.topic)
            .bind(User::TYPE)
            .bind(self.config.batch_size)
            .fetch_all(&mut *conn)
            .await?;
        let Some(last) = batch.last() else {
            return Ok(0);
        };
        let messages = batch
            .iter()
            .map(StoredEvent::to_message)
            .collect::<Result<Vec<_>, _>>()?;
        // Enqueued one by one in order (a full queue is waited out, never
        // skipped), so each user's events keep their order on the partition.
        let mut deliveries = Vec::with_capacity(messages.len());
        for message in &messages {
            let mut record = record(&self.config.topic, message);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break deliveries.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => anyhow::bail!("Kafka did not acknowledge: {error}"),
                Err(_) => anyhow::bail!("the producer was dropped before acknowledging"),
            }
        }
        let count = i64::try_from(batch.len())?;
        sqlx::query(ADVANCE_CURSOR)
            .bind(&self.config.topic)
            .bind(&last.transaction_id)
            .bind(last.position)
            .bind(count)
            .execute(&mut *conn)
            .await?;
        tracing::debug!(count, position = last.position, "published");
        Ok(count)
    }
}

fn record<'a>(topic: &'a str, message: &'a Outgoing) -> FutureRecord<'a, String, Vec<u8>> {
    let headers = message
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
    FutureRecord::to(topic)
        .key(&message.key)
        .payload(&message.value)
        .headers(headers)
}
