//! Every account mutation; each runs one command through the command
//! service (or signs in through `Auth`).

use async_graphql::{Context, Object};

use super::*;
use crate::auth::{Caller, LoggedIn, Registered};
use crate::commands::{Actor, ProfileChange, Reason, Registration};
use crate::graphql::cookie;
use crate::graphql::error::{ApiError, ApiResult, Code};
use crate::graphql::guards::{caller, AnyRole, SelfOr, SignedIn};
use crate::graphql::{ApiState, RequestMeta};

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates an account and mails its address a verification link.
    /// Answers `BAD_USER_INPUT` with the offending `field` when the input is
    /// invalid, and writes nothing then. Where addresses must be verified
    /// before sign-in, the answer holds no tokens and is the same whether
    /// or not the address had an account (its owner is told by mail);
    /// otherwise the new account is signed in at once, and a taken address
    /// answers `CONFLICT`.
    async fn register(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new account.")] input: RegisterInput,
    ) -> ApiResult<SignInPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let registered = state
            .auth
            .register(
                Registration {
                    email: &input.email,
                    password: &input.password,
                    display_name: &input.display_name,
                },
                &command_ctx,
            )
            .await?;
        let Registered::SignedIn(signed_in) = registered else {
            return Ok(SignInPayload::check_mail());
        };
        let written = match &signed_in.executed {
            Some(executed) => Some(registered_user(state, executed).await?),
            None => None,
        };
        Ok(SignInPayload::signed_in(AuthPayload::new(
            ctx, *signed_in, written,
        )))
    }

    /// Signs in. Every failure (unknown email, wrong password, locked
    /// account) answers the same `UNAUTHENTICATED` error; ten failures in a
    /// row lock the account for a while that grows with each lock. Where
    /// addresses must be verified, the right password to an unverified
    /// address answers `EMAIL_NOT_VERIFIED` (`requestEmailVerification`
    /// mails a new link). An account with an authenticator app answers
    /// `secondFactorRequired` and a `challenge` for `completeLogin` instead
    /// of tokens.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The credentials.")] input: LoginInput,
    ) -> ApiResult<SignInPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let logged_in = state
            .auth
            .login(&input.email, &input.password, &command_ctx)
            .await?;
        Ok(match logged_in {
            LoggedIn::SignedIn(signed_in) => {
                SignInPayload::signed_in(AuthPayload::new(ctx, *signed_in, None))
            }
            LoggedIn::SecondFactorRequired { challenge, passkey } => {
                SignInPayload::second_factor(challenge, passkey)
            }
        })
    }

    /// Trades a refresh token for a new access and refresh token. A refresh
    /// token that was already traded ends its whole session.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The refresh token the session holds now.")] refresh_token: String,
    ) -> ApiResult<AuthPayload> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        let refresh_token = cookie::presented(ctx, refresh_token);
        let signed_in = state.auth.refresh(&refresh_token).await?;
        Ok(AuthPayload::new(ctx, signed_in, None))
    }

    /// Changes a profile: the user themself, or an admin.
    #[graphql(guard = "SelfOr { id: &input.id, roles: ADMINS }")]
    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change, for whom.")] input: UpdateProfileInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        let executed = state
            .auth
            .users
            .update_profile(
                id,
                ProfileChange {
                    display_name: input.display_name.as_deref(),
                    locale: input.locale.as_deref(),
                    time_zone: input.time_zone.as_deref(),
                },
                input.expected_version,
                &command_ctx,
            )
            .await?;
        Ok(executed.into())
    }

    /// Asks to move an account to a new email address (the user themself,
    /// or an admin): a link goes to the new address (valid 24 hours) and a
    /// notice to the current one, which stays the account's until the link
    /// comes back (`confirmEmailChange`). The answer never depends on
    /// whether the new address is taken. At most one a minute and ten a
    /// day per account (`RATE_LIMITED`); every try counts against the
    /// client's rate limit.
    #[graphql(guard = "SelfOr { id: &input.id, roles: ADMINS }")]
    async fn change_email(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new address, for whom.")] input: ChangeEmailInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        recently_signed_in(ctx)?;
        within_limit(state, ctx.data::<RequestMeta>()?)?;
        let executed = state
            .auth
            .users
            .change_email(
                id,
                &input.email,
                input.expected_version,
                state.auth.clock.now(),
                &command_ctx,
            )
            .await?;
        Ok(executed.into())
    }

    /// Sets a new password, given the current one. Every session of the
    /// user ends, this one included: sign in again with the new password.
    /// A wrong current password counts towards the account's lockout, as a
    /// failed login does, and every try counts against the client's rate
    /// limit.
    #[graphql(guard = "SelfOr { id: &input.id, roles: &[] }")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The current and the new password.")] input: ChangePasswordInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        recently_signed_in(ctx)?;
        within_limit(state, ctx.data::<RequestMeta>()?)?;
        let executed = state
            .auth
            .change_password(
                id,
                &input.current_password,
                &input.new_password,
                input.expected_version,
                &command_ctx,
            )
            .await?;
        Ok(executed.into())
    }

    /// Gives a user a role (admins only). Having it already writes nothing.
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn assign_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and the role.")] input: RoleInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        let executed = state
            .auth
            .users
            .assign_role(id, input.role.into(), input.expected_version, &command_ctx)
            .await?;
        Ok(executed.into())
    }

    /// Takes a role from a user (admins only) and ends that user's sessions,
    /// so that no live token still carries it. `USER` stays with everyone.
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn revoke_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and the role.")] input: RoleInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        let executed = state
            .auth
            .users
            .revoke_role(id, input.role.into(), input.expected_version, &command_ctx)
            .await?;
        Ok(executed.into())
    }

    /// Stops an account (admins only), with a reason: it cannot sign in, and
    /// its sessions end. The last active admin cannot be deactivated.
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn deactivate_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user, and why.")] input: UserRefInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        let executed = state
            .auth
            .users
            .deactivate(
                id,
                input.reason.as_deref().unwrap_or_default(),
                input.expected_version,
                &command_ctx,
            )
            .await?;
        Ok(executed.into())
    }

    /// Lets a deactivated account sign in again (admins only), with a reason.
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn reactivate_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user, and why.")] input: UserRefInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        let executed = state
            .auth
            .users
            .reactivate(
                id,
                input.reason.as_deref().unwrap_or_default(),
                input.expected_version,
                &command_ctx,
            )
            .await?;
        Ok(executed.into())
    }

    /// Lifts the lock that failed sign-ins put on an account, before it ends
    /// (admins only); its failures are forgotten. A lock never ends the
    /// owner's sessions, so a locked-out user who is still signed in stays
    /// signed in.
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn unlock_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user.")] input: UserRefInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        let executed = state
            .auth
            .users
            .unlock(
                id,
                state.auth.clock.now(),
                input.expected_version,
                &command_ctx,
            )
            .await?;
        Ok(executed.into())
    }

    /// Deletes an account (the user themself, or an admin): queries stop
    /// showing it, its address is free again, its sessions end, and its
    /// history stays. The last active admin cannot be deleted. A user's own
    /// `reason` is sealed with their personal data (an erasure shreds it);
    /// an admin's is kept in clear.
    #[graphql(guard = "SelfOr { id: &input.id, roles: ADMINS }")]
    async fn delete_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user, and why.")] input: UserRefInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        recently_signed_in(ctx)?;
        let reason = match &command_ctx.actor {
            Actor::User(actor) if *actor == id => Reason::Own(input.reason.as_deref()),
            _ => Reason::Staff(input.reason.as_deref().unwrap_or("deleted by an admin")),
        };
        let executed = state
            .auth
            .users
            .delete(id, reason, input.expected_version, &command_ctx)
            .await?;
        Ok(executed.into())
    }

    /// Erases a user's personal data for good (the user themself, or an
    /// admin): their data key is destroyed with the `UserErased` event, so
    /// every stored and published copy of their email, name, profile and
    /// password hash becomes unreadable; the read side drops them, the
    /// address is free again, sessions end, and every other fact of the
    /// history stays. Erasing an erased user changes nothing. The last
    /// active admin cannot be erased. A user erasing themself gives no
    /// reason that is kept (their words would be personal data); an
    /// admin's `reason` is kept in the receipt.
    #[graphql(guard = "SelfOr { id: &input.id, roles: ADMINS }")]
    async fn erase_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user, and why (kept in the receipt).")] input: UserRefInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        recently_signed_in(ctx)?;
        // The user's own words would be personal data erased with them: a
        // self-service erasure keeps a fixed reason instead.
        let reason = match &command_ctx.actor {
            Actor::User(actor) if *actor == id => "erased at the user's request",
            _ => input.reason.as_deref().unwrap_or("erased by an admin"),
        };
        let executed = state
            .auth
            .users
            .erase(id, reason, input.expected_version, &command_ctx)
            .await?;
        let receipt = receipt_of(state, id)
            .await?
            .ok_or_else(|| ApiError::new(Code::NotFound, "no such user"))?;
        let mut payload = UserPayload::from(executed);
        payload.erasure_receipt = Some(receipt);
        Ok(payload)
    }

    /// Ends the session of this refresh token. Always true: whether the
    /// token was live is not revealed.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The refresh token the session holds now.")] refresh_token: String,
    ) -> ApiResult<bool> {
        let state = ctx.data::<ApiState>()?;
        let refresh_token = cookie::presented(ctx, refresh_token);
        state.auth.logout(&refresh_token).await?;
        cookie::clear(ctx);
        Ok(true)
    }

    /// Ends every session of the signed-in user, on every device: refresh
    /// tokens are revoked and access tokens issued so far stop working.
    #[graphql(guard = "SignedIn")]
    async fn logout_all(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let state = ctx.data::<ApiState>()?;
        let Caller::User { id, .. } = caller(ctx) else {
            return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
        };
        state.auth.logout_everywhere(*id).await?;
        cookie::clear(ctx);
        Ok(true)
    }
}
