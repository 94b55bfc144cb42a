//! The mutations of the second factor: setting up an authenticator app
//! (TOTP), signing in with it, and removing it. Each acts on the caller's
//! own account.

use async_graphql::{Context, InputObject, Object, SimpleObject};

use super::passkeys::PasskeyResponseInput;
use super::*;
use crate::auth::{Caller, Reproof};
use crate::commands::factors::{is_totp_shaped, FactorProof, MAX_RECOVERY_CODE_LEN};
use crate::commands::Actor;
use crate::graphql::guards::SignedIn;

#[derive(Default)]
pub struct FactorMutation;

#[derive(Default)]
pub struct FactorQuery;

/// The second factors of an account.
#[derive(SimpleObject)]
pub struct SecondFactors {
    /// Whether sign-in needs a code of an authenticator app.
    pub totp_enabled: bool,
    /// Whether an app is being set up (`confirmTotp` not yet given).
    pub totp_pending: bool,
    /// Recovery codes not used yet.
    pub recovery_codes_left: usize,
}

#[Object]
impl FactorQuery {
    /// The signed-in user's second factors, from their history (no read
    /// model lags behind a change).
    #[graphql(guard = "SignedIn")]
    async fn my_second_factors(&self, ctx: &Context<'_>) -> ApiResult<SecondFactors> {
        let state = ctx.data::<ApiState>()?;
        let account = state.auth.users.load(own_id(ctx)?).await?;
        Ok(second_factors_in(account.as_ref()))
    }
}

/// The second factors `account` has (none when there is no account).
pub(super) fn second_factors_in(account: Option<&accountable_domain::Account>) -> SecondFactors {
    let totp = account.and_then(|account| account.totp.as_ref());
    SecondFactors {
        totp_enabled: totp.is_some_and(|totp| totp.is_enabled()),
        totp_pending: totp.is_some_and(|totp| !totp.is_enabled()),
        recovery_codes_left: totp
            .filter(|totp| totp.is_enabled())
            .map_or(0, |totp| totp.recovery_codes.len()),
    }
}

/// What an authenticator app is set up with.
#[derive(SimpleObject)]
pub struct TotpEnrollmentPayload {
    /// The secret in base32, to type into the app.
    pub secret: String,
    /// An `otpauth://totp/…` URI, to show as a QR code.
    pub otpauth_uri: String,
}

/// The app is enabled: sign-in needs one of its codes from now on.
#[derive(SimpleObject)]
pub struct TotpEnabledPayload {
    /// Ten single-use codes that stand in for the app when it is lost.
    /// Shown this once; only their hashes are kept.
    pub recovery_codes: Vec<String>,
    /// The user's version after the change.
    pub version: i64,
}

/// A code of the authenticator app.
#[derive(InputObject)]
pub struct TotpCodeInput {
    /// Six digits.
    pub code: String,
}

/// The second step of a sign-in.
#[derive(InputObject)]
pub struct CompleteLoginInput {
    /// The `challenge` that `login` answered.
    pub challenge: String,
    /// A code of the authenticator app (six digits); or
    pub totp_code: Option<String>,
    /// one of the recovery codes (`xxxxx-xxxxx`).
    pub recovery_code: Option<String>,
}

/// One proof of who the caller is.
#[derive(InputObject)]
pub struct ReauthenticateInput {
    /// The account's password; or
    pub password: Option<String>,
    /// a code of the authenticator app; or
    pub totp_code: Option<String>,
    /// one of the recovery codes; or
    pub recovery_code: Option<String>,
    /// a passkey's answer to `beginPasskeyReauthentication`.
    pub passkey: Option<PasskeyResponseInput>,
}

/// A fresh access token of the same session.
#[derive(SimpleObject)]
pub struct ReauthenticationPayload {
    /// A JWT whose `auth_time` is now.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

/// What removing the app takes.
#[derive(InputObject)]
pub struct DisableTotpInput {
    /// The account's password now.
    pub current_password: String,
    /// A code of the app; or
    pub totp_code: Option<String>,
    /// one of the recovery codes.
    pub recovery_code: Option<String>,
}

/// Exactly one of a code and a recovery code, each of its shape: anything
/// else is refused before anything is written.
fn proof<'a>(
    totp_code: Option<&'a str>,
    recovery_code: Option<&'a str>,
) -> ApiResult<FactorProof<'a>> {
    let invalid = |field: &'static str, message: &str| {
        ApiError::new(Code::BadUserInput, format!("{field}: {message}")).with("field", field)
    };
    match (totp_code, recovery_code) {
        (Some(code), None) if is_totp_shaped(code) => Ok(FactorProof::Totp(code)),
        (Some(_), None) => Err(invalid("totpCode", "six digits")),
        (None, Some(code)) if code.len() <= MAX_RECOVERY_CODE_LEN => {
            Ok(FactorProof::RecoveryCode(code))
        }
        (None, Some(_)) => Err(invalid("recoveryCode", "not a recovery code")),
        _ => Err(invalid("totpCode", "give either totpCode or recoveryCode")),
    }
}

#[Object]
impl FactorMutation {
    /// Begins setting up an authenticator app for the signed-in user: a new
    /// secret (an unconfirmed earlier one stops counting). Sign-in does not
    /// need it until `confirmTotp`. `CONFLICT` while an app is enabled.
    #[graphql(guard = "SignedIn")]
    async fn start_totp_enrollment(&self, ctx: &Context<'_>) -> ApiResult<TotpEnrollmentPayload> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        let command_ctx = acting(ctx)?;
        let enrollment = state
            .auth
            .users
            .start_totp(own_id(ctx)?, state.auth.clock.now(), &command_ctx)
            .await?;
        Ok(TotpEnrollmentPayload {
            secret: enrollment.secret,
            otpauth_uri: enrollment.uri,
        })
    }

    /// Enables the app being set up, given a code it shows now; answers
    /// the recovery codes. A wrong code answers `UNAUTHENTICATED` and
    /// changes nothing.
    #[graphql(guard = "SignedIn")]
    async fn confirm_totp(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A code the app shows now.")] input: TotpCodeInput,
    ) -> ApiResult<TotpEnabledPayload> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        let command_ctx = acting(ctx)?;
        let (executed, recovery_codes) = state
            .auth
            .users
            .confirm_totp(
                own_id(ctx)?,
                &input.code,
                state.auth.clock.now(),
                &command_ctx,
            )
            .await?;
        Ok(TotpEnabledPayload {
            recovery_codes,
            version: executed.version,
        })
    }

    /// Removes the app, given the current password and a second factor.
    /// Sign-in needs the password alone again.
    #[graphql(guard = "SignedIn")]
    async fn disable_totp(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The password and a second factor.")] input: DisableTotpInput,
    ) -> ApiResult<UserPayload> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        recently_signed_in(ctx)?;
        let command_ctx = acting(ctx)?;
        let proof = proof(input.totp_code.as_deref(), input.recovery_code.as_deref())?;
        let executed = state
            .auth
            .disable_totp(own_id(ctx)?, &input.current_password, proof, &command_ctx)
            .await?;
        Ok(executed.into())
    }

    /// Proves again who the caller is, within their session: the password,
    /// a code of the app, or a recovery code (exactly one; a wrong one
    /// counts towards the lockout). Answers a new access token of the same
    /// session, signed in now, for the changes that need a recent sign-in
    /// (`REAUTHENTICATION_REQUIRED`); the session's refreshes carry it on.
    #[graphql(guard = "SignedIn")]
    async fn reauthenticate(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "One proof.")] input: ReauthenticateInput,
    ) -> ApiResult<ReauthenticationPayload> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        let command_ctx = acting(ctx)?;
        let Caller::User {
            id,
            session: Some(session),
            ..
        } = caller(ctx)
        else {
            return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
        };
        let proof = match (
            &input.password,
            &input.totp_code,
            &input.recovery_code,
            &input.passkey,
        ) {
            (Some(password), None, None, None) => Reproof::Password(password),
            (None, None, None, Some(passkey)) => Reproof::Passkey {
                ceremony: &passkey.ceremony,
                response: &passkey.credential,
            },
            (None, totp, recovery, None) => {
                Reproof::Factor(proof(totp.as_deref(), recovery.as_deref())?)
            }
            _ => {
                return Err(ApiError::new(
                    Code::BadUserInput,
                    "password: give one of password, totpCode, recoveryCode and passkey",
                )
                .with("field", "password"))
            }
        };
        let (access_token, expires_in) = state
            .auth
            .reauthenticate(*id, *session, proof, &command_ctx)
            .await?;
        Ok(ReauthenticationPayload {
            access_token,
            expires_in,
        })
    }

    /// The second step of a sign-in: the `challenge` of `login` and a code
    /// of the app (accepted once: a code already used answers
    /// `UNAUTHENTICATED`) or a recovery code (used up). Wrong codes count
    /// towards the account's lockout, as wrong passwords do; a challenge
    /// that is unknown, expired or used answers `INVALID_TOKEN`.
    async fn complete_login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The challenge and a second factor.")] input: CompleteLoginInput,
    ) -> ApiResult<AuthPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let proof = proof(input.totp_code.as_deref(), input.recovery_code.as_deref())?;
        let signed_in = state
            .auth
            .complete_login(&input.challenge, proof, &command_ctx)
            .await?;
        Ok(AuthPayload::new(ctx, signed_in, None))
    }
}
