//! The second factor: an authenticator app (TOTP, RFC 6238, checked with
//! totp-rs: SHA-1, six digits, 30-second steps, one step of drift either
//! way) and its ten recovery codes. The secret and the codes' hashes are
//! sealed in events under the user's key, so an erasure destroys them; the
//! codes themselves are shown once and kept nowhere.

use accountable_domain::{FactorFlow, TotpSecret, UserCommand, UserError};
use chrono::{DateTime, Utc};
use rand::RngCore;
use totp_rs::{Algorithm, Secret, TOTP};
use uuid::Uuid;

use super::error::{infrastructure, CommandError};
use super::{CommandContext, Executed, Users};

/// Recovery codes made at enrollment.
pub const RECOVERY_CODES: usize = 10;
/// The `issuer` an authenticator app shows.
const ISSUER: &str = "Accountable";
const STEP_SECS: u64 = 30;
/// 160 random bits, as RFC 4226 recommends.
const SECRET_BYTES: usize = 20;
/// Recovery codes: 10 characters of base32 (50 bits), shown as `xxxxx-xxxxx`.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// What an authenticator app is set up with.
#[derive(Debug, Clone)]
pub struct TotpEnrollment {
    /// The secret in base32, for typing in.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub uri: String,
}

/// A second factor as given at sign-in.
#[derive(Debug, Clone, Copy)]
pub enum FactorProof<'a> {
    Totp(&'a str),
    RecoveryCode(&'a str),
}

fn app(secret: Vec<u8>, account_name: &str) -> Result<TOTP, CommandError> {
    TOTP::new(
        Algorithm::SHA1,
        6,
        0,
        STEP_SECS,
        secret,
        Some(ISSUER.to_owned()),
        account_name.to_owned(),
    )
    .map_err(|error| infrastructure(std::io::Error::other(error.to_string())))
}

/// The longest recovery code looked at.
pub const MAX_RECOVERY_CODE_LEN: usize = 32;

/// Whether `code` has the shape of an app's code: six digits.
pub fn is_totp_shaped(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The time step of `at` (±1) whose code `code` is, if any. Anything but
/// six digits is no code.
pub fn matching_step(secret: &TotpSecret, code: &str, at: DateTime<Utc>) -> Option<u64> {
    if !is_totp_shaped(code) {
        return None;
    }
    let bytes = Secret::Encoded(secret.expose().to_owned())
        .to_bytes()
        .ok()?;
    let app = app(bytes, "check").ok()?;
    let now = u64::try_from(at.timestamp()).ok()?;
    let origin = now / STEP_SECS;
    (origin.saturating_sub(1)..=origin + 1).find(|step| app.check(code, step * STEP_SECS))
}

/// A recovery code as it is kept: its SHA-256 in hex, of the code in lower
/// case without its dash.
pub fn recovery_code_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    super::sha256_hex(normal.as_bytes())
}

fn recovery_code() -> String {
    let mut bytes = [0_u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| char::from(RECOVERY_ALPHABET[usize::from(b & 31)]))
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

fn invalid_code() -> CommandError {
    CommandError::Rejected(UserError::InvalidCode)
}

impl Users {
    /// Begins setting up an authenticator app: a new secret, sealed in the
    /// event, and what the app is set up with.
    pub async fn start_totp(
        &self,
        user_id: Uuid,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<TotpEnrollment, CommandError> {
        let account = self
            .load(user_id)
            .await?
            .ok_or(CommandError::Rejected(UserError::NotRegistered))?;
        let name = account
            .personal
            .as_ref()
            .map(|p| p.email.as_str().to_owned())
            .filter(|email| !email.contains(':'))
            .unwrap_or_else(|| user_id.to_string());
        let mut secret = [0_u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let app = app(secret.to_vec(), &name)?;
        let enrollment = TotpEnrollment {
            secret: app.get_secret_base32(),
            uri: app.get_url(),
        };
        let command = UserCommand::Factor(FactorFlow::StartTotp {
            secret: TotpSecret::new(enrollment.secret.clone()),
            at,
        });
        self.execute(user_id, command, None, ctx).await?;
        Ok(enrollment)
    }

    /// Enables the app being set up, given a first code of it; answers the
    /// recovery codes, the only time they are shown.
    pub async fn confirm_totp(
        &self,
        user_id: Uuid,
        code: &str,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<(Executed, Vec<String>), CommandError> {
        let totp = self
            .load(user_id)
            .await?
            .and_then(|account| account.totp)
            .ok_or(CommandError::Rejected(UserError::NoTotpEnrollment))?;
        if totp.enabled {
            return Err(CommandError::Rejected(UserError::TotpAlreadyEnabled));
        }
        let secret = totp.secret.ok_or_else(invalid_code)?;
        let step = matching_step(&secret, code, at).ok_or_else(invalid_code)?;
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        let command = UserCommand::Factor(FactorFlow::EnableTotp {
            step,
            recovery_codes: codes.iter().map(|code| recovery_code_hash(code)).collect(),
            at,
        });
        let executed = self.execute(user_id, command, None, ctx).await?;
        Ok((executed, codes))
    }

    /// Removes the app: sign-in needs the password alone again.
    pub async fn disable_totp(
        &self,
        user_id: Uuid,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let command = UserCommand::Factor(FactorFlow::DisableTotp { at });
        self.execute(user_id, command, None, ctx).await
    }

    /// Checks a second factor of the user: a code of the app (accepted
    /// once) or a recovery code (used up). Every refusal is `InvalidCode`.
    pub async fn use_second_factor(
        &self,
        user_id: Uuid,
        proof: FactorProof<'_>,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let flow = match proof {
            FactorProof::Totp(code) => {
                let secret = self
                    .load(user_id)
                    .await?
                    .and_then(|account| account.totp)
                    .filter(|totp| totp.enabled)
                    .and_then(|totp| totp.secret)
                    .ok_or_else(invalid_code)?;
                let step = matching_step(&secret, code, at).ok_or_else(invalid_code)?;
                FactorFlow::AcceptTotp { step, at }
            }
            FactorProof::RecoveryCode(code) if code.len() <= MAX_RECOVERY_CODE_LEN => {
                FactorFlow::UseRecoveryCode {
                    code_hash: recovery_code_hash(code),
                    at,
                }
            }
            FactorProof::RecoveryCode(_) => return Err(invalid_code()),
        };
        self.execute(user_id, UserCommand::Factor(flow), None, ctx)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238's SHA-1 test vector (secret "12345678901234567890"), six
    /// digits: 287082 at 59 s.
    #[test]
    fn codes_match_their_step_within_one_step_of_drift() {
        let secret = TotpSecret::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".into());
        let at = |secs| DateTime::from_timestamp(secs, 0).unwrap();
        assert_eq!(matching_step(&secret, "287082", at(59)), Some(1));
        assert_eq!(matching_step(&secret, "287082", at(89)), Some(1));
        assert_eq!(matching_step(&secret, "287082", at(119)), None);
        for bad in ["28708", "2870821", "28708a", " 87082", ""] {
            assert_eq!(matching_step(&secret, bad, at(59)), None, "{bad}");
        }
    }

    #[test]
    fn recovery_codes_are_compared_without_case_or_dash() {
        let code = recovery_code();
        assert_eq!(code.len(), 11);
        assert_eq!(
            recovery_code_hash(&code),
            recovery_code_hash(&code.to_uppercase().replace('-', ""))
        );
        assert_ne!(
            recovery_code_hash(&code),
            recovery_code_hash(&recovery_code())
        );
    }
}
