//! Passkeys (WebAuthn): each ceremony is a `begin…` mutation, whose
//! `options` go to `navigator.credentials.create` or `.get` (after
//! `PublicKeyCredential.parseCreationOptionsFromJSON` or
//! `parseRequestOptionsFromJSON` of `options.publicKey`), and a `finish…`
//! mutation, given the ceremony and `JSON.stringify(credential)`.

use async_graphql::{Context, InputObject, Json, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::*;
use crate::auth::passkeys::Begun;
use crate::graphql::guards::SignedIn;
use accountable_domain::values::PasskeyName;

#[derive(Default)]
pub struct PasskeyMutation;

#[derive(Default)]
pub struct PasskeyQuery;

/// A passkey of the account.
#[derive(SimpleObject)]
pub struct Passkey {
    /// What `renamePasskey` and `removePasskey` take.
    pub id: ID,
    /// What its owner calls it; null once the user is erased.
    pub name: Option<String>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it last signed; null until then.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<&accountable_domain::Passkey> for Passkey {
    fn from(passkey: &accountable_domain::Passkey) -> Self {
        Self {
            id: ID(passkey.id.to_string()),
            name: passkey.name.as_ref().map(|name| name.as_str().to_owned()),
            created_at: passkey.created_at,
            last_used_at: passkey.last_used_at,
        }
    }
}

/// A ceremony begun: valid for 5 minutes, finished once.
#[derive(SimpleObject)]
pub struct PasskeyCeremony {
    /// What the `finish…` mutation takes back.
    pub ceremony: String,
    /// WebAuthn's options in their JSON form: `{publicKey: {…}}`.
    pub options: Json<serde_json::Value>,
}

impl From<Begun> for PasskeyCeremony {
    fn from(begun: Begun) -> Self {
        Self {
            ceremony: begun.ceremony.to_string(),
            options: Json(begun.options),
        }
    }
}

/// The authenticator's answer to a ceremony.
#[derive(InputObject)]
pub struct PasskeyResponseInput {
    /// The `ceremony` the `begin…` mutation answered.
    pub ceremony: String,
    /// `JSON.stringify` of the `PublicKeyCredential` the browser gave (at
    /// most 32 KiB).
    pub credential: String,
}

/// The browser's new credential, and its name.
#[derive(InputObject)]
pub struct FinishPasskeyRegistrationInput {
    /// The `ceremony` `beginPasskeyRegistration` answered.
    pub ceremony: String,
    /// `JSON.stringify` of what `navigator.credentials.create` gave.
    pub credential: String,
    /// What to call it: 1 to 64 characters.
    pub name: String,
}

/// The password sign-in to complete.
#[derive(InputObject)]
pub struct BeginPasskeySecondStepInput {
    /// The `challenge` that `login` answered.
    pub challenge: String,
}

/// A passkey and its new name.
#[derive(InputObject)]
pub struct RenamePasskeyInput {
    /// The passkey's `id`.
    pub id: ID,
    /// 1 to 64 characters.
    pub name: String,
}

/// The passkey to remove.
#[derive(InputObject)]
pub struct RemovePasskeyInput {
    /// The passkey's `id`.
    pub id: ID,
}

/// A passkey added or renamed.
#[derive(SimpleObject)]
pub struct PasskeyPayload {
    /// The passkey as it is now.
    pub passkey: Passkey,
    /// The user's version after the change.
    pub version: i64,
}

fn passkey_id(id: &ID) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::parse_str(id)
        .map_err(|_| ApiError::new(Code::BadUserInput, "id: not a passkey id").with("field", "id"))
}

/// The passkeys `account` has, oldest first (none when there is no
/// account).
pub(super) fn passkeys_in(account: Option<&accountable_domain::Account>) -> Vec<Passkey> {
    account
        .map(|account| account.passkeys.iter().map(Passkey::from).collect())
        .unwrap_or_default()
}

fn written(executed: &crate::commands::Executed, id: uuid::Uuid) -> ApiResult<PasskeyPayload> {
    let passkey = executed
        .account
        .as_ref()
        .and_then(|account| account.passkey(id))
        .map(Passkey::from)
        .ok_or_else(|| ApiError::new(Code::NotFound, "no such passkey"))?;
    Ok(PasskeyPayload {
        passkey,
        version: executed.version,
    })
}

#[Object]
impl PasskeyQuery {
    /// The signed-in user's passkeys, oldest first.
    #[graphql(guard = "SignedIn")]
    async fn my_passkeys(&self, ctx: &Context<'_>) -> ApiResult<Vec<Passkey>> {
        let state = ctx.data::<ApiState>()?;
        let account = state.auth.users.load(own_id(ctx)?).await?;
        Ok(passkeys_in(account.as_ref()))
    }
}

#[Object]
impl PasskeyMutation {
    /// Begins adding a passkey to the signed-in user's account (a recent
    /// sign-in is needed, else `REAUTHENTICATION_REQUIRED`). The passkey is
    /// discoverable: it can sign in without an address.
    #[graphql(guard = "SignedIn")]
    async fn begin_passkey_registration(&self, ctx: &Context<'_>) -> ApiResult<PasskeyCeremony> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        recently_signed_in(ctx)?;
        Ok(state
            .auth
            .begin_passkey_registration(own_id(ctx)?)
            .await?
            .into())
    }

    /// Adds the passkey the browser created. A response that does not
    /// verify (another origin or relying party, another challenge) answers
    /// `UNAUTHENTICATED`; a passkey already registered, to this account or
    /// another, `CONFLICT`; a ceremony unknown, expired or used,
    /// `INVALID_TOKEN`.
    #[graphql(guard = "SignedIn")]
    async fn finish_passkey_registration(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The ceremony, the credential and its name.")]
        input: FinishPasskeyRegistrationInput,
    ) -> ApiResult<PasskeyPayload> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        let command_ctx = acting(ctx)?;
        let name = PasskeyName::parse(&input.name)?;
        let added = state
            .auth
            .finish_passkey_registration(
                own_id(ctx)?,
                &input.ceremony,
                &input.credential,
                name,
                &command_ctx,
            )
            .await?;
        written(&added.executed, added.passkey_id)
    }

    /// Begins a sign-in with a passkey alone. It names no account, so it
    /// tells nothing about any.
    async fn begin_passkey_sign_in(&self, ctx: &Context<'_>) -> ApiResult<PasskeyCeremony> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        Ok(state.auth.begin_passkey_sign_in().await?.into())
    }

    /// Signs in with the passkey the browser chose. Anything that does not
    /// verify answers `UNAUTHENTICATED` and counts towards the account's
    /// lockout, as a wrong password does.
    async fn finish_passkey_sign_in(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The ceremony and the browser's answer.")] input: PasskeyResponseInput,
    ) -> ApiResult<AuthPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let signed_in = state
            .auth
            .finish_passkey_sign_in(&input.ceremony, &input.credential, &command_ctx)
            .await?;
        Ok(AuthPayload::new(ctx, signed_in, None))
    }

    /// Begins the second step of a password sign-in (`login` answered
    /// `PASSKEY` among its `factors`) with a passkey of the account.
    async fn begin_passkey_second_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The challenge of `login`.")] input: BeginPasskeySecondStepInput,
    ) -> ApiResult<PasskeyCeremony> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        Ok(state
            .auth
            .begin_passkey_second_step(&input.challenge)
            .await?
            .into())
    }

    /// Completes the password sign-in with the passkey's signature; the
    /// `login` challenge is used up.
    async fn finish_passkey_second_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The ceremony and the browser's answer.")] input: PasskeyResponseInput,
    ) -> ApiResult<AuthPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let signed_in = state
            .auth
            .finish_passkey_second_step(&input.ceremony, &input.credential, &command_ctx)
            .await?;
        Ok(AuthPayload::new(ctx, signed_in, None))
    }

    /// Begins a re-authentication with one of the caller's passkeys; pass
    /// the answer to `reauthenticate(input: {passkey: …})`.
    #[graphql(guard = "SignedIn")]
    async fn begin_passkey_reauthentication(
        &self,
        ctx: &Context<'_>,
    ) -> ApiResult<PasskeyCeremony> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        Ok(state
            .auth
            .begin_passkey_reauthentication(own_id(ctx)?)
            .await?
            .into())
    }

    /// Renames one of the caller's passkeys.
    #[graphql(guard = "SignedIn")]
    async fn rename_passkey(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The passkey and its name.")] input: RenamePasskeyInput,
    ) -> ApiResult<PasskeyPayload> {
        let state = ctx.data::<ApiState>()?;
        let command_ctx = acting(ctx)?;
        let id = passkey_id(&input.id)?;
        let name = PasskeyName::parse(&input.name)?;
        let executed = state
            .auth
            .users
            .rename_passkey(own_id(ctx)?, id, name, state.auth.clock.now(), &command_ctx)
            .await?;
        written(&executed, id)
    }

    /// Removes one of the caller's passkeys (a recent sign-in is needed);
    /// it signs in no more. The account's last way to sign in stays:
    /// `CONFLICT`.
    #[graphql(guard = "SignedIn")]
    async fn remove_passkey(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The passkey.")] input: RemovePasskeyInput,
    ) -> ApiResult<UserPayload> {
        let state = ctx.data::<ApiState>()?;
        recently_signed_in(ctx)?;
        let command_ctx = acting(ctx)?;
        let id = passkey_id(&input.id)?;
        let executed = state
            .auth
            .users
            .remove_passkey(own_id(ctx)?, id, state.auth.clock.now(), &command_ctx)
            .await?;
        Ok(executed.into())
    }
}
