//! Command input as the client sent it, before it is parsed into values.

use accountable_domain::values::InvalidInput;

/// A profile change as the client sent it; `None` leaves a part as it is.
#[derive(Debug, Default)]
pub struct ProfileChange<'a> {
    pub display_name: Option<&'a str>,
    pub locale: Option<&'a str>,
    pub time_zone: Option<&'a str>,
}

/// Registration input as the client sent it.
#[derive(Debug)]
pub struct Registration<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub display_name: &'a str,
}

/// Why an admin acted: 1 to 500 characters, no control characters.
/// Why an account is deleted, as given by whom.
#[derive(Debug, Clone, Copy)]
pub enum Reason<'a> {
    /// An admin's words, kept in clear.
    Staff(&'a str),
    /// The user's own words about their own account, if any: personal
    /// data, sealed with the rest of theirs.
    Own(Option<&'a str>),
}

/// The clear reason of a deletion the user asked for themself.
pub(super) const SELF_DELETED: &str = "deleted by the user";

pub(super) fn parse_reason(input: &str) -> Result<String, InvalidInput> {
    let reason = input.trim();
    let len = reason.chars().count();
    if len == 0 || len > 500 || reason.chars().any(char::is_control) {
        return Err(InvalidInput {
            field: "reason",
            reason: "must be 1 to 500 characters without control characters".into(),
        });
    }
    Ok(reason.to_owned())
}
