//! Input parsed into types before it reaches the aggregate: a value of one of
//! these types is valid by construction.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Why a piece of client input was refused; the message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidInput {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// An email address: trimmed, domain lower-cased, at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;
    const MAX_LOCAL_LEN: usize = 64;
    const MAX_LABEL_LEN: usize = 63;

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let invalid = |reason: &str| InvalidInput::new("email", reason);
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if trimmed.chars().count() > Self::MAX_LEN {
            return Err(invalid("must be at most 254 characters"));
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return Err(invalid("must contain @"));
        };
        if local.is_empty() || local.len() > Self::MAX_LOCAL_LEN {
            return Err(invalid("the part before @ must be 1 to 64 characters"));
        }
        if local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@' || invisible(c))
        {
            return Err(invalid(
                "the part before @ must not contain spaces, control, invisible or direction characters, or @",
            ));
        }
        let domain = domain.to_ascii_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            !label.is_empty()
                && label.len() <= Self::MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(invalid(
                "the domain must be a host name such as example.com",
            ));
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What makes two addresses the same account: equal after NFKC and
    /// lower-casing, so that `ａdmin@corp.test` (full-width) is
    /// `admin@corp.test`.
    pub fn uniqueness_key(&self) -> String {
        self.0
            .nfkc()
            .collect::<String>()
            .to_lowercase()
            .nfkc()
            .collect()
    }
}

/// Characters that change how text reads without showing: zero-width
/// characters, bidirectional controls, the word joiner family and the byte
/// order mark. Refused in addresses and names, where they let one string
/// pass for another.
pub fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}')
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name a user shows: 1 to 100 characters, trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_LEN: usize = 100;

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let trimmed = input.trim();
        let len = trimmed.chars().count();
        if len == 0 || len > Self::MAX_LEN {
            return Err(InvalidInput::new(
                "displayName",
                "must be 1 to 100 characters",
            ));
        }
        if trimmed.chars().any(|c| c.is_control() || invisible(c)) {
            return Err(InvalidInput::new(
                "displayName",
                "must not contain control, invisible or direction characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a user calls one of their passkeys: 1 to 64 characters, trimmed,
/// no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasskeyName(String);

impl PasskeyName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let trimmed = input.trim();
        let len = trimmed.chars().count();
        if len == 0 || len > Self::MAX_LEN {
            return Err(InvalidInput::new("name", "must be 1 to 64 characters"));
        }
        if trimmed.chars().any(|c| c.is_control() || invisible(c)) {
            return Err(InvalidInput::new(
                "name",
                "must not contain control, invisible or direction characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A language tag such as `en`, `pt-BR` or `zh-Hant-TW` (BCP 47 shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Locale(String);

impl Locale {
    const MAX_LEN: usize = 35;

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let tag = input.trim();
        let mut parts = tag.split('-');
        let language_ok = parts.next().is_some_and(|l| {
            (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic())
        });
        let rest_ok = parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
        if tag.len() > Self::MAX_LEN || !language_ok || !rest_ok {
            return Err(InvalidInput::new(
                "locale",
                "must be a language tag such as en or pt-BR",
            ));
        }
        Ok(Self(tag.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone name such as `Europe/Paris` or `UTC` (checked for
/// shape, not against the tz database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZone(String);

impl TimeZone {
    const MAX_LEN: usize = 64;

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let name = input.trim();
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.starts_with(|c: char| c.is_ascii_alphabetic())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
        };
        if name.len() > Self::MAX_LEN || !name.split('/').all(part_ok) {
            return Err(InvalidInput::new(
                "timeZone",
                "must be an IANA time zone such as Europe/Paris",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The passwords of 8 characters or more among the 30,000 most common ones,
/// from zxcvbn's frequency lists (MIT licence, Dropbox; taken from the PyPI
/// package zxcvbn 4.5.0), lower-cased.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// A password as the user meant it: NFKC-normalised, so that equivalent
/// input verifies, and counted in code points. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// NIST SP 800-63B-4 asks for 15 when the password is the only factor.
    pub const DEFAULT_MIN_LEN: usize = 15;
    /// A hard cap on input so that hashing cost stays bounded.
    pub const MAX_LEN: usize = 256;

    /// Also refuses passwords on the shipped common-password list.
    pub fn parse(input: &str, min_len: usize) -> Result<Self, InvalidInput> {
        let password = Self::parse_length(input, min_len)?;
        if COMMON_PASSWORDS.contains(password.0.to_lowercase().as_str()) {
            return Err(InvalidInput::new(
                "password",
                "is one of the most common passwords; choose another",
            ));
        }
        Ok(password)
    }

    /// Checks the length only: for passwords that already exist, such as
    /// the one a user signs in with.
    pub fn parse_existing(input: &str) -> Result<Self, InvalidInput> {
        Self::parse_length(input, 1)
    }

    fn parse_length(input: &str, min_len: usize) -> Result<Self, InvalidInput> {
        // Checked on the raw input first so that a huge string is refused
        // before any work proportional to it beyond one count.
        if input.chars().take(Self::MAX_LEN * 4 + 1).count() > Self::MAX_LEN * 4 {
            return Err(Self::length_error(min_len));
        }
        let normalized: String = input.nfkc().collect();
        let len = normalized.chars().count();
        if len < min_len || len > Self::MAX_LEN {
            return Err(Self::length_error(min_len));
        }
        Ok(Self(normalized))
    }

    fn length_error(min_len: usize) -> InvalidInput {
        InvalidInput::new(
            "password",
            format!("must be {min_len} to {} characters", Self::MAX_LEN),
        )
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_its_domain_lower_cased() {
        let email = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@example.com");
    }

    #[test]
    fn email_shapes_that_are_not_addresses_are_refused() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@exa mple.com",
            "ad a@example.com",
            "ada@-example.com",
            "ada@example..com",
            "ada@@example.com",
        ] {
            let err = Email::parse(bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad:?}");
        }
    }

    #[test]
    fn invisible_and_direction_characters_are_refused_in_addresses_and_names() {
        for bad in [
            "ad\u{200B}min@corp.test",
            "admin\u{202E}@corp.test",
            "\u{FEFF}admin@corp.test",
            "ad\u{2066}min@corp.test",
        ] {
            assert_eq!(Email::parse(bad).unwrap_err().field, "email", "{bad:?}");
        }
        for bad in ["Ada\u{202E}txt.exe", "A\u{200D}da", "\u{2069}Ada"] {
            assert_eq!(
                DisplayName::parse(bad).unwrap_err().field,
                "displayName",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn addresses_that_read_the_same_share_one_uniqueness_key() {
        let key = |address| Email::parse(address).unwrap().uniqueness_key();
        assert_eq!(key("\u{FF41}dmin@corp.test"), key("admin@corp.test"));
        assert_eq!(key("ADMIN@corp.test"), key("admin@corp.test"));
        assert_ne!(key("admins@corp.test"), key("admin@corp.test"));
    }

    #[test]
    fn email_longer_than_254_characters_is_refused() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(63).repeat(3));
        assert!(long.len() > Email::MAX_LEN);
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn passkey_name_bounds() {
        assert!(PasskeyName::parse(" ").is_err());
        assert!(PasskeyName::parse(&"x".repeat(65)).is_err());
        assert!(PasskeyName::parse("key\u{202E}").is_err());
        assert_eq!(PasskeyName::parse(" Laptop ").unwrap().as_str(), "Laptop");
    }

    #[test]
    fn display_name_bounds() {
        assert!(DisplayName::parse("").is_err());
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"x".repeat(101)).is_err());
        assert!(DisplayName::parse("tab\there").is_err());
        assert_eq!(DisplayName::parse(" Ada ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn locales_are_language_tags() {
        for good in ["en", "pt-BR", "zh-Hant-TW", "de-CH-1996"] {
            assert_eq!(Locale::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "e",
            "english",
            "en_US",
            "en-",
            "en-toolongsubtag",
            "<script>",
        ] {
            assert_eq!(Locale::parse(bad).unwrap_err().field, "locale", "{bad:?}");
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        for good in [
            "UTC",
            "Europe/Paris",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
        ] {
            assert_eq!(TimeZone::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "/",
            "Europe/",
            "../etc/passwd",
            "Europe/Pa ris",
            &"A".repeat(65),
        ] {
            assert_eq!(
                TimeZone::parse(bad).unwrap_err().field,
                "timeZone",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn password_length_is_counted_in_code_points() {
        assert!(Password::parse("", 15).is_err());
        assert!(Password::parse(&"a".repeat(14), 15).is_err());
        assert!(Password::parse(&"a".repeat(15), 15).is_ok());
        assert!(Password::parse(&"🔒".repeat(15), 15).is_ok());
        assert!(Password::parse(&"a".repeat(257), 15).is_err());
        assert!(Password::parse(&"a".repeat(1 << 20), 15).is_err());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in ["1qaz2wsx3edc4rfv", "Q1W2E3R4T5Y6U7I8", "123456789qwerty"] {
            let err = Password::parse(common, 15).unwrap_err();
            assert!(err.reason.contains("common"), "{common}: {err}");
        }
        assert!(Password::parse("correct horse battery staple", 15).is_ok());
        // Existing passwords are checked for length only.
        assert!(Password::parse_existing("1qaz2wsx3edc4rfv").is_ok());
    }

    #[test]
    fn password_is_nfkc_normalised() {
        let composed = Password::parse("caf\u{e9} au lait, s'il vous plait", 15).unwrap();
        let decomposed = Password::parse("cafe\u{301} au lait, s'il vous plait", 15).unwrap();
        assert_eq!(composed, decomposed);
    }

    #[test]
    fn password_debug_hides_the_secret() {
        let password = Password::parse("correct horse battery staple", 15).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }

    mod properties {
        use proptest::prelude::*;
        use unicode_normalization::UnicodeNormalization;

        use super::super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever arrives, a parser answers; what it accepts holds its
            /// invariants.
            #[test]
            fn emails_parse_or_are_refused_and_accepted_ones_are_bounded(input in "\\PC{0,300}|[a-zA-Z0-9._%+-]{1,70}@[a-zA-Z0-9.-]{1,70}") {
                if let Ok(email) = Email::parse(&input) {
                    let text = email.as_str();
                    prop_assert!(text.len() <= 254);
                    prop_assert!(text.contains('@'));
                    prop_assert!(!text.chars().any(char::is_whitespace));
                    prop_assert_eq!(Email::parse(text).map(|e| e.as_str().to_owned()), Ok(text.to_owned()));
                }
            }

            #[test]
            fn display_names_are_1_to_100_characters_without_controls(input in "\\PC{0,150}|[\\x00-\\x1f]{0,5}") {
                if let Ok(name) = DisplayName::parse(&input) {
                    let count = name.as_str().chars().count();
                    prop_assert!((1..=100).contains(&count));
                    prop_assert!(!name.as_str().chars().any(char::is_control));
                }
            }

            #[test]
            fn passwords_are_nfkc_and_bounded(input in "\\PC{0,300}") {
                if let Ok(password) = Password::parse(&input, Password::DEFAULT_MIN_LEN) {
                    let count = password.expose().chars().count();
                    prop_assert!((Password::DEFAULT_MIN_LEN..=Password::MAX_LEN).contains(&count));
                    prop_assert_eq!(password.expose().nfkc().collect::<String>(), password.expose());
                }
                let _ = Password::parse_existing(&input);
            }

            #[test]
            fn locales_and_time_zones_parse_or_are_refused(input in "\\PC{0,80}|[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8}){0,3}|[A-Z][a-z]+/[A-Z][a-z_]+") {
                if let Ok(locale) = Locale::parse(&input) {
                    prop_assert!(!locale.as_str().is_empty() && locale.as_str().len() <= 35);
                }
                if let Ok(zone) = TimeZone::parse(&input) {
                    prop_assert!(!zone.as_str().is_empty());
                }
            }
        }
    }
}
