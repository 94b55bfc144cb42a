//! Signing in and out: login with brute-force protection, token issue and
//! refresh, logout, and turning a bearer token into a caller.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::challenges::Challenges;
use super::clock::Clock;
use super::passkeys::{PasskeyError, Passkeys};
use super::sessions::{Refused, SessionView, Sessions};
use super::tokens::{AccessClaims, SignInFacts, TokenError, Tokens};
use crate::commands::factors::FactorProof;
use crate::commands::password::{HashSlot, PasswordHasher};
use crate::commands::{CommandContext, CommandError, Executed, Registration, Users};
use accountable_domain::values::{Email, Password};
use accountable_domain::{Account, LockoutPolicy, Role, UserStatus};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User {
        id: Uuid,
        roles: Vec<Role>,
        /// When the user last proved who they are in the token's session.
        auth_time: Option<DateTime<Utc>>,
        /// The token's session.
        session: Option<Uuid>,
    },
}

/// What a re-authentication is given.
#[derive(Debug, Clone, Copy)]
pub enum Reproof<'a> {
    Password(&'a str),
    Factor(FactorProof<'a>),
    /// A passkey's answer to the ceremony `beginPasskeyReauthentication`
    /// began.
    Passkey {
        ceremony: &'a str,
        response: &'a str,
    },
}

/// How each proof is named in `amr` (RFC 8176).
const PASSWORD_ONLY: &[&str] = &["pwd"];
const WITH_AN_APP: &[&str] = &["pwd", "otp", "mfa"];
const WITH_A_RECOVERY_CODE: &[&str] = &["pwd", "mfa"];
/// A passkey is verified by its user (a PIN or biometrics) and proves a
/// key: two factors on its own.
pub(super) const PASSKEY_ALONE: &[&str] = &["hwk", "user", "mfa"];
pub(super) const WITH_A_PASSKEY: &[&str] = &["pwd", "hwk", "user", "mfa"];

/// A signed-in session: what `register`, `login` and `refreshToken` answer.
pub struct SignedIn {
    pub user_id: Uuid,
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    /// The write that signed in, when there was one (its version).
    pub executed: Option<Executed>,
}

/// What `register` answers.
pub enum Registered {
    /// The account is open and signed in (addresses need not be verified
    /// first).
    SignedIn(Box<SignedIn>),
    /// The answer is in the mail: a verification link for a new account,
    /// a notice for the owner of a taken address. The same either way.
    CheckMail,
}

/// What `login` answers.
pub enum LoggedIn {
    SignedIn(Box<SignedIn>),
    /// The password checked out; the second step (`complete_login`) takes
    /// this challenge and a second factor.
    SecondFactorRequired {
        challenge: Uuid,
        /// Whether a passkey of the account can complete it too.
        passkey: bool,
    },
}

/// What a password check found. A proven password is not yet a success of
/// the sign-in: the attempt stays counted until the caller completes it
/// (at once, or after the second factor).
enum Proof {
    Proven {
        roles: Vec<Role>,
        email_verified: bool,
        second_factor: bool,
        passkey: bool,
        /// The stored hash was made with other parameters than today's.
        outdated: bool,
    },
    Refused,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown email, wrong password, locked account, bad refresh token:
    /// one answer for all, so that none can be told from another.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// A sign-in's second step with a challenge that is unknown, expired
    /// or taken.
    #[error("invalid sign-in challenge")]
    InvalidChallenge,
    /// The password was right, but the address is not verified yet (and
    /// must be).
    #[error("the email address is not verified yet")]
    EmailNotVerified,
    #[error(transparent)]
    Passkey(#[from] PasskeyError),
    /// A passkey was asked of an account that has none.
    #[error("the account has no passkey")]
    NoPasskey,
    /// A change that needs the current password was given another.
    #[error("that is not the current password")]
    WrongCurrentPassword,
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("tokens: {0}")]
    Tokens(TokenError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<TokenError> for AuthError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Invalid(reason) => Self::InvalidToken(reason),
            other => Self::Tokens(other),
        }
    }
}

pub struct Auth {
    pub users: Arc<Users>,
    pub tokens: Tokens,
    pub sessions: Sessions,
    pub clock: Clock,
    pub hasher: PasswordHasher,
    pub policy: LockoutPolicy,
    /// A hash of nothing anyone knows, verified when the email is unknown
    /// so that such a login costs as much as a real one.
    pub dummy_hash: String,
    /// Whether only verified addresses may sign in (and so `register`
    /// answers the same for a new and a taken address).
    pub require_verified_email: bool,
    pub challenges: Challenges,
    pub passkeys: Passkeys,
    /// How recent a sign-in a dangerous change needs.
    pub step_up_max_age: chrono::Duration,
}

impl Auth {
    /// Opens an account. Where addresses must be verified, the answer is
    /// [`Registered::CheckMail`] whether or not the address had an account
    /// (its owner gets a notice); otherwise a taken address is an error.
    pub async fn register(
        &self,
        input: Registration<'_>,
        ctx: &CommandContext,
    ) -> Result<Registered, AuthError> {
        let registered = self.users.register(input, self.clock.now(), ctx).await;
        if self.require_verified_email {
            return match registered {
                Ok(_) | Err(CommandError::EmailTaken) => Ok(Registered::CheckMail),
                Err(other) => Err(other.into()),
            };
        }
        let executed = registered?;
        let roles = executed.account.as_ref().map(roles).unwrap_or_default();
        let signed_in = self
            .sign_in(executed.user_id, roles, Some(executed), PASSWORD_ONLY, ctx)
            .await?;
        Ok(Registered::SignedIn(Box::new(signed_in)))
    }

    /// Sets a new password through a mailed reset link; every session of
    /// the account ends and a lock is lifted. Whoever follows the link
    /// signs in afterwards with the new password.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        ctx: &CommandContext,
    ) -> Result<Executed, AuthError> {
        Ok(self
            .users
            .reset_password(token, new_password, self.clock.now(), ctx)
            .await?)
    }

    /// Signs in with a password: at once, or, when the account has a second
    /// factor, with a challenge for `complete_login`.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        ctx: &CommandContext,
    ) -> Result<LoggedIn, AuthError> {
        // A password over the cap is refused before any hashing.
        let Ok(password) = Password::parse_existing(password) else {
            return Err(AuthError::InvalidCredentials);
        };
        // The check's place on a hashing thread comes first: a login shed
        // for load is refused before its attempt is recorded (a recorded
        // attempt counts towards the lockout until it succeeds).
        let slot = self.hasher.reserve().map_err(CommandError::from)?;
        let user_id = match Email::parse(email) {
            Ok(email) => self.users.find_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(user_id) = user_id else {
            return self.fail_like_a_real_check(slot, password).await;
        };
        let proof = self
            .prove_password(slot, user_id, password.clone(), ctx)
            .await?;
        let Proof::Proven {
            roles,
            email_verified,
            second_factor,
            passkey,
            outdated,
        } = proof
        else {
            return Err(AuthError::InvalidCredentials);
        };
        // Told only to whoever knows the password.
        if self.require_verified_email && !email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        if outdated {
            self.users.rehash(user_id, password, ctx).await?;
        }
        if second_factor {
            // The attempt stays counted until the second factor succeeds.
            let challenge = self.challenges.create(user_id, self.clock.now()).await?;
            return Ok(LoggedIn::SecondFactorRequired { challenge, passkey });
        }
        let executed = self
            .users
            .complete_login(user_id, self.clock.now(), ctx)
            .await?;
        let signed_in = self
            .sign_in(user_id, roles, Some(executed), PASSWORD_ONLY, ctx)
            .await?;
        Ok(LoggedIn::SignedIn(Box::new(signed_in)))
    }

    /// The second step of a sign-in: the challenge `login` answered and a
    /// second factor. A wrong code counts towards the lockout like a wrong
    /// password; the challenge is taken once, by the first right code.
    pub async fn complete_login(
        &self,
        challenge: &str,
        proof: FactorProof<'_>,
        ctx: &CommandContext,
    ) -> Result<SignedIn, AuthError> {
        let now = self.clock.now();
        let challenge = Uuid::try_parse(challenge).map_err(|_| AuthError::InvalidChallenge)?;
        let user_id = self
            .challenges
            .open(challenge, now)
            .await?
            .ok_or(AuthError::InvalidChallenge)?;
        let account = self.prove_second_factor(user_id, proof, now, ctx).await?;
        if self.challenges.take(challenge, now).await?.is_none() {
            return Err(AuthError::InvalidChallenge);
        }
        let executed = self.users.complete_login(user_id, now, ctx).await?;
        self.sign_in(user_id, roles(&account), Some(executed), amr_of(proof), ctx)
            .await
    }

    /// Checks `password` against the user's, as one attempt towards the
    /// account's lockout: counted before the hash runs (so that parallel
    /// guesses cannot exceed the limit), refused while the account is
    /// locked, and reset by a success. Every refusal costs one hash.
    async fn prove_password(
        &self,
        slot: HashSlot,
        user_id: Uuid,
        password: Password,
        ctx: &CommandContext,
    ) -> Result<Proof, AuthError> {
        let now = self.clock.now();
        let attempt = match self
            .users
            .attempt_login(user_id, now, self.policy, ctx)
            .await
        {
            Ok(attempt) => attempt,
            Err(CommandError::Rejected(_)) => {
                return self.refuse_like_a_real_check(slot, password).await
            }
            Err(other) => return Err(other.into()),
        };
        let Some(account) = attempt.account else {
            return self.refuse_like_a_real_check(slot, password).await;
        };
        if account.is_locked(now) {
            // The lock stops guessing; it leaves the owner's sessions alone,
            // so that whoever knows the address cannot sign the owner out.
            tracing::warn!(user = %user_id, until = ?account.locked_until, "account locked after failed password checks");
            return self.refuse_like_a_real_check(slot, password).await;
        }
        let Some(hash) = &account.password_hash else {
            return self.refuse_like_a_real_check(slot, password).await;
        };
        let verified = slot
            .verify(password, hash.expose().to_owned())
            .await
            .map_err(CommandError::from)?;
        if !verified.matches {
            return Ok(Proof::Refused);
        }
        Ok(Proof::Proven {
            roles: roles(&account),
            email_verified: account.email_verified,
            second_factor: account.needs_second_factor(),
            passkey: !account.passkeys.is_empty(),
            outdated: verified.outdated,
        })
    }

    /// Trades a refresh token for a new pair.
    pub async fn refresh(&self, token: &str) -> Result<SignedIn, AuthError> {
        let now = self.clock.now();
        let rotated = match self.sessions.rotate(token, now).await? {
            Ok(rotated) => rotated,
            Err(Refused::Unknown | Refused::Revoked | Refused::Expired | Refused::Reused) => {
                return Err(AuthError::InvalidCredentials)
            }
        };
        let account = self
            .users
            .load(rotated.user_id)
            .await?
            .filter(|account| account.status == UserStatus::Active)
            .ok_or(AuthError::InvalidCredentials)?;
        let access = self.tokens.issue(
            rotated.user_id,
            roles(&account),
            rotated.family_id,
            &rotated.facts,
            now,
        )?;
        Ok(SignedIn {
            user_id: rotated.user_id,
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token: rotated.token,
            executed: None,
        })
    }

    /// Sets a new password once the current one is proven (a check that
    /// counts towards the lockout, like a login's); its event ends every
    /// session of the user: whoever knew the old password is signed out.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: &str,
        new: &str,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, AuthError> {
        self.prove_current_password(user_id, current, ctx).await?;
        self.users
            .complete_login(user_id, self.clock.now(), ctx)
            .await?;
        Ok(self
            .users
            .change_password(user_id, new, expected_version, ctx)
            .await?)
    }

    /// The current password, checked as one attempt towards the lockout
    /// (left counted: the caller completes it once all else checked out).
    async fn prove_current_password(
        &self,
        user_id: Uuid,
        current: &str,
        ctx: &CommandContext,
    ) -> Result<(), AuthError> {
        let current =
            Password::parse_existing(current).map_err(|_| AuthError::WrongCurrentPassword)?;
        let slot = self.hasher.reserve().map_err(CommandError::from)?;
        match self.prove_password(slot, user_id, current, ctx).await? {
            Proof::Refused => Err(AuthError::WrongCurrentPassword),
            Proof::Proven { .. } => Ok(()),
        }
    }

    /// Removes the authenticator app, given the current password and a
    /// second factor (a code of the app, or a recovery code): whoever has
    /// only the password cannot take the second factor away.
    pub async fn disable_totp(
        &self,
        user_id: Uuid,
        current: &str,
        proof: FactorProof<'_>,
        ctx: &CommandContext,
    ) -> Result<Executed, AuthError> {
        self.prove_current_password(user_id, current, ctx).await?;
        let now = self.clock.now();
        self.users
            .use_second_factor(user_id, proof, now, ctx)
            .await?;
        self.users.complete_login(user_id, now, ctx).await?;
        Ok(self.users.disable_totp(user_id, now, ctx).await?)
    }

    pub async fn logout(&self, refresh_token: &str) -> Result<(), AuthError> {
        Ok(self.sessions.end(refresh_token, self.clock.now()).await?)
    }

    pub async fn logout_everywhere(&self, user_id: Uuid) -> Result<(), AuthError> {
        Ok(self
            .sessions
            .end_all(user_id, self.clock.now(), "logout-all")
            .await?)
    }

    /// The user's live sessions, the most recently used first.
    pub async fn sessions_of(&self, user_id: Uuid) -> Result<Vec<SessionView>, AuthError> {
        Ok(self.sessions.list(user_id, self.clock.now()).await?)
    }

    /// The user whose live session `session` is.
    pub async fn session_owner(&self, session: Uuid) -> Result<Option<Uuid>, AuthError> {
        Ok(self.sessions.owner(session, self.clock.now()).await?)
    }

    /// Ends the live session `session` of `user_id`, and its access tokens
    /// at once; `false` when the user has no such session.
    pub async fn end_session(&self, session: Uuid, user_id: Uuid) -> Result<bool, AuthError> {
        Ok(self
            .sessions
            .end_one(session, user_id, self.clock.now())
            .await?)
    }

    /// The caller a bearer token stands for. A token that does not verify,
    /// or was issued before the user's sessions ended, is an error, never
    /// anonymous.
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller, AuthError> {
        self.caller(bearer, false).await
    }

    /// As [`Auth::authenticate`], for a long-lived connection (a
    /// subscription), checked again while it lasts: the token's session
    /// must also be live, so that logging out ends the connection.
    pub async fn authenticate_session(&self, bearer: &str) -> Result<Caller, AuthError> {
        self.caller(bearer, true).await
    }

    async fn caller(&self, bearer: &str, session: bool) -> Result<Caller, AuthError> {
        Ok(self.checked(bearer, session).await?.1)
    }

    /// As [`Auth::authenticate`], with the token's claims: what
    /// introspection tells of a token.
    pub async fn authenticate_with_claims(
        &self,
        bearer: &str,
    ) -> Result<(AccessClaims, Caller), AuthError> {
        self.checked(bearer, false).await
    }

    /// The token's claims, verified and checked against the cut-offs, and
    /// the caller it stands for.
    async fn checked(
        &self,
        bearer: &str,
        session: bool,
    ) -> Result<(AccessClaims, Caller), AuthError> {
        let now = self.clock.now();
        let claims = self.tokens.verify(bearer, now).await?;
        let id = Uuid::parse_str(&claims.sub).map_err(|_| AuthError::InvalidToken("subject"))?;
        let sid = claims
            .sid
            .as_deref()
            .and_then(|sid| Uuid::parse_str(sid).ok());
        let cutoff = self.sessions.cutoff(id).await?;
        let refused = cutoff
            .not_before
            .is_some_and(|not_before| issued_before(&claims, not_before))
            || sid.is_some_and(|sid| cutoff.ended(sid));
        if refused {
            return Err(AuthError::InvalidToken("session ended"));
        }
        if session {
            let family = sid.ok_or(AuthError::InvalidToken("no session"))?;
            if !self.sessions.is_live(family, now).await? {
                return Err(AuthError::InvalidToken("session ended"));
            }
        }
        let caller = Caller::User {
            id,
            roles: claims.roles.clone(),
            auth_time: claims
                .auth_time
                .and_then(|at| DateTime::from_timestamp(at, 0)),
            session: sid,
        };
        Ok((claims, caller))
    }

    /// Checks a second factor as one attempt towards the account's lockout
    /// (counted before the check, refused while locked); answers the
    /// account. The caller completes the attempt.
    pub(super) async fn prove_second_factor(
        &self,
        user_id: Uuid,
        proof: FactorProof<'_>,
        now: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Account, AuthError> {
        let account = self.count_attempt(user_id, now, ctx).await?;
        refused_as_invalid(self.users.use_second_factor(user_id, proof, now, ctx).await)?;
        Ok(account)
    }

    /// Counts an attempt to prove who `user_id` is towards the lockout,
    /// before the proof is checked: the account, unless it is locked (or
    /// closed). The caller completes the attempt once the proof holds.
    pub(super) async fn count_attempt(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
        ctx: &CommandContext,
    ) -> Result<Account, AuthError> {
        let attempt = refused_as_invalid(
            self.users
                .attempt_login(user_id, now, self.policy, ctx)
                .await,
        )?;
        attempt
            .account
            .filter(|account| !account.is_locked(now))
            .ok_or(AuthError::InvalidCredentials)
    }

    /// Whether the caller proved who they are recently enough for a
    /// dangerous change.
    pub fn signed_in_recently(&self, caller: &Caller) -> bool {
        match caller {
            Caller::User {
                auth_time: Some(at),
                ..
            } => self.clock.now() - *at <= self.step_up_max_age,
            _ => false,
        }
    }

    /// Proves again who the caller is, in their session: a password, or a
    /// second factor (a wrong one counts towards the lockout). Answers a
    /// new access token of the same session, signed in now; the session's
    /// refreshes carry that on.
    pub async fn reauthenticate(
        &self,
        user_id: Uuid,
        session: Uuid,
        proof: Reproof<'_>,
        ctx: &CommandContext,
    ) -> Result<(String, i64), AuthError> {
        let now = self.clock.now();
        let amr = match proof {
            Reproof::Password(password) => {
                match self.prove_current_password(user_id, password, ctx).await {
                    Err(AuthError::WrongCurrentPassword) => {
                        return Err(AuthError::InvalidCredentials)
                    }
                    proven => proven?,
                }
                PASSWORD_ONLY
            }
            Reproof::Factor(factor) => {
                self.prove_second_factor(user_id, factor, now, ctx).await?;
                amr_of(factor)
            }
            Reproof::Passkey { ceremony, response } => {
                self.prove_passkey_again(user_id, ceremony, response, ctx)
                    .await?;
                PASSKEY_ALONE
            }
        };
        let executed = self.users.complete_login(user_id, now, ctx).await?;
        let facts = facts(now, amr);
        if !self.sessions.proven_again(session, user_id, &facts).await? {
            return Err(AuthError::InvalidToken("session ended"));
        }
        let roles = executed.account.as_ref().map(roles).unwrap_or_default();
        let access = self.tokens.issue(user_id, roles, session, &facts, now)?;
        Ok((access.token, access.expires_in))
    }

    pub(super) async fn sign_in(
        &self,
        user_id: Uuid,
        roles: Vec<Role>,
        executed: Option<Executed>,
        amr: &[&str],
        ctx: &CommandContext,
    ) -> Result<SignedIn, AuthError> {
        let now = self.clock.now();
        let facts = facts(now, amr);
        let (refresh_token, session) = self
            .sessions
            .start(user_id, &facts, &ctx.origin, now)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        let access = self.tokens.issue(user_id, roles, session, &facts, now)?;
        Ok(SignedIn {
            user_id,
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token,
            executed,
        })
    }

    async fn fail_like_a_real_check<T>(
        &self,
        slot: HashSlot,
        password: Password,
    ) -> Result<T, AuthError> {
        self.refuse_like_a_real_check(slot, password).await?;
        Err(AuthError::InvalidCredentials)
    }

    async fn refuse_like_a_real_check(
        &self,
        slot: HashSlot,
        password: Password,
    ) -> Result<Proof, AuthError> {
        slot.verify(password, self.dummy_hash.clone())
            .await
            .map_err(CommandError::from)?;
        Ok(Proof::Refused)
    }
}

/// A command the aggregate refused, in a proof of who the caller is: one
/// answer for all.
pub(super) fn refused_as_invalid<T>(result: Result<T, CommandError>) -> Result<T, AuthError> {
    match result {
        Ok(value) => Ok(value),
        Err(CommandError::Rejected(_)) => Err(AuthError::InvalidCredentials),
        Err(other) => Err(other.into()),
    }
}

/// How a second factor is named in `amr`.
fn amr_of(proof: FactorProof<'_>) -> &'static [&'static str] {
    match proof {
        FactorProof::Totp(_) => WITH_AN_APP,
        FactorProof::RecoveryCode(_) => WITH_A_RECOVERY_CODE,
    }
}

fn facts(now: DateTime<Utc>, amr: &[&str]) -> SignInFacts {
    SignInFacts {
        auth_time: Some(now),
        amr: amr.iter().map(|method| (*method).to_owned()).collect(),
    }
}

pub(super) fn roles(account: &Account) -> Vec<Role> {
    account.roles.iter().copied().collect()
}

/// Whether the token was issued before `cutoff`, to the millisecond.
fn issued_before(claims: &AccessClaims, cutoff: DateTime<Utc>) -> bool {
    let cutoff_ms = (cutoff.timestamp_micros() + 999) / 1000;
    claims
        .issued_at_ms()
        .is_none_or(|issued| issued < cutoff_ms)
}
