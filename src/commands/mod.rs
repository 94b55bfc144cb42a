//! The command service: every change to an account goes through
//! [`Users`], which parses client input, hashes passwords, runs the
//! command on the `User` aggregate (the `accountable-domain` crate) against
//! the event store, and sees to its consequences.

mod admins;
mod context;
mod emails;
mod error;
pub mod factors;
mod input;
pub mod links;
pub mod passkeys;
pub mod password;
mod service;
pub mod service_accounts;

pub use context::{Actor, CommandContext, Origin};
pub use error::CommandError;
pub use input::{ProfileChange, Reason, Registration};
pub use service::{Executed, Users};

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes` in lower-case hex: how the command service keeps
/// a secret it need only recognise (a mailed link's token, a recovery code,
/// a client secret) and a credential id it indexes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::audit::chain::hex(&Sha256::digest(bytes))
}
