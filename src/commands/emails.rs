//! The email index: which account holds an address, claimed before the
//! registration or change that takes it and settled after.

use accountable_domain::values::Email;
use uuid::Uuid;

use super::error::{infrastructure, CommandError};
use super::Users;

pub(super) const CLAIM_EMAIL: &str = "
INSERT INTO user_emails (email_key, user_id, confirmed) VALUES ($1, $2, false)
ON CONFLICT (email_key) DO NOTHING";
pub(super) const SELECT_STALE_CLAIM: &str = "
SELECT user_id FROM user_emails
 WHERE email_key = $1 AND NOT confirmed AND claimed_at < now() - make_interval(secs => $2)";
pub(super) const TAKE_OVER_CLAIM: &str = "
UPDATE user_emails SET user_id = $3, claimed_at = now()
 WHERE email_key = $1 AND user_id = $2 AND NOT confirmed";
pub(super) const CONFIRM_EMAIL: &str =
    "UPDATE user_emails SET confirmed = true WHERE email_key = $1 AND user_id = $2";
pub(super) const RELEASE_EMAIL: &str =
    "DELETE FROM user_emails WHERE email_key = $1 AND user_id = $2";
pub(super) const FIND_BY_EMAIL: &str = "SELECT user_id FROM user_emails WHERE email_key = $1";

pub(super) const RELEASE_OTHER_EMAILS: &str =
    "DELETE FROM user_emails WHERE email_key <> $1 AND user_id = $2";
pub(super) const RELEASE_EMAILS_OF: &str = "DELETE FROM user_emails WHERE user_id = $1";

impl Users {
    /// What stands for an address in the email index: a keyed hash of the
    /// lower-cased address, never the address itself.
    pub(super) fn email_key(&self, email: &Email) -> String {
        self.vault.email_index(&email.uniqueness_key())
    }

    /// Claims `key` for `user_id`, unless a live claim or an account holds
    /// it. The primary key makes concurrent claims race-free: one wins.
    pub(super) async fn claim_email(&self, key: &str, user_id: Uuid) -> Result<(), CommandError> {
        let claimed = sqlx::query(CLAIM_EMAIL)
            .bind(key)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        if claimed.rows_affected() == 1 {
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
            sqlx::query(CONFIRM_EMAIL)
                .bind(key)
                .bind(holder)
                .execute(&self.pool)
                .await
                .map_err(infrastructure)?;
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

    /// The user holding `email`, if any.
    pub async fn find_by_email(&self, email: &Email) -> Result<Option<Uuid>, CommandError> {
        sqlx::query_scalar(FIND_BY_EMAIL)
            .bind(self.email_key(email))
            .fetch_optional(&self.pool)
            .await
            .map_err(infrastructure)
    }
}
