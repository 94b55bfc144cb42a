//! The events of a `User`: what happened, in the words the store keeps.
//! Their published form is the publishing side's (`accountable::events`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::account::{
    ClientSecretHash, MailToken, PasskeyCredential, PasswordHash, Role, TotpSecret, UserStatus,
};
use crate::values::{DisplayName, Email, Locale, PasskeyName, TimeZone};

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
    /// Whether the address was verified at registration: never now (a
    /// verification is requested with it). Registrations recorded before
    /// addresses were verified count as verified: their owners signed up
    /// under rules that did not ask, and must not be locked out.
    #[serde(default = "verified_before_verification_existed")]
    pub email_verified: bool,
    /// The link mailed to verify the address (`None` in registrations
    /// recorded before addresses were verified). The token is sealed.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub verification: Option<IssuedToken>,
}

fn verified_before_verification_existed() -> bool {
    true
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
/// (see the `accountable` crate's `store::upcast`).
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

/// Who a mail goes to: the address and the name to greet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub email: Email,
    pub display_name: DisplayName,
}

/// A one-time token that a mail carries: its hash, to check what comes
/// back, and the token itself, sealed, for the mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// SHA-256 of the token's secret part, in hex.
    pub token_hash: String,
    /// Secret: sealed, never published; `None` once erased.
    pub token: Option<MailToken>,
    pub expires_at: DateTime<Utc>,
}

/// A new verification mail is due: its link proves the address (the last
/// one asked for; an earlier one, that of the registration included, no
/// longer works).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailVerificationRequested {
    pub at: DateTime<Utc>,
    /// `None` once erased.
    pub personal: Option<Recipient>,
    #[serde(flatten)]
    pub issued: IssuedToken,
}

/// The owner of the address followed the link: it is theirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailVerified {
    pub at: DateTime<Utc>,
}

/// Someone asked to reset the password: a mail with a link is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordResetRequested {
    pub at: DateTime<Utc>,
    /// `None` once erased.
    pub personal: Option<Recipient>,
    #[serde(flatten)]
    pub issued: IssuedToken,
}

/// A reset was tried with the wrong secret; at the limit the request is
/// void.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordResetRefused {
    pub at: DateTime<Utc>,
    /// Wrong tries of the current request, this one included.
    pub failures: u32,
}

/// The password was set through a reset link: every session ends and a
/// lock is lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordReset {
    pub at: DateTime<Utc>,
    /// Secret: never published; `None` once erased.
    pub password_hash: Option<PasswordHash>,
}

/// The personal part of an email change request: where to, and from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChangePersonal {
    pub email: Email,
    pub previous_email: Email,
    pub display_name: DisplayName,
}

/// A change of address was asked for: it happens when the new address is
/// confirmed (a mail with a link goes to it, a notice to the current one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChangeRequested {
    pub at: DateTime<Utc>,
    /// `None` once erased.
    pub personal: Option<EmailChangePersonal>,
    #[serde(flatten)]
    pub issued: IssuedToken,
}

/// Someone tried to register with this account's address: its owner gets
/// a notice (the one who tried learns nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationAttempted {
    pub at: DateTime<Utc>,
    /// `None` once erased.
    pub personal: Option<Recipient>,
}

/// An authenticator app is being set up: its secret, until a first code
/// confirms it (a new enrollment replaces this one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpEnrollmentStarted {
    pub at: DateTime<Utc>,
    /// Secret: sealed, never published; `None` once erased.
    pub secret: Option<TotpSecret>,
}

/// A first code confirmed the app: sign-in needs a second factor now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpEnabled {
    pub at: DateTime<Utc>,
    /// The time step of the confirming code (accepted once).
    pub step: u64,
    /// Secret: hashes of the ten recovery codes, sealed, never published;
    /// `None` once erased.
    pub recovery_codes: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpDisabled {
    pub at: DateTime<Utc>,
}

/// A code of the app was accepted (sign-in, re-authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpCodeAccepted {
    pub at: DateTime<Utc>,
    pub step: u64,
}

/// A recovery code stood in for the app; it works no more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCodeUsed {
    pub at: DateTime<Utc>,
    /// Its place among the codes not used before.
    pub index: usize,
    /// Codes left.
    pub remaining: usize,
}

/// A passkey was added: it signs in on its own, and stands in for the
/// app's code in a sign-in's second step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyRegistered {
    pub at: DateTime<Utc>,
    pub passkey_id: Uuid,
    /// Sealed, never published; `None` once erased.
    pub passkey_name: Option<PasskeyName>,
    /// Sealed, never published; `None` once erased.
    pub credential: Option<PasskeyCredential>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyRenamed {
    pub at: DateTime<Utc>,
    pub passkey_id: Uuid,
    /// Sealed, never published; `None` once erased.
    pub passkey_name: Option<PasskeyName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyRemoved {
    pub at: DateTime<Utc>,
    pub passkey_id: Uuid,
}

/// A passkey's signature was accepted (sign-in, second step,
/// re-authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyUsed {
    pub at: DateTime<Utc>,
    pub passkey_id: Uuid,
    /// The signature counter it signed with.
    pub counter: u32,
    /// The credential as it is now (its counter); sealed, never
    /// published; `None` once erased.
    pub credential: Option<PasskeyCredential>,
}

/// A signature of a passkey came with a counter that did not go up: the
/// sign of a cloned authenticator. It was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyCounterRegressed {
    pub at: DateTime<Utc>,
    pub passkey_id: Uuid,
    /// The counter of the last accepted signature.
    pub stored_counter: u32,
}

/// A service account was created: an account of a machine, with no address
/// and no password. Its name is no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountCreated {
    pub at: DateTime<Utc>,
    pub name: DisplayName,
    /// The admin who created it.
    pub owner: Uuid,
    pub roles: BTreeSet<Role>,
}

/// A client secret was issued to a service account (answered once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecretIssued {
    pub at: DateTime<Utc>,
    pub secret_id: Uuid,
    /// Its first characters, to tell it by.
    pub prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Secret: sealed, never published; `None` once erased.
    pub secret_hash: Option<ClientSecretHash>,
}

/// A client secret works no more; the account's tokens issued before are
/// refused at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecretRevoked {
    pub at: DateTime<Utc>,
    pub secret_id: Uuid,
}

/// The personal fields every earlier event of the user holds.
pub const ERASED_FIELDS: [&str; 12] = [
    "email",
    "previous_email",
    "display_name",
    "locale",
    "time_zone",
    "password_hash",
    "token",
    "secret",
    "recovery_codes",
    "passkey_name",
    "credential",
    "secret_hash",
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
    EmailVerificationRequested(EmailVerificationRequested),
    EmailVerified(EmailVerified),
    PasswordResetRequested(PasswordResetRequested),
    PasswordResetRefused(PasswordResetRefused),
    PasswordReset(PasswordReset),
    EmailChangeRequested(EmailChangeRequested),
    RegistrationAttempted(RegistrationAttempted),
    TotpEnrollmentStarted(TotpEnrollmentStarted),
    TotpEnabled(TotpEnabled),
    TotpDisabled(TotpDisabled),
    TotpCodeAccepted(TotpCodeAccepted),
    RecoveryCodeUsed(RecoveryCodeUsed),
    PasskeyRegistered(PasskeyRegistered),
    PasskeyRenamed(PasskeyRenamed),
    PasskeyRemoved(PasskeyRemoved),
    PasskeyUsed(PasskeyUsed),
    PasskeyCounterRegressed(PasskeyCounterRegressed),
    ServiceAccountCreated(ServiceAccountCreated),
    ClientSecretIssued(ClientSecretIssued),
    ClientSecretRevoked(ClientSecretRevoked),
}

impl UserEvent {
    /// Whether the event ends the user's sessions, or lets new ones start
    /// again: a new password (changed or reset), a role taken, the account
    /// closed or reopened.
    /// The store ends them in the event's own transaction.
    pub fn changes_sessions(&self) -> bool {
        matches!(
            self,
            Self::PasswordChanged(_)
                | Self::PasswordReset(_)
                | Self::RoleRevoked(_)
                | Self::UserDeactivated(_)
                | Self::UserReactivated(_)
                | Self::UserDeleted(_)
                | Self::UserErased(_)
                | Self::ClientSecretRevoked(_)
        )
    }
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
            Self::EmailVerificationRequested(_) => "EmailVerificationRequested",
            Self::EmailVerified(_) => "EmailVerified",
            Self::PasswordResetRequested(_) => "PasswordResetRequested",
            Self::PasswordResetRefused(_) => "PasswordResetRefused",
            Self::PasswordReset(_) => "PasswordReset",
            Self::EmailChangeRequested(_) => "EmailChangeRequested",
            Self::RegistrationAttempted(_) => "RegistrationAttempted",
            Self::TotpEnrollmentStarted(_) => "TotpEnrollmentStarted",
            Self::TotpEnabled(_) => "TotpEnabled",
            Self::TotpDisabled(_) => "TotpDisabled",
            Self::TotpCodeAccepted(_) => "TotpCodeAccepted",
            Self::RecoveryCodeUsed(_) => "RecoveryCodeUsed",
            Self::PasskeyRegistered(_) => "PasskeyRegistered",
            Self::PasskeyRenamed(_) => "PasskeyRenamed",
            Self::PasskeyRemoved(_) => "PasskeyRemoved",
            Self::PasskeyUsed(_) => "PasskeyUsed",
            Self::PasskeyCounterRegressed(_) => "PasskeyCounterRegressed",
            Self::ServiceAccountCreated(_) => "ServiceAccountCreated",
            Self::ClientSecretIssued(_) => "ClientSecretIssued",
            Self::ClientSecretRevoked(_) => "ClientSecretRevoked",
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
