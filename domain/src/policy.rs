//! The rules a command is decided by that the deployment may tune.

use chrono::Duration;

/// The most passkeys one account may hold (each is read at every passkey
/// sign-in of the account).
pub const MAX_PASSKEYS: usize = 20;

/// The most live client secrets one service account may hold (two cover a
/// rotation).
pub const MAX_LIVE_SECRETS: usize = 5;

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

/// How often a user may cause mail (verification, reset, change of
/// address, sign-up notices): one a minute, ten a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailPolicy {
    pub min_interval: Duration,
    pub per_window: usize,
    pub window: Duration,
}

impl Default for MailPolicy {
    fn default() -> Self {
        Self {
            min_interval: Duration::minutes(1),
            per_window: 10,
            window: Duration::days(1),
        }
    }
}

/// Wrong tries that void a password reset request.
pub const MAX_RESET_FAILURES: u32 = 5;
