//! What the relay has yet to publish: the events after its cursor (in
//! commit order), counted and aged, for `/metrics` and `/readyz`. Read from
//! the store, so any process can tell.

use sqlx::PgPool;

const OLDEST_AGE: &str = "
SELECT coalesce(extract(epoch FROM now() - (
    SELECT e.recorded_at FROM events e
     WHERE (e.transaction_id, e.position) > coalesce(
             (SELECT (c.transaction_id, c.position) FROM relay_cursors c WHERE c.name = $1),
             ('0'::xid8, 0::bigint))
     ORDER BY e.transaction_id, e.position LIMIT 1)), 0)::float8";

const COUNT: &str = "
SELECT count(*) FROM events e
 WHERE (e.transaction_id, e.position) > coalesce(
         (SELECT (c.transaction_id, c.position) FROM relay_cursors c WHERE c.name = $1),
         ('0'::xid8, 0::bigint))";

/// Seconds the oldest event the relay of `topic` has not published has
/// waited (0 when everything is published).
pub async fn oldest_age(pool: &PgPool, topic: &str) -> sqlx::Result<f64> {
    sqlx::query_scalar(OLDEST_AGE)
        .bind(topic)
        .fetch_one(pool)
        .await
}

/// Committed events the relay of `topic` has not yet published.
pub async fn count(pool: &PgPool, topic: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(COUNT).bind(topic).fetch_one(pool).await
}
