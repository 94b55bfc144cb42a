//! The relay publishes every committed event, in commit order, once per
//! leader, and never skips a transaction that commits late.

use std::time::Duration;

use uuid::Uuid;

use crate::helpers::{consume_until, eventually, next_message, TestApi, TestStack};

/// A registration as stored, its personal fields unreadable (as after an
/// erasure): the relay publishes it without holding any key.
fn registered_payload() -> serde_json::Value {
    serde_json::json!({"UserRegistered": {
        "personal": null, "roles": ["USER"], "status": "ACTIVE", "password_hash": null
    }})
}

#[tokio::test]
async fn an_event_with_a_lower_position_that_commits_later_is_not_skipped() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    stack.relay();
    let consumer = stack.consumer().await;

    // T1 takes the lower position and stays open.
    let early_id = Uuid::now_v7().to_string();
    let mut held = stack.pool.begin().await.unwrap();
    let early_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', $1, 1, 'UserRegistered', '1.0', $2, '{}') RETURNING position",
    )
    .bind(&early_id)
    .bind(registered_payload())
    .fetch_one(&mut *held)
    .await
    .unwrap();

    // T2 takes a higher position and commits first.
    let late_id = api.register("late@example.com", "Late").await.id;

    // While T1 is open the relay polls (every 100 ms) and must publish
    // nothing past it: a relay that followed positions alone would publish
    // T2's event now and later skip T1's.
    let window = tokio::time::Instant::now() + Duration::from_millis(1500);
    let published = next_message(&consumer, window).await;
    assert!(
        published.is_none(),
        "published past a running transaction: {published:?}"
    );

    held.commit().await.unwrap();
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| m.len() >= 2).await;
    let position_of = |id: &str| -> i64 {
        let message = messages.iter().find(|m| m.key == id).expect("published");
        message.headers["ce_position"].parse().unwrap()
    };
    assert_eq!(position_of(&early_id), early_position);
    assert!(position_of(&late_id) > early_position);
}

/// Transaction ids are compared as numbers, never as their text: `10`
/// sorts before `9` as text, and a relay ordering by text would move its
/// cursor past the event of transaction 9 before publishing it, so that
/// event would never be published.
#[tokio::test]
async fn events_are_published_in_transaction_order_across_a_power_of_ten() {
    let stack = TestStack::with_config(|config| config.kafka.relay_batch_size = 1).await;
    let api = stack.api().await;
    let first = api.register("first@example.com", "First").await.id;
    let second = api.register("second@example.com", "Second").await.id;
    stack
        .move_to_transactions(&[(&first, "10"), (&second, "9")])
        .await;
    stack.relay();
    let consumer = stack.consumer().await;
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| m.len() >= 2).await;
    let mut keys: Vec<&str> = messages.iter().map(|m| m.key.as_str()).collect();
    keys.sort_unstable();
    let mut expected = [first.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn of_two_relays_only_one_publishes() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    stack.relay();
    stack.relay();

    let count = 20;
    for i in 0..count {
        api.register(&format!("user{i}@example.com"), "Twin").await;
    }
    eventually(
        "the cursor counts every event",
        Duration::from_secs(30),
        || async {
            let published = stack
                .count("SELECT coalesce(sum(published), 0)::bigint FROM relay_cursors")
                .await;
            (published >= count as i64).then_some(())
        },
    )
    .await;

    // Each batch was sent by one relay only: had both published it, both
    // would have counted it.
    assert_eq!(
        stack
            .count("SELECT sum(published)::bigint FROM relay_cursors")
            .await,
        count as i64
    );
    let consumer = stack.consumer().await;
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| m.len() >= count).await;
    let ids: std::collections::HashSet<_> = messages.iter().map(|m| &m.headers["ce_id"]).collect();
    assert_eq!(
        ids.len(),
        count,
        "duplicates among the first {count} messages"
    );
}

/// A stack whose relay polls less often than a test lasts, so that only a
/// wake-up or a recheck brings it back; idle once `first` (a registration
/// its first look may find) is published. The relay is a process of its
/// own, whose warnings show when a test fails.
///
/// Its waits allow for the relay's own recovery (an acknowledgement given
/// up after 15 s, a new producer, the lead taken again), which a loaded
/// broker can call for: still far below the poll.
struct IdleRelay {
    stack: TestStack,
    api: TestApi,
    consumer: rdkafka::consumer::StreamConsumer,
    first: String,
    _relay: tokio::process::Child,
}

/// How long an [`IdleRelay`] test waits for what it expects: a tenth of
/// the relay's poll.
const WITHIN: Duration = Duration::from_secs(60);

impl IdleRelay {
    async fn start() -> Self {
        let stack = TestStack::with_config(|config| config.kafka.relay_poll_ms = 600_000).await;
        let api = stack.api().await;
        let relay = stack.process("relay");
        let consumer = stack.consumer().await;
        let first = api.register("first@example.com", "First").await.id;
        let idle = Self {
            stack,
            api,
            consumer,
            first,
            _relay: relay,
        };
        idle.published(1, "the first event published").await;
        idle
    }

    async fn published(&self, count: i64, what: &str) {
        eventually(what, WITHIN, || async {
            let published = self
                .stack
                .count("SELECT coalesce(sum(published), 0)::bigint FROM relay_cursors")
                .await;
            (published >= count).then_some(())
        })
        .await;
    }

    /// Reads until both `first` and `second` are in: they may lie on
    /// different partitions, fetched apart.
    async fn consume_both(&self, second: &str) {
        consume_until(&self.consumer, WITHIN, |m| {
            m.iter().any(|m| m.key == self.first) && m.iter().any(|m| m.key == second)
        })
        .await;
    }
}

#[tokio::test]
async fn a_commit_wakes_the_idle_relay_without_waiting_for_its_poll() {
    let idle = IdleRelay::start().await;
    let second = idle.api.register("second@example.com", "Second").await.id;
    idle.published(2, "the second event published").await;
    idle.consume_both(&second).await;
}

#[tokio::test]
async fn an_event_held_back_by_an_older_transaction_goes_out_when_it_ends_without_waiting_for_the_poll(
) {
    let idle = IdleRelay::start().await;
    // A transaction with an id, begun before the registration and still
    // running when its wake-up comes: the event is committed, but not yet
    // in the prefix the relay publishes. Ending it sends no wake-up.
    let mut older = idle.stack.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .unwrap();
    let second = idle.api.register("second@example.com", "Second").await.id;
    older.rollback().await.unwrap();
    idle.published(2, "the second event published").await;
    idle.consume_both(&second).await;
}

#[tokio::test]
async fn a_consumer_resuming_at_any_offset_gets_that_offset() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    // A backlog published in one go packs many messages per partition into
    // the producer's queue at once.
    let count = 60;
    for i in 0..count {
        api.register(&format!("backlog{i}@example.com"), "Backlog")
            .await;
    }
    stack.relay();
    let all = consume_until(&stack.consumer().await, Duration::from_secs(30), |m| {
        m.len() >= count
    })
    .await;
    let busiest = (0..stack.config.kafka.topic_partitions)
        .max_by_key(|p| all.iter().filter(|m| m.partition == *p).count())
        .unwrap();
    let last = all
        .iter()
        .filter(|m| m.partition == busiest)
        .map(|m| m.offset)
        .max()
        .unwrap();
    assert!(last >= 4, "too few messages on partition {busiest}");

    // Resuming in the middle of what was published together must start at
    // the offset asked for, not after it.
    for offset in [1, last / 2, last] {
        let consumer = stack.consumer_at(busiest, offset);
        let first = next_message(
            &consumer,
            tokio::time::Instant::now() + Duration::from_secs(30),
        )
        .await
        .expect("a message");
        assert_eq!(
            first.offset, offset,
            "resumed at {offset} of partition {busiest}"
        );
    }
}

#[tokio::test]
async fn killing_the_leading_relay_lets_the_other_take_over() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let mut relays = vec![
        ("relay-a", stack.process_named("relay", "relay-a")),
        ("relay-b", stack.process_named("relay", "relay-b")),
    ];
    let published = || async {
        stack
            .count("SELECT coalesce(sum(published), 0)::bigint FROM relay_cursors")
            .await
    };
    api.register("first@example.com", "First").await;
    eventually("one relay publishes", Duration::from_secs(30), || async {
        (published().await >= 1).then_some(())
    })
    .await;
    // The leader holds the relay's advisory lock; its sessions carry its name.
    let leader: String = eventually("a relay leads", Duration::from_secs(30), || async {
        sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'relay-%'",
        )
        .fetch_optional(&stack.pool)
        .await
        .unwrap()
    })
    .await;
    let index = relays.iter().position(|(name, _)| *name == leader).unwrap();
    let (_, mut killed) = relays.remove(index);
    killed.kill().await.unwrap();

    // The other one takes over: what is written next is published.
    api.register("second@example.com", "Second").await;
    eventually("the standby took over", Duration::from_secs(30), || async {
        (published().await >= 2).then_some(())
    })
    .await;
    let consumer = stack.consumer().await;
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| m.len() >= 2).await;
    assert_eq!(messages.len(), 2);
}
