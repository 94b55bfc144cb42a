//! What may be asked of a `User`, and why the aggregate may refuse.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::account::{ClientSecretHash, PasskeyCredential, PasswordHash, Role};
use crate::events::IssuedToken;
use crate::policy::{LockoutPolicy, MailPolicy};
use crate::values::{DisplayName, Email, Locale, PasskeyName, TimeZone};

#[derive(Debug)]
pub struct RegisterUser {
    pub email: Email,
    pub display_name: DisplayName,
    pub password_hash: PasswordHash,
    /// The link that will verify the address.
    pub verification: IssuedToken,
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
    /// A flow that mails a link, or takes one back.
    Link(LinkFlow),
    /// The second factor: set up, used, removed.
    Factor(FactorFlow),
    /// Open a service account (refused where any account is).
    CreateServiceAccount {
        name: DisplayName,
        owner: Uuid,
        roles: BTreeSet<Role>,
        at: DateTime<Utc>,
    },
    Service(ServiceFlow),
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

/// The commands of a service account's secrets.
#[derive(Debug)]
pub enum ServiceFlow {
    IssueSecret {
        secret_id: Uuid,
        prefix: String,
        hash: ClientSecretHash,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    RevokeSecret {
        secret_id: Uuid,
        at: DateTime<Utc>,
    },
}

/// The commands of the flows that prove an address or recover an account
/// through a mailed link.
#[derive(Debug)]
pub enum LinkFlow {
    /// Ask to move to `email`: it becomes the address once `issued`
    /// comes back.
    ChangeEmail {
        email: Email,
        issued: IssuedToken,
        at: DateTime<Utc>,
        policy: MailPolicy,
    },
    /// The link mailed to the new address came back.
    ConfirmEmailChange {
        token_hash: String,
        at: DateTime<Utc>,
    },
    /// Mail a new verification link (an earlier one stops working).
    RequestEmailVerification {
        issued: IssuedToken,
        at: DateTime<Utc>,
        policy: MailPolicy,
    },
    VerifyEmail {
        token_hash: String,
        at: DateTime<Utc>,
    },
    RequestPasswordReset {
        issued: IssuedToken,
        at: DateTime<Utc>,
        policy: MailPolicy,
    },
    /// Set the password through the mailed link.
    ResetPassword {
        token_hash: String,
        password_hash: PasswordHash,
        at: DateTime<Utc>,
    },
    /// Someone tried to register with the account's address.
    NoteRegistrationAttempt {
        at: DateTime<Utc>,
        policy: MailPolicy,
    },
}

/// The commands of the second factor (an authenticator app, TOTP). Codes
/// are checked by the service (it has the clock and the HMAC); the
/// aggregate decides on the time step a code matched.
#[derive(Debug)]
pub enum FactorFlow {
    /// Begin setting up an app with this secret (replaces an unconfirmed
    /// enrollment; refused while one is enabled).
    StartTotp {
        secret: crate::account::TotpSecret,
        at: DateTime<Utc>,
    },
    /// A first code (of time step `step`) confirms the enrollment.
    EnableTotp {
        step: u64,
        recovery_codes: Vec<String>,
        at: DateTime<Utc>,
    },
    DisableTotp {
        at: DateTime<Utc>,
    },
    /// A code of time step `step` was given: accepted once.
    AcceptTotp {
        step: u64,
        at: DateTime<Utc>,
    },
    /// A recovery code (its hash) was given: accepted once.
    UseRecoveryCode {
        code_hash: String,
        at: DateTime<Utc>,
    },
    /// Add a passkey whose registration the service verified (and whose
    /// credential id it claimed for this account).
    RegisterPasskey {
        passkey_id: Uuid,
        name: PasskeyName,
        credential: PasskeyCredential,
        at: DateTime<Utc>,
    },
    RenamePasskey {
        passkey_id: Uuid,
        name: PasskeyName,
        at: DateTime<Utc>,
    },
    /// Refused when it is the account's last way to sign in.
    RemovePasskey {
        passkey_id: Uuid,
        at: DateTime<Utc>,
    },
    /// A signature of the passkey, verified by the service, with its
    /// counter: accepted when the counter went up (or the authenticator
    /// keeps none).
    UsePasskey {
        passkey_id: Uuid,
        counter: u32,
        credential: PasskeyCredential,
        at: DateTime<Utc>,
    },
    /// A signature whose counter did not go up was refused: recorded.
    RefusePasskeyCounter {
        passkey_id: Uuid,
        at: DateTime<Utc>,
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
    /// Unknown, expired, used or superseded: one answer for all.
    #[error("invalid token")]
    InvalidToken,
    #[error("too many mails asked for")]
    TooManyRequests,
    /// A wrong, replayed or unknown second-factor code: one answer for all.
    #[error("invalid code")]
    InvalidCode,
    #[error("an authenticator app is enabled already")]
    TotpAlreadyEnabled,
    #[error("no authenticator app is being set up")]
    NoTotpEnrollment,
    #[error("no such passkey")]
    PasskeyNotFound,
    #[error("the account has as many passkeys as it may")]
    TooManyPasskeys,
    #[error("it is the account's last way to sign in")]
    LastWayToSignIn,
    #[error("this is no service account")]
    NotAServiceAccount,
    #[error("no such client secret")]
    SecretNotFound,
    #[error("the service account has as many live secrets as it may")]
    TooManySecrets,
}
