//! The users' token cutoffs, remembered by the API process so that checking
//! an access token costs no query: the time before which the user's access
//! tokens are refused, and the sessions of theirs that ended on their own
//! (whose access tokens are refused whenever they were issued). The process that ends a user's sessions
//! forgets that user's cutoff at once; a trigger announces every change on
//! [`CHANNEL`], and every other process forgets it when the notice arrives
//! (milliseconds after the commit). Whenever a process is not listening it
//! remembers nothing and reads every cutoff from the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::background::Background;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// The NOTIFY channel of `user_token_cutoffs`; the payload is the user id.
pub const CHANNEL: &str = "token_cutoffs";
/// Users remembered at most; past it the memory starts again empty.
const CAPACITY: usize = 100_000;

/// The user's cutoff, and the sessions of theirs that ended on their own
/// within the life of an access token (`$2` seconds): older ones' access
/// tokens have expired. (The reasons are those of migration 18's index and
/// notice.)
const SELECT: &str = "
SELECT (SELECT not_before FROM user_token_cutoffs WHERE user_id = $1),
       ARRAY(SELECT DISTINCT family_id FROM refresh_tokens
              WHERE user_id = $1 AND revoked_reason IN ('logout', 'ended', 'reuse')
                AND revoked_at > now() - make_interval(secs => $2))";

/// Which access tokens of a user are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cutoff {
    /// Those issued before this.
    pub not_before: Option<DateTime<Utc>>,
    /// Those of these sessions (ended by a logout, `endSession`, or a reused
    /// refresh token).
    pub ended_sessions: Vec<Uuid>,
}

impl Cutoff {
    /// Whether the access tokens of `session` are refused.
    pub fn ended(&self, session: Uuid) -> bool {
        self.ended_sessions.contains(&session)
    }
}

#[derive(Clone)]
pub struct Cutoffs {
    pool: PgPool,
    /// How long an access token lives.
    access_ttl: Duration,
    memory: Arc<Mutex<Memory>>,
}

#[derive(Default)]
struct Memory {
    /// Only while listening is anything remembered.
    listening: bool,
    /// Moves with every announcement and every (re)connection: a cutoff
    /// read before a move may be stale and is not remembered.
    generation: u64,
    known: HashMap<Uuid, Cutoff>,
}

impl Memory {
    fn forget_all(&mut self, listening: bool) {
        self.listening = listening;
        self.generation += 1;
        self.known.clear();
    }
}

impl Cutoffs {
    /// Reads every cutoff from the database until [`Cutoffs::follow`] runs.
    pub fn new(pool: PgPool, access_ttl: Duration) -> Self {
        Self {
            pool,
            access_ttl,
            memory: Arc::default(),
        }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Which access tokens of the user are refused.
    pub async fn get(&self, user_id: Uuid) -> sqlx::Result<Cutoff> {
        let generation = {
            let memory = self.memory();
            if let Some(known) = memory.known.get(&user_id) {
                return Ok(known.clone());
            }
            memory.listening.then_some(memory.generation)
        };
        let (not_before, ended_sessions): (Option<DateTime<Utc>>, Vec<Uuid>) =
            sqlx::query_as(SELECT)
                .bind(user_id)
                .bind(self.access_ttl.as_secs_f64())
                .fetch_one(&self.pool)
                .await?;
        let cutoff = Cutoff {
            not_before,
            ended_sessions,
        };
        let mut memory = self.memory();
        if generation.is_some_and(|g| memory.listening && memory.generation == g) {
            if memory.known.len() >= CAPACITY {
                memory.known.clear();
            }
            memory.known.insert(user_id, cutoff.clone());
        }
        Ok(cutoff)
    }

    /// Forgets the user's cutoff (this process changed it).
    pub fn forget(&self, user_id: Uuid) {
        let mut memory = self.memory();
        memory.generation += 1;
        memory.known.remove(&user_id);
    }

    /// Listens for changes until `shutdown`, connecting again after a
    /// failure; nothing is remembered while not listening.
    pub fn follow(&self, background: &Background) {
        let cutoffs = self.clone();
        let shutdown = background.shutdown();
        background.spawn(async move {
            loop {
                let listened = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    listened = cutoffs.listen() => listened,
                };
                cutoffs.memory().forget_all(false);
                if let Err(error) = listened {
                    tracing::warn!(error = %error, "token cutoff listener failed; reading cutoffs from the database");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }

    /// Listens until the connection is lost.
    async fn listen(&self) -> sqlx::Result<()> {
        let mut listener = crate::db::listener(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        self.memory().forget_all(true);
        // `try_recv` answers `None` when the connection was lost (what was
        // announced meanwhile is gone), where `recv` would reconnect quietly.
        while let Some(notification) = listener.try_recv().await? {
            match Uuid::parse_str(notification.payload()) {
                Ok(user_id) => self.forget(user_id),
                Err(_) => self.memory().forget_all(true),
            }
        }
        Ok(())
    }
}
