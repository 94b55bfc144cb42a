//! The Ed25519 keys that sign access tokens, kept in `signing_keys` so that
//! every process signs and verifies with the same set, and published as a
//! JWKS so that other services verify tokens themselves. Private keys are
//! stored sealed under the master key.

use std::sync::{Arc, RwLock};
use std::time::{Duration as StdDuration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

use accountable_vault::{Vault, VaultError};

use crate::background::Background;
use crate::config::Environment;

/// The NOTIFY channel on which key changes are announced.
pub const KEYS_CHANNEL: &str = "accountable_keys";

/// How often an unknown `kid` may trigger a reload of the keys.
const RELOAD_AT_MOST_EVERY: StdDuration = StdDuration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Sealed(#[from] VaultError),
    #[error("cannot encode a new key: {0}")]
    Encoding(String),
    #[error("the configured signing key is not a PKCS#8 PEM Ed25519 private key")]
    Configured,
    #[error(
        "no production signing key: create one with `ACCOUNTABLE_ENV=production accountable keys rotate`"
    )]
    NoProductionKey,
    #[error("refusing to start in production with development signing key {0}; retire it with `accountable keys retire {0}`")]
    DevelopmentKeyInProduction(String),
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    /// Sealed under the master key when `sealed`.
    private_der: Vec<u8>,
    sealed: bool,
    public_key: Vec<u8>,
    development: bool,
    active_from: DateTime<Utc>,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_key: Vec<u8>,
    active_from: DateTime<Utc>,
}

const SELECT_LIVE: &str = "
SELECT kid, private_der, sealed, public_key, development, active_from
  FROM signing_keys WHERE retired_at IS NULL ORDER BY active_from DESC, created_at DESC";

const INSERT_KEY: &str = "
INSERT INTO signing_keys (kid, private_der, sealed, public_key, development, active_from)
VALUES ($1, $2, true, $3, $4, now() + make_interval(secs => $5))";

/// Keys that versions before sealing stored in clear.
const SELECT_CLEAR: &str = "SELECT kid, private_der FROM signing_keys WHERE NOT sealed";
const SEAL_KEY: &str =
    "UPDATE signing_keys SET private_der = $2, sealed = true WHERE kid = $1 AND NOT sealed";

/// The live keys, newest first, reloaded from the database on demand.
pub struct KeyRing {
    pool: PgPool,
    vault: Arc<Vault>,
    keys: RwLock<Vec<Key>>,
    last_reload: Mutex<Instant>,
}

impl KeyRing {
    /// The keys as `config` sets them up: `ACCOUNTABLE_JWT_KEY_FILE` read
    /// and imported, then [`KeyRing::load`].
    pub async fn configured(
        pool: PgPool,
        vault: Arc<Vault>,
        config: &crate::config::Config,
    ) -> anyhow::Result<Self> {
        let configured_key = match &config.auth.jwt_key_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read ACCOUNTABLE_JWT_KEY_FILE {}: {e}",
                    path.display()
                )
            })?),
            None => None,
        };
        Ok(Self::load(pool, vault, config.env, configured_key.as_deref()).await?)
    }

    /// Loads the keys, first adding the configured one (a PKCS#8 PEM
    /// Ed25519 key) if it is new. In development a first key is created when
    /// there is none; in production a development key, or no key, refuses
    /// to start.
    pub async fn load(
        pool: PgPool,
        vault: Arc<Vault>,
        env: Environment,
        configured: Option<&str>,
    ) -> Result<Self, KeyError> {
        seal_clear_keys(&pool, &vault).await?;
        if let Some(pem) = configured {
            import(&pool, &vault, pem).await?;
        }
        let mut rows = live_keys(&pool).await?;
        if rows.is_empty() && env == Environment::Development {
            rotate(&pool, &vault, true, Duration::zero()).await?;
            rows = live_keys(&pool).await?;
        }
        if env == Environment::Production {
            if let Some(dev) = rows.iter().find(|r| r.development) {
                return Err(KeyError::DevelopmentKeyInProduction(dev.kid.clone()));
            }
            if rows.is_empty() {
                return Err(KeyError::NoProductionKey);
            }
        }
        let keys = open_all(&vault, rows)?;
        Ok(Self {
            pool,
            vault,
            keys: RwLock::new(keys),
            last_reload: Mutex::new(Instant::now()),
        })
    }

    /// The key to sign with at `now`: the newest one already active.
    pub fn signing_key(&self, now: DateTime<Utc>) -> Option<(String, EncodingKey)> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .find(|k| k.active_from <= now)
            .map(|k| (k.kid.clone(), k.encoding.clone()))
    }

    /// The key a token names; an unknown `kid` reloads the keys at most once
    /// per interval, then is refused.
    pub async fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(key) = self.find(kid) {
            return Some(key);
        }
        let mut last = self.last_reload.lock().await;
        if last.elapsed() >= RELOAD_AT_MOST_EVERY {
            *last = Instant::now();
            if let Err(error) = self.reload().await {
                tracing::warn!(error = %error, "cannot reload signing keys");
            }
        }
        self.find(kid)
    }

    /// Picks up keys rotated or retired by other processes.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let keys = open_all(&self.vault, live_keys(&self.pool).await?)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    /// Every live key, including those not yet used for signing, as a JWKS.
    pub fn jwks(&self) -> serde_json::Value {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<_> = keys
            .iter()
            .map(|k| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(&k.public_key),
                    "kid": k.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    fn find(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .find(|k| k.kid == kid)
            .map(|k| k.decoding.clone())
    }
}

/// What a key's private part is sealed to.
fn context(kid: &str) -> String {
    format!("signing-key/{kid}")
}

fn open_all(vault: &Vault, rows: Vec<KeyRow>) -> Result<Vec<Key>, KeyError> {
    rows.into_iter()
        .map(|row| {
            let private_der = if row.sealed {
                vault.open_secret(&context(&row.kid), &row.private_der)?
            } else {
                zeroize::Zeroizing::new(row.private_der.clone())
            };
            Ok(Key {
                encoding: EncodingKey::from_ed_der(&private_der),
                decoding: DecodingKey::from_ed_der(&row.public_key),
                kid: row.kid,
                public_key: row.public_key,
                active_from: row.active_from,
            })
        })
        .collect()
}

/// Seals the private keys that versions before sealing stored in clear.
async fn seal_clear_keys(pool: &PgPool, vault: &Vault) -> Result<(), KeyError> {
    let clear: Vec<(String, Vec<u8>)> = sqlx::query_as(SELECT_CLEAR).fetch_all(pool).await?;
    for (kid, private_der) in clear {
        sqlx::query(SEAL_KEY)
            .bind(&kid)
            .bind(vault.seal_secret(&context(&kid), &private_der))
            .execute(pool)
            .await?;
        tracing::info!(kid, "sealed a signing key stored in clear");
    }
    Ok(())
}

async fn live_keys(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(SELECT_LIVE).fetch_all(pool).await
}

/// Creates a new key, published at once and used for signing after
/// `publish_for`, so that verifiers can fetch it before the first token
/// signed with it. Older keys keep verifying until retired.
pub async fn rotate(
    pool: &PgPool,
    vault: &Vault,
    development: bool,
    publish_for: Duration,
) -> Result<String, KeyError> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let private_der = key
        .to_pkcs8_der()
        .map_err(|e| KeyError::Encoding(e.to_string()))?;
    let kid = format!("ed25519-{}", Uuid::now_v7().simple());
    sqlx::query(INSERT_KEY)
        .bind(&kid)
        .bind(vault.seal_secret(&context(&kid), private_der.as_bytes()))
        .bind(key.verifying_key().as_bytes().as_slice())
        .bind(development)
        .bind(publish_for.num_milliseconds() as f64 / 1000.0)
        .execute(pool)
        .await?;
    announce(pool).await?;
    Ok(kid)
}

/// Adds the configured key, named by its RFC 7638 thumbprint, unless it is
/// there already (or was retired: a retired key is never revived).
async fn import(pool: &PgPool, vault: &Vault, pem: &str) -> Result<(), KeyError> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use sha2::Digest;
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::Configured)?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| KeyError::Encoding(e.to_string()))?;
    let public = key.verifying_key().to_bytes();
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(jwk.as_bytes()));
    let added = sqlx::query(
        "INSERT INTO signing_keys (kid, private_der, sealed, public_key, development)
         VALUES ($1, $2, true, $3, false) ON CONFLICT (kid) DO NOTHING",
    )
    .bind(&kid)
    .bind(vault.seal_secret(&context(&kid), der.as_bytes()))
    .bind(public.as_slice())
    .execute(pool)
    .await?;
    if added.rows_affected() == 1 {
        tracing::info!(kid, "added the configured signing key");
        announce(pool).await?;
    }
    Ok(())
}

/// Stops publishing and accepting a key: tokens it signed are refused.
pub async fn retire(pool: &PgPool, kid: &str) -> Result<bool, KeyError> {
    let retired = sqlx::query(
        "UPDATE signing_keys SET retired_at = now() WHERE kid = $1 AND retired_at IS NULL",
    )
    .bind(kid)
    .execute(pool)
    .await?;
    announce(pool).await?;
    Ok(retired.rows_affected() == 1)
}

async fn announce(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(KEYS_CHANNEL)
        .execute(pool)
        .await?;
    Ok(())
}

/// Reloads `keys` whenever a process announces a change, and every
/// `interval` in case an announcement was missed, until `shutdown`.
pub async fn follow_changes(
    keys: std::sync::Arc<KeyRing>,
    interval: StdDuration,
    background: &Background,
) -> Result<(), sqlx::Error> {
    let mut listener = crate::db::listener(&keys.pool).await?;
    listener.listen(KEYS_CHANNEL).await?;
    let shutdown = background.shutdown();
    background.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = listener.recv() => {
                    if received.is_err() {
                        tokio::time::sleep(StdDuration::from_secs(1)).await;
                    }
                }
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = keys.reload().await {
                tracing::warn!(error = %error, "cannot reload signing keys");
            }
        }
    });
    Ok(())
}
