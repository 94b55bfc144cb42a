//! The account part of the schema: the `User` type, its queries and every
//! account mutation.

use accountable_projections::users::{self, UserRow};
use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{ApiError, ApiResult, Code};
use super::guards::{caller, AnyRole, SelfOr, SignedIn};
use super::{ApiState, RequestMeta};
use crate::auth::Caller;
use crate::commands::{Actor, CommandContext, Executed, ProfileChange, Reason, Registration};
use accountable_domain::{self as domain, Role as DomainRole};

/// Who may read any account besides its owner.
pub(crate) const READERS: &[DomainRole] = &[DomainRole::Admin, DomainRole::Auditor];
/// Who may change any account besides its owner.
const ADMINS: &[DomainRole] = &[DomainRole::Admin];

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

/// Where an account is in its life.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::UserStatus")]
pub enum UserStatus {
    /// May sign in and act.
    Active,
    /// Stopped by an admin: cannot sign in until reactivated.
    Deactivated,
    /// Deleted: hidden from queries; the history stays.
    Deleted,
    /// Erased: personal data unreadable everywhere; hidden from queries.
    Erased,
}

pub struct User(UserRow);

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self(row)
    }
}

/// An account, as the read side shows it: it may trail the latest write by
/// a moment; `version` tells which write it shows.
#[Object]
impl User {
    /// Stable and opaque; a UUIDv7, so ids sort by registration time.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The sign-in address, as registered (domain lower-cased); null once
    /// the user is erased.
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }

    /// How the user wants to be called: 1 to 100 characters; null once the
    /// user is erased.
    async fn display_name(&self) -> Option<&str> {
        self.0.display_name.as_deref()
    }

    /// Whether the account is active, deactivated or deleted.
    async fn status(&self) -> UserStatus {
        self.0.status.into()
    }

    /// Every role held; `USER` always among them.
    async fn roles(&self) -> Vec<Role> {
        self.0.roles.iter().copied().map(Role::from).collect()
    }

    /// The sequence of the last event applied: what `minVersion` and
    /// `expectedVersion` refer to.
    async fn version(&self) -> i64 {
        self.0.version
    }

    /// A language tag such as `en-GB`, if set.
    async fn locale(&self) -> Option<&str> {
        self.0.locale.as_deref()
    }

    /// An IANA time zone such as `Europe/London`, if set.
    async fn time_zone(&self) -> Option<&str> {
        self.0.time_zone.as_deref()
    }

    /// When the account was registered.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When the last event the read side applied was recorded.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// A new account.
#[derive(InputObject)]
pub struct RegisterInput {
    /// The sign-in address; at most 254 characters, not already taken.
    pub email: String,
    /// 15 to 256 characters, not a commonly used password; compared after
    /// NFKC normalisation.
    pub password: String,
    /// 1 to 100 characters, no control characters.
    pub display_name: String,
}

/// Credentials to sign in with.
#[derive(InputObject)]
pub struct LoginInput {
    /// The address the account signs in with.
    pub email: String,
    /// The account's password.
    pub password: String,
}

/// A signed-in session.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct AuthPayload {
    /// A JWT to send as `Authorization: Bearer …`; verify it with
    /// `/.well-known/jwks.json`.
    pub access_token: String,
    /// Seconds until `accessToken` expires.
    pub expires_in: i64,
    /// Opaque; trade it for a new pair with `refreshToken` (once: it is
    /// replaced on every use).
    pub refresh_token: String,
    #[graphql(skip)]
    user_id: Uuid,
    /// The version the operation wrote, if it wrote.
    #[graphql(skip)]
    version: Option<i64>,
    /// The account as the write left it, when the write made it.
    #[graphql(skip)]
    written: Option<UserRow>,
}

#[ComplexObject]
impl AuthPayload {
    /// The signed-in account, at least at the version this operation wrote.
    async fn user(&self, ctx: &Context<'_>) -> ApiResult<User> {
        if let Some(row) = &self.written {
            return Ok(User(row.clone()));
        }
        let state = ctx.data::<ApiState>()?;
        read_at_least(state, self.user_id, self.version.unwrap_or(1)).await
    }
}

impl AuthPayload {
    fn new(signed_in: crate::auth::SignedIn, written: Option<UserRow>) -> Self {
        Self {
            access_token: signed_in.access_token,
            expires_in: signed_in.expires_in,
            refresh_token: signed_in.refresh_token,
            user_id: signed_in.user_id,
            version: signed_in.executed.map(|e| e.version),
            written,
        }
    }
}

/// Parts of a profile to change; what is left out stays as it is.
#[derive(InputObject)]
pub struct UpdateProfileInput {
    /// The user to change: oneself, or anyone for an admin.
    pub id: ID,
    /// 1 to 100 characters.
    pub display_name: Option<String>,
    /// A language tag such as `en-GB`.
    pub locale: Option<String>,
    /// An IANA time zone such as `Europe/London`.
    pub time_zone: Option<String>,
    /// The version the change is based on; another current version answers
    /// `CONFLICT` with `currentVersion`, and nothing is written.
    pub expected_version: Option<i64>,
}

/// A new sign-in address.
#[derive(InputObject)]
pub struct ChangeEmailInput {
    /// Oneself, or anyone for an admin.
    pub id: ID,
    /// The new address; it must not belong to another account.
    pub email: String,
    /// The version the change is based on (see `UpdateProfileInput`).
    pub expected_version: Option<i64>,
}

/// A user to act on, why, and from which version.
#[derive(InputObject)]
pub struct UserRefInput {
    /// The user to act on.
    pub id: ID,
    /// Why (1 to 500 characters); kept in the event. Required to deactivate
    /// or reactivate.
    pub reason: Option<String>,
    /// The version the change is based on (see `UpdateProfileInput`).
    pub expected_version: Option<i64>,
}

/// A role to give or take.
#[derive(InputObject)]
pub struct RoleInput {
    /// The user who gains or loses the role.
    pub id: ID,
    /// The role; `USER` cannot be revoked.
    pub role: Role,
    /// The version the change is based on (see `UpdateProfileInput`).
    pub expected_version: Option<i64>,
}

/// A new password, proven by the current one.
#[derive(InputObject)]
pub struct ChangePasswordInput {
    /// Oneself: nobody changes another user's password.
    pub id: ID,
    /// The password in use now.
    pub current_password: String,
    /// 15 to 256 characters, not a commonly used password; compared after
    /// NFKC normalisation.
    pub new_password: String,
    /// The version the change is based on (see `UpdateProfileInput`).
    pub expected_version: Option<i64>,
}

/// The answer to a mutation that changes a user.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct UserPayload {
    /// The user's version after the mutation; pass it as `minVersion` to
    /// read your write.
    pub version: i64,
    /// The proof of the erasure: only on `eraseUser`'s answer, null on
    /// every other.
    pub erasure_receipt: Option<ErasureReceipt>,
    #[graphql(skip)]
    user_id: Uuid,
}

#[ComplexObject]
impl UserPayload {
    /// The user as the read side shows it, at least at `version`.
    async fn user(&self, ctx: &Context<'_>) -> ApiResult<User> {
        let state = ctx.data::<ApiState>()?;
        read_at_least(state, self.user_id, self.version).await
    }
}

impl From<Executed> for UserPayload {
    fn from(executed: Executed) -> Self {
        Self {
            version: executed.version,
            erasure_receipt: None,
            user_id: executed.user_id,
        }
    }
}

/// The proof that a user's personal data was erased: what, when, by whom,
/// and which key was destroyed. Holds nothing of the erased data.
#[derive(SimpleObject)]
pub struct ErasureReceipt {
    /// The erased user.
    pub user_id: ID,
    /// When the `UserErased` event was recorded.
    pub erased_at: DateTime<Utc>,
    /// Who erased: a user id, or `system`.
    pub erased_by: String,
    /// Why, as given to `eraseUser`.
    pub reason: String,
    /// The fields made unreadable in every earlier event.
    pub fields: Vec<String>,
    /// The last event whose personal fields were made unreadable.
    pub through_sequence: i64,
    /// The sequence of the `UserErased` event in the user's history.
    pub event_sequence: i64,
    /// The id of the destroyed data key.
    pub key_id: Option<ID>,
    /// When the data key was destroyed (with the event, in one transaction).
    pub key_destroyed_at: Option<DateTime<Utc>>,
}

async fn receipt_of(state: &ApiState, id: Uuid) -> ApiResult<Option<ErasureReceipt>> {
    let receipt = crate::store::streams::erasure_receipt(&state.pool, id).await?;
    Ok(receipt.map(|r| ErasureReceipt {
        user_id: ID(id.to_string()),
        erased_at: r.recorded_at,
        erased_by: r.erased_by.unwrap_or_default(),
        reason: r.erased["reason"].as_str().unwrap_or_default().to_owned(),
        fields: r.erased["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect(),
        through_sequence: r.erased["through_sequence"].as_i64().unwrap_or_default(),
        event_sequence: r.sequence,
        key_id: r.key_id.map(|k| ID(k.to_string())),
        key_destroyed_at: r.destroyed_at,
    }))
}

/// Narrows `users`; every given field must match.
#[derive(InputObject, Default)]
pub struct UserFilter {
    /// Deleted users are listed only when asked for here.
    pub status: Option<UserStatus>,
    /// Users who hold this role.
    pub role: Option<Role>,
    /// The start of the email address, case-insensitively.
    pub email_prefix: Option<String>,
    /// The start of the display name.
    pub display_name_prefix: Option<String>,
}

/// A page of `users`, in the shape of a Relay connection.
#[derive(SimpleObject)]
pub struct UserConnection {
    /// Where this page sits in the whole list.
    page_info: PageInfo,
    /// The users on this page, each with its cursor.
    edges: Vec<UserEdge>,
}

/// A user on a page, and where the page stands at them.
#[derive(SimpleObject)]
pub struct UserEdge {
    /// Pass as `after` to list the users after this one.
    cursor: String,
    /// The user.
    node: User,
}

/// Whether there is more of a list before or after a page.
#[derive(SimpleObject)]
pub struct PageInfo {
    /// Whether the list goes on after this page.
    has_next_page: bool,
    /// Whether this page is not the first one.
    has_previous_page: bool,
    /// The cursor of the first user on this page.
    start_cursor: Option<String>,
    /// The cursor of the last user on this page; pass it as `after` for the
    /// next page.
    end_cursor: Option<String>,
}

impl PageInfo {
    pub(crate) fn new(
        has_next_page: bool,
        has_previous_page: bool,
        start_cursor: Option<String>,
        end_cursor: Option<String>,
    ) -> Self {
        Self {
            has_next_page,
            has_previous_page,
            start_cursor,
            end_cursor,
        }
    }
}

impl UserConnection {
    fn new(rows: Vec<UserRow>, has_previous_page: bool, has_next_page: bool) -> Self {
        let edges: Vec<UserEdge> = rows
            .into_iter()
            .map(|row| UserEdge {
                cursor: row.id.to_string(),
                node: User(row),
            })
            .collect();
        Self {
            page_info: PageInfo::new(
                has_next_page,
                has_previous_page,
                edges.first().map(|edge| edge.cursor.clone()),
                edges.last().map(|edge| edge.cursor.clone()),
            ),
            edges,
        }
    }
}

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
        let row = match min_version {
            None => state.users.load_one(id).await?,
            Some(min_version) => Some(read_at_least(state, id, min_version).await?.0),
        };
        Ok(row.filter(|r| !r.status.is_gone()).map(User))
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates an account and signs it in. Answers `BAD_USER_INPUT` with the
    /// offending `field` when the input is invalid, and writes nothing then.
    async fn register(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new account.")] input: RegisterInput,
    ) -> ApiResult<AuthPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let signed_in = state
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
        let written = signed_in
            .executed
            .clone()
            .map(registered_user)
            .transpose()?;
        Ok(AuthPayload::new(signed_in, written))
    }

    /// Signs in. Every failure (unknown email, wrong password, locked
    /// account) answers the same `UNAUTHENTICATED` error; ten failures in a
    /// row lock the account for a while that grows with each lock.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The credentials.")] input: LoginInput,
    ) -> ApiResult<AuthPayload> {
        let (state, command_ctx) = limited(ctx, Actor::SelfService)?;
        let signed_in = state
            .auth
            .login(&input.email, &input.password, &command_ctx)
            .await?;
        Ok(AuthPayload::new(signed_in, None))
    }

    /// Trades a refresh token for a new access and refresh token. A refresh
    /// token that was already traded ends its whole session.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The refresh token the session holds now.")] refresh_token: String,
    ) -> ApiResult<AuthPayload> {
        let (state, _) = limited(ctx, Actor::SelfService)?;
        let signed_in = state.auth.refresh(&refresh_token).await?;
        Ok(AuthPayload::new(signed_in, None))
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

    /// Moves an account to a new email address (the user themself, or an
    /// admin). A taken address answers `CONFLICT`; the old one is free after.
    /// Every other refusal (another `expectedVersion`, an account that
    /// cannot change) comes before the address is looked up, and every try
    /// counts against the client's rate limit, so that addresses cannot be
    /// probed quickly.
    #[graphql(guard = "SelfOr { id: &input.id, roles: ADMINS }")]
    async fn change_email(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new address, for whom.")] input: ChangeEmailInput,
    ) -> ApiResult<UserPayload> {
        let (state, command_ctx, id) = target(ctx, &input.id)?;
        within_limit(state, ctx.data::<RequestMeta>()?)?;
        let executed = state
            .auth
            .users
            .change_email(id, &input.email, input.expected_version, &command_ctx)
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
        state.auth.logout(&refresh_token).await?;
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
        Ok(true)
    }
}

/// The shared state, the command context of a signed-in caller, and the
/// user a mutation acts on.
fn target<'a>(ctx: &Context<'a>, id: &ID) -> ApiResult<(&'a ApiState, CommandContext, Uuid)> {
    let state = ctx.data::<ApiState>()?;
    let command_ctx = acting(ctx)?;
    let id = parse_id(id)?;
    Ok((state, command_ctx, id))
}

/// The command context of a signed-in caller's operation.
fn acting(ctx: &Context<'_>) -> ApiResult<CommandContext> {
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
    })
}

/// The shared state and a command context for an operation that counts
/// against the client's rate limit.
fn limited<'a>(ctx: &Context<'a>, actor: Actor) -> ApiResult<(&'a ApiState, CommandContext)> {
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
        },
    ))
}

/// Counts the operation against its client's rate limit: every check of a
/// secret does (sign-ins, registrations, refreshes, password changes).
fn within_limit(state: &ApiState, meta: &RequestMeta) -> ApiResult<()> {
    if state.limiter.allow(meta.client) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::RateLimited,
        "too many requests; retry in a minute",
    ))
}

/// The read-side row of `id` at `min_version` or later, waiting briefly.
async fn read_at_least(state: &ApiState, id: Uuid, min_version: i64) -> ApiResult<User> {
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
        Ok(row) => Ok(User(row)),
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

fn parse_id(id: &ID) -> Result<Uuid, ApiError> {
    parse_id_in(id, "id")
}

/// A newly registered user as the write left it, in the shape of the read
/// side: created and updated when its one event was recorded.
fn registered_user(executed: Executed) -> Result<UserRow, ApiError> {
    let account = executed
        .account
        .ok_or_else(|| ApiError::new(Code::NotFound, "no such user"))?;
    let registered_at = executed
        .registered_at
        .ok_or_else(|| ApiError::internal(&"a registration without its time"))?;
    Ok(UserRow {
        id: executed.user_id,
        email: account
            .personal
            .as_ref()
            .map(|p| p.email.as_str().to_owned()),
        display_name: account
            .personal
            .as_ref()
            .map(|p| p.display_name.as_str().to_owned()),
        status: account.status,
        roles: account.roles.iter().copied().collect(),
        locale: None,
        time_zone: None,
        version: executed.version,
        created_at: registered_at,
        updated_at: registered_at,
    })
}
