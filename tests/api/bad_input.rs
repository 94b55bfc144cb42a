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
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(stack.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn only_json_posts_run_operations_and_every_refusal_is_coded() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let mutation = format!(
        "{{\"query\": {}}}",
        json!("mutation { logout(refreshToken: \"x\") }")
    );
    // A form, plain text, GraphQL text and a missing type: 415.
    for content_type in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("application/graphql"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut request = api.client.post(api.url("/graphql")).body(mutation.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
    // JSON with a charset is JSON.
    let response = api
        .client
        .post(api.url("/graphql"))
        .header("content-type", "application/json; charset=utf-8")
        .body(mutation)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Other methods, and operations over GET, are refused with a code.
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let response = api
            .client
            .request(method, api.url("/graphql"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
        assert!(response.headers().contains_key("allow"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
    let response = api
        .client
        .get(api.url("/graphql?query=mutation%20%7B%20logoutAll%20%7D"))
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/html")),
        "GET serves GraphiQL in development and runs nothing"
    );
    let missing = api.client.get(api.url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
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
    assert_eq!(ready["relay"], "up", "nothing to publish: {ready}");
}

#[tokio::test]
async fn browsers_are_let_in_from_configured_origins_only_and_never_with_credentials() {
    let stack = TestStack::new().await;
    let mut listed = stack.config.clone();
    listed.http.cors_origins = vec!["https://app.example.com".into()];
    let api = stack.api_for(listed).await;
    let preflight = |origin: &'static str| {
        let api = &api;
        async move {
            api.client
                .request(reqwest::Method::OPTIONS, api.url("/graphql"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .send()
                .await
                .unwrap()
        }
    };
    let allowed = preflight("https://app.example.com").await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    assert!(!allowed
        .headers()
        .contains_key("access-control-allow-credentials"));
    let other = preflight("https://evil.example").await;
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    // A WebSocket from another site is refused; from a listed one it opens.
    let socket = |origin: &'static str| {
        let api = &api;
        async move {
            api.client
                .get(api.url("/graphql/ws"))
                .header("origin", origin)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-protocol", "graphql-transport-ws")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(socket("https://evil.example").await, 403);
    assert_eq!(socket("https://app.example.com").await, 101);

    // Any origin: a wildcard, still without credentials.
    let mut any = stack.config.clone();
    any.http.cors_origins = vec!["*".into()];
    let api = stack.api_for(any).await;
    let response = api
        .client
        .request(reqwest::Method::OPTIONS, api.url("/graphql"))
        .header("origin", "https://anywhere.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(!response
        .headers()
        .contains_key("access-control-allow-credentials"));
}

#[tokio::test]
async fn hostile_documents_and_values_answer_a_coded_error_without_harm() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let post = |body: Vec<u8>| {
        let api = &api;
        let token = ada.access.clone();
        async move {
            let response = api
                .client
                .post(api.url("/graphql"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body)
        }
    };
    let query = |q: String, variables: serde_json::Value| {
        serde_json::to_vec(&json!({"query": q, "variables": variables})).unwrap()
    };

    // Thousands of aliases, deep nesting, a deeply nested input value.
    let aliases: String = (0..3000).map(|i| format!("a{i}: __typename ")).collect();
    let nested = format!("{}{}", "{ me ".repeat(2000), "}".repeat(2000));
    let deep_input = format!(
        "{{ users(filter: {}) {{ edges {{ cursor }} }} }}",
        "{emailPrefix: ".repeat(500) + "\"a\"" + &"}".repeat(500)
    );
    for hostile in [format!("{{ {aliases} }}"), nested, deep_input] {
        let (status, body) = post(query(hostile, json!({}))).await;
        let text = body.to_string();
        let shown = &text[..text.len().min(300)];
        assert_eq!(status, 200, "{shown}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{shown}"
        );
    }

    // 10,000 list items, wrong variable types, an unknown enum value.
    let many: Vec<String> = (0..10_000).map(|i| format!("T{i}")).collect();
    for (document, variables) in [
        (
            "query($t: [String!]) { events(filter: {types: $t}) { edges { cursor } } }",
            json!({"t": many}),
        ),
        (
            "query($f: Int) { users(first: $f) { edges { cursor } } }",
            json!({"f": "twenty"}),
        ),
        (
            "query($s: UserStatus) { users(filter: {status: $s}) { edges { cursor } } }",
            json!({"s": "ASLEEP"}),
        ),
    ] {
        let (_, body) = post(query(document.into(), variables)).await;
        assert!(body["errors"].is_array(), "{body}");
        let code = error_code(&body);
        assert!(code == "BAD_USER_INPUT" || code == "FORBIDDEN", "{body}");
    }

    // A body that is not UTF-8.
    let (status, body) = post(b"{\"query\": \"{ me { id } \xff\xfe }\"}".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");

    // The server is unharmed.
    let me = api
        .graphql_as(Some(&ada.access), "{ __typename }", json!({}))
        .await;
    assert_eq!(me["data"]["__typename"], "Query");
}
