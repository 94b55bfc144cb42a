//! The relay: publishes committed events from the event store to Kafka, in
//! `(transaction_id, position)` order, reading only below the xmin horizon
//! so that a transaction that commits late is never skipped. The cursor
//! moves only after Kafka acknowledged the batch; one relay leads at a time.

use std::collections::HashMap;
use std::time::Duration;

use accountable_projections::{crash, trace};
use cqrs_es::Aggregate;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureRecord, Producer};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::events::Outgoing;
use crate::kafka::{self, RenewingProducer};
use crate::store::wake::{Recheck, EVENTS_CHANNEL};
use crate::store::{self, CommittedRead, StoredEvent, STORED_EVENT_COLUMNS};
use accountable_domain::User;

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

impl From<&KafkaConfig> for RelayConfig {
    fn from(kafka: &KafkaConfig) -> Self {
        Self {
            bootstrap_servers: kafka.bootstrap_servers.clone(),
            topic: kafka.events_topic.clone(),
            partitions: kafka.topic_partitions,
            replication: kafka.topic_replication,
            batch_size: kafka.relay_batch_size,
            poll_interval: Duration::from_millis(kafka.relay_poll_ms),
            message_timeout: Duration::from_secs(120),
            batch_messages: kafka.relay_batch_messages,
        }
    }
}

/// Where the relay stands: the last event it published, in commit order
/// (its name is bound after it), read in the same statement as the batch.
const SELECT_CURSOR: &str = "SELECT transaction_id, position FROM relay_cursors WHERE name = ";

const ENSURE_CURSOR: &str =
    "INSERT INTO relay_cursors (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";

const ADVANCE_CURSOR: &str = "
UPDATE relay_cursors
   SET transaction_id = $2::text::xid8, position = $3, published = published + $4, updated_at = now()
 WHERE name = $1";

const SELECT_PUBLISHED: &str = "
SELECT c.generation, p.partition, p.last_offset
  FROM relay_cursors c LEFT JOIN relay_partitions p ON p.name = c.name
 WHERE c.name = $1";

const RECORD_OFFSETS: &str = "
INSERT INTO relay_partitions (name, partition, last_offset)
SELECT $1, partition, last_offset FROM unnest($2::int[], $3::bigint[]) AS t(partition, last_offset)
ON CONFLICT (name, partition) DO UPDATE SET last_offset = EXCLUDED.last_offset";

/// Back to the start of the store, under the next generation.
const START_OVER: &str = "
UPDATE relay_cursors
   SET transaction_id = '0'::xid8, position = 0, published = 0,
       generation = generation + 1, updated_at = now()
 WHERE name = $1
RETURNING generation";

const FORGET_OFFSETS: &str = "DELETE FROM relay_partitions WHERE name = $1";
/// The parked events an operator asked to publish again.
const SELECT_RETRIED: &str =
    "SELECT position FROM relay_parked_events WHERE topic = $1 AND retry_requested";
const PARK: &str = "
INSERT INTO relay_parked_events (topic, position, aggregate_id, sequence, error)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[])
ON CONFLICT (topic, position) DO UPDATE
   SET error = EXCLUDED.error, retry_requested = false, parked_at = now()";
const UNPARK: &str =
    "DELETE FROM relay_parked_events WHERE topic = $1 AND position = ANY($2::bigint[])";
/// Asks the leading relay to try every parked event of a topic again.
pub const REQUEST_REPUBLISH: &str =
    "UPDATE relay_parked_events SET retry_requested = true WHERE topic = $1";

/// How long a batch may wait for its acknowledgements before the relay
/// starts over with a new producer.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);

/// How often an idle relay checks that the topic still holds what it
/// published.
const CHECK_TOPIC_EVERY: Duration = Duration::from_secs(2);

/// The longest pause before a relay tries again to lead, or starts over
/// after a failure: a long poll is no reason to stay away after a broker or
/// a database that was away for a moment.
const MOST_RETRY_PAUSE: Duration = Duration::from_secs(1);

const TRY_LEAD: &str = "SELECT pg_try_advisory_lock(hashtext('accountable.relay'), hashtext($1))";

/// What the relay has published: the generation its messages carry and the
/// last offset Kafka acknowledged on each partition.
#[derive(Debug, Default)]
struct Published {
    generation: i64,
    last_offsets: HashMap<i32, i64>,
}

impl Published {
    async fn load(conn: &mut PgConnection, topic: &str) -> sqlx::Result<Self> {
        let rows: Vec<(i64, Option<i32>, Option<i64>)> = sqlx::query_as(SELECT_PUBLISHED)
            .bind(topic)
            .fetch_all(conn)
            .await?;
        Ok(Self {
            generation: rows.first().map_or(1, |row| row.0),
            last_offsets: rows
                .into_iter()
                .filter_map(|(_, partition, offset)| partition.zip(offset))
                .collect(),
        })
    }
}

/// What one batch came to.
enum Outcome {
    /// This many events of the store passed the cursor (published, or
    /// parked).
    Published(i64),
    /// Kafka acknowledged an offset at or below one it had acknowledged
    /// before: the partition lost messages.
    TopicLost,
}

pub struct Relay {
    pool: PgPool,
    config: RelayConfig,
    producer: RenewingProducer,
}

impl Relay {
    pub fn new(pool: PgPool, config: RelayConfig) -> anyhow::Result<Self> {
        let producer = RenewingProducer::new(
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
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(topic = %self.config.topic, "relay started");
        while !shutdown.is_cancelled() {
            if let Err(error) = self.lead_when_possible(&shutdown).await {
                tracing::warn!(topic = %self.config.topic, error = %error, "relay interrupted; starting over");
                self.producer.renew()?;
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.retry_pause()) => {}
                }
            }
        }
        tracing::info!("relay stopped");
        Ok(())
    }

    fn retry_pause(&self) -> Duration {
        self.config.poll_interval.min(MOST_RETRY_PAUSE)
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
                _ = tokio::time::sleep(self.retry_pause()) => {}
            }
        }
        tracing::info!(topic = %self.config.topic, "relay leads");
        self.ensure_topic().await?;
        let mut listener = crate::db::listener(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        sqlx::query(ENSURE_CURSOR)
            .bind(&self.config.topic)
            .execute(&mut conn)
            .await?;
        let mut published = Published::load(&mut conn, &self.config.topic).await?;
        let mut next_check = tokio::time::Instant::now();
        let mut recheck = Recheck::new(self.config.poll_interval);
        loop {
            match self.publish_batch(&mut conn, &mut published).await? {
                Outcome::Published(count) if count == self.config.batch_size => continue,
                Outcome::Published(_) => {}
                Outcome::TopicLost => {
                    self.start_over(&mut conn, &mut published).await?;
                    continue;
                }
            }
            if tokio::time::Instant::now() >= next_check {
                if !self.topic_holds(&published).await? {
                    self.start_over(&mut conn, &mut published).await?;
                    continue;
                }
                next_check = tokio::time::Instant::now() + CHECK_TOPIC_EVERY;
            }
            let held_back = store::committed::held_back(&mut conn).await?;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                notification = listener.recv() => { notification?; }
                _ = tokio::time::sleep(recheck.wait(held_back)) => {}
            }
        }
    }

    /// Whether every partition still ends at or after the last offset Kafka
    /// acknowledged on it (a missing topic holds nothing, and is created
    /// again). A broker that does not answer is an error, not a loss.
    async fn topic_holds(&self, published: &Published) -> anyhow::Result<bool> {
        for (&partition, &last) in &published.last_offsets {
            let producer = self.producer.producer().clone();
            let topic = self.config.topic.clone();
            let watermarks = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_watermarks(&topic, partition, Duration::from_secs(5))
            })
            .await?;
            let high = match watermarks {
                Ok((_, high)) => high,
                Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    self.ensure_topic().await?;
                    -1
                }
                Err(error) => return Err(error.into()),
            };
            if high <= last {
                tracing::warn!(
                    topic = %self.config.topic, partition, end = high, acknowledged = last,
                    "the topic ends before what Kafka acknowledged"
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Publishes the whole event store again, under the next generation:
    /// the topic lost messages, and the store is the truth.
    async fn start_over(
        &self,
        conn: &mut PgConnection,
        published: &mut Published,
    ) -> anyhow::Result<()> {
        let mut tx = conn.begin().await?;
        let generation: i64 = sqlx::query_scalar(START_OVER)
            .bind(&self.config.topic)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(FORGET_OFFSETS)
            .bind(&self.config.topic)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::warn!(
            topic = %self.config.topic, generation,
            "the topic lost messages; publishing the event store again"
        );
        *published = Published {
            generation,
            last_offsets: HashMap::new(),
        };
        Ok(())
    }

    async fn ensure_topic(&self) -> anyhow::Result<()> {
        kafka::ensure_topic(
            &self.config.bootstrap_servers,
            &self.config.topic,
            self.config.partitions,
            self.config.replication,
        )
        .await
    }

    /// Publishes the next batch and moves the cursor past it once Kafka has
    /// acknowledged every message, unless an acknowledgement shows that the
    /// topic lost messages.
    async fn publish_batch(
        &self,
        conn: &mut PgConnection,
        published: &mut Published,
    ) -> anyhow::Result<Outcome> {
        let retried: Vec<i64> = sqlx::query_scalar(SELECT_RETRIED)
            .bind(&self.config.topic)
            .fetch_all(&mut *conn)
            .await?;
        let retried = store::streams::at_positions(&mut *conn, &retried).await?;
        let mut read = CommittedRead::select(STORED_EVENT_COLUMNS)
            .after_selected(SELECT_CURSOR, self.config.topic.clone());
        read.and()
            .push(" AND aggregate_type = ")
            .push_bind(User::TYPE);
        let batch: Vec<StoredEvent> = read
            .in_commit_order(Some(self.config.batch_size))
            .fetch_all(&mut *conn)
            .await?;
        if batch.is_empty() && retried.is_empty() {
            return Ok(Outcome::Published(0));
        }
        // An event that cannot be made a message is parked (and the cursor
        // moves past it) rather than holding back every event after it.
        let mut messages = Vec::with_capacity(retried.len() + batch.len());
        let mut unparked = Vec::new();
        let mut parked = Parked::default();
        for (event, retry) in retried
            .iter()
            .map(|e| (e, true))
            .chain(batch.iter().map(|e| (e, false)))
        {
            match event.to_message(published.generation) {
                Ok(message) => {
                    messages.push(message);
                    if retry {
                        unparked.push(event.position);
                    }
                }
                Err(error) => {
                    tracing::error!(position = event.position, error = %error, "parked an event the relay cannot publish");
                    parked.add(event, &error.to_string());
                }
            }
        }
        // Enqueued one by one in order (a full queue is waited out, never
        // skipped), so each user's events keep their order on the partition.
        // One span per event, in the trace of the request that caused it,
        // from its enqueueing to the commit of the cursor past it.
        let spans: Vec<tracing::Span> = messages
            .iter()
            .map(|message| publish_span(&self.config.topic, message))
            .collect();
        let mut deliveries = Vec::with_capacity(messages.len());
        for message in &messages {
            let mut record = record(&self.config.topic, message);
            loop {
                match self.producer.producer().send_result(record) {
                    Ok(delivery) => break deliveries.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
        }
        crash::point("relay.before_ack");
        let acknowledged = tokio::time::timeout(ACK_TIMEOUT, async {
            let mut acknowledged: HashMap<i32, (i64, i64)> = HashMap::new();
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(Delivery {
                        partition, offset, ..
                    })) => {
                        let range = acknowledged.entry(partition).or_insert((offset, offset));
                        *range = (range.0.min(offset), range.1.max(offset));
                    }
                    Ok(Err((error, _))) => anyhow::bail!("Kafka did not acknowledge: {error}"),
                    Err(_) => anyhow::bail!("the producer was dropped before acknowledging"),
                }
            }
            Ok(acknowledged)
        })
        .await
        .map_err(|_| anyhow::anyhow!("Kafka acknowledged nothing within {ACK_TIMEOUT:?}"))??;
        crash::point("relay.after_ack");
        for (partition, (lowest, _)) in &acknowledged {
            if let Some(&last) = published.last_offsets.get(partition) {
                if *lowest <= last {
                    tracing::warn!(
                        topic = %self.config.topic, partition, offset = lowest, acknowledged = last,
                        "Kafka acknowledged an offset it had given before"
                    );
                    return Ok(Outcome::TopicLost);
                }
            }
        }
        let (partitions, offsets): (Vec<i32>, Vec<i64>) = acknowledged
            .iter()
            .map(|(partition, (_, highest))| (*partition, *highest))
            .unzip();
        let count = i64::try_from(messages.len())?;
        let mut tx = conn.begin().await?;
        if let Some(last) = batch.last() {
            sqlx::query(ADVANCE_CURSOR)
                .bind(&self.config.topic)
                .bind(&last.transaction_id)
                .bind(last.position)
                .bind(count - i64::try_from(unparked.len())?)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(RECORD_OFFSETS)
            .bind(&self.config.topic)
            .bind(&partitions)
            .bind(&offsets)
            .execute(&mut *tx)
            .await?;
        sqlx::query(PARK)
            .bind(&self.config.topic)
            .bind(&parked.positions)
            .bind(&parked.aggregate_ids)
            .bind(&parked.sequences)
            .bind(&parked.errors)
            .execute(&mut *tx)
            .await?;
        sqlx::query(UNPARK)
            .bind(&self.config.topic)
            .bind(&unparked)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        drop(spans);
        published
            .last_offsets
            .extend(partitions.into_iter().zip(offsets));
        tracing::debug!(count, "published");
        Ok(Outcome::Published(i64::try_from(batch.len())?))
    }
}

/// The events of a batch that are parked, as columns.
#[derive(Default)]
struct Parked {
    positions: Vec<i64>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    errors: Vec<String>,
}

impl Parked {
    fn add(&mut self, event: &StoredEvent, error: &str) {
        self.positions.push(event.position);
        self.aggregate_ids.push(event.aggregate_id.clone());
        self.sequences.push(event.sequence);
        self.errors.push(error.to_owned());
    }
}

fn publish_span(topic: &str, message: &Outgoing) -> tracing::Span {
    let span = tracing::info_span!(
        "relay.publish",
        otel.name = tracing::field::Empty,
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = topic,
        messaging.kafka.message.key = message.key,
    );
    trace::name(&span, || format!("publish {topic}"));
    if let Some((_, traceparent)) = message.headers.iter().find(|(k, _)| *k == "traceparent") {
        trace::follow(&span, traceparent);
    }
    span
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
