//! The account domain of Accountable: the `User` aggregate, the commands it
//! takes, the events it records, the values they hold and the policies they
//! are decided by.
//!
//! This crate does no I/O and cannot: it depends on cqrs-es, serde, chrono
//! and pure-computation crates only, which `scripts/check-walls.sh` holds
//! with `cargo tree`. Storing, publishing and serving the events are the
//! `accountable` crate's.

pub mod account;
pub mod aggregate;
pub mod commands;
pub mod events;
pub mod policy;
pub mod values;

pub use account::{
    Account, ClientSecret, ClientSecretHash, MailToken, Passkey, PasskeyCredential, PasswordHash,
    Role, Service, Totp, TotpSecret, UnknownName, UserStatus,
};
pub use aggregate::User;
pub use commands::{FactorFlow, LinkFlow, RegisterUser, ServiceFlow, UserCommand, UserError};
pub use events::UserEvent;
pub use policy::{LockoutPolicy, MailPolicy};
