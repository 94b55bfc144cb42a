//! What every fault test checks once the parts run again.

use std::time::Duration;

use accountable_projections::users::UserRow;

use super::*;

/// Every row of the `users` read table, by id.
pub async fn all_rows(stack: &TestStack) -> Vec<UserRow> {
    sqlx::query_as(
        "SELECT id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at
           FROM users ORDER BY id",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap()
}

/// Whether `users` rows exist and every one has applied all of its user's events.
pub async fn caught_up(stack: &TestStack, users: i64) -> Option<()> {
    let current = stack
        .count(
            "SELECT count(*) FROM users u
              WHERE u.version = (SELECT max(sequence) FROM events e WHERE e.aggregate_id = u.id::text)",
        )
        .await;
    (current == users).then_some(())
}

/// What every fault test checks once the parts run again: no acknowledged
/// command lost, every committed event on Kafka at least once, the read
/// table equal to the fold of the event store (each event applied once in
/// effect: a rebuild from the store changes nothing), no dead letter.
pub async fn assert_converged(stack: &TestStack, acknowledged: &[Acknowledged]) {
    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT aggregate_id, sequence FROM events ORDER BY position")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    let stored: std::collections::HashSet<(String, i64)> = stored.into_iter().collect();
    for (id, version) in acknowledged {
        assert!(
            stored.contains(&(id.clone(), *version)),
            "acknowledged version {version} of user {id} is not in the event store"
        );
    }

    let consumer = stack.consumer().await;
    let mut unpublished = stored.clone();
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    while !unpublished.is_empty() {
        let message = next_message(&consumer, until).await.unwrap_or_else(|| {
            panic!(
                "{} committed events never reached Kafka, such as {:?}",
                unpublished.len(),
                unpublished.iter().next()
            )
        });
        let sequence = message.headers["ce_sequence"].parse().expect("a sequence");
        unpublished.remove(&(message.headers["ce_subject"].clone(), sequence));
    }

    let users = stack
        .count("SELECT count(DISTINCT aggregate_id) FROM events")
        .await;
    eventually(
        "the read table caught up with the event store",
        Duration::from_secs(90),
        || caught_up(stack, users),
    )
    .await;
    let live = all_rows(stack).await;
    assert_eq!(live.len() as i64, users, "one row per user");
    let rebuilt = stack.cli(&["projections", "rebuild", "users"]).await;
    assert!(
        rebuilt.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert_eq!(
        all_rows(stack).await,
        live,
        "the read table differs from the fold of the event store"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM projection_dead_letters")
            .await,
        0,
        "nothing parked"
    );
}
