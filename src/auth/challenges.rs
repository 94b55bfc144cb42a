//! The second step of a sign-in: a short-lived challenge, handed out once
//! the password checked out, and taken once with a second factor. Kept in
//! a table with an expiry (a challenge is no fact of the account's).

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// How long the second step may take.
pub const CHALLENGE_TTL: Duration = Duration::minutes(5);

const CREATE: &str = "
INSERT INTO login_challenges (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
const OPEN: &str = "
SELECT user_id FROM login_challenges WHERE id = $1 AND used_at IS NULL AND expires_at > $2";
/// Taken once: of two completions of one challenge, one gets the row.
const TAKE: &str = "
UPDATE login_challenges SET used_at = $2
 WHERE id = $1 AND used_at IS NULL AND expires_at > $2
RETURNING user_id";
const FORGET_OLD: &str = "DELETE FROM login_challenges WHERE expires_at < $1";

pub struct Challenges {
    pool: PgPool,
}

impl Challenges {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A new challenge for `user_id`; challenges expired a day ago are
    /// forgotten on the way, so the table stays small.
    pub async fn create(&self, user_id: Uuid, now: DateTime<Utc>) -> sqlx::Result<Uuid> {
        sqlx::query(FORGET_OLD)
            .bind(now - Duration::days(1))
            .execute(&self.pool)
            .await?;
        let id = Uuid::new_v4();
        sqlx::query(CREATE)
            .bind(id)
            .bind(user_id)
            .bind(now)
            .bind(now + CHALLENGE_TTL)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// The user of a challenge that is still open.
    pub async fn open(&self, id: Uuid, now: DateTime<Utc>) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar(OPEN)
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
    }

    /// Takes the challenge: `None` when it was taken already or expired.
    pub async fn take(&self, id: Uuid, now: DateTime<Utc>) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar(TAKE)
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
    }
}
