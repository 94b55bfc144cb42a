//! Sealed snapshots of the write side: a command folds its user's snapshot
//! and the events after it; the snapshot holds nothing in clear, is a cache
//! that may vanish, and one that does not open where it lies is ignored.

use accountable_vault::{is_sealed, EventFields};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::helpers::{error_code, Session, TestApi, TestStack};

const SELECT: &str = "SELECT last_sequence, payload FROM snapshots WHERE aggregate_id = $1";

async fn rename(api: &TestApi, user: &Session, name: &str) -> Value {
    api.graphql_as(
        Some(&user.access),
        "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version user { displayName } } }",
        json!({"input": {"id": user.id, "displayName": name}}),
    )
    .await
}

async fn snapshot(stack: &TestStack, id: &str) -> (i64, Value) {
    sqlx::query_as(SELECT)
        .bind(id)
        .fetch_one(&stack.pool)
        .await
        .unwrap()
}

async fn store(stack: &TestStack, id: &str, last_sequence: i64, payload: &Value) {
    sqlx::query("UPDATE snapshots SET last_sequence = $2, payload = $3 WHERE aggregate_id = $1")
        .bind(id)
        .bind(last_sequence)
        .bind(payload)
        .execute(&stack.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn commands_decide_on_the_sealed_snapshot_which_is_only_a_cache() {
    let (stack, api) = TestStack::full().await;
    let ada = api
        .register("ada.snapshot@example.com", "Ada Snapshot")
        .await;
    let body = rename(&api, &ada, "Ada Lovelace-Snapshot").await;
    let version = body["data"]["updateProfile"]["version"].as_i64().unwrap();

    // Kept at the version just written, sealed whole, nothing in clear.
    let (last_sequence, payload) = snapshot(&stack, &ada.id).await;
    assert_eq!(last_sequence, version);
    let keys: Vec<&String> = payload.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["snapshot"], "{payload}");
    assert!(is_sealed(&payload["snapshot"]), "{payload}");
    for clear in ["ada.snapshot", "Lovelace", "argon2"] {
        assert!(!payload.to_string().contains(clear), "{clear} in {payload}");
    }
    let opened = stack.opened(&ada.id, last_sequence, payload).await;
    let aggregate = &opened["snapshot"];
    assert_eq!(aggregate["version"], version);
    assert_eq!(aggregate["account"]["status"], "ACTIVE");

    // A snapshot saying she is deleted (sealed for her, at her version)
    // decides the next command: the command reads it, not her events.
    let mut deleted = aggregate.clone();
    deleted["account"]["status"] = json!("DELETED");
    let mut fields = Map::from_iter([("snapshot".to_owned(), deleted)]);
    stack
        .vault()
        .await
        .seal(&mut [EventFields {
            user_id: Uuid::parse_str(&ada.id).unwrap(),
            sequence: last_sequence,
            fields: &mut fields,
        }])
        .await
        .unwrap();
    store(&stack, &ada.id, last_sequence, &Value::Object(fields)).await;
    let refused = rename(&api, &ada, "Ada Refused").await;
    assert_eq!(error_code(&refused), "NOT_FOUND", "{refused}");

    // Gone, the events decide again, and the next command keeps a new one.
    sqlx::query("DELETE FROM snapshots WHERE aggregate_id = $1")
        .bind(&ada.id)
        .execute(&stack.pool)
        .await
        .unwrap();
    let body = rename(&api, &ada, "Ada Again").await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["updateProfile"]["version"], version + 1);
    assert_eq!(snapshot(&stack, &ada.id).await.0, version + 1);

    // Her snapshot laid in Bob's row, at Bob's version, does not open
    // there: it is ignored, and Bob's own state decides.
    let bob = api
        .register("bob.snapshot@example.com", "Bob Snapshot")
        .await;
    let (bob_sequence, _) = snapshot(&stack, &bob.id).await;
    let (_, ada_payload) = snapshot(&stack, &ada.id).await;
    store(&stack, &bob.id, bob_sequence, &ada_payload).await;
    let body = rename(&api, &bob, "Bob Renamed").await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["updateProfile"]["version"], bob_sequence + 1);
    let (last_sequence, payload) = snapshot(&stack, &bob.id).await;
    let opened = stack.opened(&bob.id, last_sequence, payload).await;
    assert_eq!(
        opened["snapshot"]["account"]["personal"]["display_name"],
        "Bob Renamed"
    );
}
