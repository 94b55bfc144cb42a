//! The projection worker: a Kafka consumer group whose batches are applied
//! to PostgreSQL in one transaction each, with offsets committed to Kafka
//! only after the database commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::contract::{AccountEvent, ContractError, Envelope};
use crate::users::{self, Outcome, UserRow};

/// The name of the `users` projection: its consumer group suffix and its
/// key in `projection_checkpoints`.
pub const USERS: &str = "users";

/// The NOTIFY channel on which a committed batch announces itself, so that
/// readers waiting for a version can look again.
pub const PROJECTED_CHANNEL: &str = "accountable_projected";

/// The event store, seen from a projection: the source of events that did
/// not arrive (a gap in a user's sequence).
#[async_trait]
pub trait EventHistory: Send + Sync {
    /// The user's events with `after < sequence < before`, in order, in the
    /// public envelope form.
    async fn between(
        &self,
        user_id: Uuid,
        after: i64,
        before: i64,
    ) -> anyhow::Result<Vec<Envelope>>;
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    pub group_id: String,
    /// Most messages applied in one database transaction.
    pub max_batch: usize,
    /// How long a batch waits for more messages once it has one.
    pub batch_window: Duration,
    /// How soon the group gives the partitions of a silent member to others.
    pub session_timeout: Duration,
    /// How long a member may go without polling; also the rebalance
    /// timeout, so it bounds how long a group waits for a member that died
    /// in the middle of a rebalance.
    pub max_poll_interval: Duration,
}

struct Parsed {
    envelope: Envelope,
    event: AccountEvent,
}

/// What one message does to the batch.
enum Step {
    Changed(Uuid),
    Unchanged,
    /// Cannot be applied, now or later: kept in the dead-letter table.
    Park(String),
}

pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    history: Arc<dyn EventHistory>,
    consumer: StreamConsumer<RebalanceLog>,
}

/// Logs partition assignments, so that who consumes what is visible.
pub struct RebalanceLog;

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| {
            list.elements()
                .iter()
                .map(|e| e.partition())
                .collect::<Vec<_>>()
        };
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = ?partitions(list), "partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = ?partitions(list), "partitions revoked")
            }
            Rebalance::Error(error) => tracing::warn!(error = %error, "rebalance failed"),
        }
    }
}

impl Worker {
    pub fn new(
        pool: PgPool,
        config: WorkerConfig,
        history: Arc<dyn EventHistory>,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer<RebalanceLog> = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // Bounds the wait of a fetch on a broker that does not answer
            // as soon as data arrives, and so the projection's lag.
            .set("fetch.wait.max.ms", "100")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "max.poll.interval.ms",
                config.max_poll_interval.as_millis().to_string(),
            )
            .create_with_context(RebalanceLog)?;
        consumer.subscribe(&[&config.topic])?;
        Ok(Self {
            pool,
            config,
            history,
            consumer,
        })
    }

    /// Consumes until `shutdown`; the batch in hand is finished and
    /// committed first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(topic = %self.config.topic, group = %self.config.group_id, "projection worker started");
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let first = match first {
                Ok(message) => message.detach(),
                Err(error) => {
                    // Transient (a topic not created yet, a broker away):
                    // librdkafka recovers by itself.
                    tracing::warn!(error = %error, "consumer error");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let batch = self.fill_batch(first).await;
            if !self.apply_with_retry(&batch, &shutdown).await {
                break;
            }
            self.commit_offsets(&batch, CommitMode::Async)?;
        }
        tracing::info!("projection worker stopped");
        Ok(())
    }

    async fn fill_batch(&self, first: OwnedMessage) -> Vec<OwnedMessage> {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.config.batch_window;
        while batch.len() < self.config.max_batch {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        batch
    }

    /// Applies the batch, retrying with backoff on infrastructure failures.
    /// Returns `false` when shut down before it could be applied.
    async fn apply_with_retry(&self, batch: &[OwnedMessage], shutdown: &CancellationToken) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.apply(batch).await {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in = ?backoff, "projection batch failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn apply(&self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let parsed: Vec<Result<Parsed, ContractError>> = batch.iter().map(parse).collect();
        let ids: Vec<Uuid> = parsed
            .iter()
            .flatten()
            .map(|p| p.envelope.subject)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();

        let mut tx = self.pool.begin().await?;
        let mut rows: HashMap<Uuid, Option<UserRow>> = ids.iter().map(|id| (*id, None)).collect();
        for row in users::load_for_update(&mut tx, &ids).await? {
            rows.insert(row.id, Some(row));
        }
        let mut changed = HashSet::new();
        for (message, parsed) in batch.iter().zip(&parsed) {
            let step = match parsed {
                Err(error) => Step::Park(error.to_string()),
                Ok(Parsed { envelope, event }) => {
                    let row = rows.entry(envelope.subject).or_default();
                    self.reduce_filling_gaps(row, envelope, event).await?
                }
            };
            match step {
                Step::Changed(id) => {
                    changed.insert(id);
                }
                Step::Unchanged => {}
                Step::Park(error) => {
                    tracing::error!(
                        partition = message.partition(),
                        offset = message.offset(),
                        error = %error,
                        "parking a message that cannot be applied"
                    );
                    park(&mut tx, USERS, message, &error).await?;
                }
            }
        }
        for id in &changed {
            if let Some(Some(row)) = rows.get(id) {
                users::save(&mut tx, row).await?;
            }
        }
        save_checkpoints(&mut tx, batch).await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(PROJECTED_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(
            first = ?batch.iter().map(|m| (m.partition(), m.offset())).min(),
            next = ?next_offsets(batch),
            "batch applied"
        );
        Ok(())
    }

    /// Applies `envelope` to `row`, first fetching from the event store any
    /// events the row is missing. A gap the store cannot fill means the
    /// message did not come from it: the message is parked.
    async fn reduce_filling_gaps(
        &self,
        row: &mut Option<UserRow>,
        envelope: &Envelope,
        event: &AccountEvent,
    ) -> anyhow::Result<Step> {
        let after = match users::reduce(row, envelope, event) {
            Outcome::Applied => return Ok(Step::Changed(envelope.subject)),
            Outcome::Duplicate => return Ok(Step::Unchanged),
            Outcome::Gap { after } => after,
        };
        tracing::info!(user = %envelope.subject, after, before = envelope.sequence, "filling a gap from the event store");
        let missing = self
            .history
            .between(envelope.subject, after, envelope.sequence)
            .await?;
        let mut filled = row.clone();
        for earlier in missing.iter().chain(std::iter::once(envelope)) {
            let applied = earlier
                .event()
                .is_ok_and(|e| users::reduce(&mut filled, earlier, &e) == Outcome::Applied);
            if !applied {
                return Ok(Step::Park(format!(
                    "sequence {} of user {} follows {after}, and the event store does not hold the events between",
                    envelope.sequence, envelope.subject
                )));
            }
        }
        *row = filled;
        Ok(Step::Changed(envelope.subject))
    }

    fn commit_offsets(&self, batch: &[OwnedMessage], mode: CommitMode) -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in next_offsets(batch) {
            offsets.add_partition_offset(&topic, partition, Offset::Offset(next))?;
        }
        if let Err(error) = self.consumer.commit(&offsets, mode) {
            // The rows are committed; a lost offset commit only means a
            // harmless re-delivery.
            tracing::warn!(error = %error, "offset commit failed");
        }
        Ok(())
    }
}

fn parse(message: &OwnedMessage) -> Result<Parsed, ContractError> {
    let envelope = Envelope::from_slice(message.payload().unwrap_or_default())?;
    let event = envelope.event()?;
    Ok(Parsed { envelope, event })
}

/// The offset after the last message of each partition in the batch.
fn next_offsets(batch: &[OwnedMessage]) -> BTreeMap<(String, i32), i64> {
    let mut next = BTreeMap::new();
    for message in batch {
        let entry = next
            .entry((message.topic().to_owned(), message.partition()))
            .or_insert(0);
        *entry = (*entry).max(message.offset() + 1);
    }
    next
}

async fn save_checkpoints(conn: &mut PgConnection, batch: &[OwnedMessage]) -> sqlx::Result<()> {
    for ((topic, partition), next) in next_offsets(batch) {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (projection, topic, partition) DO UPDATE
                SET next_offset = GREATEST(projection_checkpoints.next_offset, EXCLUDED.next_offset),
                    updated_at = now()",
        )
        .bind(USERS)
        .bind(&topic)
        .bind(partition)
        .bind(next)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn park(
    conn: &mut PgConnection,
    projection: &str,
    message: &OwnedMessage,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO projection_dead_letters (projection, topic, partition, \"offset\", key, payload, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (projection, topic, partition, \"offset\") DO NOTHING",
    )
    .bind(projection)
    .bind(message.topic())
    .bind(message.partition())
    .bind(message.offset())
    .bind(message.key())
    .bind(message.payload())
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}
