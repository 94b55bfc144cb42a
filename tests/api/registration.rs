//! Email addresses are unique across users, race-free, compared without
//! case, and a claim abandoned by a crash does not hold an address forever.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{error_code, TestStack, PASSWORD, REGISTER};

async fn try_register(api: &crate::helpers::TestApi, email: &str) -> serde_json::Value {
    api.graphql(
        REGISTER,
        json!({"input": {"email": email, "password": PASSWORD, "displayName": "Racer"}}),
    )
    .await
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_address_make_one_account() {
    let stack = TestStack::with_config(|c| c.database.max_connections = 10).await;
    let api = stack.api().await;
    let attempts: Vec<_> = (0..50)
        .map(|i| {
            // The same address, spelled with other cases.
            let email = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@Example.COM"
            };
            try_register(&api, email)
        })
        .collect();
    let bodies = futures::future::join_all(attempts).await;
    let succeeded = bodies.iter().filter(|b| b["errors"].is_null()).count();
    assert_eq!(succeeded, 1, "{bodies:?}");
    for body in bodies.iter().filter(|b| !b["errors"].is_null()) {
        assert_eq!(error_code(body), "CONFLICT", "{body}");
    }
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
            .await,
        1
    );
    // Besides the account, at most the notice to its owner that someone
    // tried (one a minute).
    assert!(stack.count("SELECT count(*) FROM events").await <= 2);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM user_emails WHERE confirmed")
            .await,
        1
    );
}

#[tokio::test]
async fn a_claim_abandoned_by_a_crash_before_the_commit_is_taken_over() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    sqlx::query(
        "INSERT INTO user_emails (email_key, user_id, claimed_at, confirmed)
         VALUES ($2, $1, now() - interval '1 hour', false)",
    )
    .bind(Uuid::now_v7())
    .bind(stack.email_key("ada@example.com").await)
    .execute(&stack.pool)
    .await
    .unwrap();
    let body = try_register(&api, "ada@example.com").await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn a_claim_left_unconfirmed_after_the_commit_keeps_the_address() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    // As if the process died between committing the events and confirming.
    sqlx::query("UPDATE user_emails SET confirmed = false, claimed_at = now() - interval '1 hour'")
        .execute(&stack.pool)
        .await
        .unwrap();

    let body = try_register(&api, "ada@example.com").await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    let holder: (Uuid, bool) =
        sqlx::query_as("SELECT user_id, confirmed FROM user_emails WHERE email_key = $1")
            .bind(stack.email_key("ada@example.com").await)
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(holder, (Uuid::parse_str(&ada.id).unwrap(), true));
}

#[tokio::test]
async fn a_claim_in_flight_holds_the_address() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    sqlx::query("INSERT INTO user_emails (email_key, user_id, confirmed) VALUES ($2, $1, false)")
        .bind(Uuid::now_v7())
        .bind(stack.email_key("ada@example.com").await)
        .execute(&stack.pool)
        .await
        .unwrap();
    let body = try_register(&api, "ada@example.com").await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    assert_eq!(stack.count("SELECT count(*) FROM events").await, 0);
}
