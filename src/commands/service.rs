//! The command service: every change to an account goes through it. It
//! parses client input, hashes passwords, runs the command against the
//! event store through cqrs-es, and sees to the command's consequences.

use std::sync::Arc;
use std::time::Duration;

use accountable_domain::values::{DisplayName, Email, InvalidInput, Locale, Password, TimeZone};
use accountable_domain::{
    Account, LockoutPolicy, PasswordHash, RegisterUser, Role, User, UserCommand, UserEvent,
};
use accountable_vault::Vault;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, EventStore};
use sqlx::PgPool;
use uuid::Uuid;

use super::context::CommandContext;
use super::emails::Settle;
use super::error::{infrastructure, CommandError};
use super::input::{parse_reason, ProfileChange, Reason, Registration, SELF_DELETED};
use super::links;
use super::password::PasswordHasher;
use crate::auth::cutoffs::Cutoffs;
use crate::store::{self, SealedRepository};

/// The outcome of a command that ran: the aggregate's new version and state.
#[derive(Debug, Clone)]
pub struct Executed {
    pub user_id: Uuid,
    /// The sequence of the last event of the user; what `minVersion` waits for.
    pub version: i64,
    pub account: Option<Account>,
    /// What the command recorded (nothing, when it changed nothing).
    pub events: Vec<UserEvent>,
}

type UserStore = PersistedEventStore<SealedRepository, User>;

/// Attempts at a command that keeps meeting concurrent writes to its user.
const CONFLICT_RETRIES: usize = 50;

pub struct Users {
    pub(super) pool: PgPool,
    pub(super) store: UserStore,
    pub(super) hasher: PasswordHasher,
    pub(super) password_min_len: usize,
    /// How old an unconfirmed email claim must be to count as abandoned.
    pub(super) claim_ttl: Duration,
    /// Seals personal data in events and keys the email index.
    pub(super) vault: Arc<Vault>,
    /// The token cut-offs this process remembers, forgotten when a command
    /// changes them.
    pub(super) cutoffs: Option<Cutoffs>,
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
            .with_upcasters(store::upcast::upcasters()),
            vault,
            pool,
            hasher,
            password_min_len,
            cutoffs: None,
        }
    }

    /// Forgets a user's remembered token cut-off as soon as a command of
    /// theirs changes it (their sessions end in the event's transaction);
    /// other processes forget it when the database's notice reaches them.
    pub fn forgetting_cutoffs(mut self, cutoffs: Cutoffs) -> Self {
        self.cutoffs = Some(cutoffs);
        self
    }

    /// Opens an account and asks for the mail that verifies its address.
    /// An address that has an account already is `EmailTaken`, and its
    /// owner is told that someone tried.
    pub async fn register(
        &self,
        input: Registration<'_>,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let email = Email::parse(input.email)?;
        let display_name = DisplayName::parse(input.display_name)?;
        let password = Password::parse(input.password, self.password_min_len)?;
        let password_hash = PasswordHash::new(self.hasher.hash(password).await?);
        let user_id = Uuid::now_v7();
        let key = self.email_key(&email);
        if let Err(error) = self.claim_email(&key, user_id).await {
            if let CommandError::EmailTaken = error {
                self.note_registration_attempt(&key, at, ctx).await?;
            }
            return Err(error);
        }
        let command = UserCommand::Register(RegisterUser {
            email,
            display_name,
            password_hash,
            verification: links::issue(user_id, at + links::VERIFICATION_TTL),
        });
        let registered = self.execute(user_id, command, None, ctx).await;
        let settle = if registered.is_ok() {
            Settle::Confirm
        } else {
            Settle::Release
        };
        self.settle_claim(settle, &key, user_id).await?;
        registered
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
        self.release_emails_of(user_id).await?;
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
    pub(super) async fn execute_retrying(
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
    pub(super) async fn at_version(
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

    /// Loads the user, decides, and appends the resulting events in one
    /// transaction; a concurrent append to the same user is a `Conflict`,
    /// and so is a user at another version than `expected`.
    #[tracing::instrument(name = "command", skip_all, fields(user_id = %user_id))]
    pub(super) async fn execute(
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
        let sessions_changed = events.iter().any(UserEvent::changes_sessions);
        let recorded = events.clone();
        let committed = self.store.commit(events, context, ctx.metadata()).await?;
        if let (true, Some(cutoffs)) = (sessions_changed, &self.cutoffs) {
            cutoffs.forget(user_id);
        }
        let version = committed.last().map_or(previous, |e| e.sequence);
        let version = i64::try_from(version).map_err(infrastructure)?;
        Ok(Executed {
            user_id,
            version,
            account,
            events: recorded,
        })
    }
}
