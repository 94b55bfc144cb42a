//! The email index: which account holds an address, claimed before the
//! registration or change that takes it and settled after.

use accountable_domain::values::Email;
use uuid::Uuid;

use super::error::{infrastructure, CommandError};
use super::Users;

const CLAIM_EMAIL: &str = "
INSERT INTO user_emails (email_key, user_id, confirmed) VALUES ($1, $2, false)
ON CONFLICT (email_key) DO NOTHING";
const SELECT_STALE_CLAIM: &str = "
SELECT user_id FROM user_emails
 WHERE email_key = $1 AND NOT confirmed AND claimed_at < now() - make_interval(secs => $2)";
const TAKE_OVER_CLAIM: &str = "
UPDATE user_emails SET user_id = $3, claimed_at = now()
 WHERE email_key = $1 AND user_id = $2 AND NOT confirmed";
const CONFIRM_EMAIL: &str =
    "UPDATE user_emails SET confirmed = true WHERE email_key = $1 AND user_id = $2";
const RELEASE_EMAIL: &str = "DELETE FROM user_emails WHERE email_key = $1 AND user_id = $2";
const FIND_BY_EMAIL: &str = "SELECT user_id FROM user_emails WHERE email_key = $1";

const RELEASE_OTHER_EMAILS: &str = "DELETE FROM user_emails WHERE email_key <> $1 AND user_id = $2";
const RELEASE_EMAILS_OF: &str = "DELETE FROM user_emails WHERE user_id = $1";

/// What becomes of a claim of an address once its command ran.
#[derive(Debug, Clone, Copy)]
pub(super) enum Settle {
    /// The address is the claimant's.
    Confirm,
    /// The command failed: the address is free again.
    Release,
    /// The claimant moved to this address: every other of theirs is free.
    ReleaseOthers,
}

impl Users {
    /// What stands for an address in the email index: a keyed hash of the
    /// lower-cased address, never the address itself.
    pub(super) fn email_key(&self, email: &Email) -> String {
        self.vault.email_index(&email.uniqueness_key())
    }

    /// Claims `key` for `user_id`, unless a live claim or an account holds
    /// it. The primary key makes concurrent claims race-free: one wins.
    pub(super) async fn claim_email(&self, key: &str, user_id: Uuid) -> Result<(), CommandError> {
        if self.on_claim(CLAIM_EMAIL, key, user_id).await? == 1 {
            return Ok(());
        }
        let stale: Option<Uuid> = sqlx::query_scalar(SELECT_STALE_CLAIM)
            .bind(key)
            .bind(self.claim_ttl.as_secs_f64())
            .fetch_optional(&self.pool)
            .await
            .map_err(infrastructure)?;
        let Some(holder) = stale else {
            return Err(CommandError::EmailTaken);
        };
        // A crash may have come after the holder's events committed: then
        // the address is theirs, and the claim is confirmed now.
        if self.load(holder).await?.is_some() {
            self.settle_claim(Settle::Confirm, key, holder).await?;
            return Err(CommandError::EmailTaken);
        }
        let taken = sqlx::query(TAKE_OVER_CLAIM)
            .bind(key)
            .bind(holder)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        if taken.rows_affected() == 1 {
            tracing::info!(abandoned_by = %holder, "took over an abandoned email claim");
            Ok(())
        } else {
            Err(CommandError::EmailTaken)
        }
    }

    /// Settles the claim of `key` by `user_id` after its command.
    pub(super) async fn settle_claim(
        &self,
        settle: Settle,
        key: &str,
        user_id: Uuid,
    ) -> Result<(), CommandError> {
        let statement = match settle {
            Settle::Confirm => CONFIRM_EMAIL,
            Settle::Release => RELEASE_EMAIL,
            Settle::ReleaseOthers => RELEASE_OTHER_EMAILS,
        };
        self.on_claim(statement, key, user_id).await.map(drop)
    }

    /// Frees every address of a deleted user.
    pub(super) async fn release_emails_of(&self, user_id: Uuid) -> Result<(), CommandError> {
        sqlx::query(RELEASE_EMAILS_OF)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        Ok(())
    }

    /// Runs `statement` on the claim of `key` by `user_id`; answers the
    /// rows it touched.
    async fn on_claim(
        &self,
        statement: &str,
        key: &str,
        user_id: Uuid,
    ) -> Result<u64, CommandError> {
        sqlx::query(statement)
            .bind(key)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(infrastructure)
    }

    /// The user holding `email`, if any.
    pub async fn find_by_email(&self, email: &Email) -> Result<Option<Uuid>, CommandError> {
        self.holder_of(&self.email_key(email)).await
    }

    /// The user holding the address `key` stands for, if any.
    pub(super) async fn holder_of(&self, key: &str) -> Result<Option<Uuid>, CommandError> {
        sqlx::query_scalar(FIND_BY_EMAIL)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(infrastructure)
    }
}
