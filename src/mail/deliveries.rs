//! The outbox of mail: one row of `mail_deliveries` per message an event
//! calls for, keyed by the event and the kind of message, with its state
//! and attempts.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::messages::Kind;

/// A message waiting for an attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub user_id: Uuid,
    pub sequence: i64,
    pub kind: String,
    pub attempts: i32,
}

const RECORD: &str = "
INSERT INTO mail_deliveries (user_id, sequence, kind, position)
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bigint[])
ON CONFLICT DO NOTHING";

/// The due messages whose time has come, oldest first; each is given its
/// next attempt's time before it is tried, so that a mailer that dies in
/// the middle retries it later instead of never.
const TAKE_DUE: &str = "
UPDATE mail_deliveries d
   SET attempts = d.attempts + 1,
       next_attempt_at = now() + make_interval(secs => $2::double precision * power(2, least(d.attempts, 20)))
  FROM (SELECT user_id, sequence, kind FROM mail_deliveries
         WHERE state = 'due' AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT $1
           FOR UPDATE SKIP LOCKED) t
 WHERE (d.user_id, d.sequence, d.kind) = (t.user_id, t.sequence, t.kind)
RETURNING d.user_id, d.sequence, d.kind, d.attempts";

const SENT: &str = "
UPDATE mail_deliveries SET state = 'sent', sent_at = now(), last_error = NULL
 WHERE user_id = $1 AND sequence = $2 AND kind = $3";
const FAILED: &str = "
UPDATE mail_deliveries
   SET last_error = $4,
       state = CASE WHEN attempts >= $5 THEN 'parked' ELSE 'due' END,
       next_attempt_at = least(next_attempt_at, now() + make_interval(secs => $6))
 WHERE user_id = $1 AND sequence = $2 AND kind = $3
RETURNING state";
const DROPPED: &str = "
UPDATE mail_deliveries SET state = 'dropped', last_error = $4
 WHERE user_id = $1 AND sequence = $2 AND kind = $3";
const SOONEST: &str =
    "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM mail_deliveries WHERE state = 'due'";
const RETRY_PARKED: &str = "
UPDATE mail_deliveries SET state = 'due', attempts = 0, next_attempt_at = now()
 WHERE state = 'parked'";
const COUNTS: &str = "SELECT state, count(*) FROM mail_deliveries GROUP BY state ORDER BY state";
const OLDEST_DUE: &str = "
SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
  FROM mail_deliveries WHERE state = 'due'";

/// Records the messages that events call for (once each, whatever happens
/// again): `(user id, sequence, event type, position)` per event.
pub async fn record(
    conn: &mut PgConnection,
    events: &[(Uuid, i64, &str, i64)],
) -> sqlx::Result<u64> {
    let (mut users, mut sequences, mut kinds, mut positions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &(user_id, sequence, event_type, position) in events {
        for kind in Kind::due_for(event_type) {
            users.push(user_id);
            sequences.push(sequence);
            kinds.push(kind.as_str());
            positions.push(position);
        }
    }
    if users.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(RECORD)
        .bind(&users)
        .bind(&sequences)
        .bind(&kinds)
        .bind(&positions)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Up to `limit` due messages, each with its next attempt set
/// `retry * 2^attempts` ahead.
pub async fn take_due(pool: &PgPool, limit: i64, retry: Duration) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as(TAKE_DUE)
        .bind(limit)
        .bind(retry.as_secs_f64())
        .fetch_all(pool)
        .await
}

pub async fn sent(pool: &PgPool, due: &Due) -> sqlx::Result<()> {
    on(SENT, due).execute(pool).await.map(drop)
}

/// Not taken by the server: retried at the time already set (at most
/// `max_wait` away), or parked after `max_attempts`. Answers whether it
/// was parked.
pub async fn failed(
    pool: &PgPool,
    due: &Due,
    error: &str,
    max_attempts: i32,
    max_wait: Duration,
) -> sqlx::Result<bool> {
    let state: Option<String> = sqlx::query_scalar(FAILED)
        .bind(due.user_id)
        .bind(due.sequence)
        .bind(&due.kind)
        .bind(error)
        .bind(max_attempts)
        .bind(max_wait.as_secs_f64())
        .fetch_optional(pool)
        .await?;
    Ok(state.as_deref() == Some("parked"))
}

/// Never to be sent: nobody to send it to, or nothing worth sending.
pub async fn dropped(pool: &PgPool, due: &Due, why: &str) -> sqlx::Result<()> {
    on(DROPPED, due).bind(why).execute(pool).await.map(drop)
}

fn on<'q>(
    statement: &'q str,
    due: &'q Due,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(statement)
        .bind(due.user_id)
        .bind(due.sequence)
        .bind(due.kind.as_str())
}

/// How long until the next due message's attempt (`None`: none is due).
pub async fn soonest(pool: &PgPool) -> sqlx::Result<Option<Duration>> {
    let seconds: Option<f64> = sqlx::query_scalar(SOONEST).fetch_one(pool).await?;
    Ok(seconds.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// Makes every parked message due again, with its attempts from zero.
pub async fn retry_parked(pool: &PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query(RETRY_PARKED)
        .execute(pool)
        .await?
        .rows_affected())
}

/// Messages per state (`due`, `sent`, `parked`, `dropped`).
pub async fn counts(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(COUNTS).fetch_all(pool).await
}

/// Seconds the oldest due message has waited since its event (0: none).
pub async fn oldest_due(pool: &PgPool) -> sqlx::Result<f64> {
    sqlx::query_scalar(OLDEST_DUE).fetch_one(pool).await
}
