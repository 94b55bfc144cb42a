//! The application service for users: parses client input, hashes
//! passwords, and runs commands against the event store through cqrs-es.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use accountable_vault::Vault;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventStore};
use sqlx::PgPool;
use uuid::Uuid;

use super::aggregate::{
    Account, LockoutPolicy, PasswordHash, RegisterUser, Role, User, UserCommand, UserError,
    UserStatus,
};
use super::password::{HashError, PasswordHasher};
use super::sealed_store::SealedRepository;
use super::values::{DisplayName, Email, InvalidInput, Locale, Password, TimeZone};

/// Who caused a command; recorded in every event's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The user acting on their own account without a prior identity (registration).
    SelfService,
    /// An authenticated user.
    User(Uuid),
    /// The system itself (migrations, operators' tools).
    System,
}

impl Actor {
    fn as_metadata(&self) -> String {
        match self {
            Self::SelfService => "self".to_owned(),
            Self::User(id) => id.to_string(),
            Self::System => "system".to_owned(),
        }
    }
}

/// Why and on whose behalf a command runs.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub actor: Actor,
    /// Ties together everything caused by one user intent, across services.
    pub correlation_id: String,
    /// The message that caused this command (here: the request).
    pub causation_id: String,
    /// The HTTP request that carried the command.
    pub request_id: String,
    /// The W3C trace context of that request.
    pub traceparent: String,
}

impl CommandContext {
    /// A context for work the system starts itself, with fresh ids.
    pub fn system() -> Self {
        let id = Uuid::now_v7().to_string();
        Self {
            actor: Actor::System,
            correlation_id: id.clone(),
            causation_id: id.clone(),
            request_id: id,
            traceparent: crate::telemetry::new_traceparent(),
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("actor".to_owned(), self.actor.as_metadata()),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
            ("request_id".to_owned(), self.request_id.clone()),
            ("traceparent".to_owned(), self.traceparent.clone()),
        ])
    }
}

/// A command that did not happen. Client mistakes and domain rejections are
/// kept apart from infrastructure failures, whose detail is only logged.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Rejected(#[from] UserError),
    #[error("the user was changed concurrently")]
    Conflict,
    #[error("this email address is already registered")]
    EmailTaken,
    #[error("the last active admin cannot be demoted, deactivated or deleted")]
    LastAdmin,
    /// `expectedVersion` was given and the user is at another version.
    #[error("the user is at version {current}, not the one expected")]
    VersionMismatch { current: i64 },
    /// Every password hashing thread is busy and the queue is full.
    #[error("too many passwords are being checked at once; retry shortly")]
    Busy,
    #[error("infrastructure failure: {0}")]
    Infrastructure(Box<dyn std::error::Error + Send + Sync>),
}

impl From<AggregateError<UserError>> for CommandError {
    fn from(err: AggregateError<UserError>) -> Self {
        match err {
            AggregateError::UserError(e) => Self::Rejected(e),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(e)
            | AggregateError::DeserializationError(e)
            | AggregateError::UnexpectedError(e) => Self::Infrastructure(e),
        }
    }
}

impl From<HashError> for CommandError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => Self::Busy,
            other => Self::Infrastructure(Box::new(other)),
        }
    }
}

/// A profile change as the client sent it; `None` leaves a part as it is.
#[derive(Debug, Default)]
pub struct ProfileChange<'a> {
    pub display_name: Option<&'a str>,
    pub locale: Option<&'a str>,
    pub time_zone: Option<&'a str>,
}

/// Registration input as the client sent it.
#[derive(Debug)]
pub struct Registration<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub display_name: &'a str,
}

/// The outcome of a command that ran: the aggregate's new version and state.
#[derive(Debug, Clone)]
pub struct Executed {
    pub user_id: Uuid,
    /// The sequence of the last event of the user; what `minVersion` waits for.
    pub version: i64,
    pub account: Option<Account>,
    /// When a registration was recorded (the time of its transaction); only
    /// a registration looks it up, as only its answer shows it.
    pub registered_at: Option<DateTime<Utc>>,
}

type UserStore = PersistedEventStore<SealedRepository, User>;

/// Attempts at a command that keeps meeting concurrent writes to its user.
const CONFLICT_RETRIES: usize = 50;

const CLAIM_EMAIL: &str = "
INSERT INTO user_emails (email_key, user_id, confirmed) VALUES ($1, $2, false)
ON CONFLICT (email_key) DO NOTHING";
const SELECT_STALE_CLAIM: &str = "
SELECT user_id FROM user_emails
 WHERE email_key = $1 AND NOT confirmed AND claimed_at < now() - make_interval(secs => $2)";
const TAKE_OVER_CLAIM: &str = "
UPDATE user_emails SET user_id = $3, claimed_at = now()
 WHERE email_key = $1 AND user_id = $2 AND NOT confirmed";
const CONFIRM_EMAIL: &str =
    "UPDATE user_emails SET confirmed = true WHERE email_key = $1 AND user_id = $2";
const RELEASE_EMAIL: &str = "DELETE FROM user_emails WHERE email_key = $1 AND user_id = $2";
const FIND_BY_EMAIL: &str = "SELECT user_id FROM user_emails WHERE email_key = $1";

/// Serialises the changes that can remove an active admin, until the end
/// of the transaction; waiting longer than `lock_timeout` fails (55P03).
const LOCK_ADMINS: &str = "SELECT pg_advisory_xact_lock(hashtext('accountable.admins'))";
/// How long a change that may remove an admin waits for another.
const LOCK_ADMINS_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";
/// Everyone who was ever made an admin: the candidates to fold.
const ADMIN_CANDIDATES: &str = "
SELECT DISTINCT aggregate_id FROM events
 WHERE aggregate_type = $1 AND event_type = 'RoleAssigned'
   AND payload -> 'RoleAssigned' ->> 'role' = 'ADMIN'";
const RELEASE_OTHER_EMAILS: &str = "DELETE FROM user_emails WHERE email_key <> $1 AND user_id = $2";
const RELEASE_EMAILS_OF: &str = "DELETE FROM user_emails WHERE user_id = $1";

const SELECT_RECORDED_AT: &str = "
SELECT recorded_at FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";

pub struct Users {
    pool: PgPool,
    store: UserStore,
    hasher: PasswordHasher,
    password_min_len: usize,
    /// How old an unconfirmed email claim must be to count as abandoned.
    claim_ttl: Duration,
    /// Seals personal data in events and keys the email index.
    vault: Arc<Vault>,
}

impl Users {
    pub fn new(
        pool: PgPool,
        hasher: PasswordHasher,
        password_min_len: usize,
        claim_ttl: Duration,
        vault: Arc<Vault>,
    ) -> Self {
        Self {
            claim_ttl,
            // A snapshot at every commit: with one, every decision folds
            // at most the events of commits that raced it.
            store: PersistedEventStore::new_snapshot_store(
                SealedRepository::new(pool.clone(), vault.clone()),
                1,
            )
            .with_upcasters(super::upcast::upcasters()),
            vault,
            pool,
            hasher,
            password_min_len,
        }
    }

    /// What stands for an address in the email index: a keyed hash of the
    /// lower-cased address, never the address itself.
    fn email_key(&self, email: &Email) -> String {
        self.vault.email_index(&email.uniqueness_key())
    }

    pub async fn register(
        &self,
        input: Registration<'_>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let email = Email::parse(input.email)?;
        let display_name = DisplayName::parse(input.display_name)?;
        let password = Password::parse(input.password, self.password_min_len)?;
        let password_hash = PasswordHash::new(self.hasher.hash(password).await?);
        let user_id = Uuid::now_v7();
        let key = self.email_key(&email);
        self.claim_email(&key, user_id).await?;
        let command = UserCommand::Register(RegisterUser {
            email,
            display_name,
            password_hash,
        });
        let mut registered = self.execute(user_id, command, None, ctx).await;
        if let Ok(executed) = &mut registered {
            let recorded_at = sqlx::query_scalar(SELECT_RECORDED_AT)
                .bind(User::TYPE)
                .bind(user_id.to_string())
                .bind(executed.version)
                .fetch_one(&self.pool)
                .await
                .map_err(infrastructure)?;
            executed.registered_at = Some(recorded_at);
        }
        let settle = if registered.is_ok() {
            CONFIRM_EMAIL
        } else {
            RELEASE_EMAIL
        };
        sqlx::query(settle)
            .bind(&key)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        registered
    }

    /// Claims `key` for `user_id`, unless a live claim or an account holds
    /// it. The primary key makes concurrent claims race-free: one wins.
    async fn claim_email(&self, key: &str, user_id: Uuid) -> Result<(), CommandError> {
        let claimed = sqlx::query(CLAIM_EMAIL)
            .bind(key)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        if claimed.rows_affected() == 1 {
            return Ok(());
        }
        let stale: Option<Uuid> = sqlx::query_scalar(SELECT_STALE_CLAIM)
            .bind(key)
            .bind(self.claim_ttl.as_secs_f64())
            .fetch_optional(&self.pool)
            .await
            .map_err(infrastructure)?;
        let Some(holder) = stale else {
            return Err(CommandError::EmailTaken);
        };
        // A crash may have come after the holder's events committed: then
        // the address is theirs, and the claim is confirmed now.
        if self.load(holder).await?.is_some() {
            sqlx::query(CONFIRM_EMAIL)
                .bind(key)
                .bind(holder)
                .execute(&self.pool)
                .await
                .map_err(infrastructure)?;
            return Err(CommandError::EmailTaken);
        }
        let taken = sqlx::query(TAKE_OVER_CLAIM)
            .bind(key)
            .bind(holder)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        if taken.rows_affected() == 1 {
            tracing::info!(abandoned_by = %holder, "took over an abandoned email claim");
            Ok(())
        } else {
            Err(CommandError::EmailTaken)
        }
    }

    /// The user holding `email`, if any.
    pub async fn find_by_email(&self, email: &Email) -> Result<Option<Uuid>, CommandError> {
        sqlx::query_scalar(FIND_BY_EMAIL)
            .bind(self.email_key(email))
            .fetch_optional(&self.pool)
            .await
            .map_err(infrastructure)
    }

    /// Counts a login attempt before the password is checked, or locks the
    /// account; concurrent attempts are serialised on the user's stream.
    pub async fn attempt_login(
        &self,
        user_id: Uuid,
        at: DateTime<Utc>,
        policy: LockoutPolicy,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        self.execute_retrying(user_id, || UserCommand::AttemptLogin { at, policy }, ctx)
            .await
    }

    pub async fn complete_login(
        &self,
        user_id: Uuid,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        self.execute_retrying(user_id, || UserCommand::CompleteLogin { at }, ctx)
            .await
    }

    /// Re-hashes a password that was verified, with the current parameters.
    pub async fn rehash(
        &self,
        user_id: Uuid,
        password: Password,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let password_hash = PasswordHash::new(self.hasher.hash(password).await?);
        self.execute_retrying(
            user_id,
            || UserCommand::RehashPassword {
                password_hash: password_hash.clone(),
            },
            ctx,
        )
        .await
    }

    /// Changes the given parts of a profile; a change to nothing writes
    /// nothing and answers the current version.
    pub async fn update_profile(
        &self,
        user_id: Uuid,
        profile: ProfileChange<'_>,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let command = UserCommand::UpdateProfile {
            display_name: profile.display_name.map(DisplayName::parse).transpose()?,
            locale: profile.locale.map(Locale::parse).transpose()?,
            time_zone: profile.time_zone.map(TimeZone::parse).transpose()?,
        };
        self.execute(user_id, command, expected_version, ctx).await
    }

    /// Gives `role` to the user; having it already writes nothing.
    pub async fn assign_role(
        &self,
        user_id: Uuid,
        role: Role,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        self.execute(
            user_id,
            UserCommand::AssignRole { role },
            expected_version,
            ctx,
        )
        .await
    }

    /// Takes `role` from the user; not having it writes nothing. The last
    /// active admin keeps ADMIN.
    pub async fn revoke_role(
        &self,
        user_id: Uuid,
        role: Role,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let command = UserCommand::RevokeRole { role };
        if role == Role::Admin {
            self.keeping_an_admin(user_id, command, expected_version, ctx)
                .await
        } else {
            self.execute(user_id, command, expected_version, ctx).await
        }
    }

    /// Moves the account to a new address: the new one is claimed first and
    /// the old one freed once the change is committed.
    pub async fn change_email(
        &self,
        user_id: Uuid,
        email: &str,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let email = Email::parse(email)?;
        // Whatever the command would refuse on its own (another version, an
        // erased or deleted account) is refused before the address is looked
        // at, so that no such answer depends on whether it is taken.
        self.would_accept(
            user_id,
            UserCommand::ChangeEmail {
                email: email.clone(),
            },
            expected_version,
        )
        .await?;
        let key = self.email_key(&email);
        let held: Option<Uuid> = sqlx::query_scalar(FIND_BY_EMAIL)
            .bind(&key)
            .fetch_optional(&self.pool)
            .await
            .map_err(infrastructure)?;
        let claimed = held != Some(user_id);
        if claimed {
            self.claim_email(&key, user_id).await?;
        }
        let changed = self
            .execute(
                user_id,
                UserCommand::ChangeEmail { email },
                expected_version,
                ctx,
            )
            .await;
        let settle = match (&changed, claimed) {
            (Ok(_), _) => RELEASE_OTHER_EMAILS,
            (Err(_), true) => RELEASE_EMAIL,
            (Err(_), false) => return changed,
        };
        sqlx::query(settle)
            .bind(&key)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        if changed.is_ok() {
            sqlx::query(CONFIRM_EMAIL)
                .bind(&key)
                .bind(user_id)
                .execute(&self.pool)
                .await
                .map_err(infrastructure)?;
        }
        changed
    }

    /// Stops an account (admins); the last active admin stays.
    pub async fn deactivate(
        &self,
        user_id: Uuid,
        reason: &str,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let reason = parse_reason(reason)?;
        self.keeping_an_admin(
            user_id,
            UserCommand::Deactivate { reason },
            expected_version,
            ctx,
        )
        .await
    }

    pub async fn reactivate(
        &self,
        user_id: Uuid,
        reason: &str,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let reason = parse_reason(reason)?;
        self.execute(
            user_id,
            UserCommand::Reactivate { reason },
            expected_version,
            ctx,
        )
        .await
    }

    /// Lifts the lock that failed sign-ins put on the account, and forgets
    /// the failures; an account that is not locked is left as it is.
    pub async fn unlock(
        &self,
        user_id: Uuid,
        at: DateTime<Utc>,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        self.execute(user_id, UserCommand::Unlock { at }, expected_version, ctx)
            .await
    }

    /// Deletes an account: the read side stops showing it, its address is
    /// free again, its history stays. The last active admin stays.
    pub async fn delete(
        &self,
        user_id: Uuid,
        reason: Reason<'_>,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let (reason, own_reason) = match reason {
            Reason::Staff(reason) => (parse_reason(reason)?, None),
            Reason::Own(None) => (SELF_DELETED.to_owned(), None),
            Reason::Own(Some(words)) => (SELF_DELETED.to_owned(), Some(parse_reason(words)?)),
        };
        let executed = self
            .keeping_an_admin(
                user_id,
                UserCommand::Delete { reason, own_reason },
                expected_version,
                ctx,
            )
            .await?;
        sqlx::query(RELEASE_EMAILS_OF)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(infrastructure)?;
        Ok(executed)
    }

    /// Erases a user's personal data (the user, or an admin): a `UserErased`
    /// event, and in the same transaction (a trigger on `events`) the user's
    /// data key is destroyed and their address freed. Erasing an erased
    /// user writes nothing. The last active admin stays.
    pub async fn erase(
        &self,
        user_id: Uuid,
        reason: &str,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let reason = parse_reason(reason)?;
        self.keeping_an_admin(
            user_id,
            UserCommand::Erase { reason },
            expected_version,
            ctx,
        )
        .await
    }

    /// Runs a command that may take an active admin away, refusing it when
    /// that admin is the last. What needs no lock is checked first (the
    /// expected version; whether the user is an active admin at all, which
    /// most are not); the commands that remain run one at a time, under a
    /// transaction-scoped lock on a pooled connection that waits at most
    /// five seconds, and admins are counted from the event store, the truth.
    async fn keeping_an_admin(
        &self,
        user_id: Uuid,
        command: UserCommand,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let (context, current) = self.at_version(user_id, expected_version).await?;
        if !context.aggregate.account.as_ref().is_some_and(active_admin) {
            // At the version checked: should the user have become an admin
            // since, this is a conflict rather than an unguarded change.
            return self.execute(user_id, command, Some(current), ctx).await;
        }
        let mut connection = crate::db::for_transaction(&self.pool)
            .await
            .map_err(infrastructure)?;
        let mut lock = connection.begin().await.map_err(infrastructure)?;
        for statement in [LOCK_ADMINS_TIMEOUT, LOCK_ADMINS] {
            sqlx::query(statement)
                .execute(&mut *lock)
                .await
                .map_err(infrastructure)?;
        }
        let outcome = match self.last_admin(user_id).await {
            Ok(true) => Err(CommandError::LastAdmin),
            Ok(false) => self.execute(user_id, command, expected_version, ctx).await,
            Err(error) => Err(error),
        };
        if let Err(error) = lock.rollback().await {
            tracing::warn!(error = %error, "releasing the admin lock");
        }
        outcome
    }

    /// Whether `user_id` is an active admin and no other is.
    async fn last_admin(&self, user_id: Uuid) -> Result<bool, CommandError> {
        if !self.load(user_id).await?.as_ref().is_some_and(active_admin) {
            return Ok(false);
        }
        let candidates: Vec<String> = sqlx::query_scalar(ADMIN_CANDIDATES)
            .bind(User::TYPE)
            .fetch_all(&self.pool)
            .await
            .map_err(infrastructure)?;
        for candidate in candidates {
            let Ok(id) = Uuid::parse_str(&candidate) else {
                continue;
            };
            if id != user_id && self.load(id).await?.as_ref().is_some_and(active_admin) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sets a new password; the caller has checked the current one.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        new_password: &str,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let password =
            Password::parse(new_password, self.password_min_len).map_err(|e| InvalidInput {
                field: "newPassword",
                ..e
            })?;
        let password_hash = PasswordHash::new(self.hasher.hash(password).await?);
        let command = UserCommand::ChangePassword { password_hash };
        self.execute(user_id, command, expected_version, ctx).await
    }

    /// The current state of a user, from its events.
    pub async fn load(&self, user_id: Uuid) -> Result<Option<Account>, CommandError> {
        let context = self.store.load_aggregate(&user_id.to_string()).await?;
        Ok(context.aggregate.account)
    }

    /// Runs the command again on a fresh state when a concurrent write to
    /// the same user won the race, so that no decision rests on old state.
    async fn execute_retrying(
        &self,
        user_id: Uuid,
        command: impl Fn() -> UserCommand,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let mut attempts = 0;
        loop {
            match self.execute(user_id, command(), None, ctx).await {
                Err(CommandError::Conflict) if attempts < CONFLICT_RETRIES => attempts += 1,
                outcome => return outcome,
            }
        }
    }

    /// The user as stored now, and its version, refused as a
    /// `VersionMismatch` when that is not `expected`.
    async fn at_version(
        &self,
        user_id: Uuid,
        expected: Option<i64>,
    ) -> Result<(EventStoreAggregateContext<User>, i64), CommandError> {
        let context = self.store.load_aggregate(&user_id.to_string()).await?;
        let current = i64::try_from(context.current_sequence).map_err(infrastructure)?;
        if expected.is_some_and(|expected| expected != current) {
            return Err(CommandError::VersionMismatch { current });
        }
        Ok((context, current))
    }

    /// Whether the user, as now, at `expected` version, would accept
    /// `command` (nothing is written).
    async fn would_accept(
        &self,
        user_id: Uuid,
        command: UserCommand,
        expected: Option<i64>,
    ) -> Result<(), CommandError> {
        let (mut context, _) = self.at_version(user_id, expected).await?;
        context
            .aggregate
            .handle(command, &(), &EventSink::default())
            .await
            .map_err(CommandError::Rejected)
    }

    /// Loads the user, decides, and appends the resulting events in one
    /// transaction; a concurrent append to the same user is a `Conflict`,
    /// and so is a user at another version than `expected`.
    async fn execute(
        &self,
        user_id: Uuid,
        command: UserCommand,
        expected: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let (mut context, _) = self.at_version(user_id, expected).await?;
        // The sink applies each event to the aggregate as the command emits
        // it, and cqrs-es's commit applies them again to make the snapshot;
        // so the commit gets the state as loaded, and folds them once.
        let loaded = context.aggregate.clone();
        let sink = EventSink::default();
        context
            .aggregate
            .handle(command, &(), &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let account = std::mem::replace(&mut context.aggregate, loaded).account;
        let previous = context.current_sequence;
        let events = sink.collect().await;
        let committed = self.store.commit(events, context, ctx.metadata()).await?;
        let version = committed.last().map_or(previous, |e| e.sequence);
        let version = i64::try_from(version).map_err(infrastructure)?;
        Ok(Executed {
            user_id,
            version,
            account,
            registered_at: None,
        })
    }
}

fn active_admin(account: &Account) -> bool {
    account.status == UserStatus::Active && account.roles.contains(&Role::Admin)
}

fn infrastructure(error: impl std::error::Error + Send + Sync + 'static) -> CommandError {
    CommandError::Infrastructure(Box::new(error))
}

/// Why an admin acted: 1 to 500 characters, no control characters.
/// Why an account is deleted, as given by whom.
#[derive(Debug, Clone, Copy)]
pub enum Reason<'a> {
    /// An admin's words, kept in clear.
    Staff(&'a str),
    /// The user's own words about their own account, if any: personal
    /// data, sealed with the rest of theirs.
    Own(Option<&'a str>),
}

/// The clear reason of a deletion the user asked for themself.
const SELF_DELETED: &str = "deleted by the user";

fn parse_reason(input: &str) -> Result<String, InvalidInput> {
    let reason = input.trim();
    let len = reason.chars().count();
    if len == 0 || len > 500 || reason.chars().any(char::is_control) {
        return Err(InvalidInput {
            field: "reason",
            reason: "must be 1 to 500 characters without control characters".into(),
        });
    }
    Ok(reason.to_owned())
}
