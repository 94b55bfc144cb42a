//! Service accounts: accounts of machines, with no address and no
//! password, that sign in with client secrets (`POST /oauth/token`). A
//! secret is 256 random bits, answered once and kept only as its SHA-256,
//! sealed in its event; it is told afterwards by its prefix.

use std::collections::BTreeSet;

use accountable_domain::values::DisplayName;
use accountable_domain::{
    Account, ClientSecret, ClientSecretHash, Role, ServiceFlow, UserCommand, UserStatus,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::error::{infrastructure, CommandError};
use super::{CommandContext, Executed, Users};

/// What every secret starts with, so that a leaked one is recognised (by
/// secret scanners too).
pub const SECRET_PREFIX: &str = "acs_";
/// The characters a secret is shown by afterwards: the prefix and four.
const SHOWN_LEN: usize = 8;
/// The longest secret looked at.
pub const MAX_SECRET_LEN: usize = 128;

/// Ids are UUIDv7: their order is the order of creation.
const PAGE: &str = "
SELECT id FROM service_accounts WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2";

/// A secret just issued: the only time it is shown.
pub struct Issued {
    pub executed: Executed,
    pub secret: String,
    pub secret_id: Uuid,
}

fn hash(secret: &str) -> String {
    super::sha256_hex(secret.as_bytes())
}

impl Users {
    /// Opens a service account owned by `owner`, with `roles` (the caller
    /// has checked they are among the owner's).
    pub async fn create_service_account(
        &self,
        name: &str,
        owner: Uuid,
        roles: BTreeSet<Role>,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let name = DisplayName::parse(name)?;
        let command = UserCommand::CreateServiceAccount {
            name,
            owner,
            roles,
            at,
        };
        self.execute(Uuid::now_v7(), command, None, ctx).await
    }

    /// Issues a new secret to the service account, expiring at `expires_at`.
    pub async fn issue_client_secret(
        &self,
        account_id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Issued, CommandError> {
        let mut random = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let secret = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
        let secret_id = Uuid::new_v4();
        let command = UserCommand::Service(ServiceFlow::IssueSecret {
            secret_id,
            prefix: secret[..SHOWN_LEN].to_owned(),
            hash: ClientSecretHash::new(hash(&secret)),
            expires_at,
            at,
        });
        let executed = self.execute(account_id, command, None, ctx).await?;
        Ok(Issued {
            executed,
            secret,
            secret_id,
        })
    }

    /// Revokes a secret: the account's tokens issued before are refused at
    /// once (its event cuts them off, as a person's password change does).
    pub async fn revoke_client_secret(
        &self,
        account_id: Uuid,
        secret_id: Uuid,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let command = UserCommand::Service(ServiceFlow::RevokeSecret { secret_id, at });
        self.execute(account_id, command, None, ctx).await
    }

    /// The active service account whose live secret `secret` is, if any.
    /// Every live secret of the account is compared, each in constant time.
    pub async fn service_account_by_secret(
        &self,
        account_id: Uuid,
        secret: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Account>, CommandError> {
        let given = hash(secret);
        let Some(account) = self.load(account_id).await? else {
            return Ok(None);
        };
        let matches = account.status == UserStatus::Active
            && account.service.as_ref().is_some_and(|service| {
                service
                    .secrets
                    .iter()
                    .filter(|candidate| candidate.is_live(at))
                    .filter_map(|candidate: &ClientSecret| candidate.hash.as_ref())
                    .fold(false, |found, stored| {
                        found | bool::from(stored.expose().as_bytes().ct_eq(given.as_bytes()))
                    })
            });
        Ok(matches.then_some(account))
    }

    /// The ids of a page of service accounts, oldest first, after the one
    /// `after`.
    pub async fn service_accounts(
        &self,
        after: Option<Uuid>,
        first: i64,
    ) -> Result<Vec<Uuid>, CommandError> {
        sqlx::query_scalar(PAGE)
            .bind(after)
            .bind(first)
            .fetch_all(&self.pool)
            .await
            .map_err(infrastructure)
    }
}
