//! Messages a worker cannot apply: parked with their error, so the worker
//! goes on, and applied again on request.

use rdkafka::message::{Message, OwnedMessage};
use sqlx::PgConnection;

use crate::contract::{ContractError, Envelope};
use crate::users;

use super::*;

/// What retrying the dead letters did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retried {
    /// Applied now, or found already applied: gone from the table.
    pub applied: u64,
    /// Still not applicable: kept, with their new error.
    pub still_parked: u64,
}

/// A parked message, as operators see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub projection: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    pub failed_at: chrono::DateTime<chrono::Utc>,
}

/// The `limit` messages parked longest ago, of every projection.
pub async fn parked(pool: &sqlx::PgPool, limit: i64) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(
        r#"SELECT id, projection, topic, partition, "offset", error, failed_at
             FROM projection_dead_letters ORDER BY id LIMIT $1"#,
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

impl Applier {
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
}

pub(super) async fn park(
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
