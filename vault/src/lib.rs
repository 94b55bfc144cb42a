//! Crypto-shredding for an immutable history.
//!
//! Personal fields of events are sealed (AES-256-GCM) with a data key of
//! their own user; data keys live in `user_data_keys`, wrapped by the master
//! key. Destroying a user's data key makes every stored and published copy
//! of their personal fields unreadable, while every other fact of the
//! history stays in clear.
//!
//! A sealed field is a JSON object in place of the clear value:
//! `{"alg": "A256GCM", "kid": <data key id>, "iv": <nonce>, "ct": <ciphertext
//! and tag>}`, both byte strings base64url without padding. The additional
//! authenticated data is `accountable/v1/<user id>/<sequence>/<field>`, so
//! a sealed value opens only in the event and field it was sealed for.

mod master;

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use master::MasterKey;

/// The fields of an event object that are sealed: everything that
/// identifies a person sits under `personal`; `password_hash`, `token` (a
/// mailed one-time link's), `secret` (an authenticator app's) and
/// `recovery_codes` (their hashes) are secrets that are never published
/// and go with the person too, as do a passkey's `passkey_name` and
/// `credential` (its public key and counter), and a service account's
/// `secret_hash`.
pub const SEALED_FIELDS: [&str; 8] = [
    PERSONAL,
    "password_hash",
    "token",
    "secret",
    "recovery_codes",
    "passkey_name",
    "credential",
    "secret_hash",
];

/// The field under which an aggregate snapshot is stored, sealed whole
/// with its user's key and bound to the sequence it was taken at.
pub const SNAPSHOT: &str = "snapshot";

/// Everything [`Vault::seal`] and [`Vault::unseal`] handle: the sealed
/// fields of events and the snapshot of an aggregate.
const SEALED: [&str; 9] = [
    SEALED_FIELDS[0],
    SEALED_FIELDS[1],
    SEALED_FIELDS[2],
    SEALED_FIELDS[3],
    SEALED_FIELDS[4],
    SEALED_FIELDS[5],
    SEALED_FIELDS[6],
    SEALED_FIELDS[7],
    SNAPSHOT,
];

/// The one sealed field that is published.
pub const PERSONAL: &str = "personal";

/// The `alg` of every sealed field.
pub const ALGORITHM: &str = "A256GCM";

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the master key must be 32 bytes in base64")]
    MalformedMasterKey,
    #[error("the master key is not the one this database was set up with")]
    WrongMasterKey,
    #[error("user {0} was erased: nothing more can be sealed for them")]
    Erased(Uuid),
    #[error("sealed field {field} of {user_id}/{sequence} does not open with its key")]
    Tampered {
        user_id: Uuid,
        sequence: i64,
        field: String,
    },
    #[error("the sealed {0} does not open with this master key")]
    SecretDoesNotOpen(String),
    #[error("malformed sealed field: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One event's object of fields, with the place that binds its sealed
/// values: the stored payload's variant object, or a published `data`.
pub struct EventFields<'a> {
    pub user_id: Uuid,
    pub sequence: i64,
    pub fields: &'a mut Map<String, Value>,
}

type DataKey = Zeroizing<[u8; 32]>;

const SELECT_USER_KEY: &str = "SELECT key_id, wrapped FROM user_data_keys WHERE user_id = $1";
const INSERT_USER_KEY: &str = "
INSERT INTO user_data_keys (key_id, user_id, wrapped) VALUES ($1, $2, $3)
ON CONFLICT (user_id) DO NOTHING";
const SELECT_KEYS: &str =
    "SELECT key_id, user_id, wrapped FROM user_data_keys WHERE key_id = ANY($1)";
const RECORD_CHECK: &str = "
INSERT INTO vault_settings (master_key_check) VALUES ($1) ON CONFLICT (id) DO NOTHING";
const SELECT_CHECK: &str = "SELECT master_key_check FROM vault_settings";

/// Seals and opens personal fields with the data keys in PostgreSQL.
pub struct Vault {
    pool: PgPool,
    master: MasterKey,
}

impl Vault {
    /// The vault of the database behind `pool`. The first master key a
    /// database sees is recorded (as a one-way check value); any other is
    /// refused, so that nothing is ever sealed with a key that cannot open
    /// the rest.
    pub async fn open(pool: PgPool, master: MasterKey) -> Result<Self, VaultError> {
        let check = master.check_value();
        sqlx::query(RECORD_CHECK)
            .bind(&check[..])
            .execute(&pool)
            .await?;
        let recorded: Vec<u8> = sqlx::query_scalar(SELECT_CHECK).fetch_one(&pool).await?;
        if recorded != check[..] {
            return Err(VaultError::WrongMasterKey);
        }
        Ok(Self { pool, master })
    }

    /// The keyed hash (HMAC-SHA-256, hex) that stands for a normalised email
    /// address wherever addresses are compared, so that no index holds one
    /// in clear.
    pub fn email_index(&self, normalised: &str) -> String {
        self.master.email_index(normalised)
    }

    /// A secret of the service itself (a signing key), sealed under the
    /// master key and bound to `context`, e.g. `signing-key/<kid>`.
    pub fn seal_secret(&self, context: &str, secret: &[u8]) -> Vec<u8> {
        self.master.seal_secret(context, secret)
    }

    /// A secret sealed by [`Vault::seal_secret`] with the same `context`.
    pub fn open_secret(
        &self,
        context: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.master.open_secret(context, sealed)
    }

    /// Seals every clear value of [`SEALED_FIELDS`] (and a [`SNAPSHOT`]) in
    /// place, with the data key of its user (made on first use). Values
    /// already sealed and nulls stay as they are. Refuses to seal for an
    /// erased user.
    pub async fn seal(&self, events: &mut [EventFields<'_>]) -> Result<(), VaultError> {
        let mut keys: HashMap<Uuid, (Uuid, DataKey)> = HashMap::new();
        for event in events.iter_mut() {
            for field in SEALED {
                let Some(value) = event.fields.get(field) else {
                    continue;
                };
                if value.is_null() || is_sealed(value) {
                    continue;
                }
                let plaintext = Zeroizing::new(value.to_string().into_bytes());
                let (key_id, key) = match keys.entry(event.user_id) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => entry.insert(self.data_key_for(event.user_id).await?),
                };
                let sealed = seal_value(
                    key,
                    *key_id,
                    &aad(event.user_id, event.sequence, field),
                    &plaintext,
                )?;
                event.fields.insert(field.to_owned(), sealed);
            }
        }
        Ok(())
    }

    /// Opens every sealed value in place; a value whose data key was
    /// destroyed becomes `null`. A value that does not open with a key that
    /// exists is an error, never silently dropped.
    pub async fn unseal(&self, events: &mut [EventFields<'_>]) -> Result<(), VaultError> {
        let mut key_ids = Vec::new();
        for event in events.iter() {
            for field in SEALED {
                if let Some(sealed) = event.fields.get(field).filter(|v| is_sealed(v)) {
                    key_ids.push(key_id_of(sealed)?);
                }
            }
        }
        if key_ids.is_empty() {
            return Ok(());
        }
        key_ids.sort_unstable();
        key_ids.dedup();
        let rows: Vec<(Uuid, Uuid, Option<Vec<u8>>)> = sqlx::query_as(SELECT_KEYS)
            .bind(&key_ids)
            .fetch_all(&self.pool)
            .await?;
        let mut keys = HashMap::new();
        for (key_id, user_id, wrapped) in rows {
            if let Some(wrapped) = wrapped {
                keys.insert(key_id, self.master.unwrap(key_id, user_id, &wrapped)?);
            }
        }
        for event in events.iter_mut() {
            for field in SEALED {
                let Some(sealed) = event.fields.get(field).filter(|v| is_sealed(v)) else {
                    continue;
                };
                let opened = match keys.get(&key_id_of(sealed)?) {
                    None => Value::Null,
                    Some(key) => {
                        open_value(key, &aad(event.user_id, event.sequence, field), sealed)
                            .ok_or_else(|| VaultError::Tampered {
                                user_id: event.user_id,
                                sequence: event.sequence,
                                field: field.to_owned(),
                            })?
                    }
                };
                event.fields.insert(field.to_owned(), opened);
            }
        }
        Ok(())
    }

    /// The user's data key, made and stored (wrapped) if they have none.
    async fn data_key_for(&self, user_id: Uuid) -> Result<(Uuid, DataKey), VaultError> {
        let mut row: Option<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(SELECT_USER_KEY)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        if row.is_none() {
            let key_id = Uuid::now_v7();
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(&mut key[..]);
            sqlx::query(INSERT_USER_KEY)
                .bind(key_id)
                .bind(user_id)
                .bind(self.master.wrap(key_id, user_id, &key))
                .execute(&self.pool)
                .await?;
            // Another writer may have made one first: read what was kept.
            row = sqlx::query_as(SELECT_USER_KEY)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        }
        match row {
            Some((key_id, Some(wrapped))) => {
                Ok((key_id, self.master.unwrap(key_id, user_id, &wrapped)?))
            }
            _ => Err(VaultError::Erased(user_id)),
        }
    }
}

/// Whether `value` is a sealed field rather than a clear one.
pub fn is_sealed(value: &Value) -> bool {
    value.get("alg").and_then(Value::as_str) == Some(ALGORITHM) && value.get("ct").is_some()
}

fn aad(user_id: Uuid, sequence: i64, field: &str) -> String {
    format!("accountable/v1/{user_id}/{sequence}/{field}")
}

fn key_id_of(sealed: &Value) -> Result<Uuid, VaultError> {
    sealed
        .get("kid")
        .and_then(Value::as_str)
        .and_then(|kid| Uuid::parse_str(kid).ok())
        .ok_or(VaultError::Malformed("kid is not a key id"))
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

fn seal_value(
    key: &[u8; 32],
    key_id: Uuid,
    aad: &str,
    plaintext: &[u8],
) -> Result<Value, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher(key)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| VaultError::Malformed("too long to seal"))?;
    Ok(json!({
        "alg": ALGORITHM,
        "kid": key_id,
        "iv": URL_SAFE_NO_PAD.encode(nonce),
        "ct": URL_SAFE_NO_PAD.encode(sealed),
    }))
}

/// The clear value, or `None` when it does not open.
fn open_value(key: &[u8; 32], aad: &str, sealed: &Value) -> Option<Value> {
    let decode = |name| {
        sealed
            .get(name)
            .and_then(Value::as_str)
            .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
    };
    let nonce = decode("iv").filter(|nonce| nonce.len() == NONCE_LEN)?;
    let sealed = decode("ct")?;
    let clear = Zeroizing::new(
        cipher(key)
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: aad.as_bytes(),
                },
            )
            .ok()?,
    );
    serde_json::from_slice(&clear).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_sealed_value_opens_only_in_its_place() {
        let kid = Uuid::now_v7();
        let user = Uuid::now_v7();
        let clear = json!({"email": "ada@example.com"});
        let sealed = seal_value(
            &KEY,
            kid,
            &aad(user, 1, "personal"),
            clear.to_string().as_bytes(),
        )
        .unwrap();

        assert!(is_sealed(&sealed));
        assert!(!sealed.to_string().contains("ada@example.com"));
        assert_eq!(key_id_of(&sealed).unwrap(), kid);
        assert_eq!(
            open_value(&KEY, &aad(user, 1, "personal"), &sealed),
            Some(clear)
        );
        assert_eq!(open_value(&KEY, &aad(user, 2, "personal"), &sealed), None);
        assert_eq!(
            open_value(&KEY, &aad(user, 1, "password_hash"), &sealed),
            None
        );
        assert_eq!(
            open_value(&[8; 32], &aad(user, 1, "personal"), &sealed),
            None
        );
    }

    #[test]
    fn a_changed_ciphertext_does_not_open() {
        let user = Uuid::now_v7();
        let mut sealed =
            seal_value(&KEY, Uuid::now_v7(), &aad(user, 1, "personal"), b"\"x\"").unwrap();
        let ct = sealed["ct"].as_str().unwrap().to_owned();
        let flipped = if ct.starts_with('A') { "B" } else { "A" };
        sealed["ct"] = json!(format!("{flipped}{}", &ct[1..]));
        assert_eq!(open_value(&KEY, &aad(user, 1, "personal"), &sealed), None);
    }

    #[test]
    fn clear_values_are_not_taken_for_sealed_ones() {
        assert!(!is_sealed(&json!({"email": "a@b.c", "display_name": "A"})));
        assert!(!is_sealed(&json!("$argon2id$v=19$...")));
        assert!(!is_sealed(&Value::Null));
    }
}
