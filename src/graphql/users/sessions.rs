//! The sessions a user can see and end: `mySessions`, `userSessions` (for
//! admins) and `endSession`.

use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::*;
use crate::auth::sessions::SessionView;
use crate::graphql::guards::{caller, has_any, AnyRole, SignedIn};

#[derive(Default)]
pub struct SessionQuery;

#[derive(Default)]
pub struct SessionMutation;

/// A signed-in session: one device or browser, from its sign-in until it
/// logs out, is ended, or expires.
#[derive(SimpleObject)]
pub struct Session {
    /// Its id: the `sid` claim of its access tokens.
    pub id: ID,
    /// When it signed in.
    pub started_at: DateTime<Utc>,
    /// When its refresh token was last used.
    pub last_used_at: DateTime<Utc>,
    /// When it ends at the latest, however often it is refreshed.
    pub expires_at: DateTime<Utc>,
    /// The client's address when it signed in.
    pub client_address: Option<String>,
    /// The client's `User-Agent` when it signed in.
    pub user_agent: Option<String>,
    /// When its user last proved who they are (signed in or
    /// re-authenticated).
    pub authenticated_at: Option<DateTime<Utc>>,
    /// How (RFC 8176 `amr`: `pwd`, `otp`, `mfa`…).
    pub factors: Vec<String>,
    /// Whether it is the session of the token this request came with.
    pub current: bool,
}

impl Session {
    fn new(view: SessionView, current: Option<uuid::Uuid>) -> Self {
        Self {
            id: ID(view.id.to_string()),
            started_at: view.started_at,
            last_used_at: view.last_used_at,
            expires_at: view.expires_at,
            client_address: view.client_address,
            user_agent: view.user_agent,
            authenticated_at: view.auth_time,
            factors: view.amr,
            current: current == Some(view.id),
        }
    }
}

#[Object]
impl SessionQuery {
    /// The signed-in user's live sessions, the most recently used first
    /// (at most 100).
    #[graphql(guard = "SignedIn")]
    async fn my_sessions(&self, ctx: &Context<'_>) -> ApiResult<Vec<Session>> {
        let Caller::User { id, .. } = caller(ctx) else {
            return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
        };
        listed(ctx, *id).await
    }

    /// A user's live sessions, the most recently used first (at most 100;
    /// admins).
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn user_sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user whose sessions to list.")] user_id: ID,
    ) -> ApiResult<Vec<Session>> {
        listed(ctx, parse_id_in(&user_id, "userId")?).await
    }
}

/// The live sessions of `user_id`, the caller's own marked `current`.
async fn listed(ctx: &Context<'_>, user_id: uuid::Uuid) -> ApiResult<Vec<Session>> {
    let state = ctx.data::<ApiState>()?;
    let current = match caller(ctx) {
        Caller::User { session, .. } => *session,
        _ => None,
    };
    let sessions = state.auth.sessions_of(user_id).await?;
    Ok(sessions
        .into_iter()
        .map(|view| Session::new(view, current))
        .collect())
}

#[Object]
impl SessionMutation {
    /// Ends one live session of the signed-in user (admins: of any user):
    /// its refresh token stops working, and so do its access tokens, at
    /// once. `NOT_FOUND` when there is no such live session.
    #[graphql(guard = "SignedIn")]
    async fn end_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The `id` of a session.")] id: ID,
    ) -> ApiResult<bool> {
        let state = ctx.data::<ApiState>()?;
        let Caller::User {
            id: caller_id,
            roles,
            ..
        } = caller(ctx)
        else {
            return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
        };
        let not_found = || ApiError::new(Code::NotFound, "no such live session");
        let Ok(session) = uuid::Uuid::parse_str(&id) else {
            return Err(
                ApiError::new(Code::BadUserInput, "id: not a session id").with("field", "id")
            );
        };
        let owner = if has_any(roles, ADMINS) {
            state
                .auth
                .session_owner(session)
                .await?
                .ok_or_else(not_found)?
        } else {
            *caller_id
        };
        if state.auth.end_session(session, owner).await? {
            Ok(true)
        } else {
            Err(not_found())
        }
    }
}
