//! The account queries: `me`, `user`, `users`, `erasureReceipt`.

use accountable_projections::users::{self};
use async_graphql::{Context, Object, ID};
use uuid::Uuid;

use super::*;
use crate::auth::Caller;
use crate::graphql::error::{ApiError, ApiResult, Code};
use crate::graphql::guards::{caller, AnyRole, SelfOr, SignedIn};
use crate::graphql::ApiState;
use accountable_domain::{self as domain};

/// Longest prefix a filter takes.
const MAX_PREFIX: usize = 254;

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user.
    #[graphql(guard = "SignedIn")]
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<User> {
        let state = ctx.data::<ApiState>()?;
        let Caller::User { id, .. } = caller(ctx) else {
            return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
        };
        read_at_least(state, *id, 1).await
    }

    /// Every account, in order of registration, a page at a time (admins
    /// and auditors). `first` is 1 to 100 (default 20); `after` is the
    /// `cursor` of the last edge of the previous page.
    #[graphql(
        guard = "AnyRole(READERS)",
        complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity"
    )]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many users to list: 1 to 100, 20 if left out.")] first: Option<i32>,
        #[graphql(desc = "The `cursor` of the last user of the previous page.")] after: Option<
            String,
        >,
        #[graphql(desc = "Which users to list; all but deleted ones if left out.")] filter: Option<
            UserFilter,
        >,
    ) -> ApiResult<UserConnection> {
        let state = ctx.data::<ApiState>()?;
        let first = i64::from(first.unwrap_or(20).clamp(1, 100));
        let after = after
            .map(|cursor| {
                Uuid::parse_str(&cursor).map_err(|_| {
                    ApiError::new(Code::BadUserInput, "after: not a cursor of this list")
                        .with("field", "after")
                })
            })
            .transpose()?;
        let filter = filter.unwrap_or_default();
        for prefix in [&filter.email_prefix, &filter.display_name_prefix]
            .into_iter()
            .flatten()
        {
            if prefix.chars().count() > MAX_PREFIX {
                return Err(ApiError::new(Code::BadUserInput, "filter: prefix too long"));
            }
        }
        let list_filter = users::ListFilter {
            status: filter.status.map(domain::UserStatus::from),
            role: filter.role.map(domain::Role::from),
            email_prefix: filter.email_prefix,
            display_name_prefix: filter.display_name_prefix,
        };
        let mut rows = users::list(&state.pool, &list_filter, after, first + 1).await?;
        let has_next = i64::try_from(rows.len()).unwrap_or(i64::MAX) > first;
        rows.truncate(usize::try_from(first).unwrap_or_default());
        Ok(UserConnection::new(rows, after.is_some(), has_next))
    }

    /// The receipt of a user's erasure, or null if they were not erased
    /// (admins and auditors).
    #[graphql(guard = "AnyRole(READERS)")]
    async fn erasure_receipt(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The erased user.")] user_id: ID,
    ) -> ApiResult<Option<ErasureReceipt>> {
        let state = ctx.data::<ApiState>()?;
        let id = parse_id(&user_id)?;
        receipt_of(state, id).await
    }

    /// One account by id, or null if there is none. With `minVersion`, waits
    /// briefly until the read side has applied at least that version (as
    /// returned by a mutation) and answers `UNAVAILABLE` if it has not,
    /// rather than showing an older state as current. The user themself,
    /// admins and auditors may read it.
    #[graphql(guard = "SelfOr { id: &id, roles: READERS }")]
    async fn user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to read.")] id: ID,
        #[graphql(desc = "A version a mutation answered: wait until the read side shows it.")]
        min_version: Option<i64>,
    ) -> ApiResult<Option<User>> {
        let state = ctx.data::<ApiState>()?;
        let id = parse_id(&id)?;
        let user = match min_version {
            None => state.users.load_one(id).await?.map(User::from),
            Some(min_version) => Some(read_at_least(state, id, min_version).await?),
        };
        Ok(user.filter(|user| !user.row.status.is_gone()))
    }
}
