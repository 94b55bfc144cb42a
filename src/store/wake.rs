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

use std::time::Duration;

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

/// How long a reader of the committed prefix waits for a wake-up before it
/// looks again: its poll; or, while committed events are held back behind
/// a transaction still running (see [`super::committed::held_back`]), whose
/// wake-up came before they joined the prefix, a pause that starts short
/// and doubles, up to a second.
#[derive(Debug)]
pub struct Recheck {
    poll: Duration,
    pause: Duration,
}

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MOST_PAUSE: Duration = Duration::from_secs(1);

impl Recheck {
    pub fn new(poll: Duration) -> Self {
        Self {
            poll,
            pause: FIRST_PAUSE,
        }
    }

    /// The wait before the next look, given whether the last one left
    /// events held back.
    pub fn wait(&mut self, held_back: bool) -> Duration {
        if !held_back {
            self.pause = FIRST_PAUSE;
            return self.poll;
        }
        let wait = self.pause.min(self.poll);
        self.pause = (self.pause * 2).min(MOST_PAUSE);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_events_are_looked_for_again_sooner_and_sooner_less_often_up_to_a_second() {
        let mut recheck = Recheck::new(Duration::from_secs(600));
        let waits: Vec<u128> = (0..10).map(|_| recheck.wait(true).as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(recheck.wait(false), Duration::from_secs(600));
        assert_eq!(recheck.wait(true), Duration::from_millis(5));
    }

    #[test]
    fn a_short_poll_bounds_the_pause() {
        let mut recheck = Recheck::new(Duration::from_millis(30));
        let waits: Vec<u128> = (0..4).map(|_| recheck.wait(true).as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 30]);
    }
}
