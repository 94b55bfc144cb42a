//! The background loops of a process (key and cut-off listeners, the live
//! feed, the read-your-writes watch, checkpoints), held together so that
//! shutdown stops them with one signal and waits until each has ended.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct Background {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Background {
    /// Loops that end when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
        }
    }

    /// What every loop must stop on.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Stops every loop and waits until each has ended.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stop_waits_until_every_loop_has_ended() {
        let background = Background::new(CancellationToken::new());
        let finished = Arc::new(AtomicBool::new(false));
        let (shutdown, done) = (background.shutdown(), finished.clone());
        background.spawn(async move {
            shutdown.cancelled().await;
            // Work a loop does on its way out (a last flush, a close).
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.store(true, Ordering::SeqCst);
        });
        background.stop().await;
        assert!(finished.load(Ordering::SeqCst));
    }
}
