//! Service accounts, for admins: accounts of machines that sign in at
//! `POST /oauth/token` with a client secret. Creating one and issuing its
//! secrets need a recent sign-in; a secret is answered once. Deactivating
//! one is `deactivateUser`'s, as for a person.

use std::collections::BTreeSet;

use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{ApiError, ApiResult, Code};
use super::guards::{caller, AnyRole};
use super::users::{acting, parse_id_in, recently_signed_in, Role, UserStatus, ADMINS};
use super::ApiState;
use crate::auth::Caller;
use accountable_domain::{self as domain, Account};

/// The most service accounts one page holds.
const MAX_PAGE: i32 = 100;

#[derive(Default)]
pub struct ServiceMutation;

#[derive(Default)]
pub struct ServiceQuery;

/// An account of a machine: no address, no password; it signs in with a
/// client secret (`POST /oauth/token`, `client_id` its `id`).
#[derive(SimpleObject)]
pub struct ServiceAccount {
    /// Its `client_id`, and the `sub` of its tokens.
    pub id: ID,
    /// What it is called: 1 to 100 characters.
    pub name: String,
    /// The admin who created it.
    pub owner: ID,
    /// What its tokens may do (`scope` chooses among them).
    pub roles: Vec<Role>,
    /// Active, or deactivated (`deactivateUser`): then it gets no token.
    pub status: UserStatus,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Every secret issued, revoked ones too, oldest first.
    pub secrets: Vec<ClientSecret>,
}

/// A client secret, as it is shown after it was issued.
#[derive(SimpleObject)]
pub struct ClientSecret {
    /// What `revokeClientSecret` takes.
    pub id: ID,
    /// Its first eight characters, to tell it by.
    pub prefix: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// Null: it does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// Null until revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A secret just issued: `clientSecret` is shown this once.
#[derive(SimpleObject)]
pub struct IssuedClientSecret {
    /// The service account's id.
    pub client_id: String,
    /// Keep it as a secret: only its hash is kept here.
    pub client_secret: String,
    /// How the secret is shown from now on.
    pub secret: ClientSecret,
    /// The service account's version after the change.
    pub version: i64,
}

/// A page of service accounts, oldest first.
#[derive(SimpleObject)]
pub struct ServiceAccountPage {
    /// At most `first` of them.
    pub nodes: Vec<ServiceAccount>,
    /// Pass as `after` for the next page; null on the last.
    pub end_cursor: Option<String>,
}

/// A new service account.
#[derive(InputObject)]
pub struct CreateServiceAccountInput {
    /// 1 to 100 characters.
    pub name: String,
    /// Its roles, among the creator's own; `USER` always.
    pub roles: Option<Vec<Role>>,
}

/// A service account to give a new secret.
#[derive(InputObject)]
pub struct IssueClientSecretInput {
    /// The service account's `id`.
    pub service_account_id: ID,
    /// Days until it expires (1 to 730); null: it does not.
    pub expires_in_days: Option<i32>,
}

/// A secret to revoke.
#[derive(InputObject)]
pub struct RevokeClientSecretInput {
    /// The service account's `id`.
    pub service_account_id: ID,
    /// The secret's `id`.
    pub secret_id: ID,
}

fn shown(account_id: Uuid, account: &Account) -> Option<ServiceAccount> {
    let service = account.service.as_ref()?;
    Some(ServiceAccount {
        id: ID(account_id.to_string()),
        name: service.name.as_str().to_owned(),
        owner: ID(service.owner.to_string()),
        roles: account.roles.iter().copied().map(Role::from).collect(),
        status: account.status.into(),
        created_at: service.created_at,
        secrets: service.secrets.iter().map(secret_shown).collect(),
    })
}

fn secret_shown(secret: &domain::ClientSecret) -> ClientSecret {
    ClientSecret {
        id: ID(secret.id.to_string()),
        prefix: secret.prefix.clone(),
        created_at: secret.created_at,
        expires_at: secret.expires_at,
        revoked_at: secret.revoked_at,
    }
}

async fn load(state: &ApiState, id: Uuid) -> ApiResult<ServiceAccount> {
    state
        .auth
        .users
        .load(id)
        .await?
        .and_then(|account| shown(id, &account))
        .ok_or_else(|| ApiError::new(Code::NotFound, "no such service account"))
}

/// The cursor of a page: the id of its last account.
fn cursor(after: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(after).map_err(|_| {
        ApiError::new(Code::BadUserInput, "after: not a cursor").with("field", "after")
    })
}

#[Object]
impl ServiceQuery {
    /// The service accounts, oldest first (admins only).
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn service_accounts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many (1 to 100; 20).", default = 20)] first: i32,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
    ) -> ApiResult<ServiceAccountPage> {
        let state = ctx.data::<ApiState>()?;
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(ApiError::new(Code::BadUserInput, "first: 1 to 100").with("field", "first"));
        }
        let after = after.as_deref().map(cursor).transpose()?;
        let listed = state
            .auth
            .users
            .service_accounts(after, i64::from(first) + 1)
            .await?;
        let more = listed.len() > usize::try_from(first).unwrap_or(0);
        let mut nodes = Vec::new();
        let mut end_cursor = None;
        for id in listed.into_iter().take(usize::try_from(first).unwrap_or(0)) {
            end_cursor = Some(id.to_string());
            nodes.push(load(state, id).await?);
        }
        Ok(ServiceAccountPage {
            nodes,
            end_cursor: end_cursor.filter(|_| more),
        })
    }

    /// One service account (admins only).
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn service_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Its id.")] id: ID,
    ) -> ApiResult<ServiceAccount> {
        load(ctx.data::<ApiState>()?, parse_id_in(&id, "id")?).await
    }
}

#[Object]
impl ServiceMutation {
    /// Creates a service account (admins, after a recent sign-in) with roles
    /// among the creator's own.
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn create_service_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Its name and roles.")] input: CreateServiceAccountInput,
    ) -> ApiResult<ServiceAccount> {
        let state = ctx.data::<ApiState>()?;
        recently_signed_in(ctx)?;
        let command_ctx = acting(ctx)?;
        let Caller::User {
            id: owner,
            roles: held,
            ..
        } = caller(ctx)
        else {
            return Err(ApiError::new(Code::Unauthenticated, "sign in first"));
        };
        let roles: BTreeSet<domain::Role> = input
            .roles
            .unwrap_or_default()
            .into_iter()
            .map(domain::Role::from)
            .collect();
        if !roles.iter().all(|role| held.contains(role)) {
            return Err(ApiError::new(
                Code::Forbidden,
                "roles: a service account holds no role its creator lacks",
            )
            .with("field", "roles"));
        }
        let executed = state
            .auth
            .users
            .create_service_account(
                &input.name,
                *owner,
                roles,
                state.auth.clock.now(),
                &command_ctx,
            )
            .await?;
        executed
            .account
            .as_ref()
            .and_then(|account| shown(executed.user_id, account))
            .ok_or_else(|| ApiError::new(Code::Internal, "internal error"))
    }

    /// Issues a client secret (admins, after a recent sign-in): answered
    /// this once. At most 5 live ones per account, for rotation.
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn issue_client_secret(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The service account, and when the secret expires.")]
        input: IssueClientSecretInput,
    ) -> ApiResult<IssuedClientSecret> {
        let state = ctx.data::<ApiState>()?;
        recently_signed_in(ctx)?;
        let command_ctx = acting(ctx)?;
        let id = parse_id_in(&input.service_account_id, "serviceAccountId")?;
        let now = state.auth.clock.now();
        let expires_at = match input.expires_in_days {
            None => None,
            Some(days @ 1..=730) => Some(now + chrono::Duration::days(i64::from(days))),
            Some(_) => {
                return Err(ApiError::new(Code::BadUserInput, "expiresInDays: 1 to 730")
                    .with("field", "expiresInDays"))
            }
        };
        let issued = state
            .auth
            .users
            .issue_client_secret(id, expires_at, now, &command_ctx)
            .await?;
        let secret = issued
            .executed
            .account
            .as_ref()
            .and_then(|account| account.service.as_ref())
            .and_then(|service| service.secrets.iter().find(|s| s.id == issued.secret_id))
            .map(secret_shown)
            .ok_or_else(|| ApiError::new(Code::Internal, "internal error"))?;
        Ok(IssuedClientSecret {
            client_id: id.to_string(),
            client_secret: issued.secret,
            secret,
            version: issued.executed.version,
        })
    }

    /// Revokes a client secret (admins): it works no more, and the
    /// account's access tokens issued before are refused at once.
    #[graphql(guard = "AnyRole(ADMINS)")]
    async fn revoke_client_secret(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The service account and the secret.")] input: RevokeClientSecretInput,
    ) -> ApiResult<ServiceAccount> {
        let state = ctx.data::<ApiState>()?;
        let command_ctx = acting(ctx)?;
        let id = parse_id_in(&input.service_account_id, "serviceAccountId")?;
        let secret_id = parse_id_in(&input.secret_id, "secretId")?;
        let executed = state
            .auth
            .users
            .revoke_client_secret(id, secret_id, state.auth.clock.now(), &command_ctx)
            .await?;
        match executed.account.as_ref().and_then(|a| shown(id, a)) {
            Some(shown) => Ok(shown),
            None => load(state, id).await,
        }
    }
}
