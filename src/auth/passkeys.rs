//! Passkeys (WebAuthn, checked by webauthn-rs): the ceremonies of adding
//! one and of signing with it. A ceremony's state (its challenge) is kept
//! here between its begin and its finish and taken once, so that an
//! expired or replayed response is refused; what a ceremony proves is
//! recorded on the `User` aggregate by `commands::passkeys`.

use chrono::{DateTime, Duration, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, CredentialID, DiscoverableAuthentication,
    DiscoverableKey, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Webauthn, WebauthnBuilder,
    WebauthnError,
};
use webauthn_rs_proto::ResidentKeyRequirement;

/// How long a ceremony may take, from its begin to its finish.
pub const CEREMONY_TTL: Duration = Duration::minutes(5);
/// The longest response of an authenticator looked at, in JSON: a real one
/// (with an attestation certificate chain) is a few kilobytes.
pub const MAX_RESPONSE_LEN: usize = 32 * 1024;

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Adding a passkey to the signed-in user's account.
    Register,
    /// Signing in with a passkey alone: the authenticator picks it.
    SignIn,
    /// The second step of a password sign-in.
    SecondStep,
    /// Proving again who the signed-in user is.
    Reauthenticate,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::SignIn => "sign-in",
            Self::SecondStep => "second-step",
            Self::Reauthenticate => "reauthenticate",
        }
    }
}

/// A ceremony begun: its id, and the options for
/// `navigator.credentials.create` or `.get` (WebAuthn's JSON form).
pub struct Begun {
    pub ceremony: Uuid,
    pub options: serde_json::Value,
}

/// A ceremony taken for its finish.
pub struct Taken {
    pub user_id: Option<Uuid>,
    pub login_challenge: Option<Uuid>,
    state: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// Unknown, expired, used, or for something else.
    #[error("no such ceremony")]
    Ceremony,
    /// The response is no WebAuthn credential in JSON, or too long.
    #[error("not a WebAuthn response: {0}")]
    Malformed(&'static str),
    /// The response did not verify (origin, relying party, challenge,
    /// signature, user verification).
    #[error("the passkey did not verify")]
    Refused,
    /// A signature counter that did not go up.
    #[error("the signature counter did not go up")]
    CounterRegressed,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("ceremony state: {0}")]
    State(#[from] serde_json::Error),
}

const CREATE: &str = "
INSERT INTO passkey_ceremonies (id, purpose, user_id, login_challenge, state, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)";
/// Taken once: of two finishes of one ceremony, one gets the row.
const TAKE: &str = "
DELETE FROM passkey_ceremonies WHERE id = $1 AND purpose = $2 AND expires_at > $3
RETURNING user_id, login_challenge, state";
/// A few hundred at a time, at each begin: the table stays small.
const FORGET_OLD: &str = "
DELETE FROM passkey_ceremonies
 WHERE id IN (SELECT id FROM passkey_ceremonies WHERE expires_at < $1 LIMIT 500)";

pub struct Passkeys {
    webauthn: Webauthn,
    pool: PgPool,
}

impl Passkeys {
    /// The relying party `rp_id` (a registrable domain, or `localhost`),
    /// served at `origins` (each `https://…`, or `http://localhost…`).
    pub fn new(pool: PgPool, rp_id: &str, origins: &[String]) -> anyhow::Result<Self> {
        let mut urls = origins.iter().map(|origin| {
            Url::parse(origin).map_err(|error| anyhow::anyhow!("WebAuthn origin {origin}: {error}"))
        });
        let first = urls
            .next()
            .ok_or_else(|| anyhow::anyhow!("at least one WebAuthn origin is needed"))??;
        let mut builder = WebauthnBuilder::new(rp_id, &first)
            .map_err(|error| anyhow::anyhow!("WebAuthn relying party {rp_id}: {error}"))?
            .rp_name("Accountable");
        for url in urls {
            builder = builder.append_allowed_origin(&url?);
        }
        let webauthn = builder
            .build()
            .map_err(|error| anyhow::anyhow!("WebAuthn relying party {rp_id}: {error}"))?;
        Ok(Self { webauthn, pool })
    }

    /// Begins adding a passkey for `user_id`: a discoverable credential
    /// (it can sign in without an address), verified by the user, none of
    /// `existing` again.
    pub async fn begin_registration(
        &self,
        user_id: Uuid,
        user_name: &str,
        display_name: &str,
        existing: &[Passkey],
        now: DateTime<Utc>,
    ) -> Result<Begun, PasskeyError> {
        let exclude: Vec<CredentialID> = existing.iter().map(|key| key.cred_id().clone()).collect();
        let (mut options, state): (CreationChallengeResponse, PasskeyRegistration) = self
            .webauthn
            .start_passkey_registration(user_id, user_name, display_name, Some(exclude))
            .map_err(|_| PasskeyError::Refused)?;
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Required);
            selection.require_resident_key = true;
        }
        self.begin(
            Purpose::Register,
            Some(user_id),
            None,
            &options,
            &state,
            now,
        )
        .await
    }

    /// Checks the authenticator's answer to a registration of `user_id`:
    /// the new passkey.
    pub fn finish_registration(
        &self,
        taken: &Taken,
        response: &str,
    ) -> Result<Passkey, PasskeyError> {
        let response: RegisterPublicKeyCredential = parse(response)?;
        let state: PasskeyRegistration = serde_json::from_value(taken.state.clone())?;
        self.webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(|error| {
                tracing::info!(?error, "a passkey registration did not verify");
                PasskeyError::Refused
            })
    }

    /// Begins a sign-in with a passkey alone: no account is named, so the
    /// answer is the same whoever asks.
    pub async fn begin_sign_in(&self, now: DateTime<Utc>) -> Result<Begun, PasskeyError> {
        let (mut options, state): (RequestChallengeResponse, DiscoverableAuthentication) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|_| PasskeyError::Refused)?;
        // A modal request: the page asks when the user chooses to.
        options.mediation = None;
        self.begin(Purpose::SignIn, None, None, &options, &state, now)
            .await
    }

    /// Begins a signature by one of `passkeys` of `user_id` (a second step
    /// of `login_challenge`, or a re-authentication).
    pub async fn begin_for(
        &self,
        purpose: Purpose,
        user_id: Uuid,
        login_challenge: Option<Uuid>,
        passkeys: &[Passkey],
        now: DateTime<Utc>,
    ) -> Result<Begun, PasskeyError> {
        let (options, state): (RequestChallengeResponse, PasskeyAuthentication) = self
            .webauthn
            .start_passkey_authentication(passkeys)
            .map_err(|_| PasskeyError::Refused)?;
        self.begin(
            purpose,
            Some(user_id),
            login_challenge,
            &options,
            &state,
            now,
        )
        .await
    }

    /// Takes the ceremony `id` begun for `purpose`, once, before it expired.
    pub async fn take(
        &self,
        id: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<Taken, PasskeyError> {
        let id = Uuid::try_parse(id).map_err(|_| PasskeyError::Ceremony)?;
        let row: Option<(Option<Uuid>, Option<Uuid>, serde_json::Value)> = sqlx::query_as(TAKE)
            .bind(id)
            .bind(purpose.as_str())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        let (user_id, login_challenge, state) = row.ok_or(PasskeyError::Ceremony)?;
        Ok(Taken {
            user_id,
            login_challenge,
            state,
        })
    }

    /// Checks a signature against the ceremony and `passkey`, the one the
    /// response names.
    pub fn finish_signature(
        &self,
        purpose: Purpose,
        taken: &Taken,
        response: &PublicKeyCredential,
        passkey: &Passkey,
    ) -> Result<AuthenticationResult, PasskeyError> {
        let verified = if purpose == Purpose::SignIn {
            let state: DiscoverableAuthentication = serde_json::from_value(taken.state.clone())?;
            self.webauthn.finish_discoverable_authentication(
                response,
                state,
                &[DiscoverableKey::from(passkey)],
            )
        } else {
            let state: PasskeyAuthentication = serde_json::from_value(taken.state.clone())?;
            self.webauthn
                .finish_passkey_authentication(response, &state)
        };
        verified.map_err(|error| match error {
            WebauthnError::CredentialPossibleCompromise => PasskeyError::CounterRegressed,
            error => {
                tracing::info!(?error, "a passkey signature did not verify");
                PasskeyError::Refused
            }
        })
    }

    async fn begin(
        &self,
        purpose: Purpose,
        user_id: Option<Uuid>,
        login_challenge: Option<Uuid>,
        options: &impl Serialize,
        state: &impl Serialize,
        now: DateTime<Utc>,
    ) -> Result<Begun, PasskeyError> {
        sqlx::query(FORGET_OLD)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let ceremony = Uuid::new_v4();
        sqlx::query(CREATE)
            .bind(ceremony)
            .bind(purpose.as_str())
            .bind(user_id)
            .bind(login_challenge)
            .bind(serde_json::to_value(state)?)
            .bind(now + CEREMONY_TTL)
            .execute(&self.pool)
            .await?;
        Ok(Begun {
            ceremony,
            options: serde_json::to_value(options)?,
        })
    }
}

/// A signature response of an authenticator, from its JSON.
pub fn signature(response: &str) -> Result<PublicKeyCredential, PasskeyError> {
    parse(response)
}

fn parse<T: DeserializeOwned>(response: &str) -> Result<T, PasskeyError> {
    if response.len() > MAX_RESPONSE_LEN {
        return Err(PasskeyError::Malformed("longer than 32 KiB"));
    }
    serde_json::from_str(response).map_err(|_| PasskeyError::Malformed("not a credential's JSON"))
}

/// A passkey as the account keeps it (the library's JSON), and back.
pub fn to_stored(passkey: &Passkey) -> Result<String, serde_json::Error> {
    serde_json::to_string(passkey)
}

pub fn from_stored(stored: &str) -> Result<Passkey, serde_json::Error> {
    serde_json::from_str(stored)
}
