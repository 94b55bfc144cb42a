//! Accounts: the `User` aggregate, its input types and the service that runs
//! its commands.

pub mod aggregate;
pub mod password;
pub mod sealed_store;
pub mod service;
pub mod upcast;
pub mod values;

pub use aggregate::{Account, Role, User, UserEvent, UserStatus};
pub use service::{
    Actor, CommandContext, CommandError, Executed, ProfileChange, Reason, Registration, Users,
};
