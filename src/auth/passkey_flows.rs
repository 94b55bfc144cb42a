//! Passkeys in the account's life: adding one, signing in with one alone,
//! completing a password sign-in with one, and proving again who one is.
//! Each signature counts towards the account's lockout until it succeeds,
//! as a password or a code does.

use accountable_domain::values::PasskeyName;
use accountable_domain::{Account, PasskeyCredential};
use chrono::{DateTime, Utc};
use uuid::Uuid;
use webauthn_rs::prelude::{Passkey, PublicKeyCredential};

use super::passkeys::{self, Begun, PasskeyError, Purpose, Taken};
use super::service::{
    refused_as_invalid, roles, Auth, AuthError, SignedIn, PASSKEY_ALONE, WITH_A_PASSKEY,
};
use crate::commands::{CommandContext, CommandError, Executed};

/// A passkey just added.
pub struct Added {
    pub executed: Executed,
    pub passkey_id: Uuid,
}

impl Auth {
    /// Begins adding a passkey to `user_id`'s account.
    pub async fn begin_passkey_registration(&self, user_id: Uuid) -> Result<Begun, AuthError> {
        let account = self.active_account(user_id).await?;
        let personal = account.personal.as_ref().ok_or(CommandError::Rejected(
            accountable_domain::UserError::Erased,
        ))?;
        Ok(self
            .passkeys
            .begin_registration(
                user_id,
                personal.email.as_str(),
                personal.display_name.as_str(),
                &stored_passkeys(&account)?,
                self.clock.now(),
            )
            .await?)
    }

    /// Adds the passkey of the authenticator's `response` to the ceremony
    /// `user_id` began, named `name`.
    pub async fn finish_passkey_registration(
        &self,
        user_id: Uuid,
        ceremony: &str,
        response: &str,
        name: PasskeyName,
        ctx: &CommandContext,
    ) -> Result<Added, AuthError> {
        let now = self.clock.now();
        let taken = self.passkeys.take(ceremony, Purpose::Register, now).await?;
        if taken.user_id != Some(user_id) {
            return Err(PasskeyError::Ceremony.into());
        }
        let passkey = self.passkeys.finish_registration(&taken, response)?;
        let credential = kept(&passkey)?;
        let (executed, passkey_id) = self
            .users
            .register_passkey(
                user_id,
                passkey.cred_id().as_ref(),
                credential,
                name,
                now,
                ctx,
            )
            .await?;
        Ok(Added {
            executed,
            passkey_id,
        })
    }

    /// Begins a sign-in with a passkey alone.
    pub async fn begin_passkey_sign_in(&self) -> Result<Begun, AuthError> {
        Ok(self.passkeys.begin_sign_in(self.clock.now()).await?)
    }

    /// Signs in with the passkey of the response: the account is the one
    /// that holds its credential id, and the one its user handle names.
    pub async fn finish_passkey_sign_in(
        &self,
        ceremony: &str,
        response: &str,
        ctx: &CommandContext,
    ) -> Result<SignedIn, AuthError> {
        let now = self.clock.now();
        let (response, taken) = self
            .answer(ceremony, response, Purpose::SignIn, now)
            .await?;
        let handle = response
            .get_user_unique_id()
            .and_then(|handle| Uuid::from_slice(handle).ok())
            .ok_or(AuthError::InvalidCredentials)?;
        let account = self
            .prove_passkey(handle, Purpose::SignIn, &taken, &response, now, ctx)
            .await?;
        if self.require_verified_email && !account.email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        let executed = self.users.complete_login(handle, now, ctx).await?;
        self.sign_in(handle, roles(&account), Some(executed), PASSKEY_ALONE, ctx)
            .await
    }

    /// Begins the second step of the password sign-in `challenge` with a
    /// passkey of its account.
    pub async fn begin_passkey_second_step(&self, challenge: &str) -> Result<Begun, AuthError> {
        let now = self.clock.now();
        let challenge = Uuid::try_parse(challenge).map_err(|_| AuthError::InvalidChallenge)?;
        let user_id = self
            .challenges
            .open(challenge, now)
            .await?
            .ok_or(AuthError::InvalidChallenge)?;
        let stored = self.passkeys_to_sign_with(user_id).await?;
        Ok(self
            .passkeys
            .begin_for(Purpose::SecondStep, user_id, Some(challenge), &stored, now)
            .await?)
    }

    /// Completes a password sign-in with a passkey's signature.
    pub async fn finish_passkey_second_step(
        &self,
        ceremony: &str,
        response: &str,
        ctx: &CommandContext,
    ) -> Result<SignedIn, AuthError> {
        let now = self.clock.now();
        let (response, taken) = self
            .answer(ceremony, response, Purpose::SecondStep, now)
            .await?;
        let (Some(user_id), Some(challenge)) = (taken.user_id, taken.login_challenge) else {
            return Err(PasskeyError::Ceremony.into());
        };
        if self.challenges.open(challenge, now).await? != Some(user_id) {
            return Err(AuthError::InvalidChallenge);
        }
        let account = self
            .prove_passkey(user_id, Purpose::SecondStep, &taken, &response, now, ctx)
            .await?;
        if self.challenges.take(challenge, now).await?.is_none() {
            return Err(AuthError::InvalidChallenge);
        }
        let executed = self.users.complete_login(user_id, now, ctx).await?;
        self.sign_in(
            user_id,
            roles(&account),
            Some(executed),
            WITH_A_PASSKEY,
            ctx,
        )
        .await
    }

    /// Begins a re-authentication of `user_id` with one of their passkeys.
    pub async fn begin_passkey_reauthentication(&self, user_id: Uuid) -> Result<Begun, AuthError> {
        let stored = self.passkeys_to_sign_with(user_id).await?;
        Ok(self
            .passkeys
            .begin_for(
                Purpose::Reauthenticate,
                user_id,
                None,
                &stored,
                self.clock.now(),
            )
            .await?)
    }

    /// The passkey half of `reauthenticate`: the ceremony must be the
    /// caller's own.
    pub(super) async fn prove_passkey_again(
        &self,
        user_id: Uuid,
        ceremony: &str,
        response: &str,
        ctx: &CommandContext,
    ) -> Result<Account, AuthError> {
        let now = self.clock.now();
        let (response, taken) = self
            .answer(ceremony, response, Purpose::Reauthenticate, now)
            .await?;
        if taken.user_id != Some(user_id) {
            return Err(PasskeyError::Ceremony.into());
        }
        self.prove_passkey(
            user_id,
            Purpose::Reauthenticate,
            &taken,
            &response,
            now,
            ctx,
        )
        .await
    }

    /// Checks a passkey signature of `user_id` as one attempt towards the
    /// account's lockout (counted first, refused while locked) and records
    /// it with its counter; a counter that did not go up is refused and
    /// recorded. Answers the account; the caller completes the attempt.
    async fn prove_passkey(
        &self,
        user_id: Uuid,
        purpose: Purpose,
        taken: &Taken,
        response: &PublicKeyCredential,
        now: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Account, AuthError> {
        let holder = self
            .users
            .passkey_holder(response.get_credential_id())
            .await?;
        let Some((holder, passkey_id)) = holder.filter(|(holder, _)| *holder == user_id) else {
            return Err(AuthError::InvalidCredentials);
        };
        let account = self.count_attempt(holder, now, ctx).await?;
        let mut passkey = account
            .passkey(passkey_id)
            .and_then(|passkey| passkey.credential.as_ref())
            .map(opened)
            .transpose()?
            .ok_or(AuthError::InvalidCredentials)?;
        match self
            .passkeys
            .finish_signature(purpose, taken, response, &passkey)
        {
            Ok(verified) => {
                passkey.update_credential(&verified);
                let credential = kept(&passkey)?;
                let used = self
                    .users
                    .use_passkey(
                        user_id,
                        passkey_id,
                        verified.counter(),
                        credential,
                        now,
                        ctx,
                    )
                    .await;
                refused_as_invalid(used)?;
                Ok(account)
            }
            Err(PasskeyError::CounterRegressed) => {
                tracing::warn!(user = %user_id, passkey = %passkey_id, "a passkey signed with a counter that did not go up: refused");
                self.users
                    .refuse_passkey_counter(user_id, passkey_id, now, ctx)
                    .await?;
                Err(AuthError::InvalidCredentials)
            }
            Err(PasskeyError::Refused | PasskeyError::Malformed(_)) => {
                Err(AuthError::InvalidCredentials)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// An authenticator's answer and the ceremony it answers, taken.
    async fn answer(
        &self,
        ceremony: &str,
        response: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<(PublicKeyCredential, Taken), AuthError> {
        let response = passkeys::signature(response)?;
        let taken = self.passkeys.take(ceremony, purpose, now).await?;
        Ok((response, taken))
    }

    /// The passkeys of an active account that has at least one.
    async fn passkeys_to_sign_with(&self, user_id: Uuid) -> Result<Vec<Passkey>, AuthError> {
        let stored = stored_passkeys(&self.active_account(user_id).await?)?;
        if stored.is_empty() {
            return Err(AuthError::NoPasskey);
        }
        Ok(stored)
    }

    async fn active_account(&self, user_id: Uuid) -> Result<Account, AuthError> {
        self.users
            .load(user_id)
            .await?
            .filter(|account| account.status == accountable_domain::UserStatus::Active)
            .ok_or(AuthError::InvalidCredentials)
    }
}

/// The account's passkeys as the WebAuthn library takes them.
fn stored_passkeys(account: &Account) -> Result<Vec<Passkey>, AuthError> {
    account
        .passkeys
        .iter()
        .filter_map(|passkey| passkey.credential.as_ref())
        .map(opened)
        .collect()
}

/// A passkey as the account keeps it.
fn kept(passkey: &Passkey) -> Result<PasskeyCredential, AuthError> {
    passkeys::to_stored(passkey)
        .map(PasskeyCredential::new)
        .map_err(state)
}

/// A kept passkey as the WebAuthn library takes it.
fn opened(credential: &PasskeyCredential) -> Result<Passkey, AuthError> {
    passkeys::from_stored(credential.expose()).map_err(state)
}

fn state(error: serde_json::Error) -> AuthError {
    AuthError::Passkey(PasskeyError::State(error))
}
