//! Crypto-shredding in this service: opening the vault with the configured
//! master key, and the one-time migration of what earlier versions stored
//! in clear.

use std::sync::Arc;

use accountable_vault::{is_sealed, EventFields, Vault, SEALED_FIELDS};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::store::variant_fields;

/// The name under which the migration below is recorded once done.
const SEAL_CLEAR_DATA: &str = "seal-clear-personal-data-v1";

const LOCK_MIGRATIONS: &str =
    "SELECT pg_advisory_xact_lock(hashtext('accountable.vault.migrations'))";
const IS_DONE: &str = "SELECT EXISTS (SELECT 1 FROM vault_migrations WHERE name = $1)";
const MARK_DONE: &str = "INSERT INTO vault_migrations (name) VALUES ($1)";
const SELECT_EVENTS: &str = "
SELECT position, aggregate_id, sequence, payload FROM events
 WHERE aggregate_type = 'User' AND position > $1
 ORDER BY position LIMIT 500";
const UPDATE_PAYLOAD: &str = "
UPDATE events SET payload = $3 WHERE aggregate_type = 'User' AND aggregate_id = $1 AND sequence = $2";
const RECHAIN: &str = "SELECT rechain_stream('User', $1)";
const CLEAR_EMAIL_KEYS: &str = "SELECT email_key FROM user_emails WHERE email_key LIKE '%@%'";
const REKEY_EMAIL: &str = "UPDATE user_emails SET email_key = $2 WHERE email_key = $1";

/// The vault of this database, with the configured master key; refuses a
/// master key other than the one the database was first used with. Seals
/// whatever earlier versions left in clear before anything else runs.
pub async fn open_vault(config: &Config, pool: &PgPool) -> anyhow::Result<Arc<Vault>> {
    let vault = Vault::open(pool.clone(), config.master_key()?).await?;
    seal_clear_data(pool, &vault).await?;
    Ok(Arc::new(vault))
}

/// Seals the personal fields of events written in clear before
/// crypto-shredding, and replaces clear addresses in the email index by
/// their keyed hashes: one transaction, done once per database (recorded in
/// `vault_migrations`). Messages already published in clear stay on the
/// topic until its retention removes them.
pub async fn seal_clear_data(pool: &PgPool, vault: &Vault) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_MIGRATIONS).execute(&mut *tx).await?;
    let done: bool = sqlx::query_scalar(IS_DONE)
        .bind(SEAL_CLEAR_DATA)
        .fetch_one(&mut *tx)
        .await?;
    if done {
        return Ok(());
    }
    let mut after = 0_i64;
    let mut sealed = 0_u64;
    let mut rewritten = std::collections::BTreeSet::new();
    loop {
        let rows: Vec<(i64, String, i64, serde_json::Value)> = sqlx::query_as(SELECT_EVENTS)
            .bind(after)
            .fetch_all(&mut *tx)
            .await?;
        let Some((last, ..)) = rows.last() else {
            break;
        };
        after = *last;
        for (_, aggregate_id, sequence, mut payload) in rows {
            let Some(fields) = variant_fields(&mut payload) else {
                continue;
            };
            let clear = SEALED_FIELDS.iter().any(|name| {
                fields
                    .get(*name)
                    .is_some_and(|value| !value.is_null() && !is_sealed(value))
            });
            if !clear {
                continue;
            }
            vault
                .seal(&mut [EventFields {
                    user_id: Uuid::parse_str(&aggregate_id)?,
                    sequence,
                    fields,
                }])
                .await?;
            sqlx::query(UPDATE_PAYLOAD)
                .bind(&aggregate_id)
                .bind(sequence)
                .bind(&payload)
                .execute(&mut *tx)
                .await?;
            sealed += 1;
            rewritten.insert(aggregate_id);
        }
    }
    // The payloads changed: their chains are recomputed, before any
    // checkpoint can have sealed them.
    for aggregate_id in &rewritten {
        sqlx::query(RECHAIN)
            .bind(aggregate_id)
            .execute(&mut *tx)
            .await?;
    }
    let addresses: Vec<String> = sqlx::query_scalar(CLEAR_EMAIL_KEYS)
        .fetch_all(&mut *tx)
        .await?;
    for address in &addresses {
        sqlx::query(REKEY_EMAIL)
            .bind(address)
            .bind(vault.email_index(address))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(MARK_DONE)
        .bind(SEAL_CLEAR_DATA)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(
        events = sealed,
        addresses = addresses.len(),
        "sealed the personal data earlier versions stored in clear"
    );
    Ok(())
}

const SELECT_RECEIPT: &str = "
SELECT e.sequence, e.recorded_at, e.metadata ->> 'actor' AS erased_by,
       e.payload -> 'UserErased' AS erased, k.key_id, k.destroyed_at
  FROM events e
  LEFT JOIN user_data_keys k ON k.user_id = $2
 WHERE e.aggregate_type = 'User' AND e.aggregate_id = $1 AND e.event_type = 'UserErased'";

/// The proof of an erasure, from the event store and the key table: what
/// was erased, when, by whom, and which key was destroyed. Holds nothing of
/// the erased data.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Receipt {
    /// The sequence of the `UserErased` event.
    pub sequence: i64,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// A user id, or `system`.
    pub erased_by: Option<String>,
    /// The `UserErased` event's data.
    pub erased: serde_json::Value,
    pub key_id: Option<Uuid>,
    pub destroyed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The receipt of the user's erasure, if they were erased.
pub async fn receipt(pool: &PgPool, user_id: Uuid) -> sqlx::Result<Option<Receipt>> {
    sqlx::query_as(SELECT_RECEIPT)
        .bind(user_id.to_string())
        .bind(user_id)
        .fetch_optional(pool)
        .await
}
