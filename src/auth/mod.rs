//! Authentication: argon2id passwords (in [`crate::commands::password`]),
//! login with lockout, EdDSA access tokens with a JWKS, rotating refresh
//! tokens, and per-client rate limits.

pub mod challenges;
pub mod clients;
pub mod clock;
pub mod cutoffs;
pub mod keys;
mod passkey_flows;
pub mod passkeys;
pub mod ratelimit;
pub mod service;
pub mod sessions;
pub mod tokens;

pub use clock::Clock;
pub use service::{Auth, AuthError, Caller, LoggedIn, Registered, Reproof, SignedIn};
