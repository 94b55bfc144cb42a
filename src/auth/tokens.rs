//! Access tokens: short-lived JWTs (RFC 9068 `at+jwt`) signed with EdDSA
//! under a `kid`, verified with the algorithm pinned, every claim required,
//! issuer and audience checked, and at most 30 s of clock leeway.

use std::sync::Arc;

use accountable_domain::Role;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::KeyRing;
use crate::config::AuthConfig;

/// The JOSE `typ` of our access tokens; anything else is not one.
const ACCESS_TOKEN_TYPE: &str = "at+jwt";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// A UUIDv7: unique per token, and its embedded time (ms) is the
    /// precise issue time that per-user cut-offs compare with.
    pub jti: String,
    pub roles: Vec<Role>,
    /// The session (refresh token family) the token was issued in; its
    /// logout ends long-lived connections opened with the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the user last proved who they are in this session (OpenID
    /// Connect's `auth_time`): a sign-in or a re-authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// How (RFC 8176): `pwd`, and `otp` and `mfa` with a second factor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

/// When and how the user proved who they are, for the tokens of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInFacts {
    pub auth_time: Option<DateTime<Utc>>,
    pub amr: Vec<String>,
}

impl AccessClaims {
    /// When the token was issued, to the millisecond.
    pub fn issued_at_ms(&self) -> Option<i64> {
        let (secs, nanos) = Uuid::parse_str(&self.jti).ok()?.get_timestamp()?.to_unix();
        Some(i64::try_from(secs).ok()? * 1000 + i64::from(nanos / 1_000_000))
    }
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
    pub leeway: Duration,
}

impl From<&AuthConfig> for TokenConfig {
    fn from(auth: &AuthConfig) -> Self {
        Self {
            issuer: auth.jwt_issuer.clone(),
            audience: auth.jwt_audience.clone(),
            ttl: chrono::Duration::seconds(auth.access_token_ttl_secs),
            leeway: chrono::Duration::seconds(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no signing key is active")]
    NoSigningKey,
    #[error("cannot sign: {0}")]
    Signing(jsonwebtoken::errors::Error),
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

pub struct Tokens {
    keys: Arc<KeyRing>,
    config: TokenConfig,
}

/// A signed access token and how long it lives.
pub struct AccessToken {
    pub token: String,
    pub expires_in: i64,
}

impl Tokens {
    pub fn new(keys: Arc<KeyRing>, config: TokenConfig) -> Self {
        Self { keys, config }
    }

    /// The `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    pub fn issue(
        &self,
        user_id: Uuid,
        roles: Vec<Role>,
        session: Uuid,
        facts: &SignInFacts,
        now: DateTime<Utc>,
    ) -> Result<AccessToken, TokenError> {
        let (kid, key) = self.keys.signing_key(now).ok_or(TokenError::NoSigningKey)?;
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: user_id.to_string(),
            exp: (now + self.config.ttl).timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                u64::try_from(now.timestamp()).unwrap_or_default(),
                now.timestamp_subsec_nanos(),
            ))
            .to_string(),
            roles,
            sid: Some(session.to_string()),
            auth_time: facts.auth_time.map(|at| at.timestamp()),
            amr: facts.amr.clone(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &key).map_err(TokenError::Signing)?;
        Ok(AccessToken {
            token,
            expires_in: self.config.ttl.num_seconds(),
        })
    }

    /// The claims of a valid token; the reason is for logs, never clients.
    pub async fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("algorithm"));
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenError::Invalid("type"));
        }
        let kid = header.kid.ok_or(TokenError::Invalid("no kid"))?;
        let key = self
            .keys
            .decoding_key(&kid)
            .await
            .ok_or(TokenError::Invalid("unknown kid"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Times are checked below against our clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .map_err(|_| TokenError::Invalid("signature or claims"))?
            .claims;
        let now = now.timestamp();
        let leeway = self.config.leeway.num_seconds();
        if claims.exp <= now - leeway {
            return Err(TokenError::Invalid("expired"));
        }
        if claims.nbf > now + leeway || claims.iat > now + leeway {
            return Err(TokenError::Invalid("not yet valid"));
        }
        Ok(claims)
    }
}
