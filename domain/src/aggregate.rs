//! The `User` aggregate: state + command → events, or a domain rejection.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::account::{Account, Role, UserStatus};
use crate::commands::{UserCommand, UserError};
use crate::events::*;
use crate::policy::LockoutPolicy;

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
    use chrono::Duration;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    use super::*;
    use crate::account::PasswordHash;
    use crate::commands::RegisterUser;
    use crate::values::{DisplayName, Email, Locale, TimeZone};

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
    fn given_registered_when_rehash_then_the_new_hash_is_recorded() {
        let password_hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
        let event = UserEvent::PasswordRehashed(PasswordRehashed {
            password_hash: Some(password_hash.clone()),
        });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::RehashPassword { password_hash })
            .then_expect_events(vec![event.clone()]);
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
    fn given_registered_when_change_password_then_changed() {
        let password_hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
        let event = UserEvent::PasswordChanged(PasswordChanged {
            password_hash: Some(password_hash.clone()),
        });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangePassword { password_hash })
            .then_expect_events(vec![event.clone()]);
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
