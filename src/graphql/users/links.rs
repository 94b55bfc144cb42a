//! The mutations of the flows that mail a link: verifying an address,
//! recovering a forgotten password, confirming a new address. Every one
//! counts against the client's rate limit; none tells whether an address
//! has an account.

use std::time::Duration;

use async_graphql::{Context, Object};

use super::*;
use crate::commands::links::RequestedLink;
use crate::commands::Actor;

/// The least time a request for mail takes to answer, so that one for an
/// address with an account (a write) takes as long as one without.
const MAIL_REQUEST_ANSWER_TIME: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct LinkMutation;

#[Object]
impl LinkMutation {
    /// Mails a new verification link to the address, if it belongs to an
    /// active account whose address is not verified yet; an earlier link
    /// stops working. At most one a minute and ten a day per account.
    /// Always `true`, in the same time, whether or not the address has an
    /// account.
    async fn request_email_verification(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The address to verify.")] input: EmailInput,
    ) -> ApiResult<bool> {
        request_link(ctx, RequestedLink::Verification, &input.email).await
    }

    /// Marks the address verified, given the token of the latest
    /// verification link mailed to it (valid 24 hours, once). Any token that
    /// does not work answers `INVALID_TOKEN`, without saying why.
    async fn verify_email(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The `token` of the link.")] input: TokenInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let executed = state
            .auth
            .users
            .verify_email(&input.token, state.auth.clock.now(), &command_ctx)
            .await?;
        Ok(executed.into())
    }

    /// Mails a link to set a new password (valid 30 minutes, once), if the
    /// address belongs to an active account; at most one a minute and ten a
    /// day per account. Always `true`, in the same time, whether or not the
    /// address has an account.
    async fn request_password_reset(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The address of the account.")] input: EmailInput,
    ) -> ApiResult<bool> {
        request_link(ctx, RequestedLink::PasswordReset, &input.email).await
    }

    /// Sets a new password with the token of a reset link: every session of
    /// the account ends (sign in with the new password) and a lock on it is
    /// lifted. The link works once, until a newer one is mailed or the
    /// password changes otherwise; five wrong tries void it. Any token that
    /// does not work answers `INVALID_TOKEN`.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The link's token and the new password.")] input: ResetPasswordInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let executed = state
            .auth
            .reset_password(&input.token, &input.new_password, &command_ctx)
            .await?;
        Ok(executed.into())
    }

    /// Moves the account to the address that `changeEmail` mailed the link
    /// to, and marks it verified; the old address is free again. A link
    /// that does not work answers `INVALID_TOKEN`; an address another
    /// account took meanwhile, `CONFLICT`.
    async fn confirm_email_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The `token` of the link.")] input: TokenInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let executed = state
            .auth
            .users
            .confirm_email_change(&input.token, state.auth.clock.now(), &command_ctx)
            .await?;
        Ok(executed.into())
    }
}

/// A link asked for by address: `true`, in no less than
/// [`MAIL_REQUEST_ANSWER_TIME`], whatever the address.
async fn request_link(ctx: &Context<'_>, kind: RequestedLink, email: &str) -> ApiResult<bool> {
    let answer_at = tokio::time::Instant::now() + MAIL_REQUEST_ANSWER_TIME;
    let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
    state
        .auth
        .users
        .request_link(kind, email, state.auth.clock.now(), &command_ctx)
        .await?;
    tokio::time::sleep_until(answer_at).await;
    Ok(true)
}
