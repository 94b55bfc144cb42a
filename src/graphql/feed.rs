//! Live events for subscriptions: one task per process follows the event
//! store in commit order (woken by the NOTIFY sent after appends, with a
//! polling fallback) and broadcasts each event, opened, to every
//! subscription.

use std::sync::Arc;
use std::time::Duration;

use crate::background::Background;
use accountable_vault::Vault;
use sqlx::PgPool;
use tokio::sync::broadcast;

use crate::audit::history::{self, ReadableEvent};
use crate::store;
use crate::store::wake::{Recheck, EVENTS_CHANNEL};

/// How many events a slow subscription may fall behind before it is told
/// so and ended.
const BACKLOG: usize = 1024;
/// How often the store is read when no NOTIFY arrives.
const POLL_EVERY: Duration = Duration::from_millis(500);
const PAGE: i64 = 500;

#[derive(Clone)]
pub struct EventFeed {
    sender: broadcast::Sender<Arc<ReadableEvent>>,
}

impl EventFeed {
    /// Starts following the store from its current end; stops with
    /// `shutdown`.
    pub async fn start(
        pool: PgPool,
        vault: Arc<Vault>,
        background: &Background,
    ) -> sqlx::Result<Self> {
        let shutdown = background.shutdown();
        let (sender, _) = broadcast::channel(BACKLOG);
        let mut listener = crate::db::listener(&pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        let mut cursor = store::committed::end(&pool).await?;
        let feed = Self {
            sender: sender.clone(),
        };
        background.spawn(async move {
            let mut recheck = Recheck::new(POLL_EVERY);
            let mut wait = POLL_EVERY;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = listener.recv() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                if sender.receiver_count() == 0 {
                    // Nobody follows: move to the end without reading (and
                    // decrypting) what nobody would receive.
                    wait = recheck.wait(false);
                    match store::committed::end(&pool).await {
                        Ok(latest) => {
                            if latest.is_some() {
                                cursor = latest;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "the live event feed cannot read the store");
                        }
                    }
                    continue;
                }
                loop {
                    let page = match history::follow(&pool, &vault, cursor.as_ref(), PAGE).await {
                        Ok(page) => page,
                        Err(error) => {
                            tracing::warn!(error = %error, "the live event feed cannot read the store");
                            break;
                        }
                    };
                    for (position, why) in &page.unreadable {
                        // Left out and gone on from: one bad event must not
                        // stop every subscription (the relay parks it).
                        tracing::error!(
                            position,
                            why,
                            "the live event feed skipped an event it cannot read"
                        );
                        metrics::counter!("accountable_feed_unreadable_events_total").increment(1);
                    }
                    if page.cursor.is_some() {
                        cursor = page.cursor;
                    }
                    for event in page.events {
                        // No subscriber is not an error.
                        let _ = sender.send(Arc::new(event));
                    }
                    if i64::try_from(page.read).unwrap_or_default() < PAGE {
                        break;
                    }
                }
                let held_back = store::committed::held_back(&pool).await.unwrap_or_default();
                wait = recheck.wait(held_back);
            }
        });
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ReadableEvent>> {
        self.sender.subscribe()
    }
}
