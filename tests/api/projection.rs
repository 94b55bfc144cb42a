//! The `users` projection applies each event exactly once in effect, parks
//! what it cannot apply, and converges after its workers are killed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use accountable_projections::users::{self, UserRow};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{
    all_rows, caught_up, consume_until, eventually, Received, TestStack, PASSWORD,
};

fn producer(stack: &TestStack) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &stack.config.kafka.bootstrap_servers)
        .create()
        .unwrap()
}

/// Sends `value` to the partition of `like`, and returns its offset.
async fn send_beside(stack: &TestStack, like: &Received, key: &str, value: &[u8]) -> i64 {
    producer(stack)
        .send(
            FutureRecord::to(&stack.config.kafka.events_topic)
                .partition(like.partition)
                .key(key)
                .payload(value),
            Duration::from_secs(10),
        )
        .await
        .expect("sent")
        .offset
}

/// Waits until the projection has applied everything up to `offset` of `partition`.
async fn applied_through(stack: &TestStack, partition: i32, offset: i64) {
    eventually(
        "the projection reaches the offset",
        Duration::from_secs(30),
        || async {
            let next: Option<i64> = sqlx::query_scalar(
                "SELECT next_offset FROM projection_checkpoints WHERE partition = $1",
            )
            .bind(partition)
            .fetch_optional(&stack.pool)
            .await
            .unwrap();
            next.filter(|next| *next > offset).map(|_| ())
        },
    )
    .await;
}

async fn row(stack: &TestStack, id: &str) -> Option<UserRow> {
    users::find_many(&stack.pool, &[Uuid::parse_str(id).unwrap()])
        .await
        .unwrap()
        .pop()
}

/// Registers a user and returns its id and its message on the topic.
async fn registered(stack: &TestStack, api: &crate::helpers::TestApi) -> (String, Received) {
    let id = api.register("ada@example.com", "Ada").await.id;
    let consumer = stack.consumer().await;
    let message = consume_until(&consumer, Duration::from_secs(30), |m| !m.is_empty()).await;
    applied_through(stack, message[0].partition, message[0].offset).await;
    (id, message[0].clone())
}

#[tokio::test]
async fn delivering_the_same_event_twice_leaves_the_row_as_after_once() {
    let (stack, api) = TestStack::full().await;
    let (id, original) = registered(&stack, &api).await;
    let before = row(&stack, &id).await.expect("projected");

    // The same message again, and a different message claiming the same
    // (user, sequence): both are re-deliveries of sequence 1.
    let mut impostor = original.value.clone();
    impostor["data"]["personal"]["display_name"] = json!("Mallory");
    send_beside(
        &stack,
        &original,
        &id,
        original.value.to_string().as_bytes(),
    )
    .await;
    let last = send_beside(&stack, &original, &id, impostor.to_string().as_bytes()).await;
    applied_through(&stack, original.partition, last).await;

    assert_eq!(row(&stack, &id).await, Some(before));
    assert_eq!(
        stack
            .count("SELECT count(*) FROM projection_dead_letters")
            .await,
        0
    );
}

#[tokio::test]
async fn an_unreadable_message_is_parked_and_the_worker_goes_on() {
    let (stack, api) = TestStack::full().await;
    let (id, original) = registered(&stack, &api).await;

    let garbage = send_beside(&stack, &original, &id, b"{not an envelope").await;
    let mut unknown = original.value.clone();
    unknown["type"] = json!("accountable.user.teleported.v9");
    unknown["sequence"] = json!(2);
    unknown["data"]["personal"] = serde_json::Value::Null;
    let unknown_offset = send_beside(&stack, &original, &id, unknown.to_string().as_bytes()).await;
    // Sealed personal data moved to another event does not open.
    let mut moved = original.value.clone();
    moved["sequence"] = json!(2);
    let moved_offset = send_beside(&stack, &original, &id, moved.to_string().as_bytes()).await;
    // A gap the event store cannot fill: this message never came from it.
    let mut forged = original.value.clone();
    forged["sequence"] = json!(5);
    forged["data"]["personal"] = serde_json::Value::Null;
    let forged_offset = send_beside(&stack, &original, &id, forged.to_string().as_bytes()).await;
    applied_through(&stack, original.partition, forged_offset).await;

    let parked: Vec<(i64, String)> =
        sqlx::query_as("SELECT \"offset\", error FROM projection_dead_letters ORDER BY \"offset\"")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    let offsets: Vec<i64> = parked.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(
        offsets,
        vec![garbage, unknown_offset, moved_offset, forged_offset]
    );
    assert!(parked[1].1.contains("unknown event type"), "{parked:?}");
    assert!(parked[2].1.contains("does not open"), "{parked:?}");
    assert!(parked[3].1.contains("does not hold"), "{parked:?}");
    assert_eq!(row(&stack, &id).await.map(|r| r.version), Some(1));

    // The worker went on: a later registration is still projected.
    let later = api.register("grace@example.com", "Grace").await;
    let body = api.user(&later.access, &later.id, Some(1)).await;
    assert_eq!(body["data"]["user"]["displayName"], "Grace", "{body}");
}

#[tokio::test]
async fn killing_the_relay_and_the_projection_mid_stream_loses_no_user() {
    const USERS: usize = 1000;
    let stack = TestStack::new().await;
    let api = Arc::new(stack.api().await);
    let mut relay = stack.process("relay");
    let mut projection = stack.process("project");

    let sent = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                loop {
                    let n = sent.fetch_add(1, Ordering::SeqCst);
                    if n >= USERS {
                        break;
                    }
                    let body = api
                        .graphql(
                            crate::helpers::REGISTER,
                            json!({"input": {"email": format!("u{n}@example.com"),
                                             "password": PASSWORD, "displayName": format!("User {n}")}}),
                        )
                        .await;
                    assert!(body["errors"].is_null(), "{body}");
                }
            })
        })
        .collect();

    let projected = || stack.count("SELECT count(*) FROM users");
    let published = || stack.count("SELECT coalesce(sum(published), 0)::bigint FROM relay_cursors");

    // Kill each worker (SIGKILL) once it is in the middle of the stream,
    // and start a new one.
    eventually(
        "the relay is mid-stream",
        Duration::from_secs(60),
        || async { (published().await >= 200).then_some(()) },
    )
    .await;
    relay.kill().await.unwrap();
    relay = stack.process("relay");

    eventually(
        "the projection is mid-stream",
        Duration::from_secs(60),
        || async { (projected().await >= 300).then_some(()) },
    )
    .await;
    projection.kill().await.unwrap();
    projection = stack.process("project");

    eventually("both are further on", Duration::from_secs(60), || async {
        (published().await >= 600).then_some(())
    })
    .await;
    relay.kill().await.unwrap();
    projection.kill().await.unwrap();
    let _relay = stack.process("relay");
    let _projection = stack.process("project");

    for writer in writers {
        writer.await.unwrap();
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    while projected().await < USERS as i64 {
        if tokio::time::Instant::now() > until {
            let checkpoints: Vec<(i32, i64)> = sqlx::query_as(
                "SELECT partition, next_offset FROM projection_checkpoints ORDER BY partition",
            )
            .fetch_all(&stack.pool)
            .await
            .unwrap();
            let on_topic: i64 = checkpoints.iter().map(|(_, next)| next).sum();
            let all = consume_until(&stack.consumer().await, Duration::from_secs(30), |m| {
                m.len() as i64 >= on_topic
            })
            .await;
            let distinct: std::collections::HashSet<_> =
                all.iter().map(|m| m.headers["ce_id"].clone()).collect();
            let sessions: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT state, wait_event_type || ':' || wait_event, left(query, 60)
                   FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&stack.pool)
            .await
            .unwrap_or_default();
            panic!(
                "not converged (database sessions: {sessions:?}): {} distinct events on the topic; {} events, {} published, {} projected, checkpoints {checkpoints:?}",
                distinct.len(),
                stack.count("SELECT count(*) FROM events").await,
                published().await,
                projected().await,
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The read table equals the fold of the event store: every user, at
    // the version of its last event, with its registered data (sealed in
    // the store, so compared with what each writer registered).
    let mismatched = stack
        .count(
            "SELECT count(*) FROM events e
               LEFT JOIN users u ON u.id = e.aggregate_id::uuid
              WHERE u.id IS NULL OR u.version <> e.sequence",
        )
        .await;
    assert_eq!(mismatched, 0);
    assert_eq!(
        stack
            .count(
                "SELECT count(DISTINCT display_name) FROM users WHERE display_name LIKE 'User %'"
            )
            .await,
        USERS as i64,
        "each user with the name it registered"
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM events").await,
        USERS as i64
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM projection_dead_letters")
            .await,
        0
    );
}

#[tokio::test]
async fn a_rebuild_under_concurrent_queries_fails_none_and_swaps_in_an_identical_table() {
    let (stack, api) = TestStack::full().await;
    let mut sessions = Vec::new();
    for n in 0..30 {
        let user = api
            .register(&format!("user{n}@example.com"), &format!("User {n}"))
            .await;
        sessions.push(user);
    }
    stack.grant("user0@example.com", "ADMIN").await;
    let admin = crate::helpers::login(&api, "user0@example.com").await;
    eventually("the read side caught up", Duration::from_secs(30), || {
        caught_up(&stack, 30)
    })
    .await;
    let before = all_rows(&stack).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queries = {
        let (api, stop, token) = (api.clone(), stop.clone(), admin.access.clone());
        let id = sessions[7].id.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = api
                    .graphql_as(
                        Some(&token),
                        "query($id: ID!) { users(first: 100) { edges { node { id version } } }
                                           user(id: $id) { displayName } }",
                        json!({"id": id}),
                    )
                    .await;
                let listed = body["data"]["users"]["edges"]
                    .as_array()
                    .map_or(0, Vec::len);
                if body["errors"].is_null()
                    && listed == 30
                    && body["data"]["user"]["displayName"] == "User 7"
                {
                    ok += 1;
                } else {
                    failed.push(body);
                }
            }
            (ok, failed)
        })
    };
    let rebuilt = stack.cli(&["projections", "rebuild", "users"]).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = queries.await.unwrap();
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(
        failed.is_empty(),
        "{} failed queries: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(ok > 0);
    assert_eq!(
        all_rows(&stack).await,
        before,
        "the rebuilt table is identical"
    );

    // The worker goes on from its offsets and applies nothing twice.
    let body = api
        .graphql_as(
            Some(&sessions[3].access),
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }",
            json!({"input": {"id": sessions[3].id, "displayName": "Renamed"}}),
        )
        .await;
    assert_eq!(body["data"]["updateProfile"]["version"], 2, "{body}");
    eventually("the rename is projected", Duration::from_secs(30), || {
        caught_up(&stack, 30)
    })
    .await;
    let row = row(&stack, &sessions[3].id).await.unwrap();
    assert_eq!(
        (row.version, row.display_name.as_deref()),
        (2, Some("Renamed"))
    );
}

#[tokio::test]
async fn parked_messages_are_applied_by_a_retry_once_they_can_be() {
    let (stack, api) = TestStack::full().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let body = api
        .graphql_as(
            Some(&ada.access),
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }",
            json!({"input": {"id": ada.id, "displayName": "Ada Lovelace"}}),
        )
        .await;
    assert_eq!(body["data"]["updateProfile"]["version"], 2, "{body}");
    let consumer = stack.consumer().await;
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| m.len() >= 2).await;
    let renamed = messages.iter().find(|m| m.value["sequence"] == 2).unwrap();
    eventually(
        "the rename is projected",
        Duration::from_secs(30),
        || async { row(&stack, &ada.id).await.filter(|r| r.version == 2) },
    )
    .await;

    // As if the rename had been parked (say, by a bug since fixed) and the
    // row had stayed behind; and a message that will never apply.
    sqlx::query("UPDATE users SET version = 1, display_name = 'Ada' WHERE id = $1")
        .bind(Uuid::parse_str(&ada.id).unwrap())
        .execute(&stack.pool)
        .await
        .unwrap();
    for (offset, payload) in [
        (1000_i64, renamed.value.to_string().into_bytes()),
        (1001, b"{not an envelope".to_vec()),
    ] {
        sqlx::query(
            "INSERT INTO projection_dead_letters (projection, topic, partition, \"offset\", key, payload, error)
             VALUES ('users', $1, 0, $2, NULL, $3, 'parked by the test')",
        )
        .bind(&stack.config.kafka.events_topic)
        .bind(offset)
        .bind(payload)
        .execute(&stack.pool)
        .await
        .unwrap();
    }

    let retry = stack.cli(&["projections", "retry", "users"]).await;
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let said = String::from_utf8_lossy(&retry.stdout);
    assert!(said.contains("1 applied, 1 still parked"), "{said}");
    let row = row(&stack, &ada.id).await.unwrap();
    assert_eq!(
        (row.version, row.display_name.as_deref()),
        (2, Some("Ada Lovelace"))
    );
    let left: Vec<(i64, String)> =
        sqlx::query_as("SELECT \"offset\", error FROM projection_dead_letters")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, 1001);
    assert!(left[0].1.contains("malformed envelope"), "{left:?}");
}
