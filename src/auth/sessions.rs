//! Sessions: opaque refresh tokens, stored only as SHA-256 hashes, rotated
//! on every use, a family revoked as a whole when a replaced token comes
//! back; and the per-user cut-off before which access tokens are refused.
//!
//! Every change to a user's sessions runs under the user's session lock
//! (`lock_user_sessions`, migration 13), and so does every event that ends
//! them (a trigger, in the event's own transaction): a refresh racing the
//! end of its sessions either commits first, and its new token is revoked
//! with the rest, or comes after, and finds its token revoked or the
//! account closed. No session starts or refreshes on a closed account.
//!
//! A user sees their live sessions (where and when each began, when it was
//! last refreshed, how they signed in) and may end any one of them: its
//! refresh token is revoked and its access tokens are refused at once
//! (the cut-off's ended sessions, [`super::cutoffs`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::cutoffs::{Cutoff, Cutoffs};
use super::tokens::SignInFacts;
use crate::background::Background;
use crate::commands::Origin;
use crate::config::AuthConfig;

/// A refresh token is 256 random bits, 43 characters in base64url.
const TOKEN_BYTES: usize = 32;
/// Longest string looked up as a refresh token.
const MAX_TOKEN_LEN: usize = 64;
/// Most sessions listed for one user, the most recently used first.
pub const MAX_LISTED: i64 = 100;

#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// A token unused this long expires.
    pub idle: Duration,
    /// A family lives at most this long from login.
    pub absolute: Duration,
}

impl From<&AuthConfig> for SessionConfig {
    fn from(auth: &AuthConfig) -> Self {
        Self {
            idle: chrono::Duration::seconds(auth.refresh_idle_secs),
            absolute: chrono::Duration::seconds(auth.refresh_max_secs),
        }
    }
}

/// Why a refresh token was refused. Clients see one answer for all.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Unknown,
    Revoked,
    Expired,
    /// A replaced token came back: its whole family is now revoked.
    Reused,
}

/// A live session, as its user sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionView {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    /// When its refresh token was last used (or the session began).
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    pub auth_time: Option<DateTime<Utc>>,
    pub amr: Vec<String>,
}

pub struct Rotated {
    pub user_id: Uuid,
    pub token: String,
    /// The session (token family).
    pub family_id: Uuid,
    /// When and how the session's user last proved who they are.
    pub facts: SignInFacts,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    family_id: Uuid,
    user_id: Uuid,
    idle_expires_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    replaced_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    auth_time: Option<DateTime<Utc>>,
    amr: Vec<String>,
    started_at: Option<DateTime<Utc>>,
    client_address: Option<String>,
    user_agent: Option<String>,
}

/// The condition on a token of being its session's live one at `$at`: not
/// revoked, not replaced, not expired.
macro_rules! live_at {
    ($at:literal) => {
        concat!(
            "revoked_at IS NULL AND replaced_at IS NULL AND expires_at > ",
            $at,
            " AND idle_expires_at > ",
            $at
        )
    };
}

const INSERT_TOKEN: &str = "
INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, idle_expires_at, expires_at,
                            auth_time, amr, started_at, client_address, user_agent)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const SELECT_FOR_UPDATE: &str = "
SELECT family_id, user_id, idle_expires_at, expires_at, replaced_at, revoked_at, auth_time, amr,
       started_at, client_address, user_agent
  FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE";

/// The live sessions of the user `$1` at `$2`, the most recently used first.
const LIST_LIVE: &str = concat!(
    "SELECT family_id AS id, coalesce(started_at, created_at) AS started_at, created_at AS last_used_at,
            expires_at, client_address, user_agent, auth_time, amr
       FROM refresh_tokens
      WHERE user_id = $1 AND ",
    live_at!("$2"),
    " ORDER BY created_at DESC LIMIT $3"
);

/// The user whose session `$1` is, if it is live at `$2`.
const OWNER: &str = concat!(
    "SELECT user_id FROM refresh_tokens WHERE family_id = $1 AND ",
    live_at!("$2")
);

/// Forgets up to `$2` tokens of sessions that ended over a day before `$1`:
/// a replaced token is kept while its family lives, to catch its reuse,
/// and an ended session's access tokens have long expired by then.
const FORGET_OLD: &str = "
DELETE FROM refresh_tokens
 WHERE id IN (SELECT id FROM refresh_tokens WHERE expires_at < $1 - interval '1 day' LIMIT $2)";
/// Tokens forgotten at most per sign-in: each sign-in clears more than the
/// rows a session leaves, and no sign-in waits on a long delete.
const FORGET_AT_ONCE: i64 = 500;

/// Ends the session `$1` of the user `$2`, if it is live.
const END_ONE: &str = concat!(
    "UPDATE refresh_tokens SET revoked_at = $3, revoked_reason = 'ended'
      WHERE family_id = $1 AND user_id = $2 AND ",
    live_at!("$3")
);

/// A re-authentication: the live token of the session carries it on.
const PROVEN_AGAIN: &str = concat!(
    "UPDATE refresh_tokens SET auth_time = $3, amr = $4 WHERE family_id = $1 AND user_id = $2 AND ",
    live_at!("$3")
);

/// Takes the session lock of the user `$1`; answers whether the account is
/// open.
const LOCK_USER: &str = "SELECT lock_user_sessions($1)";

/// Takes the session lock of the user whose token hash is `$1`; answers
/// whether the account is open (no row: no such token).
const LOCK_TOKEN_USER: &str =
    "SELECT lock_user_sessions(user_id) FROM refresh_tokens WHERE token_hash = $1";

const REVOKE_FAMILY: &str = "
UPDATE refresh_tokens SET revoked_at = $2, revoked_reason = $3
 WHERE family_id = $1 AND revoked_at IS NULL";

const END_ALL: &str = "SELECT end_user_sessions($1, $2, $3, NULL)";

pub struct Sessions {
    pool: PgPool,
    config: SessionConfig,
    cutoffs: Cutoffs,
}

impl Sessions {
    pub fn new(pool: PgPool, config: SessionConfig, cutoffs: Cutoffs) -> Self {
        Self {
            cutoffs,
            pool,
            config,
        }
    }

    /// A new session: its refresh token and its id (the token family);
    /// `None` when the account is closed. Tokens of sessions long over are
    /// forgotten on the way, so the table does not grow without end.
    pub async fn start(
        &self,
        user_id: Uuid,
        facts: &SignInFacts,
        origin: &Origin,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Option<(String, Uuid)>> {
        let token = new_token();
        let family_id = Uuid::now_v7();
        let expires_at = now + self.config.absolute;
        sqlx::query(FORGET_OLD)
            .bind(now)
            .bind(FORGET_AT_ONCE)
            .execute(&self.pool)
            .await?;
        let mut connection = crate::db::for_transaction(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let open: bool = sqlx::query_scalar(LOCK_USER)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        if !open {
            return Ok(None);
        }
        sqlx::query(INSERT_TOKEN)
            .bind(Uuid::now_v7())
            .bind(family_id)
            .bind(user_id)
            .bind(hash(&token))
            .bind(now)
            .bind((now + self.config.idle).min(expires_at))
            .bind(expires_at)
            .bind(facts.auth_time)
            .bind(&facts.amr)
            .bind(now)
            .bind(&origin.client_address)
            .bind(&origin.user_agent)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((token, family_id)))
    }

    /// Whether the session still has a live refresh token (not logged out,
    /// revoked or expired).
    pub async fn is_live(&self, family_id: Uuid, now: DateTime<Utc>) -> sqlx::Result<bool> {
        Ok(self.owner(family_id, now).await?.is_some())
    }

    /// Replaces `token` by a new one of its family. Of two concurrent uses
    /// of one token, the user's session lock lets one through; the other
    /// sees a replaced token and revokes the family.
    pub async fn rotate(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Result<Rotated, Refused>> {
        if token.len() > MAX_TOKEN_LEN {
            return Ok(Err(Refused::Unknown));
        }
        let mut connection = crate::db::for_transaction(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let open: Option<bool> = sqlx::query_scalar(LOCK_TOKEN_USER)
            .bind(hash(token))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(open) = open else {
            return Ok(Err(Refused::Unknown));
        };
        let row: Option<TokenRow> = sqlx::query_as(SELECT_FOR_UPDATE)
            .bind(hash(token))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(Err(Refused::Unknown));
        };
        if row.revoked_at.is_some() || !open {
            return Ok(Err(Refused::Revoked));
        }
        if row.replaced_at.is_some() {
            sqlx::query(REVOKE_FAMILY)
                .bind(row.family_id)
                .bind(now)
                .bind("reuse")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            self.forget_cutoff(row.user_id);
            tracing::warn!(user = %row.user_id, family = %row.family_id, "refresh token reused; family revoked");
            return Ok(Err(Refused::Reused));
        }
        if row.idle_expires_at <= now || row.expires_at <= now {
            return Ok(Err(Refused::Expired));
        }
        sqlx::query("UPDATE refresh_tokens SET replaced_at = $2 WHERE token_hash = $1")
            .bind(hash(token))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let next = new_token();
        sqlx::query(INSERT_TOKEN)
            .bind(Uuid::now_v7())
            .bind(row.family_id)
            .bind(row.user_id)
            .bind(hash(&next))
            .bind(now)
            .bind((now + self.config.idle).min(row.expires_at))
            .bind(row.expires_at)
            .bind(row.auth_time)
            .bind(&row.amr)
            .bind(row.started_at)
            .bind(&row.client_address)
            .bind(&row.user_agent)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(Rotated {
            user_id: row.user_id,
            token: next,
            family_id: row.family_id,
            facts: SignInFacts {
                auth_time: row.auth_time,
                amr: row.amr,
            },
        }))
    }

    /// The user of the session `family_id` proved who they are again: its
    /// refreshes carry that on. `false` when the session is not live.
    pub async fn proven_again(
        &self,
        family_id: Uuid,
        user_id: Uuid,
        facts: &SignInFacts,
    ) -> sqlx::Result<bool> {
        let updated = sqlx::query(PROVEN_AGAIN)
            .bind(family_id)
            .bind(user_id)
            .bind(facts.auth_time)
            .bind(&facts.amr)
            .execute(&self.pool)
            .await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Ends the session `token` belongs to, and its access tokens with it.
    /// Whether it was a live token is not revealed.
    pub async fn end(&self, token: &str, now: DateTime<Utc>) -> sqlx::Result<()> {
        if token.len() > MAX_TOKEN_LEN {
            return Ok(());
        }
        let mut connection = crate::db::for_transaction(&self.pool).await?;
        let mut tx = connection.begin().await?;
        sqlx::query(LOCK_TOKEN_USER)
            .bind(hash(token))
            .fetch_optional(&mut *tx)
            .await?;
        let ended: Option<Uuid> = sqlx::query_scalar(
            "UPDATE refresh_tokens SET revoked_at = $2, revoked_reason = 'logout'
              WHERE revoked_at IS NULL
                AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
             RETURNING user_id",
        )
        .bind(hash(token))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(user_id) = ended {
            self.forget_cutoff(user_id);
        }
        Ok(())
    }

    /// The live sessions of the user, the most recently used first (at
    /// most [`MAX_LISTED`]).
    pub async fn list(&self, user_id: Uuid, now: DateTime<Utc>) -> sqlx::Result<Vec<SessionView>> {
        sqlx::query_as(LIST_LIVE)
            .bind(user_id)
            .bind(now)
            .bind(MAX_LISTED)
            .fetch_all(&self.pool)
            .await
    }

    /// The user whose session `family_id` is, if it is live.
    pub async fn owner(&self, family_id: Uuid, now: DateTime<Utc>) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar(OWNER)
            .bind(family_id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
    }

    /// Ends the session `family_id` of the user: its refresh token is
    /// revoked and its access tokens are refused from now on. `false` when
    /// the user has no such live session.
    pub async fn end_one(
        &self,
        family_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let mut connection = crate::db::for_transaction(&self.pool).await?;
        let mut tx = connection.begin().await?;
        sqlx::query(LOCK_USER)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        let ended = sqlx::query(END_ONE)
            .bind(family_id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let ended = ended.rows_affected() > 0;
        if ended {
            self.forget_cutoff(user_id);
        }
        Ok(ended)
    }

    /// Ends every session of the user: refresh tokens revoked, and access
    /// tokens issued until now refused.
    pub async fn end_all(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
        reason: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(END_ALL)
            .bind(user_id)
            .bind(now)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        self.forget_cutoff(user_id);
        Ok(())
    }

    /// The user's cutoff changed here: this process forgets it at once;
    /// others when the trigger's notice reaches them.
    fn forget_cutoff(&self, user_id: Uuid) {
        self.cutoffs.forget(user_id);
    }

    /// Which access tokens of the user are refused.
    pub async fn cutoff(&self, user_id: Uuid) -> sqlx::Result<Cutoff> {
        self.cutoffs.get(user_id).await
    }

    /// Remembers cutoffs from now on, forgetting each as it changes.
    pub fn follow_cutoffs(&self, background: &Background) {
        self.cutoffs.follow(background);
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
