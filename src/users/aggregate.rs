//! The `User` aggregate: state + command → events, or a domain rejection.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::values::{DisplayName, Email, Locale, TimeZone};

/// What a user may do beyond managing their own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    User,
    Auditor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Auditor => "AUDITOR",
            Self::Admin => "ADMIN",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserStatus {
    Active,
    Deactivated,
    Deleted,
    /// Personal data destroyed; only the non-personal history remains.
    Erased,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Deactivated => "DEACTIVATED",
            Self::Deleted => "DELETED",
            Self::Erased => "ERASED",
        }
    }
}

/// An argon2id PHC string. Never printed, never published.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn new(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string, for verification only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(***)")
    }
}

/// The fields of an event that identify a person, kept apart from the rest
/// so that they are sealed with the user's data key and erased as one.
/// In events, `personal: None` means erased (the key is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    pub email: Email,
    pub display_name: DisplayName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    /// `None` once erased.
    pub personal: Option<PersonalData>,
    pub roles: BTreeSet<Role>,
    pub status: UserStatus,
    /// Secret: sealed like personal data, never published; `None` once
    /// erased.
    pub password_hash: Option<PasswordHash>,
}

/// A password check began: counted as a failure until a success follows,
/// so that concurrent guesses cannot exceed the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginAttempted {
    pub at: DateTime<Utc>,
    /// Consecutive attempts without success, this one included.
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginSucceeded {
    pub at: DateTime<Utc>,
}

/// Too many failed attempts: no login until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLocked {
    pub at: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub failures: u32,
}

/// The personal part of a deletion: the user's own reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionPersonal {
    pub reason: String,
}

/// An admin lifted a lock before it ended: failures are forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUnlocked {
    pub at: DateTime<Utc>,
}

/// The user set a new password (after proving the current one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordChanged {
    /// Secret: never published; `None` once erased.
    pub password_hash: Option<PasswordHash>,
}

/// The personal part of an email change: the new address only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailPersonal {
    pub email: Email,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChanged {
    /// `None` once erased.
    pub personal: Option<EmailPersonal>,
}

/// An admin stopped the account: no sign-in until reactivated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeactivated {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserReactivated {
    pub reason: String,
}

/// The account is gone from the read side; its history stays. Says what
/// was deleted, so that readers need nothing else.
///
/// Version 2.0: version 1.0 called `previous_status` `status`, which read
/// as the status after deletion; stored 1.0 events are upcast on read
/// (see [`crate::users::upcast`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    /// In clear: an admin's words, or a fixed text when the user deleted
    /// their own account.
    pub reason: String,
    /// The user's own words, when they deleted their own account: sealed,
    /// so that an erasure shreds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<DeletionPersonal>,
    /// The status the account had when it was deleted.
    pub previous_status: UserStatus,
    pub roles: BTreeSet<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAssigned {
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRevoked {
    pub role: Role,
}

/// What a profile change changed; fields that did not change are `None`.
/// All of it is the person's own, so all of it is sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfilePersonal {
    pub display_name: Option<DisplayName>,
    pub locale: Option<Locale>,
    pub time_zone: Option<TimeZone>,
}

/// The profile changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    /// `None` once erased.
    pub personal: Option<ProfilePersonal>,
}

/// The password hash was recomputed with the current cost parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRehashed {
    /// Secret: never published; `None` once erased.
    pub password_hash: Option<PasswordHash>,
}

/// The personal fields every earlier event of the user holds.
pub const ERASED_FIELDS: [&str; 5] = [
    "email",
    "display_name",
    "locale",
    "time_zone",
    "password_hash",
];

/// The user's personal data was erased: their data key is destroyed (in the
/// same transaction as this event), so the personal fields of every earlier
/// event, stored or published, can no longer be read. Says what was erased
/// and the state the account was in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserErased {
    /// Why, as given by whoever erased (kept for the receipt; not personal
    /// data of the user).
    pub reason: String,
    /// The names of the fields made unreadable.
    pub fields: Vec<String>,
    /// The last event whose personal fields were made unreadable.
    pub through_sequence: u64,
    pub status: UserStatus,
    pub roles: BTreeSet<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered(UserRegistered),
    LoginAttempted(LoginAttempted),
    LoginSucceeded(LoginSucceeded),
    AccountLocked(AccountLocked),
    AccountUnlocked(AccountUnlocked),
    PasswordRehashed(PasswordRehashed),
    ProfileUpdated(ProfileUpdated),
    PasswordChanged(PasswordChanged),
    RoleAssigned(RoleAssigned),
    RoleRevoked(RoleRevoked),
    UserDeactivated(UserDeactivated),
    UserReactivated(UserReactivated),
    UserDeleted(UserDeleted),
    EmailChanged(EmailChanged),
    UserErased(UserErased),
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered(_) => "UserRegistered",
            Self::LoginAttempted(_) => "LoginAttempted",
            Self::LoginSucceeded(_) => "LoginSucceeded",
            Self::AccountLocked(_) => "AccountLocked",
            Self::AccountUnlocked(_) => "AccountUnlocked",
            Self::PasswordRehashed(_) => "PasswordRehashed",
            Self::ProfileUpdated(_) => "ProfileUpdated",
            Self::PasswordChanged(_) => "PasswordChanged",
            Self::RoleAssigned(_) => "RoleAssigned",
            Self::RoleRevoked(_) => "RoleRevoked",
            Self::UserDeactivated(_) => "UserDeactivated",
            Self::UserReactivated(_) => "UserReactivated",
            Self::UserDeleted(_) => "UserDeleted",
            Self::EmailChanged(_) => "EmailChanged",
            Self::UserErased(_) => "UserErased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::UserDeleted(_) => "2.0",
            _ => "1.0",
        }
        .to_owned()
    }
}

/// An event as the public contract shows it: its CloudEvents type and the
/// data that may leave the store (secrets removed).
#[derive(Debug, Clone, PartialEq)]
pub struct PublicEvent {
    pub cloud_type: &'static str,
    pub data: serde_json::Value,
}

impl UserEvent {
    pub fn public(&self) -> PublicEvent {
        match self {
            Self::UserRegistered(e) => PublicEvent {
                cloud_type: "accountable.user.registered.v1",
                data: json!({
                    "personal": e.personal,
                    "roles": e.roles,
                    "status": e.status,
                }),
            },
            Self::LoginAttempted(e) => PublicEvent {
                cloud_type: "accountable.user.login_attempted.v1",
                data: json!({"at": e.at, "failures": e.failures}),
            },
            Self::LoginSucceeded(e) => PublicEvent {
                cloud_type: "accountable.user.login_succeeded.v1",
                data: json!({"at": e.at}),
            },
            Self::AccountLocked(e) => PublicEvent {
                cloud_type: "accountable.user.locked.v1",
                data: json!({"at": e.at, "until": e.until, "failures": e.failures}),
            },
            Self::AccountUnlocked(e) => PublicEvent {
                cloud_type: "accountable.user.unlocked.v1",
                data: json!({"at": e.at}),
            },
            Self::PasswordRehashed(_) => PublicEvent {
                cloud_type: "accountable.user.password_rehashed.v1",
                data: json!({}),
            },
            Self::EmailChanged(e) => PublicEvent {
                cloud_type: "accountable.user.email_changed.v1",
                data: json!({"personal": e.personal}),
            },
            Self::UserDeactivated(e) => PublicEvent {
                cloud_type: "accountable.user.deactivated.v1",
                data: json!({"reason": e.reason}),
            },
            Self::UserReactivated(e) => PublicEvent {
                cloud_type: "accountable.user.reactivated.v1",
                data: json!({"reason": e.reason}),
            },
            Self::UserDeleted(e) => PublicEvent {
                cloud_type: "accountable.user.deleted.v2",
                data: json!({
                    "reason": e.reason,
                    "personal": e.personal,
                    "previous_status": e.previous_status,
                    "roles": e.roles,
                }),
            },
            Self::RoleAssigned(e) => PublicEvent {
                cloud_type: "accountable.user.role_assigned.v1",
                data: json!({"role": e.role}),
            },
            Self::RoleRevoked(e) => PublicEvent {
                cloud_type: "accountable.user.role_revoked.v1",
                data: json!({"role": e.role}),
            },
            Self::PasswordChanged(_) => PublicEvent {
                cloud_type: "accountable.user.password_changed.v1",
                data: json!({}),
            },
            Self::ProfileUpdated(e) => PublicEvent {
                cloud_type: "accountable.user.profile_updated.v1",
                data: json!({"personal": e.personal}),
            },
            Self::UserErased(e) => PublicEvent {
                cloud_type: "accountable.user.erased.v1",
                data: json!({
                    "reason": e.reason,
                    "fields": e.fields,
                    "through_sequence": e.through_sequence,
                    "status": e.status,
                    "roles": e.roles,
                }),
            },
        }
    }
}

#[derive(Debug)]
pub struct RegisterUser {
    pub email: Email,
    pub display_name: DisplayName,
    pub password_hash: PasswordHash,
}

/// How failed logins lock an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failed attempts in a row before the account locks.
    pub max_failures: u32,
    /// How long the first lock lasts; each further lock lasts one step more.
    pub lock_step: Duration,
    /// The longest a lock lasts.
    pub max_lock: Duration,
    /// Failures older than this are forgotten.
    pub failure_memory: Duration,
}

impl Default for LockoutPolicy {
    /// Keycloak's brute-force defaults, with 10 failures.
    fn default() -> Self {
        Self {
            max_failures: 10,
            lock_step: Duration::minutes(1),
            max_lock: Duration::minutes(15),
            failure_memory: Duration::hours(12),
        }
    }
}

#[derive(Debug)]
pub enum UserCommand {
    Register(RegisterUser),
    /// Begin a password check at `at`.
    AttemptLogin {
        at: DateTime<Utc>,
        policy: LockoutPolicy,
    },
    /// The password checked out.
    CompleteLogin {
        at: DateTime<Utc>,
    },
    /// Lift the lock on the account, if it is locked at `at`.
    Unlock {
        at: DateTime<Utc>,
    },
    RehashPassword {
        password_hash: PasswordHash,
    },
    ChangeEmail {
        email: Email,
    },
    Deactivate {
        reason: String,
    },
    Reactivate {
        reason: String,
    },
    Delete {
        reason: String,
        /// The user's own words, when they delete their own account.
        own_reason: Option<String>,
    },
    AssignRole {
        role: Role,
    },
    RevokeRole {
        role: Role,
    },
    /// Set a new password; the service has checked the current one.
    ChangePassword {
        password_hash: PasswordHash,
    },
    /// Destroy the user's personal data for good.
    Erase {
        reason: String,
    },
    /// Change what is given; what is `None` or equal stays.
    UpdateProfile {
        display_name: Option<DisplayName>,
        locale: Option<Locale>,
        time_zone: Option<TimeZone>,
    },
}

/// A command the aggregate refuses; each maps to one client-facing code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("this user is already registered")]
    AlreadyRegistered,
    #[error("no such user")]
    NotRegistered,
    #[error("the account is locked")]
    Locked,
    #[error("every user keeps the USER role")]
    BaseRole,
    #[error("the account is deactivated")]
    Deactivated,
    #[error("the account is deleted")]
    Deleted,
    #[error("the account is erased")]
    Erased,
}

/// The current state of one account, as the write side needs it to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `None` once erased.
    pub personal: Option<PersonalData>,
    pub roles: BTreeSet<Role>,
    pub status: UserStatus,
    /// `None` once erased.
    pub password_hash: Option<PasswordHash>,
    /// Login attempts since the last success (or lock).
    pub failed_attempts: u32,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Locks since the last success; each lasts longer.
    pub lockouts: u32,
    pub locked_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub locale: Option<Locale>,
    #[serde(default)]
    pub time_zone: Option<TimeZone>,
}

impl Account {
    pub fn is_locked(&self, at: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| until > at)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `None` until registered.
    pub account: Option<Account>,
    /// How many events were applied: the sequence of the last one.
    #[serde(default)]
    pub version: u64,
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match (command, &self.account) {
            (UserCommand::Register(_), Some(_)) => return Err(UserError::AlreadyRegistered),
            (UserCommand::Register(cmd), None) => UserEvent::UserRegistered(UserRegistered {
                personal: Some(PersonalData {
                    email: cmd.email,
                    display_name: cmd.display_name,
                }),
                roles: BTreeSet::from([Role::User]),
                status: UserStatus::Active,
                password_hash: Some(cmd.password_hash),
            }),
            (_, None) => return Err(UserError::NotRegistered),
            (UserCommand::Erase { .. }, Some(account)) if account.status == UserStatus::Erased => {
                return Ok(())
            }
            (_, Some(account)) if account.status == UserStatus::Erased => {
                return Err(UserError::Erased)
            }
            (UserCommand::Erase { reason }, Some(account)) => UserEvent::UserErased(UserErased {
                reason,
                fields: ERASED_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
                through_sequence: self.version,
                status: account.status,
                roles: account.roles.clone(),
            }),
            (_, Some(account)) if account.status == UserStatus::Deleted => {
                return Err(UserError::Deleted)
            }
            (UserCommand::ChangeEmail { email }, Some(account)) => {
                if account.personal.as_ref().is_some_and(|p| p.email == email) {
                    return Ok(());
                }
                UserEvent::EmailChanged(EmailChanged {
                    personal: Some(EmailPersonal { email }),
                })
            }
            (UserCommand::Deactivate { reason }, Some(account)) => {
                if account.status == UserStatus::Deactivated {
                    return Ok(());
                }
                UserEvent::UserDeactivated(UserDeactivated { reason })
            }
            (UserCommand::Reactivate { reason }, Some(account)) => {
                if account.status == UserStatus::Active {
                    return Ok(());
                }
                UserEvent::UserReactivated(UserReactivated { reason })
            }
            (UserCommand::Delete { reason, own_reason }, Some(account)) => {
                UserEvent::UserDeleted(UserDeleted {
                    reason,
                    personal: own_reason.map(|reason| DeletionPersonal { reason }),
                    previous_status: account.status,
                    roles: account.roles.clone(),
                })
            }
            (UserCommand::AttemptLogin { at, policy }, Some(account)) => {
                attempt_login(account, at, policy)?
            }
            (UserCommand::Unlock { at }, Some(account)) => {
                if !account.is_locked(at) && account.failed_attempts == 0 {
                    return Ok(());
                }
                UserEvent::AccountUnlocked(AccountUnlocked { at })
            }
            (UserCommand::CompleteLogin { at }, Some(_)) => {
                UserEvent::LoginSucceeded(LoginSucceeded { at })
            }
            (UserCommand::RehashPassword { password_hash }, Some(_)) => {
                UserEvent::PasswordRehashed(PasswordRehashed {
                    password_hash: Some(password_hash),
                })
            }
            (UserCommand::AssignRole { role }, Some(account)) => {
                if account.roles.contains(&role) {
                    return Ok(());
                }
                UserEvent::RoleAssigned(RoleAssigned { role })
            }
            (UserCommand::RevokeRole { role: Role::User }, Some(_)) => {
                return Err(UserError::BaseRole)
            }
            (UserCommand::RevokeRole { role }, Some(account)) => {
                if !account.roles.contains(&role) {
                    return Ok(());
                }
                UserEvent::RoleRevoked(RoleRevoked { role })
            }
            (UserCommand::ChangePassword { password_hash }, Some(_)) => {
                UserEvent::PasswordChanged(PasswordChanged {
                    password_hash: Some(password_hash),
                })
            }
            (
                UserCommand::UpdateProfile {
                    display_name,
                    locale,
                    time_zone,
                },
                Some(account),
            ) => {
                let changed = ProfilePersonal {
                    display_name: display_name.filter(|name| {
                        account.personal.as_ref().map(|p| &p.display_name) != Some(name)
                    }),
                    locale: locale.filter(|l| Some(l) != account.locale.as_ref()),
                    time_zone: time_zone.filter(|t| Some(t) != account.time_zone.as_ref()),
                };
                if changed.display_name.is_none()
                    && changed.locale.is_none()
                    && changed.time_zone.is_none()
                {
                    return Ok(());
                }
                UserEvent::ProfileUpdated(ProfileUpdated {
                    personal: Some(changed),
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        if let UserEvent::UserRegistered(e) = event {
            self.account = Some(Account {
                personal: e.personal,
                roles: e.roles,
                status: e.status,
                password_hash: e.password_hash,
                failed_attempts: 0,
                last_failure_at: None,
                lockouts: 0,
                locked_until: None,
                locale: None,
                time_zone: None,
            });
            return;
        }
        let Some(account) = self.account.as_mut() else {
            return;
        };
        match event {
            UserEvent::UserRegistered(_) => {}
            UserEvent::LoginAttempted(e) => {
                account.failed_attempts = e.failures;
                account.last_failure_at = Some(e.at);
            }
            UserEvent::LoginSucceeded(_) => {
                account.failed_attempts = 0;
                account.last_failure_at = None;
                account.lockouts = 0;
            }
            UserEvent::AccountLocked(e) => {
                account.failed_attempts = 0;
                account.lockouts += 1;
                account.locked_until = Some(e.until);
            }
            UserEvent::AccountUnlocked(_) => {
                account.failed_attempts = 0;
                account.last_failure_at = None;
                account.lockouts = 0;
                account.locked_until = None;
            }
            UserEvent::PasswordRehashed(PasswordRehashed { password_hash })
            | UserEvent::PasswordChanged(PasswordChanged { password_hash }) => {
                account.password_hash = password_hash;
            }
            UserEvent::EmailChanged(e) => {
                if let (Some(personal), Some(changed)) = (account.personal.as_mut(), e.personal) {
                    personal.email = changed.email;
                }
            }
            UserEvent::UserErased(_) => {
                account.status = UserStatus::Erased;
                account.personal = None;
                account.password_hash = None;
                account.locale = None;
                account.time_zone = None;
            }
            UserEvent::UserDeactivated(_) => account.status = UserStatus::Deactivated,
            UserEvent::UserReactivated(_) => account.status = UserStatus::Active,
            UserEvent::UserDeleted(_) => account.status = UserStatus::Deleted,
            UserEvent::RoleAssigned(e) => {
                account.roles.insert(e.role);
            }
            UserEvent::RoleRevoked(e) => {
                account.roles.remove(&e.role);
            }
            UserEvent::ProfileUpdated(ProfileUpdated {
                personal: Some(changed),
            }) => {
                if let (Some(personal), Some(name)) =
                    (account.personal.as_mut(), changed.display_name)
                {
                    personal.display_name = name;
                }
                if changed.locale.is_some() {
                    account.locale = changed.locale;
                }
                if changed.time_zone.is_some() {
                    account.time_zone = changed.time_zone;
                }
            }
            UserEvent::ProfileUpdated(ProfileUpdated { personal: None }) => {}
        }
    }
}

/// Counts the attempt, or locks the account when the failures before it
/// reached the limit.
fn attempt_login(
    account: &Account,
    at: DateTime<Utc>,
    policy: LockoutPolicy,
) -> Result<UserEvent, UserError> {
    if account.status == UserStatus::Deactivated {
        return Err(UserError::Deactivated);
    }
    if account.is_locked(at) {
        return Err(UserError::Locked);
    }
    let recent = account
        .last_failure_at
        .is_some_and(|last| at - last < policy.failure_memory);
    let failures = if recent { account.failed_attempts } else { 0 };
    if failures < policy.max_failures {
        return Ok(UserEvent::LoginAttempted(LoginAttempted {
            at,
            failures: failures + 1,
        }));
    }
    let steps = i32::try_from(account.lockouts.saturating_add(1)).unwrap_or(i32::MAX);
    Ok(UserEvent::AccountLocked(AccountLocked {
        at,
        until: at + (policy.lock_step * steps).min(policy.max_lock),
        failures,
    }))
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn register() -> RegisterUser {
        RegisterUser {
            email: Email::parse("ada@example.com").unwrap(),
            display_name: DisplayName::parse("Ada").unwrap(),
            password_hash: PasswordHash::new("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into()),
        }
    }

    fn registered() -> UserEvent {
        let cmd = register();
        UserEvent::UserRegistered(UserRegistered {
            personal: Some(PersonalData {
                email: cmd.email,
                display_name: cmd.display_name,
            }),
            roles: BTreeSet::from([Role::User]),
            status: UserStatus::Active,
            password_hash: Some(cmd.password_hash),
        })
    }

    #[test]
    fn given_nothing_when_register_then_registered_as_an_active_user() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(UserCommand::Register(register()))
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn given_registered_when_register_then_already_registered() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Register(register()))
            .then_expect_error(UserError::AlreadyRegistered);
    }

    #[test]
    fn the_public_form_carries_no_password_hash() {
        let public = registered().public();
        assert_eq!(public.cloud_type, "accountable.user.registered.v1");
        assert_eq!(public.data["personal"]["email"], "ada@example.com");
        assert_eq!(public.data["roles"], json!(["USER"]));
        assert!(!public.data.to_string().contains("argon2"));
    }

    #[test]
    fn the_stored_form_is_stable() {
        let stored = serde_json::to_value(registered()).unwrap();
        assert_eq!(
            stored["UserRegistered"]["personal"]["display_name"],
            json!("Ada")
        );
        let back: UserEvent = serde_json::from_value(stored).unwrap();
        assert_eq!(back, registered());
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minute)
    }

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 3,
            ..LockoutPolicy::default()
        }
    }

    fn attempted(minute: i64, failures: u32) -> UserEvent {
        UserEvent::LoginAttempted(LoginAttempted {
            at: at(minute),
            failures,
        })
    }

    fn attempt(minute: i64) -> UserCommand {
        UserCommand::AttemptLogin {
            at: at(minute),
            policy: policy(),
        }
    }

    #[test]
    fn given_registered_when_attempt_login_then_the_attempt_counts() {
        TestFramework::<User>::with(())
            .given(vec![registered(), attempted(0, 1)])
            .when(attempt(1))
            .then_expect_events(vec![attempted(1, 2)]);
    }

    #[test]
    fn given_the_limit_of_failures_when_attempt_login_then_locked_for_one_step() {
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                attempted(0, 1),
                attempted(0, 2),
                attempted(0, 3),
            ])
            .when(attempt(1))
            .then_expect_events(vec![UserEvent::AccountLocked(AccountLocked {
                at: at(1),
                until: at(2),
                failures: 3,
            })]);
    }

    #[test]
    fn given_a_lock_when_attempt_login_before_it_ends_then_locked() {
        let lock = UserEvent::AccountLocked(AccountLocked {
            at: at(1),
            until: at(2),
            failures: 3,
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), lock.clone()])
            .when(attempt(1))
            .then_expect_error(UserError::Locked);
        TestFramework::<User>::with(())
            .given(vec![registered(), lock])
            .when(attempt(3))
            .then_expect_events(vec![attempted(3, 1)]);
    }

    #[test]
    fn given_a_lock_when_unlock_then_unlocked_and_signing_in_counts_from_zero() {
        let lock = UserEvent::AccountLocked(AccountLocked {
            at: at(1),
            until: at(2),
            failures: 3,
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), lock.clone()])
            .when(UserCommand::Unlock { at: at(1) })
            .then_expect_events(vec![UserEvent::AccountUnlocked(AccountUnlocked {
                at: at(1),
            })]);
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                lock,
                UserEvent::AccountUnlocked(AccountUnlocked { at: at(1) }),
            ])
            .when(attempt(1))
            .then_expect_events(vec![attempted(1, 1)]);
    }

    #[test]
    fn given_no_lock_and_no_failures_when_unlock_then_nothing() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Unlock { at: at(1) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn given_a_second_lock_then_it_lasts_longer_up_to_the_maximum() {
        let mut given = vec![registered()];
        for lock in 0..20 {
            let minute = lock * 100;
            given.extend((1..=3).map(|n| attempted(minute, n)));
            given.push(UserEvent::AccountLocked(AccountLocked {
                at: at(minute),
                until: at(minute + 1),
                failures: 3,
            }));
        }
        given.extend((1..=3).map(|n| attempted(5000, n)));
        TestFramework::<User>::with(())
            .given(given)
            .when(attempt(5000))
            .then_expect_events(vec![UserEvent::AccountLocked(AccountLocked {
                at: at(5000),
                until: at(5015),
                failures: 3,
            })]);
    }

    #[test]
    fn given_old_failures_when_attempt_login_then_they_are_forgotten() {
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                attempted(0, 1),
                attempted(0, 2),
                attempted(0, 3),
            ])
            .when(attempt(13 * 60))
            .then_expect_events(vec![attempted(13 * 60, 1)]);
    }

    #[test]
    fn given_failures_when_login_succeeds_then_the_count_starts_over() {
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                attempted(0, 1),
                attempted(0, 2),
                UserEvent::LoginSucceeded(LoginSucceeded { at: at(0) }),
            ])
            .when(attempt(1))
            .then_expect_events(vec![attempted(1, 1)]);
    }

    #[test]
    fn given_nothing_when_attempt_login_then_not_registered() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(attempt(0))
            .then_expect_error(UserError::NotRegistered);
    }

    #[test]
    fn given_registered_when_rehash_then_the_new_hash_is_recorded_and_not_published() {
        let password_hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
        let event = UserEvent::PasswordRehashed(PasswordRehashed {
            password_hash: Some(password_hash.clone()),
        });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::RehashPassword { password_hash })
            .then_expect_events(vec![event.clone()]);
        assert!(!event.public().data.to_string().contains("argon2"));
    }

    fn update(name: Option<&str>, locale: Option<&str>, zone: Option<&str>) -> UserCommand {
        UserCommand::UpdateProfile {
            display_name: name.map(|n| DisplayName::parse(n).unwrap()),
            locale: locale.map(|l| Locale::parse(l).unwrap()),
            time_zone: zone.map(|z| TimeZone::parse(z).unwrap()),
        }
    }

    #[test]
    fn given_registered_when_update_profile_then_only_the_changes_are_recorded() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(update(Some("Ada"), Some("en-GB"), Some("Europe/London")))
            .then_expect_events(vec![UserEvent::ProfileUpdated(ProfileUpdated {
                personal: Some(ProfilePersonal {
                    display_name: None,
                    locale: Some(Locale::parse("en-GB").unwrap()),
                    time_zone: Some(TimeZone::parse("Europe/London").unwrap()),
                }),
            })]);
    }

    #[test]
    fn given_a_profile_when_it_is_set_to_what_it_is_then_nothing_is_written() {
        let set = UserEvent::ProfileUpdated(ProfileUpdated {
            personal: Some(ProfilePersonal {
                display_name: Some(DisplayName::parse("Ada Lovelace").unwrap()),
                locale: Some(Locale::parse("en-GB").unwrap()),
                time_zone: None,
            }),
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), set])
            .when(update(Some("Ada Lovelace"), Some("en-GB"), None))
            .then_expect_events(vec![]);
    }

    #[test]
    fn given_nothing_when_update_profile_then_not_registered() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(update(Some("Ada"), None, None))
            .then_expect_error(UserError::NotRegistered);
    }

    #[test]
    fn given_registered_when_change_password_then_changed_and_not_published() {
        let password_hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
        let event = UserEvent::PasswordChanged(PasswordChanged {
            password_hash: Some(password_hash.clone()),
        });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangePassword { password_hash })
            .then_expect_events(vec![event.clone()]);
        assert!(!event.public().data.to_string().contains("argon2"));
    }

    #[test]
    fn roles_are_assigned_and_revoked_once_and_user_stays() {
        let assigned = UserEvent::RoleAssigned(RoleAssigned { role: Role::Admin });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::AssignRole { role: Role::Admin })
            .then_expect_events(vec![assigned.clone()]);
        TestFramework::<User>::with(())
            .given(vec![registered(), assigned.clone()])
            .when(UserCommand::AssignRole { role: Role::Admin })
            .then_expect_events(vec![]);
        TestFramework::<User>::with(())
            .given(vec![registered(), assigned])
            .when(UserCommand::RevokeRole { role: Role::Admin })
            .then_expect_events(vec![UserEvent::RoleRevoked(RoleRevoked {
                role: Role::Admin,
            })]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::RevokeRole {
                role: Role::Auditor,
            })
            .then_expect_events(vec![]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::RevokeRole { role: Role::User })
            .then_expect_error(UserError::BaseRole);
    }

    fn deactivated() -> UserEvent {
        UserEvent::UserDeactivated(UserDeactivated {
            reason: "abuse".into(),
        })
    }

    #[test]
    fn deactivation_stops_sign_in_until_reactivation() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Deactivate {
                reason: "abuse".into(),
            })
            .then_expect_events(vec![deactivated()]);
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated()])
            .when(attempt(0))
            .then_expect_error(UserError::Deactivated);
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated()])
            .when(UserCommand::Deactivate {
                reason: "again".into(),
            })
            .then_expect_events(vec![]);
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated()])
            .when(UserCommand::Reactivate {
                reason: "appeal".into(),
            })
            .then_expect_events(vec![UserEvent::UserReactivated(UserReactivated {
                reason: "appeal".into(),
            })]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Reactivate {
                reason: "nothing to do".into(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn deletion_says_what_was_deleted_and_ends_every_command() {
        let deleted = UserEvent::UserDeleted(UserDeleted {
            reason: "asked".into(),
            personal: None,
            previous_status: UserStatus::Deactivated,
            roles: BTreeSet::from([Role::User]),
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated()])
            .when(UserCommand::Delete {
                reason: "asked".into(),
                own_reason: None,
            })
            .then_expect_events(vec![deleted.clone()]);
        TestFramework::<User>::with(())
            .given(vec![registered(), deleted.clone()])
            .when(update(Some("Ghost"), None, None))
            .then_expect_error(UserError::Deleted);
        TestFramework::<User>::with(())
            .given(vec![registered(), deleted])
            .when(attempt(0))
            .then_expect_error(UserError::Deleted);
    }

    #[test]
    fn an_email_change_records_the_new_address_and_a_same_one_writes_nothing() {
        let new = Email::parse("ada@lovelace.example").unwrap();
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangeEmail { email: new.clone() })
            .then_expect_events(vec![UserEvent::EmailChanged(EmailChanged {
                personal: Some(EmailPersonal { email: new }),
            })]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangeEmail {
                email: Email::parse("ada@example.com").unwrap(),
            })
            .then_expect_events(vec![]);
    }

    fn erased(through_sequence: u64, status: UserStatus) -> UserEvent {
        UserEvent::UserErased(UserErased {
            reason: "asked to".into(),
            fields: ERASED_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
            through_sequence,
            status,
            roles: BTreeSet::from([Role::User]),
        })
    }

    #[test]
    fn given_registered_when_erase_then_erased_through_the_last_event() {
        let deleted = UserEvent::UserDeleted(UserDeleted {
            reason: "deleted by the user".into(),
            personal: Some(DeletionPersonal {
                reason: "asked to".into(),
            }),
            previous_status: UserStatus::Active,
            roles: BTreeSet::from([Role::User]),
        });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Erase {
                reason: "asked to".into(),
            })
            .then_expect_events(vec![erased(1, UserStatus::Active)]);
        TestFramework::<User>::with(())
            .given(vec![registered(), deleted])
            .when(UserCommand::Erase {
                reason: "asked to".into(),
            })
            .then_expect_events(vec![erased(2, UserStatus::Deleted)]);
    }

    #[test]
    fn given_erased_when_erase_again_then_nothing_is_written() {
        TestFramework::<User>::with(())
            .given(vec![registered(), erased(1, UserStatus::Active)])
            .when(UserCommand::Erase {
                reason: "asked to".into(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn given_erased_when_anything_else_then_erased() {
        for command in [
            UserCommand::Delete {
                reason: "x".into(),
                own_reason: None,
            },
            UserCommand::AssignRole { role: Role::Admin },
            update(Some("Ada"), None, None),
            attempt(0),
        ] {
            TestFramework::<User>::with(())
                .given(vec![registered(), erased(1, UserStatus::Active)])
                .when(command)
                .then_expect_error(UserError::Erased);
        }
    }

    #[test]
    fn events_whose_personal_fields_were_erased_still_load() {
        let stored = json!({"UserRegistered": {
            "personal": null, "roles": ["USER"], "status": "ACTIVE", "password_hash": null
        }});
        let event: UserEvent = serde_json::from_value(stored).unwrap();
        let mut user = User::default();
        user.apply(event);
        user.apply(erased(1, UserStatus::Active));
        let account = user.account.unwrap();
        assert_eq!(account.status, UserStatus::Erased);
        assert_eq!(account.personal, None);
        assert_eq!(account.password_hash, None);
    }
}
