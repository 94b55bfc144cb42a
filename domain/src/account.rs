//! What an account is: its roles, its status, its secret, and the state the
//! aggregate decides from.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::PersonalData;
use crate::policy::MailPolicy;
use crate::values::{DisplayName, Email, Locale, PasskeyName, TimeZone};

/// What a user may do beyond managing their own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    User,
    Auditor,
    Admin,
}

impl Role {
    pub const ALL: [Self; 3] = [Self::User, Self::Auditor, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Auditor => "AUDITOR",
            Self::Admin => "ADMIN",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or(UnknownName("role"))
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
    pub const ALL: [Self; 4] = [Self::Active, Self::Deactivated, Self::Deleted, Self::Erased];

    /// Deleted or erased: the read side no longer shows the account.
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Deleted | Self::Erased)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Deactivated => "DEACTIVATED",
            Self::Deleted => "DELETED",
            Self::Erased => "ERASED",
        }
    }
}

impl FromStr for UserStatus {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
            .ok_or(UnknownName("status"))
    }
}

/// A name that is none of a type's (`role`, `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no such {0}")]
pub struct UnknownName(pub &'static str);

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

/// A one-time token as a mail carries it (in a link). Never printed, never
/// published; in events it is sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MailToken(String);

impl MailToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token, for the mail only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MailToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MailToken(***)")
    }
}

/// A TOTP secret (RFC 6238), in base32. Never printed, never published; in
/// events it is sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TotpSecret(String);

impl TotpSecret {
    pub fn new(base32: String) -> Self {
        Self(base32)
    }

    /// The secret, to check a code with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(***)")
    }
}

/// The account's authenticator app (TOTP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totp {
    /// `None` once erased.
    pub secret: Option<TotpSecret>,
    /// Whether a first code confirmed it: until then it is an enrollment.
    pub enabled: bool,
    /// The last time step accepted: a code is accepted once.
    pub last_step: u64,
    /// Hashes of the recovery codes not used yet.
    pub recovery_codes: Vec<String>,
}

impl Totp {
    /// Whether sign-in needs a second factor.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// A passkey's public-key credential as the WebAuthn library keeps it
/// (its JSON): opaque here. Never printed, never published; in events it
/// is sealed, so an erasure destroys it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasskeyCredential(String);

impl PasskeyCredential {
    pub fn new(json: String) -> Self {
        Self(json)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasskeyCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasskeyCredential(***)")
    }
}

/// One of the account's passkeys (WebAuthn credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passkey {
    pub id: Uuid,
    /// What the user calls it; `None` once erased.
    pub name: Option<PasskeyName>,
    /// `None` once erased.
    pub credential: Option<PasskeyCredential>,
    /// The authenticator's signature counter as last seen (0: it keeps
    /// none).
    pub counter: u32,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Passkey {
    /// Whether an assertion with signature counter `counter` may be
    /// accepted: a counter that does not go up shows a cloned
    /// authenticator, unless the authenticator keeps none (0 both times).
    pub fn accepts_counter(&self, counter: u32) -> bool {
        (counter == 0 && self.counter == 0) || counter > self.counter
    }
}

/// The SHA-256 of a service account's client secret, in hex (the secret is
/// 256 random bits: a slow hash adds nothing). Never printed, never
/// published; in events it is sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientSecretHash(String);

impl ClientSecretHash {
    pub fn new(hex: String) -> Self {
        Self(hex)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecretHash(***)")
    }
}

/// One client secret of a service account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecret {
    pub id: Uuid,
    /// Its first characters, to tell it by.
    pub prefix: String,
    /// `None` once erased.
    pub hash: Option<ClientSecretHash>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ClientSecret {
    /// Whether it may be used at `at`.
    pub fn is_live(&self, at: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| at < expires)
    }
}

/// What makes an account a service account: a machine's, with no address
/// and no password, signing in with client secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: DisplayName,
    /// The admin who created it.
    pub owner: Uuid,
    pub created_at: DateTime<Utc>,
    /// Every secret issued, revoked ones included, oldest first.
    pub secrets: Vec<ClientSecret>,
}

/// A token that was mailed and may still come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub token_hash: String,
    pub expires_at: DateTime<Utc>,
    /// Wrong tries so far.
    #[serde(default)]
    pub failures: u32,
}

impl Pending {
    /// Whether `token_hash` is this token's, before it expired.
    pub fn accepts(&self, token_hash: &str, at: DateTime<Utc>) -> bool {
        at < self.expires_at && self.token_hash == token_hash
    }
}

/// What a mail that was asked for is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailKind {
    Verification,
    Reset,
    EmailChange,
    RegistrationNotice,
}

/// A mail asked for, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailRequest {
    pub at: DateTime<Utc>,
    pub kind: MailKind,
}

/// An address the user asked to move to, waiting for its confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEmail {
    pub email: Email,
    pub token: Pending,
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
    /// Whether the owner proved the current address (accounts from before
    /// verification existed count as verified).
    #[serde(default = "verified_before_verification_existed")]
    pub email_verified: bool,
    /// The verification link mailed last, until it is used.
    #[serde(default)]
    pub pending_verification: Option<Pending>,
    /// The reset link mailed last, until it is used or void.
    #[serde(default)]
    pub pending_reset: Option<Pending>,
    /// The address the user asked to move to, until confirmed.
    #[serde(default)]
    pub pending_email: Option<PendingEmail>,
    /// The mails of the last day that were asked for, oldest first.
    #[serde(default)]
    pub mail_requests: Vec<MailRequest>,
    /// The authenticator app, enrolled or enabled.
    #[serde(default)]
    pub totp: Option<Totp>,
    /// The passkeys, oldest first.
    #[serde(default)]
    pub passkeys: Vec<Passkey>,
    /// What makes it a service account, if it is one.
    #[serde(default)]
    pub service: Option<Service>,
}

fn verified_before_verification_existed() -> bool {
    true
}

impl Account {
    /// An account just opened with `roles` in `status`: nothing else yet.
    pub(crate) fn opened(roles: BTreeSet<Role>, status: UserStatus) -> Self {
        Self {
            personal: None,
            roles,
            status,
            password_hash: None,
            failed_attempts: 0,
            last_failure_at: None,
            lockouts: 0,
            locked_until: None,
            locale: None,
            time_zone: None,
            email_verified: false,
            pending_verification: None,
            pending_reset: None,
            pending_email: None,
            mail_requests: Vec::new(),
            totp: None,
            passkeys: Vec::new(),
            service: None,
        }
    }

    pub fn is_locked(&self, at: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| until > at)
    }

    /// Whether signing in needs a second factor after the password. A
    /// passkey signs in on its own and can stand in for the app's code;
    /// it does not make the password need a second factor.
    pub fn needs_second_factor(&self) -> bool {
        self.totp.as_ref().is_some_and(Totp::is_enabled)
    }

    pub fn passkey(&self, id: Uuid) -> Option<&Passkey> {
        self.passkeys.iter().find(|passkey| passkey.id == id)
    }

    /// How many ways the account can be signed in to: its password and
    /// each passkey.
    pub fn ways_to_sign_in(&self) -> usize {
        usize::from(self.password_hash.is_some()) + self.passkeys.len()
    }

    /// Whether the policy lets the user ask for another mail of `kind` at
    /// `at`: a while after the last of the same kind, and not too many of
    /// any kind in the window.
    pub fn may_request_mail(&self, at: DateTime<Utc>, kind: MailKind, policy: MailPolicy) -> bool {
        let recent = self
            .mail_requests
            .iter()
            .filter(|request| at - request.at < policy.window);
        let spaced = recent
            .clone()
            .filter(|request| request.kind == kind)
            .all(|request| at - request.at >= policy.min_interval);
        spaced && recent.count() < policy.per_window
    }

    /// Remembers a mail asked for at `at`, forgetting those older than a
    /// day.
    pub(crate) fn note_mail_request(&mut self, at: DateTime<Utc>, kind: MailKind) {
        let day = chrono::Duration::days(1);
        self.mail_requests.retain(|request| at - request.at < day);
        self.mail_requests.push(MailRequest { at, kind });
    }
}
