//! Client-facing errors: every error carries `extensions.code`; the detail
//! of an internal failure is logged, never shown.

use async_graphql::ErrorExtensions;

use crate::auth::passkeys::PasskeyError;
use crate::auth::AuthError;
use crate::commands::CommandError;
use accountable_domain::values::InvalidInput;
use accountable_domain::UserError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadUserInput,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    RateLimited,
    Internal,
    Unavailable,
    /// A mailed link's token that does not work (unknown, expired, used,
    /// superseded or malformed): one answer for all.
    InvalidToken,
    /// The password was right, but the address must be verified first.
    EmailNotVerified,
    /// A dangerous change needs a recent sign-in: `reauthenticate` first.
    ReauthenticationRequired,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::RateLimited => "RATE_LIMITED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            Self::ReauthenticationRequired => "REAUTHENTICATION_REQUIRED",
        }
    }
}

/// An error for the client. Deliberately not `Display`, so that `?` cannot
/// turn it into a GraphQL error without its code.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: Code,
    message: String,
    extensions: Vec<(&'static str, async_graphql::Value)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            extensions: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<async_graphql::Value>) -> Self {
        self.extensions.push((key, value.into()));
        self
    }

    /// An infrastructure failure: logged in full, shown as `INTERNAL`.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(Code::Internal, "internal error")
    }

    /// An infrastructure failure: `UNAVAILABLE` when the database is out of
    /// reach (a retry can succeed), otherwise `INTERNAL`. Logged either way.
    pub fn infrastructure(error: &(dyn std::error::Error + 'static)) -> Self {
        if database_unreachable(error) {
            tracing::warn!(error = %error, "the database is out of reach");
            Self::new(
                Code::Unavailable,
                "the service is temporarily unavailable; retry shortly",
            )
        } else {
            Self::internal(&error)
        }
    }

    /// The one answer to every failed login, whatever the reason.
    pub fn invalid_credentials() -> Self {
        Self::new(Code::Unauthenticated, "invalid email or password")
    }
}

/// What a resolver answers: its value, or an error with its code.
pub type ApiResult<T> = Result<T, ApiError>;

/// The one way an [`ApiError`] becomes a GraphQL error: with its code.
impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        error.extend()
    }
}

/// An error async-graphql itself raised inside a resolver (missing context
/// data): ours, so `INTERNAL`.
impl From<async_graphql::Error> for ApiError {
    fn from(error: async_graphql::Error) -> Self {
        Self::internal(&error.message)
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidCredentials | AuthError::InvalidToken(_) => {
                Self::invalid_credentials()
            }
            AuthError::InvalidChallenge => Self::new(
                Code::InvalidToken,
                "this sign-in challenge does not work (any more): sign in again",
            ),
            AuthError::EmailNotVerified => Self::new(
                Code::EmailNotVerified,
                "verify the email address first: follow the link mailed to it",
            ),
            AuthError::WrongCurrentPassword => Self::new(
                Code::BadUserInput,
                "currentPassword: that is not the current password",
            )
            .with("field", "currentPassword"),
            AuthError::Passkey(error) => error.into(),
            AuthError::NoPasskey => Self::new(
                Code::BadUserInput,
                "the account has no passkey: complete the sign-in with another factor",
            ),
            AuthError::Command(error) => error.into(),
            AuthError::Tokens(error) => Self::internal(&error),
            AuthError::Database(error) => error.into(),
        }
    }
}

impl From<PasskeyError> for ApiError {
    fn from(error: PasskeyError) -> Self {
        match error {
            PasskeyError::Ceremony => Self::new(
                Code::InvalidToken,
                "this passkey ceremony does not work (any more): begin again",
            ),
            PasskeyError::Malformed(why) => {
                Self::new(Code::BadUserInput, format!("credential: {why}"))
                    .with("field", "credential")
            }
            PasskeyError::Refused | PasskeyError::CounterRegressed => {
                Self::new(Code::Unauthenticated, "the passkey did not verify")
            }
            PasskeyError::Database(error) => error.into(),
            PasskeyError::State(error) => Self::internal(&error),
        }
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.message.clone()).extend_with(|_, ext| {
            ext.set("code", self.code.as_str());
            for (key, value) in &self.extensions {
                ext.set(*key, value.clone());
            }
        })
    }
}

impl From<InvalidInput> for ApiError {
    fn from(error: InvalidInput) -> Self {
        Self::new(Code::BadUserInput, error.to_string()).with("field", error.field)
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Invalid(invalid) => invalid.into(),
            CommandError::Rejected(rejection @ UserError::AlreadyRegistered) => {
                Self::new(Code::Conflict, rejection.to_string())
            }
            CommandError::Rejected(rejection @ UserError::NotRegistered) => {
                Self::new(Code::NotFound, rejection.to_string())
            }
            CommandError::Rejected(UserError::Locked) => Self::invalid_credentials(),
            CommandError::Rejected(rejection @ UserError::Deactivated) => {
                Self::new(Code::Forbidden, rejection.to_string())
            }
            CommandError::Rejected(UserError::Deleted | UserError::Erased) => {
                Self::new(Code::NotFound, "no such user")
            }
            CommandError::Rejected(UserError::InvalidToken) => {
                Self::new(Code::InvalidToken, "this link does not work (any more)")
            }
            CommandError::Rejected(rejection @ UserError::TooManyRequests) => {
                Self::new(Code::RateLimited, rejection.to_string()).with("retryAfter", 60)
            }
            CommandError::Rejected(UserError::InvalidCode) => {
                Self::new(Code::Unauthenticated, "invalid code")
            }
            CommandError::Rejected(rejection @ UserError::TotpAlreadyEnabled) => {
                Self::new(Code::Conflict, rejection.to_string())
            }
            CommandError::Rejected(rejection @ UserError::NoTotpEnrollment) => {
                Self::new(Code::BadUserInput, rejection.to_string())
            }
            CommandError::Rejected(rejection @ UserError::PasskeyNotFound) => {
                Self::new(Code::NotFound, rejection.to_string())
            }
            CommandError::Rejected(rejection @ UserError::TooManyPasskeys) => {
                Self::new(Code::Conflict, rejection.to_string())
            }
            CommandError::Rejected(rejection @ UserError::LastWayToSignIn) => {
                Self::new(Code::Conflict, rejection.to_string())
            }
            CommandError::Rejected(UserError::NotAServiceAccount) => {
                Self::new(Code::NotFound, "no such service account")
            }
            CommandError::Rejected(rejection @ UserError::SecretNotFound) => {
                Self::new(Code::NotFound, rejection.to_string())
            }
            CommandError::Rejected(rejection @ UserError::TooManySecrets) => {
                Self::new(Code::Conflict, rejection.to_string())
            }
            CommandError::Rejected(rejection @ UserError::BaseRole) => {
                Self::new(Code::BadUserInput, rejection.to_string()).with("field", "role")
            }
            CommandError::Conflict | CommandError::EmailTaken | CommandError::PasskeyTaken => {
                Self::new(Code::Conflict, error.to_string())
            }
            CommandError::LastAdmin => Self::new(Code::Forbidden, error.to_string()),
            CommandError::VersionMismatch { current } => {
                Self::new(Code::Conflict, error.to_string()).with("currentVersion", current)
            }
            CommandError::Busy => {
                Self::new(Code::Unavailable, error.to_string()).with("retryAfter", 1)
            }
            CommandError::Infrastructure(detail) => Self::infrastructure(detail.as_ref()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::infrastructure(&error)
    }
}

/// The audit reads' failures: the database, or an event that cannot be
/// read; logged in full, answered without detail.
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::infrastructure(error.as_ref())
    }
}

impl From<std::sync::Arc<sqlx::Error>> for ApiError {
    fn from(error: std::sync::Arc<sqlx::Error>) -> Self {
        Self::infrastructure(error.as_ref())
    }
}

/// Whether `error`, or an error that caused it, is the database being out
/// of reach: down, restarting, refusing or dropping connections.
pub fn database_unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            let unreachable = match error {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // Connection exceptions (08), shutdown and start-up (57P01–
                // 57P03), too many connections (53300), a lock not had within
                // its timeout (55P03).
                sqlx::Error::Database(error) => error.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "55P03")
                }),
                _ => false,
            };
            if unreachable {
                return true;
            }
        }
        if error.is::<std::io::Error>() {
            return true;
        }
        cause = error.source();
    }
    false
}
