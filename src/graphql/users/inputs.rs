//! What account mutations take.

use async_graphql::{InputObject, ID};

use super::*;

/// A new account.
#[derive(InputObject)]
pub struct RegisterInput {
    /// The sign-in address; at most 254 characters.
    pub email: String,
    /// 15 to 256 characters, not a commonly used password; compared after
    /// NFKC normalisation.
    pub password: String,
    /// 1 to 100 characters, no control characters.
    pub display_name: String,
}

/// Credentials to sign in with.
#[derive(InputObject)]
pub struct LoginInput {
    /// The address the account signs in with.
    pub email: String,
    /// The account's password.
    pub password: String,
}

/// Parts of a profile to change; what is left out stays as it is.
#[derive(InputObject)]
pub struct UpdateProfileInput {
    /// The user to change: oneself, or anyone for an admin.
    pub id: ID,
    /// 1 to 100 characters.
    pub display_name: Option<String>,
    /// A language tag such as `en-GB`.
    pub locale: Option<String>,
    /// An IANA time zone such as `Europe/London`.
    pub time_zone: Option<String>,
    /// The version the change is based on; another current version answers
    /// `CONFLICT` with `currentVersion`, and nothing is written.
    pub expected_version: Option<i64>,
}

/// A new sign-in address.
#[derive(InputObject)]
pub struct ChangeEmailInput {
    /// Oneself, or anyone for an admin.
    pub id: ID,
    /// The new address: it becomes the account's when the link mailed to
    /// it comes back (`confirmEmailChange`).
    pub email: String,
    /// The version the change is based on (see `UpdateProfileInput`).
    pub expected_version: Option<i64>,
}

/// An address to mail.
#[derive(InputObject)]
pub struct EmailInput {
    /// The address, as the account signs in with it.
    pub email: String,
}

/// The token of a mailed link (at most 128 characters).
#[derive(InputObject)]
pub struct TokenInput {
    /// The `token` parameter of the link.
    pub token: String,
}

/// A reset link's token and the password to set.
#[derive(InputObject)]
pub struct ResetPasswordInput {
    /// The `token` of the link.
    pub token: String,
    /// As at registration: 15 to 256 characters, not a commonly used one.
    pub new_password: String,
}

/// A user to act on, why, and from which version.
#[derive(InputObject)]
pub struct UserRefInput {
    /// The user to act on.
    pub id: ID,
    /// Why (1 to 500 characters); kept in the event. Required to deactivate
    /// or reactivate.
    pub reason: Option<String>,
    /// The version the change is based on (see `UpdateProfileInput`).
    pub expected_version: Option<i64>,
}

/// A role to give or take.
#[derive(InputObject)]
pub struct RoleInput {
    /// The user who gains or loses the role.
    pub id: ID,
    /// The role; `USER` cannot be revoked.
    pub role: Role,
    /// The version the change is based on (see `UpdateProfileInput`).
    pub expected_version: Option<i64>,
}

/// A new password, proven by the current one.
#[derive(InputObject)]
pub struct ChangePasswordInput {
    /// Oneself: nobody changes another user's password.
    pub id: ID,
    /// The password in use now.
    pub current_password: String,
    /// 15 to 256 characters, not a commonly used password; compared after
    /// NFKC normalisation.
    pub new_password: String,
    /// The version the change is based on (see `UpdateProfileInput`).
    pub expected_version: Option<i64>,
}
