//! The projection worker: consumes the partitions it owns, applies each
//! batch to PostgreSQL in one transaction together with the offsets it
//! reached, and resumes from those offsets. Partitions are shared among
//! workers through PostgreSQL advisory locks rather than the broker's group
//! coordinator (which, in tansu 0.6, could strand a group whose member died
//! mid-rebalance); offsets are also committed to Kafka, after the database
//! commit, for lag monitoring.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use accountable_vault::{EventFields, Vault, VaultError};

use crate::contract::{AccountEvent, ContractError, Envelope};
use crate::users::{self, Outcome, UserRow};

mod checkpoints;
mod dead_letters;
mod ownership;

use checkpoints::{generations, next_offsets, rewritten_partitions, save_checkpoints, Generations};
use dead_letters::park;
pub use dead_letters::{parked, DeadLetter, Retried};
use ownership::{Ownership, CLAIM_EVERY};

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

pub struct Worker {
    applier: Applier,
    config: WorkerConfig,
    consumer: Arc<StreamConsumer>,
}

/// What applies events to the read table, without Kafka: the worker's, and
/// the dead letters' retry, which an operator may start from anywhere.
pub struct Applier {
    pool: PgPool,
    history: Arc<dyn EventHistory>,
    /// Opens the sealed personal fields of events.
    vault: Arc<Vault>,
}

impl Applier {
    pub fn new(pool: PgPool, history: Arc<dyn EventHistory>, vault: Arc<Vault>) -> Self {
        Self {
            pool,
            history,
            vault,
        }
    }
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
            applier: Applier::new(pool, history, vault),
            config,
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
        self.applier.unseal(&mut envelopes).await?;
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

        let mut tx = self.applier.pool.begin().await?;
        let mut rows: HashMap<Uuid, Option<UserRow>> = ids.iter().map(|id| (*id, None)).collect();
        for row in users::load_for_update(&mut tx, &ids).await? {
            rows.insert(row.id, Some(row));
        }
        let mut changed = HashSet::new();
        // One span per message, in the trace of the request that caused its
        // event, until the batch commits.
        let mut spans = Vec::with_capacity(batch.len());
        for (message, parsed) in batch.iter().zip(&parsed) {
            let span = apply_span(message);
            let step = match parsed {
                Err(error) => Step::Park(error.to_string()),
                Ok(Parsed { envelope, event }) => {
                    let row = rows.entry(envelope.subject).or_default();
                    self.applier
                        .reduce_filling_gaps(row, envelope, event)
                        .instrument(span.clone())
                        .await?
                }
            };
            spans.push(span);
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
        drop(spans);
        crate::crash::point("project.after_commit");
        tracing::debug!(
            first = ?batch.iter().map(|m| (m.partition(), m.offset())).min(),
            next = ?next_offsets(batch),
            "batch applied"
        );
        Ok(())
    }
}

impl Applier {
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
}

fn apply_span(message: &OwnedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "projection.apply",
        otel.name = tracing::field::Empty,
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = message.topic(),
        messaging.kafka.partition = message.partition(),
        messaging.kafka.offset = message.offset(),
    );
    let traceparent = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|header| header.key == "traceparent")
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
    });
    crate::trace::name(&span, || format!("apply {USERS}"));
    if let Some(traceparent) = traceparent {
        crate::trace::follow(&span, traceparent);
    }
    span
}
