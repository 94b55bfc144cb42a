//! The wake-up that follows a commit of events: `NOTIFY accountable_events`
//! (the relay, the mailer and the live feed listen), sent once the commit is
//! over, by one task per process and coalesced: however many commits end
//! while one wake-up is on its way, one more follows it.
//!
//! A `NOTIFY` inside the appending transaction (a statement trigger, as it
//! was) tells the same thing but serialises every commit: PostgreSQL holds
//! its notification queue lock from a notifying transaction's pre-commit to
//! its end, WAL flush included, so appends could not share a flush. Events
//! that no wake-up announces (appended by hand, or by a process that died
//! after its commit) are found by the listeners' polls.

use sqlx::PgPool;
use tokio::sync::mpsc;

/// The channel the wake-up is sent on.
pub const EVENTS_CHANNEL: &str = "accountable_events";
const NOTIFY: &str = "SELECT pg_notify($1, '')";

/// Sends the wake-ups of one process; clones share its task, which ends
/// when the last is dropped.
#[derive(Clone)]
pub struct Wake(mpsc::Sender<()>);

impl Wake {
    /// Starts the task that sends the wake-ups, on the current runtime.
    pub fn start(pool: PgPool) -> Self {
        // One slot: a wake-up waiting to be sent stands for every commit
        // that ended before it goes.
        let (due, mut waiting) = mpsc::channel(1);
        tokio::spawn(async move {
            while waiting.recv().await.is_some() {
                if let Err(error) = sqlx::query(NOTIFY)
                    .bind(EVENTS_CHANNEL)
                    .execute(&pool)
                    .await
                {
                    tracing::debug!(error = %error, "could not announce appended events; the listeners' polls find them");
                }
            }
        });
        Self(due)
    }

    /// Announces that events were committed.
    pub fn committed(&self) {
        // Full: a wake-up is due already, and will be sent after this commit.
        let _ = self.0.try_send(());
    }
}
