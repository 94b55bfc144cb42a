//! The mailer: follows the event store in commit order (its own cursor,
//! the committed-prefix rule of the relay), records the messages events
//! call for in `mail_deliveries` in the same transaction as the cursor,
//! and sends the due ones. One mailer leads at a time (an advisory lock).
//!
//! A message is marked sent after the server took it: a crash in between
//! sends it once more, with the same `Message-ID`.

use std::sync::Arc;
use std::time::Duration;

use accountable_domain::{User, UserEvent};
use accountable_vault::{EventFields, Vault};
use chrono::Utc;
use cqrs_es::Aggregate;
use lettre::transport::smtp::authentication::Mechanism;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::deliveries::{self, Due};
use super::messages::{compose, Kind, Letterhead, Unsendable};
use crate::store::wake::{Recheck, EVENTS_CHANNEL};
use crate::store::{
    self, upcast, variant_fields, CommittedRead, StoredEvent, STORED_EVENT_COLUMNS,
};

/// The channel `mail_deliveries` signals on when a message is recorded.
const MAIL_CHANNEL: &str = "accountable_mail";
const TRY_LEAD: &str = "SELECT pg_try_advisory_lock(hashtext('accountable.mailer'))";
const ENSURE_CURSOR: &str =
    "INSERT INTO mailer_cursors (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";
const SELECT_CURSOR: &str = "SELECT transaction_id, position FROM mailer_cursors WHERE name = ";
const ADVANCE_CURSOR: &str = "
UPDATE mailer_cursors SET transaction_id = $2::text::xid8, position = $3, updated_at = now()
 WHERE name = $1";
/// The mailer's cursor; one store has one mail stream.
const CURSOR: &str = "mail";
/// Events read per transaction.
const BATCH: i64 = 500;
/// Messages tried per round.
const SEND_BATCH: i64 = 16;
/// The longest wait between two attempts at one message.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);
/// How long one message may take to hand over.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// Where messages go.
#[derive(Clone)]
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Development: each message is an `.eml` file in this folder.
    Files(AsyncFileTransport<Tokio1Executor>, std::path::PathBuf),
}

impl Transport {
    /// The SMTP server at `url` (`smtp://`, `smtps://`, with credentials).
    pub fn smtp(url: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|_| anyhow::anyhow!("ACCOUNTABLE_SMTP_URL is not an SMTP URL"))?
            .authentication(vec![Mechanism::Plain, Mechanism::Login])
            .timeout(Some(SEND_TIMEOUT))
            .build();
        Ok(Self::Smtp(transport))
    }

    pub fn files(dir: std::path::PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self::Files(AsyncFileTransport::new(&dir), dir))
    }

    async fn send(&self, message: Message) -> Result<(), Failure> {
        match self {
            Self::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(|error| Failure {
                permanent: error.is_permanent(),
                reason: smtp_failure(&error),
            }),
            Self::Files(files, _) => files
                .send(message)
                .await
                .map(drop)
                .map_err(|error| Failure {
                    permanent: false,
                    reason: error.to_string(),
                }),
        }
    }
}

/// Why a message was not taken.
struct Failure {
    /// The server refused it for good (a 5xx answer): retrying cannot help.
    permanent: bool,
    reason: String,
}

/// What went wrong, without the server's own words: an answer may quote
/// the recipient's address, which is personal data and must not stay in
/// the outbox or the logs.
fn smtp_failure(error: &lettre::transport::smtp::Error) -> String {
    match error.status() {
        Some(code) if error.is_permanent() => {
            format!("the server refused the message for good ({code})")
        }
        Some(code) => format!("the server refused the message for now ({code})"),
        None if error.is_timeout() => "the server did not answer in time".to_owned(),
        None if error.is_tls() => format!("TLS with the server failed: {error}"),
        None => format!("could not hand the message over: {error}"),
    }
}

#[derive(Clone)]
pub struct MailerConfig {
    pub letterhead: Letterhead,
    pub poll_interval: Duration,
    pub retry: Duration,
    pub max_attempts: i32,
}

pub struct Mailer {
    pool: PgPool,
    vault: Arc<Vault>,
    transport: Transport,
    config: MailerConfig,
}

impl Mailer {
    pub fn new(
        pool: PgPool,
        vault: Arc<Vault>,
        transport: Transport,
        config: MailerConfig,
    ) -> Self {
        Self {
            pool,
            vault,
            transport,
            config,
        }
    }

    /// Waits for leadership, then mails until `shutdown`; a failure (the
    /// database away) gives up leadership and starts over after a pause.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        match &self.transport {
            Transport::Smtp(_) => tracing::info!("mailer started (SMTP)"),
            Transport::Files(_, dir) => tracing::info!(
                folder = %dir.display(),
                "mailer started: no ACCOUNTABLE_SMTP_URL, so every message is written as an .eml file into {}",
                dir.display()
            ),
        }
        while !shutdown.is_cancelled() {
            if let Err(error) = self.lead_when_possible(&shutdown).await {
                tracing::warn!(error = %error, "mailer interrupted; starting over");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        tracing::info!("mailer stopped");
        Ok(())
    }

    async fn lead_when_possible(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        // The session holding the lock moves the cursor: if it dies, the
        // lock goes with it.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let leading: bool = sqlx::query_scalar(TRY_LEAD).fetch_one(&mut conn).await?;
            if leading {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        tracing::info!("mailer leads");
        sqlx::query(ENSURE_CURSOR)
            .bind(CURSOR)
            .execute(&mut conn)
            .await?;
        let mut listener = crate::db::listener(&self.pool).await?;
        listener.listen_all([EVENTS_CHANNEL, MAIL_CHANNEL]).await?;
        let mut recheck = Recheck::new(self.config.poll_interval);
        loop {
            while self.collect(&mut conn).await? == BATCH {}
            while self.send_due(shutdown).await? == SEND_BATCH {}
            let look = recheck.wait(crate::store::committed::held_back(&mut conn).await?);
            let wait = deliveries::soonest(&self.pool)
                .await?
                .map_or(look, |soonest| soonest.min(look));
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                notification = listener.recv() => { notification?; }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Records the messages of the next committed events and moves the
    /// cursor past them, in one transaction. Answers how many events it read.
    async fn collect(&self, conn: &mut PgConnection) -> anyhow::Result<i64> {
        let mut tx = conn.begin().await?;
        let mut read = CommittedRead::select(STORED_EVENT_COLUMNS)
            .after_selected(SELECT_CURSOR, CURSOR.to_owned());
        read.and()
            .push(" AND aggregate_type = ")
            .push_bind(User::TYPE);
        let batch: Vec<StoredEvent> = read
            .in_commit_order(Some(BATCH))
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = batch.last() else {
            return Ok(0);
        };
        let mut calling = Vec::new();
        for event in &batch {
            if Kind::due_for(&event.event_type).is_empty() {
                continue;
            }
            let user_id = uuid::Uuid::parse_str(&event.aggregate_id)?;
            calling.push((
                user_id,
                event.sequence,
                event.event_type.as_str(),
                event.position,
            ));
        }
        let recorded = deliveries::record(&mut tx, &calling).await?;
        sqlx::query(ADVANCE_CURSOR)
            .bind(CURSOR)
            .bind(&last.transaction_id)
            .bind(last.position)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if recorded > 0 {
            tracing::debug!(messages = recorded, "mail due");
        }
        Ok(i64::try_from(batch.len())?)
    }

    /// Tries the due messages whose time has come. Answers how many.
    async fn send_due(&self, shutdown: &CancellationToken) -> anyhow::Result<i64> {
        let due = deliveries::take_due(&self.pool, SEND_BATCH, self.config.retry).await?;
        for message in &due {
            if shutdown.is_cancelled() {
                break;
            }
            self.deliver(message).await?;
        }
        Ok(i64::try_from(due.len())?)
    }

    async fn deliver(&self, due: &Due) -> anyhow::Result<()> {
        let message = match self.compose(due).await? {
            Ok(message) => message,
            Err(why) => {
                tracing::info!(user = %due.user_id, sequence = due.sequence, kind = %due.kind, reason = %why, "mail not sent");
                metrics::counter!("accountable_mail_dropped_total", "kind" => kind_label(due))
                    .increment(1);
                return Ok(deliveries::dropped(&self.pool, due, &why.to_string()).await?);
            }
        };
        match self.transport.send(message).await {
            Ok(()) => {
                deliveries::sent(&self.pool, due).await?;
                metrics::counter!("accountable_mail_sent_total", "kind" => kind_label(due))
                    .increment(1);
                tracing::info!(user = %due.user_id, sequence = due.sequence, kind = %due.kind, "mail sent");
            }
            Err(failure) => {
                // A permanent refusal parks the message at once.
                let max_attempts = if failure.permanent {
                    due.attempts
                } else {
                    self.config.max_attempts
                };
                let parked = deliveries::failed(
                    &self.pool,
                    due,
                    &failure.reason,
                    max_attempts,
                    MAX_RETRY_WAIT,
                )
                .await?;
                metrics::counter!("accountable_mail_failures_total", "kind" => kind_label(due))
                    .increment(1);
                tracing::warn!(user = %due.user_id, sequence = due.sequence, kind = %due.kind, attempts = due.attempts, parked, error = %failure.reason, "the mail server did not take a message");
            }
        }
        Ok(())
    }

    /// The message, made from its event as stored, opened with the user's
    /// key (gone once erased).
    async fn compose(&self, due: &Due) -> anyhow::Result<Result<Message, Unsendable>> {
        let Some(kind) = Kind::parse(&due.kind) else {
            return Ok(Err(Unsendable::NotForThisEvent));
        };
        let events = store::streams::user_events_between(
            &self.pool,
            &due.user_id.to_string(),
            due.sequence - 1,
            due.sequence + 1,
        )
        .await?;
        let Some(mut stored) = events.into_iter().next() else {
            return Ok(Err(Unsendable::NotForThisEvent));
        };
        if let Some(fields) = variant_fields(&mut stored.payload) {
            self.vault
                .unseal(&mut [EventFields {
                    user_id: due.user_id,
                    sequence: due.sequence,
                    fields,
                }])
                .await?;
        }
        let payload = upcast::stored(&stored.event_type, &stored.event_version, stored.payload);
        let event: UserEvent = serde_json::from_value(payload)?;
        Ok(compose(
            &self.config.letterhead,
            kind,
            &event,
            (due.user_id, due.sequence),
            stored.recorded_at,
            Utc::now(),
        ))
    }
}

/// The kind as a metric label: one of ours, never the table's free text.
fn kind_label(due: &Due) -> &'static str {
    Kind::parse(&due.kind).map_or("unknown", Kind::as_str)
}
