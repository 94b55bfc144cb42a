//! A command crosses the whole pipeline: GraphQL → event store → relay →
//! Kafka → projection → read table → GraphQL.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{consume_until, error_code, eventually, TestStack, REGISTER};

#[tokio::test]
async fn a_registered_user_is_read_back_after_crossing_kafka() {
    let (stack, api) = TestStack::full().await;

    let session = api.register("Ada@Example.COM", "Ada Lovelace").await;
    let written = session.user.clone();
    assert_eq!(written["email"], "Ada@example.com");
    assert_eq!(written["displayName"], "Ada Lovelace");
    assert_eq!(written["status"], "ACTIVE");
    assert_eq!(written["roles"], json!(["USER"]));
    assert_eq!(written["version"], 1);

    let read = api.user(&session.access, &session.id, Some(1)).await;
    assert!(read["errors"].is_null(), "{read}");
    assert_eq!(read["data"]["user"], written);

    // The row came from Kafka: the projection recorded the offset it applied.
    assert_eq!(
        stack
            .count("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_checkpoints")
            .await,
        1
    );
}

#[tokio::test]
async fn a_version_the_read_side_never_reaches_answers_unavailable_not_stale_data() {
    let stack = TestStack::with_config(|c| c.http.read_your_writes_timeout_ms = 300).await;
    let api = stack.api().await;
    stack.relay();
    stack.projection();

    let grace = api.register("grace@example.com", "Grace").await;
    eventually("the user is projected", Duration::from_secs(30), || async {
        api.user(&grace.access, &grace.id, None).await["data"]["user"]["version"]
            .as_i64()
            .map(|_| ())
    })
    .await;
    let body = api.user(&grace.access, &grace.id, Some(2)).await;
    assert_eq!(error_code(&body), "UNAVAILABLE", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["minVersion"], 2);
    assert_eq!(body["errors"][0]["extensions"]["currentVersion"], 1);
}

#[tokio::test]
async fn events_record_who_caused_them_and_through_which_request() {
    let (stack, api) = TestStack::full().await;
    let response = api
        .client
        .post(api.url("/graphql"))
        .header("x-correlation-id", "checkout-42")
        .header("traceparent", TRACEPARENT)
        .json(&json!({"query": REGISTER, "variables": {"input": {
            "email": "linus@example.com", "password": crate::helpers::PASSWORD, "displayName": "Linus"}}}))
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    let id = body["data"]["register"]["user"]["id"].as_str().unwrap();

    let metadata: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1")
            .bind(id)
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(metadata["actor"], "self");
    assert_eq!(metadata["correlation_id"], "checkout-42");
    assert_eq!(metadata["request_id"], request_id.as_str());
    assert_eq!(metadata["causation_id"], request_id.as_str());
    assert_eq!(metadata["traceparent"], TRACEPARENT);

    // Consumers get the trace context as a header and an attribute.
    let consumer = stack.consumer().await;
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| !m.is_empty()).await;
    assert_eq!(messages[0].headers["traceparent"], TRACEPARENT);
    assert_eq!(messages[0].value["traceparent"], TRACEPARENT);

    // A request without one gets a fresh trace context.
    let other = api.register("ada@example.com", "Ada").await;
    let metadata: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1")
            .bind(&other.id)
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    let made = metadata["traceparent"].as_str().unwrap();
    assert!(made.starts_with("00-") && made != TRACEPARENT, "{made}");
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_plain_kafka_consumer_sees_the_event_keyed_by_user_with_cloudevents_headers() {
    let (stack, api) = TestStack::full().await;
    let session = api.register("ada@example.com", "Ada").await;
    let (user, id) = (&session.user, session.id.as_str());

    let consumer = stack.consumer().await;
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| !m.is_empty()).await;
    let message = &messages[0];

    assert_eq!(message.key, id);
    let header = |name: &str| {
        message
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .as_str()
    };
    assert_eq!(header("ce_specversion"), "1.0");
    assert_eq!(header("ce_id"), format!("{id}/1"));
    assert_eq!(header("ce_type"), "accountable.user.registered.v1");
    assert_eq!(header("ce_source"), "urn:accountable:users");
    assert_eq!(header("ce_subject"), id);
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("ce_sequence"), "1");
    let position: i64 = header("ce_position").parse().unwrap();
    let time = chrono::DateTime::parse_from_rfc3339(header("ce_time")).unwrap();
    assert_eq!(
        time,
        chrono::DateTime::parse_from_rfc3339(user["createdAt"].as_str().unwrap()).unwrap()
    );

    let value = &message.value;
    assert_eq!(value["id"], format!("{id}/1"));
    assert_eq!(value["type"], "accountable.user.registered.v1");
    assert_eq!(value["subject"], id);
    assert_eq!(value["sequence"], 1);
    assert_eq!(value["position"], position);
    // Personal data travels sealed; the vault opens it.
    assert!(
        !value.to_string().contains("ada@example.com"),
        "personal data must travel sealed: {value}"
    );
    let data = stack.opened(id, 1, value["data"].clone()).await;
    assert_eq!(data["personal"]["email"], "ada@example.com");
    assert_eq!(value["data"]["roles"], json!(["USER"]));
    assert!(
        !value.to_string().contains("argon2"),
        "the password hash must never be published: {value}"
    );
}

#[tokio::test]
async fn a_stored_version_1_event_is_read_and_published_as_version_2() {
    let (stack, api) = TestStack::full().await;
    let ada = api.register("ada@example.com", "Ada").await;
    // A deletion as versions before `previous_status` stored it.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', $1, 2, 'UserDeleted', '1.0',
                 '{\"UserDeleted\": {\"reason\": \"asked\", \"status\": \"ACTIVE\", \"roles\": [\"USER\"]}}',
                 '{\"actor\": \"system\"}')",
    )
    .bind(&ada.id)
    .execute(&stack.pool)
    .await
    .unwrap();

    // The relay publishes it as the current version.
    let consumer = stack.consumer().await;
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| m.len() >= 2).await;
    let deleted = messages.iter().find(|m| m.value["sequence"] == 2).unwrap();
    assert_eq!(deleted.headers["ce_type"], "accountable.user.deleted.v2");
    assert_eq!(
        deleted.value["data"],
        json!({"reason": "asked", "personal": null, "previous_status": "ACTIVE", "roles": ["USER"]})
    );
    // The aggregate applies it: the account is deleted for every command.
    let body = api
        .graphql(
            "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
            json!({"e": "ada@example.com", "p": crate::helpers::PASSWORD}),
        )
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    // And the read side, which reads the published contract, hides it.
    eventually("the deletion is projected", Duration::from_secs(30), || {
        let pool = stack.pool.clone();
        let id = uuid::Uuid::parse_str(&ada.id).unwrap();
        async move {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM users WHERE id = $1 AND version = 2")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            status.filter(|s| s == "DELETED")
        }
    })
    .await;
}

#[tokio::test]
async fn the_state_topic_ends_at_the_read_table_per_user_and_in_tombstones_for_the_gone() {
    let (stack, api) = TestStack::full().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    let alan = api.register("alan@example.com", "Alan").await;
    let renamed = api
        .graphql_as(
            Some(&ada.access),
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }",
            json!({"input": {"id": ada.id, "displayName": "Ada Lovelace", "locale": "en-GB"}}),
        )
        .await;
    assert!(renamed["errors"].is_null(), "{renamed}");
    for (user, mutation) in [(&grace, "deleteUser"), (&alan, "eraseUser")] {
        let body = api
            .graphql_as(
                Some(&user.access),
                &format!("mutation($id: ID!) {{ {mutation}(input: {{id: $id}}) {{ version }} }}"),
                json!({"id": user.id}),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }

    // The last value of each key, once every user's newest state is there.
    let expected_versions = [
        (ada.id.clone(), 2),
        (grace.id.clone(), 2),
        (alan.id.clone(), 2),
    ];
    let consumer = stack.consumer_of(&stack.config.kafka.state_topic).await;
    let mut last: std::collections::HashMap<String, (i64, Value)> = Default::default();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while expected_versions
        .iter()
        .any(|(id, version)| last.get(id).map(|(v, _)| *v) != Some(*version))
    {
        let message = crate::helpers::next_message(&consumer, until)
            .await
            .expect("the state topic catches up");
        let version: i64 = message.headers["version"].parse().unwrap();
        last.insert(message.key.clone(), (version, message.value));
    }

    let row: Value = sqlx::query_scalar(
        "SELECT json_build_object('email', email, 'display_name', display_name, 'status', status,
                                  'roles', roles, 'locale', locale, 'version', version)
           FROM users WHERE id = $1",
    )
    .bind(uuid::Uuid::parse_str(&ada.id).unwrap())
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    let state = &last[&ada.id].1;
    for field in [
        "email",
        "display_name",
        "status",
        "roles",
        "locale",
        "version",
    ] {
        assert_eq!(state[field], row[field], "{field}: {state} vs {row}");
    }
    assert_eq!(state["display_name"], "Ada Lovelace");
    assert_eq!(
        last[&grace.id].1,
        Value::Null,
        "a deleted user ends in a tombstone"
    );
    assert_eq!(
        last[&alan.id].1,
        Value::Null,
        "an erased user ends in a tombstone"
    );
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_before_the_server_exits() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = stack.process_command_with(
        "serve",
        &[
            ("ACCOUNTABLE_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("ACCOUNTABLE_READ_YOUR_WRITES_TIMEOUT_MS", "3000".into()),
        ],
    );
    let url = format!("http://127.0.0.1:{port}/graphql");
    let client = reqwest::Client::new();
    eventually("the server answers", Duration::from_secs(30), || async {
        client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .ok()
    })
    .await;

    // A request that waits (for a version the read side never reaches).
    let in_flight = tokio::spawn({
        let (client, url, token, id) = (
            client.clone(),
            url.clone(),
            ada.access.clone(),
            ada.id.clone(),
        );
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(
                    &json!({"query": "query($id: ID!) { user(id: $id, minVersion: 99) { id } }",
                              "variables": {"id": id}}),
                )
                .send()
                .await
        }
    });
    // Nothing outside the server shows that the request has arrived and is
    // waiting (it waits on a channel, not on the database), so it is given
    // a second (of its three) to arrive; arriving after the signal would
    // fail the test (no new connections then), never pass it wrongly.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = server.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());

    // It is answered (not cut off), then the process exits cleanly.
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "UNAVAILABLE", "{body}");
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("the server exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    // And it takes no new connection meanwhile or after.
    assert!(client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err());
}

const HEALTH: &str = "{ pipeline {
  relay { unpublished parked lagSeconds generation }
  projections { name lag deadLetters }
  mail { due sent parked dropped oldestDueSeconds }
  deadLetters { id projection partition offset error } } }";
const RETRY: &str =
    "mutation($p: String!) { retryDeadLetters(projection: $p) { applied stillParked } }";

#[tokio::test]
async fn the_pipelines_health_is_read_by_admins_and_auditors_and_retried_by_admins() {
    let (stack, api) = TestStack::full().await;
    let user = api.register("user@example.com", "User").await;
    api.register("ada@example.com", "Ada").await;
    api.register("grace@example.com", "Grace").await;
    stack.grant("ada@example.com", "ADMIN").await;
    stack.grant("grace@example.com", "AUDITOR").await;
    let admin = crate::helpers::login(&api, "ada@example.com").await;
    let auditor = crate::helpers::login(&api, "grace@example.com").await;
    sqlx::query(
        "INSERT INTO projection_dead_letters (projection, topic, partition, \"offset\", payload, error)
         VALUES ('users', $1, 0, 7, 'not json', 'unreadable')",
    )
    .bind(&stack.config.kafka.events_topic)
    .execute(&stack.pool)
    .await
    .unwrap();

    let refused = api.graphql_as(Some(&user.access), HEALTH, json!({})).await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");
    for reader in [&admin, &auditor] {
        let health = api
            .graphql_as(Some(&reader.access), HEALTH, json!({}))
            .await;
        assert!(health["errors"].is_null(), "{health}");
        let health = &health["data"]["pipeline"];
        assert_eq!(health["projections"][0]["name"], "users");
        assert_eq!(health["projections"][0]["deadLetters"], 1);
        assert_eq!(health["deadLetters"][0]["offset"], 7);
        assert_eq!(health["deadLetters"][0]["error"], "unreadable");
        assert!(health["relay"]["lagSeconds"].as_f64().is_some(), "{health}");
    }

    let by_auditor = api
        .graphql_as(Some(&auditor.access), RETRY, json!({"p": "users"}))
        .await;
    assert_eq!(error_code(&by_auditor), "FORBIDDEN", "{by_auditor}");
    let unknown = api
        .graphql_as(Some(&admin.access), RETRY, json!({"p": "orders"}))
        .await;
    assert_eq!(error_code(&unknown), "NOT_FOUND", "{unknown}");
    let retried = api
        .graphql_as(Some(&admin.access), RETRY, json!({"p": "users"}))
        .await;
    assert!(retried["errors"].is_null(), "{retried}");
    assert_eq!(
        retried["data"]["retryDeadLetters"],
        json!({"applied": 0, "stillParked": 1})
    );
    let mail = api
        .graphql_as(
            Some(&admin.access),
            "mutation { retryParkedMail }",
            json!({}),
        )
        .await;
    assert_eq!(mail["data"]["retryParkedMail"], 0, "{mail}");
}
