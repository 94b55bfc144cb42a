//! Why a command did not happen.

use accountable_domain::values::InvalidInput;
use accountable_domain::UserError;
use cqrs_es::AggregateError;

use super::password::HashError;

/// A command that did not happen. Client mistakes and domain rejections are
/// kept apart from infrastructure failures, whose detail is only logged.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Rejected(#[from] UserError),
    #[error("the user was changed concurrently")]
    Conflict,
    #[error("this email address is already registered")]
    EmailTaken,
    #[error("this passkey is registered already")]
    PasskeyTaken,
    #[error("the last active admin cannot be demoted, deactivated or deleted")]
    LastAdmin,
    /// `expectedVersion` was given and the user is at another version.
    #[error("the user is at version {current}, not the one expected")]
    VersionMismatch { current: i64 },
    /// Every password hashing thread is busy and the queue is full.
    #[error("too many passwords are being checked at once; retry shortly")]
    Busy,
    #[error("infrastructure failure: {0}")]
    Infrastructure(Box<dyn std::error::Error + Send + Sync>),
}

impl From<AggregateError<UserError>> for CommandError {
    fn from(err: AggregateError<UserError>) -> Self {
        match err {
            AggregateError::UserError(e) => Self::Rejected(e),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(e)
            | AggregateError::DeserializationError(e)
            | AggregateError::UnexpectedError(e) => Self::Infrastructure(e),
        }
    }
}

impl From<HashError> for CommandError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => Self::Busy,
            other => Self::Infrastructure(Box::new(other)),
        }
    }
}

pub(super) fn infrastructure(
    error: impl std::error::Error + Send + Sync + 'static,
) -> CommandError {
    CommandError::Infrastructure(Box::new(error))
}
