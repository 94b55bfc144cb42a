//! The pipeline's health, for admins and auditors: what `/metrics` tells
//! (the relay's and the projections' lag, dead letters, the mail outbox),
//! as the console's page reads it, and the retries an admin may start.

use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::error::{ApiError, ApiResult, Code};
use super::guards::AnyRole;
use super::users::{ADMINS, READERS};
use super::ApiState;
use crate::mail::deliveries;
use crate::observe;
use crate::store::{backlog, StoreHistory};
use accountable_projections::worker::{self, Applier};

/// The most dead letters one answer lists.
const DEAD_LETTERS_SHOWN: i64 = 100;
/// The projections there are.
const PROJECTIONS: &[&str] = &["users"];

#[derive(Default)]
pub struct PipelineQuery;

#[derive(Default)]
pub struct PipelineMutation;

/// From the event store to Kafka.
#[derive(SimpleObject)]
pub struct RelayHealth {
    /// Committed events not yet published.
    pub unpublished: i64,
    /// Events the relay could not read and set aside
    /// (`accountable relay republish`).
    pub parked: i64,
    /// How long the oldest unpublished event has waited, in seconds.
    pub lag_seconds: f64,
    /// One more each time the relay wrote the topic anew after the broker
    /// lost messages.
    pub generation: i64,
}

/// One read table's worker.
#[derive(SimpleObject)]
pub struct ProjectionHealth {
    /// The projection, e.g. `users`.
    pub name: String,
    /// Messages on the events topic it has yet to apply.
    pub lag: i64,
    /// Messages it parked because it could not apply them.
    pub dead_letters: i64,
}

/// The mail outbox.
#[derive(SimpleObject)]
pub struct MailHealth {
    /// Messages waiting to be sent.
    pub due: i64,
    /// Messages sent.
    pub sent: i64,
    /// Messages that failed every attempt (`retryParkedMail`).
    pub parked: i64,
    /// Messages not sent on purpose: the recipient was erased, or the link
    /// expired unsent.
    pub dropped: i64,
    /// How long the oldest due message has waited, in seconds.
    pub oldest_due_seconds: f64,
}

/// A message a projection parked.
#[derive(SimpleObject)]
pub struct DeadLetter {
    /// Its number in the dead-letter table.
    pub id: ID,
    /// The projection that parked it.
    pub projection: String,
    /// Where it was read: the topic,
    pub topic: String,
    /// the partition
    pub partition: i32,
    /// and the offset.
    pub offset: i64,
    /// Why it could not be applied, last time it was tried.
    pub error: String,
    /// When it was last tried.
    pub failed_at: DateTime<Utc>,
}

/// The whole pipeline, read from the database at once.
#[derive(SimpleObject)]
pub struct PipelineHealth {
    /// The relay.
    pub relay: RelayHealth,
    /// Every projection.
    pub projections: Vec<ProjectionHealth>,
    /// The mailer's outbox.
    pub mail: MailHealth,
    /// The messages parked longest ago (at most 100).
    pub dead_letters: Vec<DeadLetter>,
}

/// What retrying a projection's dead letters did.
#[derive(SimpleObject)]
pub struct RetriedDeadLetters {
    /// Applied now, or found applied already: gone from the table.
    pub applied: i64,
    /// Still not applicable: kept, with their new error.
    pub still_parked: i64,
}

#[Object]
impl PipelineQuery {
    /// The relay's and the projections' lag, the dead letters and the mail
    /// outbox (admins and auditors).
    #[graphql(guard = "AnyRole(READERS)")]
    async fn pipeline(&self, ctx: &Context<'_>) -> ApiResult<PipelineHealth> {
        let state = ctx.data::<ApiState>()?;
        let (pool, topic) = (&state.pool, state.events_topic.as_str());
        let lag = observe::projection_lag(pool, topic).await?;
        let dead = observe::dead_letters(pool).await?;
        let mail = deliveries::counts(pool).await?;
        Ok(PipelineHealth {
            relay: RelayHealth {
                unpublished: backlog::count(pool, topic).await?,
                parked: observe::relay_parked(pool, topic).await?,
                lag_seconds: observe::relay_lag(pool, topic).await?,
                generation: observe::relay_generation(pool, topic).await?,
            },
            projections: PROJECTIONS
                .iter()
                .map(|&name| ProjectionHealth {
                    name: name.to_owned(),
                    lag: observe::count_of(&lag, name),
                    dead_letters: observe::count_of(&dead, name),
                })
                .collect(),
            mail: MailHealth {
                due: observe::count_of(&mail, "due"),
                sent: observe::count_of(&mail, "sent"),
                parked: observe::count_of(&mail, "parked"),
                dropped: observe::count_of(&mail, "dropped"),
                oldest_due_seconds: deliveries::oldest_due(pool).await?,
            },
            dead_letters: worker::parked(pool, DEAD_LETTERS_SHOWN)
                .await?
                .into_iter()
                .map(|d| DeadLetter {
                    id: ID(d.id.to_string()),
                    projection: d.projection,
                    topic: d.topic,
                    partition: d.partition,
                    offset: d.offset,
                    error: d.error,
                    failed_at: d.failed_at,
                })
                .collect(),
        })
    }
}

#[Object]
impl PipelineMutation {
    /// Applies a projection's dead letters again (after a fix, or once the
    /// events a gap missed exist); those that apply leave the table
    /// (admins).
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn retry_dead_letters(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The projection: `users`.")] projection: String,
    ) -> ApiResult<RetriedDeadLetters> {
        if !PROJECTIONS.contains(&projection.as_str()) {
            return Err(ApiError::new(Code::NotFound, "no such projection"));
        }
        let state = ctx.data::<ApiState>()?;
        let applier = Applier::new(
            state.pool.clone(),
            StoreHistory::new(state.pool.clone()),
            state.vault.clone(),
        );
        let retried = applier.retry_dead_letters().await?;
        Ok(RetriedDeadLetters {
            applied: i64::try_from(retried.applied).unwrap_or(i64::MAX),
            still_parked: i64::try_from(retried.still_parked).unwrap_or(i64::MAX),
        })
    }

    /// Makes every parked message of the mail outbox due again (after the
    /// mail server was fixed); answers how many (admins).
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn retry_parked_mail(&self, ctx: &Context<'_>) -> ApiResult<i64> {
        let state = ctx.data::<ApiState>()?;
        let retried = deliveries::retry_parked(&state.pool).await?;
        Ok(i64::try_from(retried).unwrap_or(i64::MAX))
    }
}
