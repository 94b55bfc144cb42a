//! Read-your-writes: lets a query wait until the read side has applied a
//! given version, woken by the projection workers' NOTIFY after each batch.

use std::sync::Arc;
use std::time::Duration;

use crate::background::Background;
use accountable_projections::users::UserRow;
use accountable_projections::worker::PROJECTED_CHANNEL;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::loader;

/// Counts projected batches; waiters look again at every change.
#[derive(Clone)]
pub struct ProjectionWatch {
    batches: watch::Receiver<u64>,
}

/// The row had not reached the version asked for in time.
#[derive(Debug)]
pub struct Stale {
    pub current: Option<i64>,
}

impl ProjectionWatch {
    /// Starts listening; the listener reconnects by itself and stops with
    /// `shutdown`.
    pub async fn start(pool: &PgPool, background: &Background) -> sqlx::Result<Self> {
        let mut listener = crate::db::listener(pool).await?;
        listener.listen(PROJECTED_CHANNEL).await?;
        let (tx, batches) = watch::channel(0);
        let shutdown = background.shutdown();
        background.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    received = listener.recv() => match received {
                        Ok(_) => { tx.send_modify(|n| *n += 1); }
                        Err(error) => {
                            tracing::warn!(error = %error, "projection listener failed");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    },
                }
            }
        });
        Ok(Self { batches })
    }

    /// The row of `id` once its version is at least `min_version`.
    pub async fn user_at_least(
        &self,
        users: &loader::Users,
        id: Uuid,
        min_version: i64,
        timeout: Duration,
    ) -> Result<Result<UserRow, Stale>, Arc<sqlx::Error>> {
        let mut batches = self.batches.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            batches.mark_unchanged();
            let row = users.load_one(id).await?;
            match row {
                Some(row) if row.version >= min_version => return Ok(Ok(row)),
                _ => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Err(Stale {
                    current: row.map(|r| r.version),
                }));
            }
            // A batch that committed since `mark_unchanged` has marked the
            // receiver changed, so no wake-up is lost; the short bound covers
            // a listener that is reconnecting.
            let next = deadline.min(now + Duration::from_millis(100));
            if let Ok(Err(_)) = tokio::time::timeout_at(next, batches.changed()).await {
                tokio::time::sleep_until(next).await;
            }
        }
    }
}
