//! Who may call what. Guards fail closed: no caller means
//! `UNAUTHENTICATED`, a caller without the right means `FORBIDDEN`.

use async_graphql::{Context, Guard, ID};

use super::error::{ApiError, Code};
use crate::auth::Caller;
use accountable_domain::Role;

/// The caller of the operation (anonymous when no token was sent).
pub fn caller<'a>(ctx: &Context<'a>) -> &'a Caller {
    ctx.data_opt::<Caller>().unwrap_or(&Caller::Anonymous)
}

/// Whether a caller's `roles` include one of `wanted`.
pub fn has_any(roles: &[Role], wanted: &[Role]) -> bool {
    roles.iter().any(|r| wanted.contains(r))
}

fn unauthenticated() -> async_graphql::Error {
    ApiError::new(Code::Unauthenticated, "sign in first").into()
}

fn forbidden() -> async_graphql::Error {
    ApiError::new(Code::Forbidden, "not allowed").into()
}

/// Any signed-in user.
pub struct SignedIn;

impl Guard for SignedIn {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match caller(ctx) {
            Caller::Anonymous => Err(unauthenticated()),
            Caller::User { .. } => Ok(()),
        }
    }
}

/// A signed-in user with one of `roles`.
pub struct AnyRole(pub &'static [Role]);

impl Guard for AnyRole {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match caller(ctx) {
            Caller::Anonymous => Err(unauthenticated()),
            Caller::User { roles, .. } if has_any(roles, self.0) => Ok(()),
            Caller::User { .. } => Err(forbidden()),
        }
    }
}

/// The user `id` themself, or a signed-in user with one of `roles`.
pub struct SelfOr<'a> {
    pub id: &'a ID,
    pub roles: &'static [Role],
}

impl Guard for SelfOr<'_> {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match caller(ctx) {
            Caller::Anonymous => Err(unauthenticated()),
            Caller::User { id, .. } if id.to_string() == self.id.as_str() => Ok(()),
            Caller::User { roles, .. } if has_any(roles, self.roles) => Ok(()),
            Caller::User { .. } => Err(forbidden()),
        }
    }
}
