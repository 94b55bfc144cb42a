//! Passkeys on the account: adding one (its credential id claimed for the
//! account first, race-free), naming, removing and signing with one. The
//! ceremonies that prove these are `auth::passkeys`'; the credential is
//! kept sealed in the events, so an erasure destroys it.

use accountable_domain::values::PasskeyName;
use accountable_domain::{FactorFlow, PasskeyCredential, UserCommand};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{infrastructure, CommandError};
use super::{CommandContext, Executed, Users};

/// A claim of another user, or of this one, holds the credential id:
/// `RETURNING` answers only a new claim.
const CLAIM: &str = "
INSERT INTO passkey_credentials (credential_key, user_id, passkey_id) VALUES ($1, $2, $3)
ON CONFLICT (credential_key) DO NOTHING
RETURNING passkey_id";
/// A claim of the same user whose registration never wrote its event (a
/// crash between the two): taken over once it is a minute old, so that two
/// registrations in flight cannot both hold it.
const TAKE_OVER_OWN: &str = "
UPDATE passkey_credentials SET passkey_id = $3, claimed_at = now()
 WHERE credential_key = $1 AND user_id = $2 AND passkey_id <> ALL($4)
   AND claimed_at < now() - interval '1 minute'";
const RELEASE: &str =
    "DELETE FROM passkey_credentials WHERE credential_key = $1 AND passkey_id = $2";
const HOLDER: &str =
    "SELECT user_id, passkey_id FROM passkey_credentials WHERE credential_key = $1";

/// What stands for a credential id in the claims: its SHA-256 in hex.
pub fn credential_key(credential_id: &[u8]) -> String {
    super::sha256_hex(credential_id)
}

impl Users {
    /// Adds a passkey whose registration verified, once its credential id
    /// is claimed for `user_id`: a credential id belongs to one account.
    pub async fn register_passkey(
        &self,
        user_id: Uuid,
        credential_id: &[u8],
        credential: PasskeyCredential,
        name: PasskeyName,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<(Executed, Uuid), CommandError> {
        let key = credential_key(credential_id);
        let passkey_id = Uuid::new_v4();
        self.claim_passkey(&key, user_id, passkey_id).await?;
        let command = UserCommand::Factor(FactorFlow::RegisterPasskey {
            passkey_id,
            name,
            credential,
            at,
        });
        match self.execute(user_id, command, None, ctx).await {
            Ok(executed) => Ok((executed, passkey_id)),
            Err(error) => {
                sqlx::query(RELEASE)
                    .bind(&key)
                    .bind(passkey_id)
                    .execute(&self.pool)
                    .await
                    .map_err(infrastructure)?;
                Err(error)
            }
        }
    }

    async fn claim_passkey(
        &self,
        key: &str,
        user_id: Uuid,
        passkey_id: Uuid,
    ) -> Result<(), CommandError> {
        let claimed: Option<Uuid> = sqlx::query_scalar(CLAIM)
            .bind(key)
            .bind(user_id)
            .bind(passkey_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(infrastructure)?;
        if claimed.is_some() {
            return Ok(());
        }
        let own: Vec<Uuid> = self
            .load(user_id)
            .await?
            .map(|account| account.passkeys.iter().map(|passkey| passkey.id).collect())
            .unwrap_or_default();
        let taken_over = sqlx::query(TAKE_OVER_OWN)
            .bind(key)
            .bind(user_id)
            .bind(passkey_id)
            .bind(&own)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        if taken_over.rows_affected() == 1 {
            return Ok(());
        }
        Err(CommandError::PasskeyTaken)
    }

    /// The account and passkey that hold the credential id, if any.
    pub async fn passkey_holder(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<(Uuid, Uuid)>, CommandError> {
        sqlx::query_as(HOLDER)
            .bind(credential_key(credential_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(infrastructure)
    }

    pub async fn rename_passkey(
        &self,
        user_id: Uuid,
        passkey_id: Uuid,
        name: PasskeyName,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let command = UserCommand::Factor(FactorFlow::RenamePasskey {
            passkey_id,
            name,
            at,
        });
        self.execute(user_id, command, None, ctx).await
    }

    /// Removes a passkey (not the account's last way to sign in); its
    /// credential id is free again in the event's transaction.
    pub async fn remove_passkey(
        &self,
        user_id: Uuid,
        passkey_id: Uuid,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let command = UserCommand::Factor(FactorFlow::RemovePasskey { passkey_id, at });
        self.execute(user_id, command, None, ctx).await
    }

    /// Records a verified signature of the passkey with its counter, and
    /// the credential as it is now. A counter that did not go up (another
    /// signature got in first) is refused: `InvalidCode`.
    pub async fn use_passkey(
        &self,
        user_id: Uuid,
        passkey_id: Uuid,
        counter: u32,
        credential: PasskeyCredential,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let command = UserCommand::Factor(FactorFlow::UsePasskey {
            passkey_id,
            counter,
            credential,
            at,
        });
        self.execute(user_id, command, None, ctx).await
    }

    /// Records a signature refused for a counter that did not go up.
    pub async fn refuse_passkey_counter(
        &self,
        user_id: Uuid,
        passkey_id: Uuid,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let command = UserCommand::Factor(FactorFlow::RefusePasskeyCounter { passkey_id, at });
        self.execute(user_id, command, None, ctx).await
    }
}
