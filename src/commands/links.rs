//! The flows that mail a link and take it back: verifying an address,
//! resetting a forgotten password, confirming a change of address.
//!
//! A link's token is the user's id and 256 random bits. Only a hash of the
//! random part is checked; the token itself travels sealed in the event
//! that asks for the mail (an erasure shreds it) and in clear only in the
//! mail.

use accountable_domain::events::IssuedToken;
use accountable_domain::values::{Email, InvalidInput, Password};
use accountable_domain::{
    LinkFlow, MailPolicy, MailToken, PasswordHash, UserCommand, UserError, UserEvent,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use uuid::Uuid;

use super::emails::Settle;
use super::error::CommandError;
use super::{CommandContext, Executed, Users};

/// The longest token looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 128;

/// How long a verification link works.
pub const VERIFICATION_TTL: Duration = Duration::hours(24);
/// How long a password reset link works.
pub const RESET_TTL: Duration = Duration::minutes(30);

/// 32 hex digits of the user id, then 43 base64url characters of secret.
const ID_LEN: usize = 32;
const SECRET_LEN: usize = 43;

/// The links that are asked for by address, signed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedLink {
    Verification,
    PasswordReset,
}

/// A token as it came back: whose it claims to be, and the hash of its
/// secret part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedToken {
    pub user_id: Uuid,
    pub secret_hash: String,
}

impl PresentedToken {
    /// Reads a token; `None` for anything that is not one (too long, wrong
    /// shape), before any lookup.
    pub fn parse(token: &str) -> Option<Self> {
        if token.len() > MAX_TOKEN_LEN || token.len() != ID_LEN + SECRET_LEN || !token.is_ascii() {
            return None;
        }
        let (id, secret) = token.split_at(ID_LEN);
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let user_id = Uuid::try_parse(id).ok()?;
        let decoded = URL_SAFE_NO_PAD.decode(secret).ok()?;
        (decoded.len() == 32).then(|| Self {
            user_id,
            secret_hash: hash_secret(secret),
        })
    }
}

fn hash_secret(secret: &str) -> String {
    super::sha256_hex(secret.as_bytes())
}

/// A new token for `user_id`, working until `expires_at`.
pub fn issue(user_id: Uuid, expires_at: DateTime<Utc>) -> IssuedToken {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    IssuedToken {
        token_hash: hash_secret(&secret),
        token: Some(MailToken::new(format!("{}{secret}", user_id.simple()))),
        expires_at,
    }
}

/// Every refusal of a presented token, whatever its reason.
fn invalid_token(error: CommandError) -> CommandError {
    match error {
        CommandError::Rejected(_) | CommandError::VersionMismatch { .. } => {
            CommandError::Rejected(UserError::InvalidToken)
        }
        other => other,
    }
}

fn presented(token: &str) -> Result<PresentedToken, CommandError> {
    PresentedToken::parse(token).ok_or(CommandError::Rejected(UserError::InvalidToken))
}

impl Users {
    /// Mails a link of `kind` to `email`'s account, if it has one that is
    /// active (for a verification: and unverified) and has not asked too
    /// often. Answers the same in every case, and writes nothing for an
    /// address without an account.
    pub async fn request_link(
        &self,
        kind: RequestedLink,
        email: &str,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<(), CommandError> {
        let Some(user_id) = self.holder_of_address(email).await? else {
            return Ok(());
        };
        let policy = MailPolicy::default();
        let flow = match kind {
            RequestedLink::Verification => LinkFlow::RequestEmailVerification {
                issued: issue(user_id, at + VERIFICATION_TTL),
                at,
                policy,
            },
            RequestedLink::PasswordReset => LinkFlow::RequestPasswordReset {
                issued: issue(user_id, at + RESET_TTL),
                at,
                policy,
            },
        };
        quietly(
            self.execute(user_id, UserCommand::Link(flow), None, ctx)
                .await,
        )
    }

    /// Marks the address verified, if `token` is the latest verification
    /// link of its account and has not expired.
    pub async fn verify_email(
        &self,
        token: &str,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let token = presented(token)?;
        let command = || {
            UserCommand::Link(LinkFlow::VerifyEmail {
                token_hash: token.secret_hash.clone(),
                at,
            })
        };
        self.execute_retrying(token.user_id, command, ctx)
            .await
            .map_err(invalid_token)
    }

    /// Sets a new password through a reset link: every session ends and a
    /// lock is lifted. A wrong secret counts; the fifth voids the link.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let token = presented(token)?;
        let password =
            Password::parse(new_password, self.password_min_len).map_err(|e| InvalidInput {
                field: "newPassword",
                ..e
            })?;
        // Only a link that could work is worth a hash.
        let reset = self
            .load(token.user_id)
            .await?
            .and_then(|a| a.pending_reset);
        if reset.is_none_or(|reset| at >= reset.expires_at) {
            return Err(CommandError::Rejected(UserError::InvalidToken));
        }
        let password_hash = PasswordHash::new(self.hasher.hash(password).await?);
        let command = || {
            UserCommand::Link(LinkFlow::ResetPassword {
                token_hash: token.secret_hash.clone(),
                password_hash: password_hash.clone(),
                at,
            })
        };
        let executed = self
            .execute_retrying(token.user_id, command, ctx)
            .await
            .map_err(invalid_token)?;
        let reset = executed
            .events
            .iter()
            .any(|event| matches!(event, UserEvent::PasswordReset(_)));
        if reset {
            Ok(executed)
        } else {
            Err(CommandError::Rejected(UserError::InvalidToken))
        }
    }

    /// Asks to move the account to `email`: a link goes to the new address
    /// and a notice to the current one; the address changes when the link
    /// comes back. Nothing is claimed yet, so the answer does not depend on
    /// whether the address is taken, and nobody can hold an address by
    /// asking for it.
    pub async fn change_email(
        &self,
        user_id: Uuid,
        email: &str,
        expected_version: Option<i64>,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let email = Email::parse(email)?;
        let command = UserCommand::Link(LinkFlow::ChangeEmail {
            email,
            issued: issue(user_id, at + VERIFICATION_TTL),
            at,
            policy: MailPolicy::default(),
        });
        self.execute(user_id, command, expected_version, ctx).await
    }

    /// Moves the account to the address its change link was mailed to: the
    /// new address is claimed (race-free, `CONFLICT` when another account
    /// took it meanwhile) and the old one freed.
    pub async fn confirm_email_change(
        &self,
        token: &str,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let token = presented(token)?;
        let user_id = token.user_id;
        let pending = self
            .load(user_id)
            .await?
            .and_then(|account| account.pending_email)
            .filter(|change| change.token.accepts(&token.secret_hash, at))
            .ok_or(CommandError::Rejected(UserError::InvalidToken))?;
        let key = self.email_key(&pending.email);
        self.claim_email(&key, user_id).await?;
        let command = UserCommand::Link(LinkFlow::ConfirmEmailChange {
            token_hash: token.secret_hash,
            at,
        });
        let changed = self
            .execute(user_id, command, None, ctx)
            .await
            .map_err(invalid_token);
        if changed.is_ok() {
            self.settle_claim(Settle::ReleaseOthers, &key, user_id)
                .await?;
            self.settle_claim(Settle::Confirm, &key, user_id).await?;
        } else {
            self.settle_claim(Settle::Release, &key, user_id).await?;
        }
        changed
    }

    /// Tells the owner of an address that someone tried to register with
    /// it (at most as often as any mail of theirs).
    pub(super) async fn note_registration_attempt(
        &self,
        key: &str,
        at: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<(), CommandError> {
        let Some(holder) = self.holder_of(key).await? else {
            return Ok(());
        };
        let command = UserCommand::Link(LinkFlow::NoteRegistrationAttempt {
            at,
            policy: MailPolicy::default(),
        });
        quietly(self.execute(holder, command, None, ctx).await)
    }

    async fn holder_of_address(&self, email: &str) -> Result<Option<Uuid>, CommandError> {
        match Email::parse(email) {
            Ok(email) => self.find_by_email(&email).await,
            Err(_) => Ok(None),
        }
    }
}

/// A request whose refusal (too many mails, a closed account, a concurrent
/// write) is not the caller's to know.
fn quietly(outcome: Result<Executed, CommandError>) -> Result<(), CommandError> {
    match outcome {
        Ok(_) | Err(CommandError::Rejected(_) | CommandError::Conflict) => Ok(()),
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_reads_back_as_its_user_and_hash() {
        let user_id = Uuid::now_v7();
        let issued = issue(user_id, Utc::now());
        let token = issued.token.as_ref().unwrap().expose();
        assert_eq!(token.len(), ID_LEN + SECRET_LEN);
        let presented = PresentedToken::parse(token).unwrap();
        assert_eq!(presented.user_id, user_id);
        assert_eq!(presented.secret_hash, issued.token_hash);
    }

    #[test]
    fn anything_else_is_no_token() {
        let good = issue(Uuid::now_v7(), Utc::now()).token.unwrap();
        let good = good.expose();
        for bad in [
            String::new(),
            "x".repeat(MAX_TOKEN_LEN + 1),
            good[..good.len() - 1].to_owned(),
            format!("{}!", &good[..good.len() - 1]),
            format!("g{}", &good[1..]),
            format!("{}é", &good[..good.len() - 2]),
        ] {
            assert_eq!(PresentedToken::parse(&bad), None, "{bad}");
        }
    }
}
