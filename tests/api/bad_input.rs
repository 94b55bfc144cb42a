//! Bad input answers a clear error with a code and writes nothing.

use serde_json::json;

use crate::helpers::{error_code, TestStack, PASSWORD, REGISTER};

async fn register_error(
    api: &crate::helpers::TestApi,
    email: &str,
    password: &str,
    name: &str,
) -> serde_json::Value {
    let body = api
        .graphql(
            REGISTER,
            json!({"input": {"email": email, "password": password, "displayName": name}}),
        )
        .await;
    assert!(body["data"].is_null(), "{body}");
    body
}

#[tokio::test]
async fn invalid_registrations_answer_bad_user_input_and_write_nothing() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let long_password = "p".repeat(257);
    let cases = [
        ("not-an-email", PASSWORD, "Ada", "email"),
        ("ada@example.com", "", "Ada", "password"),
        ("ada@example.com", "too short", "Ada", "password"),
        ("ada@example.com", long_password.as_str(), "Ada", "password"),
        ("ada@example.com", "1qaz2wsx3edc4rfv", "Ada", "password"),
        ("ada@example.com", PASSWORD, "", "displayName"),
        ("ada@example.com", PASSWORD, "bell\u{7}", "displayName"),
    ];
    for (email, password, name, field) in cases {
        let body = register_error(&api, email, password, name).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    assert_eq!(stack.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_before_it_is_read() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let huge = "p".repeat(1 << 20);
    let response = api
        .client
        .post(api.url("/graphql"))
        .json(&json!({"query": REGISTER, "variables": {"input": {
            "email": "ada@example.com", "password": huge, "displayName": "Ada"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(stack.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn malformed_requests_answer_an_error_with_a_code() {
    let stack = TestStack::new().await;
    let api = stack.api().await;

    // Not GraphQL at all, and a batch.
    for body in [
        "{not json",
        r#"[{"query": "{ __typename }"}, {"query": "{ __typename }"}]"#,
    ] {
        let response = api
            .client
            .post(api.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }

    // Syntax errors, unknown fields, wrong variable types.
    let session = api.register("ada@example.com", "Ada").await;
    for (query, variables) in [
        ("{ user(id: ", json!({})),
        ("{ nosuchfield }", json!({})),
        (REGISTER, json!({"input": {"email": 5}})),
    ] {
        let body = api
            .graphql_as(Some(&session.access), query, variables)
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        let text = body.to_string();
        assert!(
            !text.contains("sqlx") && !text.contains("panicked"),
            "{text}"
        );
    }
    // Only the registration wrote.
    assert_eq!(stack.count("SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let health = api.client.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = api.client.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["database"], "up");
}
