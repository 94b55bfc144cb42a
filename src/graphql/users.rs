//! The account part of the schema: the `User` type, `user(id)` and
//! `register`.

use accountable_projections::users::{self, UserRow};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{ApiError, Code};
use super::{ApiState, RequestMeta};
use crate::users::{self as domain, Actor, CommandContext, Executed, Registration};

/// What a user may do beyond managing their own account.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::Role")]
pub enum Role {
    /// Every registered user.
    User,
    /// Reads everything, changes nothing.
    Auditor,
    /// Manages every account.
    Admin,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::UserStatus")]
pub enum UserStatus {
    /// May sign in and act.
    Active,
}

/// An account, as the read side shows it.
pub struct User(UserRow);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn display_name(&self) -> &str {
        &self.0.display_name
    }

    async fn status(&self) -> async_graphql::Result<UserStatus> {
        match self.0.status.as_str() {
            "ACTIVE" => Ok(UserStatus::Active),
            other => Err(ApiError::internal(&format!("unknown status {other}")).into_graphql()),
        }
    }

    async fn roles(&self) -> async_graphql::Result<Vec<Role>> {
        self.0
            .roles
            .iter()
            .map(|role| match role.as_str() {
                "USER" => Ok(Role::User),
                "AUDITOR" => Ok(Role::Auditor),
                "ADMIN" => Ok(Role::Admin),
                other => Err(ApiError::internal(&format!("unknown role {other}")).into_graphql()),
            })
            .collect()
    }

    /// The sequence of the last event applied: what `minVersion` and
    /// `expectedVersion` refer to.
    async fn version(&self) -> i64 {
        self.0.version
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(InputObject)]
pub struct RegisterInput {
    pub email: String,
    /// 15 to 256 characters; compared after NFKC normalisation.
    pub password: String,
    pub display_name: String,
}

/// The answer to `register`.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// The new account, at the version the write created.
    pub user: User,
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// One account by id, or null if there is none. With `minVersion`, waits
    /// briefly until the read side has applied at least that version (as
    /// returned by a mutation) and answers `UNAVAILABLE` if it has not,
    /// rather than showing an older state as current.
    async fn user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        min_version: Option<i64>,
    ) -> async_graphql::Result<Option<User>> {
        let state = ctx.data::<ApiState>()?;
        let id = parse_id(&id).map_err(ApiError::into_graphql)?;
        let row = match min_version {
            None => users::find(&state.pool, id)
                .await
                .map_err(|e| ApiError::from(e).into_graphql())?,
            Some(min_version) => {
                match state
                    .freshness
                    .user_at_least(&state.pool, id, min_version, state.read_your_writes_timeout)
                    .await
                    .map_err(|e| ApiError::from(e).into_graphql())?
                {
                    Ok(row) => Some(row),
                    Err(stale) => {
                        let error = ApiError::new(
                            Code::Unavailable,
                            "the read side has not reached that version yet; retry shortly",
                        )
                        .with("minVersion", min_version);
                        return Err(match stale.current {
                            Some(current) => error.with("currentVersion", current),
                            None => error,
                        }
                        .into_graphql());
                    }
                }
            }
        };
        Ok(row.map(User))
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates an account. Answers `BAD_USER_INPUT` with the offending
    /// `field` when the input is invalid, and writes nothing then.
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        let state = ctx.data::<ApiState>()?;
        let meta = ctx.data::<RequestMeta>()?;
        let command_ctx = CommandContext {
            actor: Actor::SelfService,
            correlation_id: meta.correlation_id.clone(),
            causation_id: meta.request_id.clone(),
            request_id: meta.request_id.clone(),
        };
        let executed = state
            .users
            .register(
                Registration {
                    email: &input.email,
                    password: &input.password,
                    display_name: &input.display_name,
                },
                &command_ctx,
            )
            .await
            .map_err(|e| ApiError::from(e).into_graphql())?;
        Ok(AuthPayload {
            user: registered_user(executed).map_err(ApiError::into_graphql)?,
        })
    }
}

fn parse_id(id: &ID) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id)
        .map_err(|_| ApiError::new(Code::BadUserInput, "id: not a user id").with("field", "id"))
}

/// A newly registered user as the write left it, in the shape of the read
/// side: created and updated when its one event was recorded.
fn registered_user(executed: Executed) -> Result<User, ApiError> {
    let account = executed
        .account
        .ok_or_else(|| ApiError::new(Code::NotFound, "no such user"))?;
    Ok(User(UserRow {
        id: executed.user_id,
        email: account.personal.email.as_str().to_owned(),
        display_name: account.personal.display_name.as_str().to_owned(),
        status: account.status.as_str().to_owned(),
        roles: account
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        version: executed.version,
        created_at: executed.recorded_at,
        updated_at: executed.recorded_at,
    }))
}
