//! Crypto-shredding in this service: opening the vault with the configured
//! master key, and the one-time migration of what earlier versions stored
//! in clear.

use std::sync::Arc;

use accountable_vault::{is_sealed, EventFields, Vault, SEALED_FIELDS};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::store::{rewrite, variant_fields};

/// The name under which the migration below is recorded once done.
const SEAL_CLEAR_DATA: &str = "seal-clear-personal-data-v1";

const LOCK_MIGRATIONS: &str =
    "SELECT pg_advisory_xact_lock(hashtext('accountable.vault.migrations'))";
const IS_DONE: &str = "SELECT EXISTS (SELECT 1 FROM vault_migrations WHERE name = $1)";
const MARK_DONE: &str = "INSERT INTO vault_migrations (name) VALUES ($1)";
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
        let rows = rewrite::page_after(&mut tx, after).await?;
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
            rewrite::replace_payload(&mut tx, &aggregate_id, sequence, &payload).await?;
            sealed += 1;
            rewritten.insert(aggregate_id);
        }
    }
    // The payloads changed: their chains are recomputed, before any
    // checkpoint can have sealed them.
    for aggregate_id in &rewritten {
        rewrite::rechain(&mut tx, aggregate_id).await?;
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
