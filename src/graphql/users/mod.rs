//! The account part of the schema: the `User` type and the payloads
//! (`types`), what mutations take (`inputs`), the queries and every
//! account mutation; the helpers they share are here.

mod factors;
mod inputs;
mod links;
mod mutations;
mod passkeys;
mod queries;
mod sessions;
mod types;

pub use factors::{FactorMutation, FactorQuery, SecondFactors};
pub use inputs::*;
pub use links::LinkMutation;
pub use mutations::UserMutation;
pub use passkeys::{Passkey, PasskeyMutation, PasskeyQuery};
pub use queries::UserQuery;
pub use sessions::{Session, SessionMutation, SessionQuery};
pub use types::*;

use async_graphql::{Context, ID};
use uuid::Uuid;

use crate::auth::Caller;
use crate::commands::{Actor, CommandContext};
use crate::graphql::error::{ApiError, ApiResult, Code};
use crate::graphql::guards::caller;
use crate::graphql::{ApiState, RequestMeta};
use accountable_domain::Role as DomainRole;

/// Who may read any account besides its owner.
pub(crate) const READERS: &[DomainRole] = &[DomainRole::Admin, DomainRole::Auditor];
/// Who may change any account besides its owner.
pub(super) const ADMINS: &[DomainRole] = &[DomainRole::Admin];

/// The shared state, the command context of a signed-in caller, and the
/// user a mutation acts on.
pub(super) fn target<'a>(
    ctx: &Context<'a>,
    id: &ID,
) -> ApiResult<(&'a ApiState, CommandContext, Uuid)> {
    let state = ctx.data::<ApiState>()?;
    let command_ctx = acting(ctx)?;
    let id = parse_id(id)?;
    Ok((state, command_ctx, id))
}

/// The command context of a signed-in caller's operation.
pub(super) fn acting(ctx: &Context<'_>) -> ApiResult<CommandContext> {
    let meta = ctx.data::<RequestMeta>()?;
    let Caller::User { id, .. } = caller(ctx) else {
        return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
    };
    Ok(CommandContext {
        actor: Actor::User(*id),
        correlation_id: meta.correlation_id.clone(),
        causation_id: meta.request_id.clone(),
        request_id: meta.request_id.clone(),
        traceparent: meta.traceparent.clone(),
        origin: meta.origin(),
    })
}

/// The signed-in caller's own id.
pub(super) fn own_id(ctx: &Context<'_>) -> ApiResult<Uuid> {
    match caller(ctx) {
        Caller::User { id, .. } => Ok(*id),
        Caller::Anonymous => Err(ApiError::new(Code::Unauthenticated, "sign in first")),
    }
}

/// The shared state and a command context for an operation that counts
/// against the client's rate limit.
pub(super) fn limited<'a>(
    ctx: &Context<'a>,
    actor: Actor,
) -> ApiResult<(&'a ApiState, CommandContext)> {
    let state = ctx.data::<ApiState>()?;
    let meta = ctx.data::<RequestMeta>()?;
    within_limit(state, meta)?;
    Ok((
        state,
        CommandContext {
            actor,
            correlation_id: meta.correlation_id.clone(),
            causation_id: meta.request_id.clone(),
            request_id: meta.request_id.clone(),
            traceparent: meta.traceparent.clone(),
            origin: meta.origin(),
        },
    ))
}

/// Counts the operation against its client's rate limit: every check of a
/// secret does (sign-ins, registrations, refreshes, password changes).
pub(super) fn within_limit(state: &ApiState, meta: &RequestMeta) -> ApiResult<()> {
    if state.limiter.allow(meta.client) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::RateLimited,
        "too many requests; retry in a minute",
    ))
}

/// The caller signed in (or re-authenticated) recently enough for a
/// dangerous change; else `REAUTHENTICATION_REQUIRED`.
pub(super) fn recently_signed_in(ctx: &Context<'_>) -> ApiResult<()> {
    let state = ctx.data::<ApiState>()?;
    if state.auth.signed_in_recently(caller(ctx)) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::ReauthenticationRequired,
        "this change needs a recent sign-in: reauthenticate first",
    )
    .with("maxAgeSeconds", state.auth.step_up_max_age.num_seconds()))
}

/// The read-side row of `id` at `min_version` or later, waiting briefly.
pub(super) async fn read_at_least(state: &ApiState, id: Uuid, min_version: i64) -> ApiResult<User> {
    match state
        .freshness
        .user_at_least(
            &state.users,
            id,
            min_version,
            state.read_your_writes_timeout,
        )
        .await?
    {
        Ok(row) => Ok(User::from(row)),
        Err(stale) => {
            let error = ApiError::new(
                Code::Unavailable,
                "the read side has not reached that version yet; retry shortly",
            )
            .with("minVersion", min_version);
            Err(match stale.current {
                Some(current) => error.with("currentVersion", current),
                None => error,
            })
        }
    }
}

/// A user id given in `field`, or `BAD_USER_INPUT` naming the field.
pub(crate) fn parse_id_in(id: &ID, field: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::new(Code::BadUserInput, format!("{field}: not a user id")).with("field", field)
    })
}

pub(super) fn parse_id(id: &ID) -> Result<Uuid, ApiError> {
    parse_id_in(id, "id")
}
