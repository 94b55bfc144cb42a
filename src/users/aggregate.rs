//! The `User` aggregate: state + command → events, or a domain rejection.

use std::collections::BTreeSet;
use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::values::{DisplayName, Email};

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
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
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
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(***)")
    }
}

/// The fields of an event that identify a person, kept apart from the rest
/// so that they can be encrypted and erased as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    pub email: Email,
    pub display_name: DisplayName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub personal: PersonalData,
    pub roles: BTreeSet<Role>,
    pub status: UserStatus,
    /// Secret: kept in the store for authentication, never published.
    pub password_hash: PasswordHash,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered(UserRegistered),
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered(_) => "UserRegistered",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
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
        }
    }
}

#[derive(Debug)]
pub struct RegisterUser {
    pub email: Email,
    pub display_name: DisplayName,
    pub password_hash: PasswordHash,
}

#[derive(Debug)]
pub enum UserCommand {
    Register(RegisterUser),
}

/// A command the aggregate refuses; each maps to one client-facing code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("this user is already registered")]
    AlreadyRegistered,
}

/// The current state of one account, as the write side needs it to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub personal: PersonalData,
    pub roles: BTreeSet<Role>,
    pub status: UserStatus,
    pub password_hash: PasswordHash,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `None` until registered.
    pub account: Option<Account>,
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
        match command {
            UserCommand::Register(cmd) => {
                if self.account.is_some() {
                    return Err(UserError::AlreadyRegistered);
                }
                let event = UserEvent::UserRegistered(UserRegistered {
                    personal: PersonalData {
                        email: cmd.email,
                        display_name: cmd.display_name,
                    },
                    roles: BTreeSet::from([Role::User]),
                    status: UserStatus::Active,
                    password_hash: cmd.password_hash,
                });
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered(e) => {
                self.account = Some(Account {
                    personal: e.personal,
                    roles: e.roles,
                    status: e.status,
                    password_hash: e.password_hash,
                });
            }
        }
    }
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
            personal: PersonalData {
                email: cmd.email,
                display_name: cmd.display_name,
            },
            roles: BTreeSet::from([Role::User]),
            status: UserStatus::Active,
            password_hash: cmd.password_hash,
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
}
