//! Waiting for a condition, never for a fixed time.

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or fails at the deadline.
pub async fn eventually<T, Fut>(what: &str, deadline: Duration, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
