//! The account types of the schema: users, roles and statuses, the
//! payloads mutations answer, pages of users, erasure receipts.

use accountable_projections::users::UserRow;
use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;
use crate::commands::Executed;
use crate::graphql::error::{ApiError, ApiResult};
use crate::graphql::ApiState;
use accountable_domain::{self as domain};

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

pub struct User {
    pub(super) row: UserRow,
    /// The account as its history has it, loaded once for the fields that
    /// read it (`passkeys`, `secondFactors`, `lockedUntil`).
    account: tokio::sync::OnceCell<Option<domain::Account>>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            row,
            account: tokio::sync::OnceCell::new(),
        }
    }
}

/// An account, as the read side shows it: it may trail the latest write by
/// a moment; `version` tells which write it shows.
#[Object]
impl User {
    /// Stable and opaque; a UUIDv7, so ids sort by registration time.
    async fn id(&self) -> ID {
        ID(self.row.id.to_string())
    }

    /// The sign-in address, as registered (domain lower-cased); null once
    /// the user is erased.
    async fn email(&self) -> Option<&str> {
        self.row.email.as_deref()
    }

    /// Whether the owner proved the address by following the link mailed
    /// to it (accounts from before verification existed count as verified).
    async fn email_verified(&self) -> bool {
        self.row.email_verified
    }

    /// How the user wants to be called: 1 to 100 characters; null once the
    /// user is erased.
    async fn display_name(&self) -> Option<&str> {
        self.row.display_name.as_deref()
    }

    /// Whether the account is active, deactivated or deleted.
    async fn status(&self) -> UserStatus {
        self.row.status.into()
    }

    /// Every role held; `USER` always among them.
    async fn roles(&self) -> Vec<Role> {
        self.row.roles.iter().copied().map(Role::from).collect()
    }

    /// The sequence of the last event applied: what `minVersion` and
    /// `expectedVersion` refer to.
    async fn version(&self) -> i64 {
        self.row.version
    }

    /// A language tag such as `en-GB`, if set.
    async fn locale(&self) -> Option<&str> {
        self.row.locale.as_deref()
    }

    /// An IANA time zone such as `Europe/London`, if set.
    async fn time_zone(&self) -> Option<&str> {
        self.row.time_zone.as_deref()
    }

    /// When the account was registered.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at
    }

    /// When the last event the read side applied was recorded.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at
    }

    /// The account's passkeys, oldest first, from its history (never
    /// behind a change): for its owner, admins and auditors.
    async fn passkeys(&self, ctx: &Context<'_>) -> ApiResult<Vec<super::Passkey>> {
        self.owner_or_reader(ctx, "passkeys")?;
        Ok(super::passkeys::passkeys_in(self.account(ctx).await?))
    }

    /// The account's authenticator app and recovery codes, from its
    /// history (never behind a change): for its owner, admins and auditors.
    async fn second_factors(&self, ctx: &Context<'_>) -> ApiResult<super::SecondFactors> {
        self.owner_or_reader(ctx, "second factors")?;
        Ok(super::factors::second_factors_in(self.account(ctx).await?))
    }

    /// Until when sign-in is refused after too many failed attempts; null
    /// when it is not (`unlockUser` ends it early). From the account's
    /// history: for its owner, admins and auditors.
    async fn locked_until(&self, ctx: &Context<'_>) -> ApiResult<Option<DateTime<Utc>>> {
        self.owner_or_reader(ctx, "the lockout")?;
        let now = ctx.data::<ApiState>()?.auth.clock.now();
        Ok(self
            .account(ctx)
            .await?
            .filter(|account| account.is_locked(now))
            .and_then(|account| account.locked_until))
    }
}

impl User {
    /// The account as its history has it (never behind a change), loaded
    /// at the first field that asks.
    async fn account(&self, ctx: &Context<'_>) -> ApiResult<Option<&domain::Account>> {
        let state = ctx.data::<ApiState>()?;
        let account = self
            .account
            .get_or_try_init(|| state.auth.users.load(self.row.id))
            .await?;
        Ok(account.as_ref())
    }

    /// Refuses anyone but the account's owner, admins and auditors.
    fn owner_or_reader(&self, ctx: &Context<'_>, what: &str) -> ApiResult<()> {
        let allowed = match crate::graphql::guards::caller(ctx) {
            crate::auth::Caller::User { id, roles, .. } => {
                *id == self.row.id || crate::graphql::guards::has_any(roles, READERS)
            }
            crate::auth::Caller::Anonymous => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                format!("only the owner, admins and auditors see {what}"),
            ))
        }
    }
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
    #[graphql(skip)]
    refresh_token: String,
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
    /// Opaque; trade it for a new pair with `refreshToken` (once: it is
    /// replaced on every use). Empty in cookie mode (`Accountable-Session:
    /// cookie`), where it is set as an `HttpOnly` cookie instead, whether
    /// or not the answer selects this field.
    async fn refresh_token(&self) -> &str {
        &self.refresh_token
    }

    /// The signed-in account, at least at the version this operation wrote.
    async fn user(&self, ctx: &Context<'_>) -> ApiResult<User> {
        self.account(ctx).await
    }
}

/// The answer to `register` and `login`: a signed-in session, or what
/// must happen first (the address verified, a second factor given).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct SignInPayload {
    /// True when the account can sign in only after its address is
    /// verified: follow the link mailed to it. The session fields are then
    /// null, whether or not the address had an account.
    pub email_verification_required: bool,
    /// True when the password checked out and a second factor must follow:
    /// pass `challenge` and a code to `completeLogin` (within 5 minutes).
    /// The session fields are then null.
    pub second_factor_required: bool,
    /// The second step's challenge, when a second factor is required.
    pub challenge: Option<String>,
    /// The second factors the account offers: `TOTP` (an authenticator
    /// app's code), `RECOVERY_CODE`, and `PASSKEY` when it has one.
    pub factors: Vec<SecondFactorKind>,
    #[graphql(skip)]
    signed_in: Option<AuthPayload>,
}

/// A second factor a sign-in can be completed with.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactorKind {
    /// A code of the authenticator app.
    Totp,
    /// One of the recovery codes shown when the app was enabled.
    RecoveryCode,
    /// A passkey of the account: `beginPasskeySecondStep`, then
    /// `finishPasskeySecondStep`.
    Passkey,
}

#[ComplexObject]
impl SignInPayload {
    /// As in `AuthPayload`; null until signed in.
    async fn access_token(&self) -> Option<&str> {
        self.signed_in.as_ref().map(|s| s.access_token.as_str())
    }

    /// As in `AuthPayload`.
    async fn expires_in(&self) -> Option<i64> {
        self.signed_in.as_ref().map(|s| s.expires_in)
    }

    /// As in `AuthPayload`.
    async fn refresh_token(&self) -> Option<&str> {
        self.signed_in.as_ref().map(|s| s.refresh_token.as_str())
    }

    /// The signed-in account.
    async fn user(&self, ctx: &Context<'_>) -> ApiResult<Option<User>> {
        match &self.signed_in {
            Some(signed_in) => signed_in.account(ctx).await.map(Some),
            None => Ok(None),
        }
    }
}

impl SignInPayload {
    pub(super) fn signed_in(payload: AuthPayload) -> Self {
        Self {
            email_verification_required: false,
            second_factor_required: false,
            challenge: None,
            factors: Vec::new(),
            signed_in: Some(payload),
        }
    }

    pub(super) fn check_mail() -> Self {
        Self {
            email_verification_required: true,
            ..Self::second_step()
        }
    }

    pub(super) fn second_factor(challenge: uuid::Uuid, passkey: bool) -> Self {
        let mut factors = vec![SecondFactorKind::Totp, SecondFactorKind::RecoveryCode];
        if passkey {
            factors.push(SecondFactorKind::Passkey);
        }
        Self {
            second_factor_required: true,
            challenge: Some(challenge.to_string()),
            factors,
            ..Self::second_step()
        }
    }

    fn second_step() -> Self {
        Self {
            email_verification_required: false,
            second_factor_required: false,
            factors: Vec::new(),
            challenge: None,
            signed_in: None,
        }
    }
}

impl AuthPayload {
    async fn account(&self, ctx: &Context<'_>) -> ApiResult<User> {
        if let Some(row) = &self.written {
            return Ok(User::from(row.clone()));
        }
        let state = ctx.data::<ApiState>()?;
        read_at_least(state, self.user_id, self.version.unwrap_or(1)).await
    }

    /// The session `signed_in` began or went on with. In cookie mode its
    /// refresh token goes into the cookie here, not when the answer's
    /// field is resolved: an answer that does not select it must not leave
    /// the cookie with the token it just replaced (whose next use would
    /// end the session as a reuse).
    pub(super) fn new(
        ctx: &Context<'_>,
        signed_in: crate::auth::SignedIn,
        written: Option<UserRow>,
    ) -> Self {
        Self {
            access_token: signed_in.access_token,
            expires_in: signed_in.expires_in,
            refresh_token: crate::graphql::cookie::hand_over(ctx, &signed_in.refresh_token),
            user_id: signed_in.user_id,
            version: signed_in.executed.map(|e| e.version),
            written,
        }
    }
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

pub(super) async fn receipt_of(state: &ApiState, id: Uuid) -> ApiResult<Option<ErasureReceipt>> {
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
    pub(super) fn new(rows: Vec<UserRow>, has_previous_page: bool, has_next_page: bool) -> Self {
        let edges: Vec<UserEdge> = rows
            .into_iter()
            .map(|row| UserEdge {
                cursor: row.id.to_string(),
                node: User::from(row),
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

/// A newly registered user as the read side will show it: its one event,
/// as published, folded by the projection's own reducer (no second one).
pub(super) async fn registered_user(state: &ApiState, executed: &Executed) -> ApiResult<UserRow> {
    let events = crate::store::streams::user_events_between(
        &state.pool,
        &executed.user_id.to_string(),
        0,
        executed.version + 1,
    )
    .await?;
    let mut row = None;
    for envelope in crate::events::opened_envelopes(&state.vault, &events).await? {
        let event = envelope.event().map_err(|e| ApiError::internal(&e))?;
        accountable_projections::users::reduce(&mut row, &envelope, &event);
    }
    row.ok_or_else(|| ApiError::internal(&"a registration without its event"))
}
