//! The one rewrite of stored events there is: sealing, once per database,
//! the personal data that versions before crypto-shredding stored in clear
//! (`shredding::seal_clear_data`), with each rewritten stream's hash chain
//! recomputed before any checkpoint can have sealed it.

use sqlx::PgConnection;

const PAGE: &str = "
SELECT position, aggregate_id, sequence, payload FROM events
 WHERE aggregate_type = 'User' AND position > $1
 ORDER BY position LIMIT 500";
const REPLACE_PAYLOAD: &str = "
UPDATE events SET payload = $3 WHERE aggregate_type = 'User' AND aggregate_id = $1 AND sequence = $2";
const RECHAIN: &str = "SELECT rechain_stream('User', $1)";

/// `(position, user id, sequence, payload)` of the users' events after
/// `position`, 500 at most.
pub async fn page_after(
    conn: &mut PgConnection,
    position: i64,
) -> sqlx::Result<Vec<(i64, String, i64, serde_json::Value)>> {
    sqlx::query_as(PAGE).bind(position).fetch_all(conn).await
}

pub async fn replace_payload(
    conn: &mut PgConnection,
    aggregate_id: &str,
    sequence: i64,
    payload: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(REPLACE_PAYLOAD)
        .bind(aggregate_id)
        .bind(sequence)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// Recomputes the hash chain of a user's stream whose payloads changed.
pub async fn rechain(conn: &mut PgConnection, aggregate_id: &str) -> sqlx::Result<()> {
    sqlx::query(RECHAIN)
        .bind(aggregate_id)
        .execute(conn)
        .await?;
    Ok(())
}
