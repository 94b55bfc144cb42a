//! `accountEvents`: a user's events as they happen, over `/graphql/ws`
//! (graphql-transport-ws). The socket authorises the subscription when it
//! starts and checks its token every second ([`super::socket`]); each event
//! is let through only while the token still verifies and the caller's
//! sessions have not been cut off, so that no event reaches a caller who
//! lost the right to it.

use std::sync::Arc;

use async_graphql::{Context, Subscription, ID};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::audit::AccountEvent;
use super::error::{ApiError, Code};
use super::guards::{caller, has_any};
use super::socket::ConnectionToken;
use super::users::{parse_id_in, READERS};
use super::ApiState;
use crate::audit::history::ReadableEvent;
use crate::auth::{Auth, Caller};

#[derive(Default)]
pub struct SubscriptionRoot;

/// Whom a subscription follows.
#[derive(Clone, Copy)]
enum Scope {
    One(Uuid),
    Everyone,
}

impl Scope {
    fn covers(self, event: &ReadableEvent) -> bool {
        match self {
            Self::Everyone => true,
            Self::One(id) => event.row.event.aggregate_id == id.to_string(),
        }
    }
}

/// Whether `caller` may follow `scope`: their own events, or anyone's for
/// auditors and admins.
fn allowed(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    let Caller::User { id, roles, .. } = caller else {
        return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
    };
    match scope {
        _ if has_any(roles, READERS) => Ok(()),
        Scope::One(user) if user == *id => Ok(()),
        _ => Err(ApiError::new(Code::Forbidden, "not allowed")),
    }
}

/// Whether the caller of `token` may still follow `scope`: the token
/// verifies and was not cut off (both checked without a query).
async fn check(auth: &Auth, token: &str, scope: Scope) -> Result<(), ApiError> {
    let caller = auth.authenticate(token).await.map_err(|_| {
        ApiError::new(
            Code::Unauthenticated,
            "the access token expired or its session ended",
        )
    })?;
    allowed(&caller, scope)
}

struct Following {
    auth: Arc<Auth>,
    token: String,
    scope: Scope,
    events: tokio::sync::broadcast::Receiver<Arc<ReadableEvent>>,
    ended: bool,
}

impl Following {
    async fn next(&mut self) -> Option<async_graphql::Result<AccountEvent>> {
        if self.ended {
            return None;
        }
        loop {
            let outcome = match self.events.recv().await {
                Ok(event) if self.scope.covers(&event) => {
                    Some(match check(&self.auth, &self.token, self.scope).await {
                        Ok(()) => Ok(AccountEvent::from((*event).clone())),
                        Err(error) => Err(error),
                    })
                }
                Ok(_) => None,
                Err(RecvError::Lagged(missed)) => Some(Err(ApiError::new(
                    Code::Unavailable,
                    format!("fell {missed} events behind; subscribe again and read the gap with userHistory"),
                ))),
                Err(RecvError::Closed) => Some(Err(ApiError::new(
                    Code::Unavailable,
                    "the server is shutting down",
                ))),
            };
            match outcome {
                None => continue,
                Some(Ok(event)) => return Some(Ok(event)),
                Some(Err(error)) => {
                    self.ended = true;
                    return Some(Err(error.into()));
                }
            }
        }
    }
}

/// What can be followed live.
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Account events as they are committed, in commit order: a user's own
    /// (`userId` their id, or left out), or anyone's for auditors and
    /// admins (everyone's when `userId` is left out). Needs the access
    /// token in the `connection_init` payload as `{"authorization":
    /// "Bearer …"}`. Ends with an error when the token expires, its session
    /// is logged out, or the caller loses the right to follow.
    async fn account_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to follow.")] user_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<AccountEvent>>> {
        let state = ctx.data::<ApiState>()?;
        let Some(ConnectionToken(token)) = ctx.data_opt::<ConnectionToken>() else {
            return Err(ApiError::new(Code::Unauthenticated, "sign in first").into());
        };
        let caller = caller(ctx);
        let scope = match (&user_id, caller) {
            (Some(id), _) => Scope::One(parse_id_in(id, "userId")?),
            (None, Caller::User { id, roles, .. }) if !has_any(roles, READERS) => Scope::One(*id),
            (None, _) => Scope::Everyone,
        };
        allowed(caller, scope)?;
        let following = Following {
            auth: state.auth.clone(),
            token: token.clone(),
            scope,
            events: state.feed.subscribe(),
            ended: false,
        };
        Ok(
            futures::stream::unfold(following, |mut following| async move {
                following.next().await.map(|item| (item, following))
            })
            .boxed(),
        )
    }
}
