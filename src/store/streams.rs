//! Reads of single streams and of what is known about them: one user's
//! events (between two sequences, a page, up to a version or instant, with
//! their hashes), events at given positions, who was ever made an admin,
//! an erasure's receipt.

use std::sync::Arc;

use accountable_domain::User;
use accountable_projections::contract::Envelope;
use accountable_projections::worker::EventHistory;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use futures::stream::BoxStream;
use sqlx::{Executor, PgPool, Postgres};
use uuid::Uuid;

use super::committed::Bound;
use super::stored::{
    audit_row_columns, chained_event_columns, stored_event_columns, AuditRow, ChainedEvent,
    StoredEvent,
};

const USER_EVENTS_BETWEEN: &str = concat!(
    "SELECT ",
    stored_event_columns!(),
    " FROM events
     WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence < $4
     ORDER BY sequence"
);

const EVER_ADMINS: &str = "
SELECT DISTINCT aggregate_id FROM events
 WHERE aggregate_type = $1 AND event_type = 'RoleAssigned'
   AND payload -> 'RoleAssigned' ->> 'role' = 'ADMIN'";

const STREAMS_SINCE: &str =
    "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1 AND transaction_id >= $2::text::xid8";

const AT_POSITIONS: &str = concat!(
    "SELECT ",
    stored_event_columns!(),
    " FROM events WHERE position = ANY($1) ORDER BY events.transaction_id, events.position"
);

/// The events at these positions, in commit order.
pub async fn at_positions<'c>(
    executor: impl Executor<'c, Database = Postgres>,
    positions: &[i64],
) -> sqlx::Result<Vec<StoredEvent>> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(AT_POSITIONS)
        .bind(positions)
        .fetch_all(executor)
        .await
}

/// The user's events after sequence `after` and before `before`.
pub async fn user_events_between<'c>(
    executor: impl Executor<'c, Database = Postgres>,
    user_id: &str,
    after: i64,
    before: i64,
) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(USER_EVENTS_BETWEEN)
        .bind(User::TYPE)
        .bind(user_id)
        .bind(after)
        .bind(before)
        .fetch_all(executor)
        .await
}

/// Everyone who was ever made an admin: who may be one now.
pub async fn ever_admins(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(EVER_ADMINS)
        .bind(User::TYPE)
        .fetch_all(pool)
        .await
}

/// The users with events that had not all committed at `bound`.
pub async fn users_since<'c>(
    executor: impl Executor<'c, Database = Postgres>,
    bound: &Bound,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(STREAMS_SINCE)
        .bind(User::TYPE)
        .bind(bound.as_text())
        .fetch_all(executor)
        .await
}

const USER_PAGE: &str = concat!(
    "SELECT ",
    audit_row_columns!(),
    " FROM events WHERE aggregate_type = 'User' AND aggregate_id = $1 AND sequence > $2
     ORDER BY sequence LIMIT $3"
);

const USER_UNTIL: &str = concat!(
    "SELECT ",
    audit_row_columns!(),
    " FROM events WHERE aggregate_type = 'User' AND aggregate_id = $1
        AND sequence <= coalesce($2, sequence) AND recorded_at <= coalesce($3, recorded_at)
      ORDER BY sequence"
);

const ALL_CHAINED: &str = concat!(
    "SELECT ",
    chained_event_columns!(),
    " FROM events ORDER BY aggregate_type, aggregate_id, sequence"
);

const STREAM_CHAINED: &str = concat!(
    "SELECT ",
    chained_event_columns!(),
    " FROM events WHERE aggregate_type = 'User' AND aggregate_id = $1 ORDER BY sequence"
);

const ERASURE: &str = "
SELECT e.sequence, e.recorded_at, e.metadata ->> 'actor' AS erased_by,
       e.payload -> 'UserErased' AS erased, k.key_id, k.destroyed_at
  FROM events e
  LEFT JOIN user_data_keys k ON k.user_id = $2
 WHERE e.aggregate_type = 'User' AND e.aggregate_id = $1 AND e.event_type = 'UserErased'";

/// The user's events after sequence `after`, at most `limit`, with their
/// hashes.
pub async fn user_page(
    pool: &PgPool,
    user_id: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as(USER_PAGE)
        .bind(user_id.to_string())
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// The user's events up to `version` and instant `at` (each when given).
pub async fn user_until(
    pool: &PgPool,
    user_id: Uuid,
    version: Option<i64>,
    at: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as(USER_UNTIL)
        .bind(user_id.to_string())
        .bind(version)
        .bind(at)
        .fetch_all(pool)
        .await
}

/// Every event as its hash covers it, stream by stream (one user's stream
/// when `user` is given), one at a time.
pub fn chained<'a>(
    pool: &'a PgPool,
    user: Option<&'a str>,
) -> BoxStream<'a, sqlx::Result<ChainedEvent>> {
    match user {
        Some(id) => sqlx::query_as(STREAM_CHAINED).bind(id).fetch(pool),
        None => sqlx::query_as(ALL_CHAINED).fetch(pool),
    }
}

/// The proof of an erasure, from the event store and the key table: what
/// was erased, when, by whom, and which key was destroyed. Holds nothing of
/// the erased data.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Receipt {
    /// The sequence of the `UserErased` event.
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    /// A user id, or `system`.
    pub erased_by: Option<String>,
    /// The `UserErased` event's data.
    pub erased: serde_json::Value,
    pub key_id: Option<Uuid>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// The receipt of the user's erasure, if they were erased.
pub async fn erasure_receipt(pool: &PgPool, user_id: Uuid) -> sqlx::Result<Option<Receipt>> {
    sqlx::query_as(ERASURE)
        .bind(user_id.to_string())
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// The event store as the projections' source of missing events.
pub struct StoreHistory {
    pool: PgPool,
}

impl StoreHistory {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self { pool })
    }
}

#[async_trait]
impl EventHistory for StoreHistory {
    async fn between(
        &self,
        user_id: Uuid,
        after: i64,
        before: i64,
    ) -> anyhow::Result<Vec<Envelope>> {
        let rows = user_events_between(&self.pool, &user_id.to_string(), after, before).await?;
        rows.iter()
            .map(|row| Ok(serde_json::from_value(row.envelope()?)?))
            .collect()
    }
}
