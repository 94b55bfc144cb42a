//! What an account is: its roles, its status, its secret, and the state the
//! aggregate decides from.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::PersonalData;
use crate::values::{Locale, TimeZone};

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
