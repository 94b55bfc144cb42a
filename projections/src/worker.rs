//! The projection worker: consumes the partitions it owns, applies each
//! batch to PostgreSQL in one transaction together with the offsets it
//! reached, and resumes from those offsets. Partitions are shared among
//! workers through PostgreSQL advisory locks rather than the broker's group
//! coordinator (which, in tansu 0.6, could strand a group whose member died
//! mid-rebalance); offsets are also committed to Kafka, after the database
//! commit, for lag monitoring.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use accountable_vault::{EventFields, Vault, VaultError};

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

/// What retrying the dead letters did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retried {
    /// Applied now, or found already applied: gone from the table.
    pub applied: u64,
    /// Still not applicable: kept, with their new error.
    pub still_parked: u64,
}

pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    history: Arc<dyn EventHistory>,
    /// Opens the sealed personal fields of events.
    vault: Arc<Vault>,
    consumer: Arc<StreamConsumer>,
}

/// How often a worker looks for partitions no live worker owns.
const CLAIM_EVERY: Duration = Duration::from_secs(2);

/// Claims one partition of a projection for this session, if free.
const TRY_CLAIM: &str = "SELECT pg_try_advisory_lock(hashtext($1), $2)";

const SELECT_CHECKPOINTS: &str = "
SELECT partition, next_offset, generation FROM projection_checkpoints
 WHERE projection = $1 AND topic = $2";

/// A partition written anew (a later generation): read from its start.
const READ_AGAIN: &str = "
INSERT INTO projection_checkpoints (projection, topic, partition, next_offset, generation)
VALUES ($1, $2, $3, 0, $4)
ON CONFLICT (projection, topic, partition) DO UPDATE
   SET next_offset = 0, generation = EXCLUDED.generation, updated_at = now()";

/// The partitions this worker owns: session advisory locks on one
/// PostgreSQL connection. When the worker dies, its connection closes, the
/// locks go with it, and other workers claim the partitions.
#[derive(Default)]
struct Ownership {
    conn: Option<PgConnection>,
    partitions: BTreeSet<i32>,
    /// The generation each owned partition's offsets refer to.
    generations: HashMap<i32, i64>,
}

impl Worker {
    pub fn new(
        pool: PgPool,
        config: WorkerConfig,
        history: Arc<dyn EventHistory>,
        vault: Arc<Vault>,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // Bounds the wait of a fetch on a broker that does not answer
            // as soon as data arrives, and so the projection's lag.
            .set("fetch.wait.max.ms", "10")
            .create()?;
        Ok(Self {
            pool,
            config,
            history,
            vault,
            consumer: Arc::new(consumer),
        })
    }

    /// Consumes until `shutdown`; the batch in hand is finished and
    /// committed first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(topic = %self.config.topic, group = %self.config.group_id, "projection worker started");
        let mut ownership = Ownership::default();
        let mut next_claim = tokio::time::Instant::now();
        let mut reached = BTreeMap::new();
        loop {
            if tokio::time::Instant::now() >= next_claim {
                if let Err(error) = self.claim(&mut ownership).await {
                    tracing::warn!(error = %error, "cannot claim partitions; releasing all");
                    ownership = Ownership::default();
                    self.consumer.unassign()?;
                }
                next_claim = tokio::time::Instant::now() + CLAIM_EVERY;
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next_claim) => continue,
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
            let latest = generations(&batch);
            let rewritten = rewritten_partitions(&latest, &ownership.generations);
            if !rewritten.is_empty() {
                // Nothing of this batch is applied: every owned partition is
                // read again from the offsets the database holds.
                if let Err(error) = self.read_again(&mut ownership, &rewritten).await {
                    tracing::warn!(error = %error, "cannot restart the rewritten partitions; releasing all");
                    ownership = Ownership::default();
                    self.consumer.unassign()?;
                }
                continue;
            }
            if !self.apply_with_retry(&batch, &latest, &shutdown).await {
                break;
            }
            ownership
                .generations
                .extend(latest.into_iter().map(|((_, p), g)| (p, g)));
            let next = next_offsets(&batch);
            self.commit_offsets(&next, CommitMode::Async)?;
            reached.extend(next);
        }
        // The asynchronous commits may still be in flight: the offsets
        // reached go to the broker before the process leaves.
        if !reached.is_empty() {
            self.commit_offsets(&reached, CommitMode::Sync)?;
        }
        tracing::info!("projection worker stopped");
        Ok(())
    }

    /// Claims the partitions of the topic that no live worker owns, and
    /// consumes every owned partition from the offset after the last batch
    /// applied to the database, which is kept with the rows.
    async fn claim(&self, ownership: &mut Ownership) -> anyhow::Result<()> {
        let partitions = self.partition_count().await?;
        if ownership.conn.is_none() {
            ownership.conn = Some(self.pool.acquire().await?.detach());
            ownership.partitions.clear();
        }
        let Some(conn) = ownership.conn.as_mut() else {
            return Ok(());
        };
        // The locks live as long as this session: if it has ended (the
        // database restarted, the session was terminated), so has the
        // ownership, and another worker may hold the partitions by now.
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        let mut claimed = Vec::new();
        for partition in 0..partitions {
            if ownership.partitions.contains(&partition) {
                continue;
            }
            let free: bool = sqlx::query_scalar(TRY_CLAIM)
                .bind(&self.config.group_id)
                .bind(partition)
                .fetch_one(&mut *conn)
                .await?;
            if free {
                ownership.partitions.insert(partition);
                claimed.push(partition);
            }
        }
        if claimed.is_empty() {
            return Ok(());
        }
        self.assign(ownership).await?;
        tracing::info!(claimed = ?claimed, owned = ?ownership.partitions, "partitions claimed");
        Ok(())
    }

    /// Consumes every owned partition from the offset after the last batch
    /// applied to the database.
    async fn assign(&self, ownership: &mut Ownership) -> anyhow::Result<()> {
        let Some(conn) = ownership.conn.as_mut() else {
            return Ok(());
        };
        let checkpoints: Vec<(i32, i64, i64)> = sqlx::query_as(SELECT_CHECKPOINTS)
            .bind(USERS)
            .bind(&self.config.topic)
            .fetch_all(&mut *conn)
            .await?;
        let checkpoints: HashMap<i32, (i64, i64)> = checkpoints
            .into_iter()
            .map(|(partition, next, generation)| (partition, (next, generation)))
            .collect();
        let mut assignment = TopicPartitionList::new();
        ownership.generations.clear();
        for partition in &ownership.partitions {
            let offset = match checkpoints.get(partition) {
                Some((next, generation)) => {
                    ownership.generations.insert(*partition, *generation);
                    Offset::Offset(*next)
                }
                None => Offset::Beginning,
            };
            assignment.add_partition_offset(&self.config.topic, *partition, offset)?;
        }
        self.consumer.assign(&assignment)?;
        Ok(())
    }

    /// The relay wrote these partitions anew (a later generation): their
    /// offsets refer to messages that are gone, so they are read again from
    /// their start; re-applying what is already applied changes nothing.
    async fn read_again(
        &self,
        ownership: &mut Ownership,
        rewritten: &BTreeMap<i32, i64>,
    ) -> anyhow::Result<()> {
        let Some(conn) = ownership.conn.as_mut() else {
            return Ok(());
        };
        for (partition, generation) in rewritten {
            tracing::warn!(
                partition,
                generation,
                "the topic was written anew; reading the partition again"
            );
            sqlx::query(READ_AGAIN)
                .bind(USERS)
                .bind(&self.config.topic)
                .bind(partition)
                .bind(generation)
                .execute(&mut *conn)
                .await?;
        }
        self.assign(ownership).await
    }

    /// How many partitions the topic has (0 while it does not exist).
    async fn partition_count(&self) -> anyhow::Result<i32> {
        let consumer = self.consumer.clone();
        let topic = self.config.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))
        })
        .await??;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.config.topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        Ok(i32::try_from(count)?)
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
    async fn apply_with_retry(
        &self,
        batch: &[OwnedMessage],
        latest: &Generations,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.apply(batch, latest).await {
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

    /// Applies the batch, whose latest generation per partition is `latest`.
    async fn apply(&self, batch: &[OwnedMessage], latest: &Generations) -> anyhow::Result<()> {
        let mut envelopes: Vec<Result<Envelope, ContractError>> = batch
            .iter()
            .map(|message| Envelope::from_slice(message.payload().unwrap_or_default()))
            .collect();
        self.unseal(&mut envelopes).await?;
        let parsed: Vec<Result<Parsed, ContractError>> = envelopes
            .into_iter()
            .map(|envelope| {
                let envelope = envelope?;
                let event = envelope.event()?;
                Ok(Parsed { envelope, event })
            })
            .collect();
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
        let changed: Vec<&UserRow> = changed
            .iter()
            .filter_map(|id| rows.get(id).and_then(Option::as_ref))
            .collect();
        users::save(&mut tx, &changed).await?;
        save_checkpoints(&mut tx, batch, latest).await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(PROJECTED_CHANNEL)
            .execute(&mut *tx)
            .await?;
        crate::crash::point("project.before_commit");
        tx.commit().await?;
        crate::crash::point("project.after_commit");
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
        let mut missing: Vec<Result<Envelope, ContractError>> = self
            .history
            .between(envelope.subject, after, envelope.sequence)
            .await?
            .into_iter()
            .map(Ok)
            .collect();
        self.unseal(&mut missing).await?;
        let missing = match missing.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(missing) => missing,
            Err(unopened) => return Ok(Step::Park(unopened.to_string())),
        };
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

    /// Opens the sealed personal fields of `envelopes` in place (erased ones
    /// become null). An envelope whose sealed data does not open becomes a
    /// contract error, so that it is parked. A database failure fails the
    /// whole call.
    async fn unseal(
        &self,
        envelopes: &mut [Result<Envelope, ContractError>],
    ) -> anyhow::Result<()> {
        let mut all: Vec<EventFields<'_>> = envelopes
            .iter_mut()
            .flatten()
            .filter_map(Envelope::sealed_fields)
            .collect();
        match self.vault.unseal(&mut all).await {
            Ok(()) => return Ok(()),
            Err(VaultError::Database(error)) => return Err(error.into()),
            Err(_) => {}
        }
        drop(all);
        // One of them does not open: open them one by one to tell which.
        for slot in envelopes.iter_mut() {
            let Some(fields) = slot.as_mut().ok().and_then(Envelope::sealed_fields) else {
                continue;
            };
            match self.vault.unseal(&mut [fields]).await {
                Ok(()) => {}
                Err(VaultError::Database(error)) => return Err(error.into()),
                Err(error) => *slot = Err(ContractError::Sealed(error.to_string())),
            }
        }
        Ok(())
    }

    /// Applies the parked messages again (after a fix, or once the events a
    /// gap was missing exist): each one that applies, or turns out to be
    /// already applied, leaves the dead-letter table; the others stay with
    /// their new error. One transaction per message; offsets are untouched.
    pub async fn retry_dead_letters(&self) -> anyhow::Result<Retried> {
        let parked: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, payload FROM projection_dead_letters WHERE projection = $1 ORDER BY id",
        )
        .bind(USERS)
        .fetch_all(&self.pool)
        .await?;
        let mut retried = Retried::default();
        for (id, payload) in parked {
            let mut envelopes = vec![Envelope::from_slice(payload.as_deref().unwrap_or_default())];
            self.unseal(&mut envelopes).await?;
            let parsed = envelopes.pop().map(|envelope| {
                let envelope = envelope?;
                let event = envelope.event()?;
                Ok::<_, ContractError>(Parsed { envelope, event })
            });
            let mut tx = self.pool.begin().await?;
            let step = match parsed {
                Some(Ok(Parsed { envelope, event })) => {
                    let mut row = users::load_for_update(&mut tx, &[envelope.subject])
                        .await?
                        .pop();
                    let step = self
                        .reduce_filling_gaps(&mut row, &envelope, &event)
                        .await?;
                    if let (Step::Changed(_), Some(row)) = (&step, &row) {
                        users::save(&mut tx, &[row]).await?;
                    }
                    step
                }
                Some(Err(error)) => Step::Park(error.to_string()),
                None => Step::Park("no message".into()),
            };
            match step {
                Step::Park(error) => {
                    sqlx::query("UPDATE projection_dead_letters SET error = $2, failed_at = now() WHERE id = $1")
                        .bind(id)
                        .bind(&error)
                        .execute(&mut *tx)
                        .await?;
                    retried.still_parked += 1;
                }
                Step::Changed(_) | Step::Unchanged => {
                    sqlx::query("DELETE FROM projection_dead_letters WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    retried.applied += 1;
                }
            }
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(PROJECTED_CHANNEL)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(retried)
    }

    /// Commits the offsets after what the database holds to Kafka.
    fn commit_offsets(
        &self,
        next: &BTreeMap<(String, i32), i64>,
        mode: CommitMode,
    ) -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in next {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        if let Err(error) = self.consumer.commit(&offsets, mode) {
            // The rows are committed; a lost offset commit only means a
            // harmless re-delivery.
            tracing::warn!(error = %error, "offset commit failed");
        }
        Ok(())
    }
}

/// The largest `value` of the batch's messages, per topic and partition.
fn per_partition_max(
    batch: &[OwnedMessage],
    value: impl Fn(&OwnedMessage) -> i64,
) -> BTreeMap<(String, i32), i64> {
    let mut largest = BTreeMap::new();
    for message in batch {
        let value = value(message);
        largest
            .entry((message.topic().to_owned(), message.partition()))
            .and_modify(|largest: &mut i64| *largest = (*largest).max(value))
            .or_insert(value);
    }
    largest
}

/// The offset after the last message of each partition in the batch.
fn next_offsets(batch: &[OwnedMessage]) -> BTreeMap<(String, i32), i64> {
    per_partition_max(batch, |message| message.offset() + 1)
}

/// The generation a message carries (`ce_generation`; 1 when absent).
fn generation(message: &OwnedMessage) -> i64 {
    message
        .headers()
        .and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == "ce_generation")
                .and_then(|header| std::str::from_utf8(header.value?).ok()?.parse().ok())
        })
        .unwrap_or(1)
}

/// The latest generation of a batch's messages, per topic and partition.
type Generations = BTreeMap<(String, i32), i64>;

/// The latest generation in the batch, per partition.
fn generations(batch: &[OwnedMessage]) -> Generations {
    per_partition_max(batch, generation)
}

/// The partitions whose messages carry (`latest`) a later generation than
/// the one their offsets refer to (`known`), with that generation.
fn rewritten_partitions(latest: &Generations, known: &HashMap<i32, i64>) -> BTreeMap<i32, i64> {
    latest
        .iter()
        .filter(|((_, partition), latest)| {
            known.get(partition).is_some_and(|known| *latest > known)
        })
        .map(|((_, partition), latest)| (*partition, *latest))
        .collect()
}

async fn save_checkpoints(
    conn: &mut PgConnection,
    batch: &[OwnedMessage],
    latest: &Generations,
) -> sqlx::Result<()> {
    for ((topic, partition), next) in next_offsets(batch) {
        let generation = latest
            .get(&(topic.clone(), partition))
            .copied()
            .unwrap_or(1);
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset, generation)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (projection, topic, partition) DO UPDATE
                SET next_offset = GREATEST(projection_checkpoints.next_offset, EXCLUDED.next_offset),
                    generation = GREATEST(projection_checkpoints.generation, EXCLUDED.generation),
                    updated_at = now()",
        )
        .bind(USERS)
        .bind(&topic)
        .bind(partition)
        .bind(next)
        .bind(generation)
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

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::Timestamp;

    use super::*;

    fn message(partition: i32, offset: i64, generation: Option<&str>) -> OwnedMessage {
        let headers = generation.map(|value| {
            OwnedHeaders::new().insert(Header {
                key: "ce_generation",
                value: Some(value),
            })
        });
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            headers,
        )
    }

    #[test]
    fn a_later_generation_on_a_partition_with_offsets_means_reading_it_again() {
        let known = HashMap::from([(0, 1), (1, 1), (2, 3)]);
        let batch = [
            message(0, 7, Some("1")),
            message(1, 8, Some("1")),
            message(1, 0, Some("2")),
            message(2, 0, Some("3")),
            // No offsets kept yet: nothing to read again.
            message(3, 0, Some("5")),
            // Without the header (earlier relays): generation 1.
            message(0, 8, None),
        ];
        let latest = generations(&batch);
        assert_eq!(
            rewritten_partitions(&latest, &known),
            BTreeMap::from([(1, 2)])
        );
        assert_eq!(latest[&("t".to_owned(), 3)], 5);
        assert_eq!(latest[&("t".to_owned(), 0)], 1);
    }
}
