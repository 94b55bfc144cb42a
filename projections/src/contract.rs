//! The public event contract, as any downstream consumer reads it from
//! Kafka: the JSON envelope and the data of each event type this crate
//! needs. Declared here with serde, independently of the write side.

use accountable_domain::{Role, UserStatus};
use accountable_vault::EventFields;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

/// One account event: the message value on `accountable.user.events`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// Stable across re-deliveries: `<user id>/<sequence>`.
    pub id: String,
    /// Versioned CloudEvents type, e.g. `accountable.user.registered.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The user id; also the message key.
    pub subject: Uuid,
    pub time: DateTime<Utc>,
    /// The event's number in its user's stream, from 1 without gaps.
    pub sequence: i64,
    /// The event's place in the global order of the store.
    pub position: i64,
    /// The relay's generation: raised each time it writes the topic anew
    /// from the event store (1 when absent, as in the store's own form).
    #[serde(default = "first_generation")]
    pub generation: i64,
    pub data: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("malformed envelope: {}", without_values(.0))]
    Envelope(serde_json::Error),
    #[error("sealed personal data does not open: {0}")]
    Sealed(String),
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("malformed data of {event_type}: {}", without_values(.source))]
    Data {
        event_type: String,
        source: serde_json::Error,
    },
}

/// What is wrong with a JSON document, without the values serde quotes in
/// its messages (they may be opened personal data, and these messages are
/// kept in dead letters and logs).
fn without_values(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a field is missing or of the wrong type",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind} (line {}, column {})", error.line(), error.column())
}

fn first_generation() -> i64 {
    1
}

impl Envelope {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ContractError> {
        serde_json::from_slice(bytes).map_err(ContractError::Envelope)
    }

    /// The data as the vault sees it, to open its sealed fields in place.
    pub fn sealed_fields(&mut self) -> Option<EventFields<'_>> {
        let (user_id, sequence) = (self.subject, self.sequence);
        self.data.as_object_mut().map(|fields| EventFields {
            user_id,
            sequence,
            fields,
        })
    }

    /// The typed event this envelope carries.
    pub fn event(&self) -> Result<AccountEvent, ContractError> {
        let data = |source| ContractError::Data {
            event_type: self.event_type.clone(),
            source,
        };
        let value = self.data.clone();
        match self.event_type.as_str() {
            REGISTERED_V1 => serde_json::from_value(value).map(AccountEvent::Registered),
            LOGIN_ATTEMPTED_V1 => serde_json::from_value(value).map(AccountEvent::LoginAttempted),
            LOGIN_SUCCEEDED_V1 => serde_json::from_value(value).map(AccountEvent::LoginSucceeded),
            LOCKED_V1 => serde_json::from_value(value).map(AccountEvent::Locked),
            UNLOCKED_V1 => serde_json::from_value(value).map(AccountEvent::Unlocked),
            PASSWORD_REHASHED_V1 => Ok(AccountEvent::PasswordRehashed),
            PASSWORD_CHANGED_V1 => Ok(AccountEvent::PasswordChanged),
            EMAIL_CHANGED_V1 => serde_json::from_value(value).map(AccountEvent::EmailChanged),
            DEACTIVATED_V1 => Ok(AccountEvent::Deactivated),
            REACTIVATED_V1 => Ok(AccountEvent::Reactivated),
            DELETED_V1 | DELETED_V2 => Ok(AccountEvent::Deleted),
            ROLE_ASSIGNED_V1 => serde_json::from_value(value).map(AccountEvent::RoleAssigned),
            ROLE_REVOKED_V1 => serde_json::from_value(value).map(AccountEvent::RoleRevoked),
            PROFILE_UPDATED_V1 => serde_json::from_value(value).map(AccountEvent::ProfileUpdated),
            ERASED_V1 => serde_json::from_value(value).map(AccountEvent::Erased),
            EMAIL_VERIFIED_V1 => serde_json::from_value(value).map(AccountEvent::EmailVerified),
            PASSWORD_RESET_V1 => serde_json::from_value(value).map(AccountEvent::PasswordReset),
            EMAIL_VERIFICATION_REQUESTED_V1
            | PASSWORD_RESET_REQUESTED_V1
            | PASSWORD_RESET_REFUSED_V1
            | EMAIL_CHANGE_REQUESTED_V1
            | REGISTRATION_ATTEMPTED_V1 => {
                serde_json::from_value(value).map(AccountEvent::MailRequested)
            }
            TOTP_ENROLLMENT_STARTED_V1
            | TOTP_ENABLED_V1
            | TOTP_DISABLED_V1
            | TOTP_CODE_ACCEPTED_V1
            | RECOVERY_CODE_USED_V1
            | PASSKEY_REGISTERED_V1
            | PASSKEY_RENAMED_V1
            | PASSKEY_REMOVED_V1
            | PASSKEY_USED_V1
            | PASSKEY_COUNTER_REGRESSED_V1 => {
                serde_json::from_value(value).map(AccountEvent::SecondFactor)
            }
            SERVICE_ACCOUNT_CREATED_V1 => {
                serde_json::from_value(value).map(AccountEvent::ServiceAccountCreated)
            }
            CLIENT_SECRET_ISSUED_V1 | CLIENT_SECRET_REVOKED_V1 => {
                serde_json::from_value(value).map(AccountEvent::ClientSecret)
            }
            other => return Err(ContractError::UnknownType(other.to_owned())),
        }
        .map_err(data)
    }
}

pub const REGISTERED_V1: &str = "accountable.user.registered.v1";
pub const LOGIN_ATTEMPTED_V1: &str = "accountable.user.login_attempted.v1";
pub const LOGIN_SUCCEEDED_V1: &str = "accountable.user.login_succeeded.v1";
pub const LOCKED_V1: &str = "accountable.user.locked.v1";
pub const UNLOCKED_V1: &str = "accountable.user.unlocked.v1";
pub const PASSWORD_REHASHED_V1: &str = "accountable.user.password_rehashed.v1";
pub const PASSWORD_CHANGED_V1: &str = "accountable.user.password_changed.v1";
pub const EMAIL_CHANGED_V1: &str = "accountable.user.email_changed.v1";
pub const DEACTIVATED_V1: &str = "accountable.user.deactivated.v1";
pub const REACTIVATED_V1: &str = "accountable.user.reactivated.v1";
/// Published by versions before `previous_status`; still on topics.
pub const DELETED_V1: &str = "accountable.user.deleted.v1";
pub const DELETED_V2: &str = "accountable.user.deleted.v2";
pub const ROLE_ASSIGNED_V1: &str = "accountable.user.role_assigned.v1";
pub const ROLE_REVOKED_V1: &str = "accountable.user.role_revoked.v1";
pub const PROFILE_UPDATED_V1: &str = "accountable.user.profile_updated.v1";
pub const ERASED_V1: &str = "accountable.user.erased.v1";
pub const EMAIL_VERIFICATION_REQUESTED_V1: &str =
    "accountable.user.email_verification_requested.v1";
pub const EMAIL_VERIFIED_V1: &str = "accountable.user.email_verified.v1";
pub const PASSWORD_RESET_REQUESTED_V1: &str = "accountable.user.password_reset_requested.v1";
pub const PASSWORD_RESET_REFUSED_V1: &str = "accountable.user.password_reset_refused.v1";
pub const PASSWORD_RESET_V1: &str = "accountable.user.password_reset.v1";
pub const EMAIL_CHANGE_REQUESTED_V1: &str = "accountable.user.email_change_requested.v1";
pub const REGISTRATION_ATTEMPTED_V1: &str = "accountable.user.registration_attempted.v1";
pub const TOTP_ENROLLMENT_STARTED_V1: &str = "accountable.user.totp_enrollment_started.v1";
pub const TOTP_ENABLED_V1: &str = "accountable.user.totp_enabled.v1";
pub const TOTP_DISABLED_V1: &str = "accountable.user.totp_disabled.v1";
pub const TOTP_CODE_ACCEPTED_V1: &str = "accountable.user.totp_code_accepted.v1";
pub const RECOVERY_CODE_USED_V1: &str = "accountable.user.recovery_code_used.v1";
pub const PASSKEY_REGISTERED_V1: &str = "accountable.user.passkey_registered.v1";
pub const PASSKEY_RENAMED_V1: &str = "accountable.user.passkey_renamed.v1";
pub const PASSKEY_REMOVED_V1: &str = "accountable.user.passkey_removed.v1";
pub const PASSKEY_USED_V1: &str = "accountable.user.passkey_used.v1";
pub const PASSKEY_COUNTER_REGRESSED_V1: &str = "accountable.user.passkey_counter_regressed.v1";
pub const SERVICE_ACCOUNT_CREATED_V1: &str = "accountable.user.service_account_created.v1";
pub const CLIENT_SECRET_ISSUED_V1: &str = "accountable.user.client_secret_issued.v1";
pub const CLIENT_SECRET_REVOKED_V1: &str = "accountable.user.client_secret_revoked.v1";

#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Registered(Registered),
    /// A password check began; counted as a failure until a success.
    LoginAttempted(LoginAttempted),
    LoginSucceeded(LoginSucceeded),
    /// Too many failures: no login until `until`.
    Locked(Locked),
    /// An admin lifted the lock; failures are forgotten.
    Unlocked(Unlocked),
    /// The password hash was recomputed; the hash itself is never published.
    PasswordRehashed,
    /// The user set a new password; the hash is never published.
    PasswordChanged,
    ProfileUpdated(ProfileUpdated),
    RoleAssigned(RoleChange),
    RoleRevoked(RoleChange),
    EmailChanged(EmailChanged),
    Deactivated,
    Reactivated,
    /// The account is gone from read sides; its history stays.
    Deleted,
    /// The user's personal data is unreadable for good: read sides drop it.
    Erased(Erased),
    /// The owner proved the current address.
    EmailVerified(At),
    /// The password was set through a mailed link; sessions ended.
    PasswordReset(At),
    /// A mail was asked for (verification, reset, change of address,
    /// sign-up notice) or a reset link was refused: the account is as it
    /// was. What the mail holds is never published.
    MailRequested(At),
    /// The second factor was set up, enabled, removed or used; nothing of
    /// it is published but when.
    SecondFactor(At),
    /// An account of a machine: a name, roles, no address, no password.
    ServiceAccountCreated(ServiceAccountCreated),
    /// A client secret of a service account was issued or revoked.
    ClientSecret(At),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceAccountCreated {
    pub name: String,
    pub roles: Vec<Role>,
}

/// When something happened.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct At {
    pub at: DateTime<Utc>,
}

/// Fields that identify a person. Published sealed (see
/// `accountable_vault`); `None` here once opened means erased.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Personal {
    pub email: String,
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Registered {
    pub personal: Option<Personal>,
    pub roles: Vec<Role>,
    pub status: UserStatus,
    /// Absent from registrations published before addresses were
    /// verified, which count as verified.
    #[serde(default = "verified_before_verification_existed")]
    pub email_verified: bool,
}

fn verified_before_verification_existed() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LoginAttempted {
    pub at: DateTime<Utc>,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LoginSucceeded {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Unlocked {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Locked {
    pub at: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub failures: u32,
}

/// Only the fields that changed are present (`null` = unchanged).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProfilePersonal {
    pub display_name: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProfileUpdated {
    /// `None` once erased.
    pub personal: Option<ProfilePersonal>,
}

/// A role given or taken: `USER`, `AUDITOR` or `ADMIN`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RoleChange {
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EmailPersonal {
    pub email: String,
}

/// The new address only (the old one is personal data of the past).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EmailChanged {
    /// `None` once erased.
    pub personal: Option<EmailPersonal>,
}

/// What was erased: the names of the fields made unreadable in every
/// event up to `through_sequence`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Erased {
    pub fields: Vec<String>,
    pub through_sequence: i64,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_refused_event_never_quotes_its_values() {
        let raw = serde_json::json!({
            "id": "x/1", "type": PROFILE_UPDATED_V1, "subject": "0190a3c2-0000-7000-8000-000000000001",
            "time": "2026-11-21T10:00:00Z", "sequence": 1, "position": 1,
            "data": {"personal": {"display_name": ["ada@example.com"]}}
        });
        let envelope = Envelope::from_slice(raw.to_string().as_bytes()).unwrap();
        let error = envelope.event().unwrap_err().to_string();
        assert!(error.starts_with("malformed data of"), "{error}");
        assert!(!error.contains("ada@example.com"), "{error}");
        let error = Envelope::from_slice(br#"{"id": "ada@example.com""#)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("ada@example.com"), "{error}");
    }

    proptest! {
        /// Whatever is on the topic, reading it answers a value or an error.
        #[test]
        fn any_bytes_read_as_an_envelope_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(envelope) = Envelope::from_slice(&bytes) {
                let _ = envelope.event();
            }
        }

        #[test]
        fn any_data_of_a_known_type_reads_or_is_refused(
            event_type in proptest::sample::select(vec![REGISTERED_V1, LOCKED_V1, PROFILE_UPDATED_V1, ERASED_V1, DELETED_V2]),
            data in "\\PC{0,64}",
        ) {
            let raw = serde_json::json!({
                "id": "x/1", "type": event_type, "subject": "0190a3c2-0000-7000-8000-000000000001",
                "time": "2026-11-21T10:00:00Z", "sequence": 1, "position": 1, "data": {"personal": data}
            });
            let envelope = Envelope::from_slice(raw.to_string().as_bytes()).unwrap();
            let _ = envelope.event();
        }
    }
}
