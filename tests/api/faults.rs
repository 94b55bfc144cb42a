//! Faults: the service keeps taking commands and converges when a part is
//! away or stops.

use std::time::Duration;

use crate::helpers::{eventually, TestStack};

#[tokio::test]
async fn commands_go_on_without_the_relay_and_readiness_reports_it_degraded_until_it_catches_up() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    // No relay runs (as when the broker is away): commands still succeed.
    api.register("ada@example.com", "Ada").await;
    // As if that had been a minute ago.
    sqlx::query("UPDATE events SET recorded_at = recorded_at - interval '1 minute'")
        .execute(&stack.pool)
        .await
        .unwrap();
    let readiness = || async {
        let response = api.client.get(api.url("/readyz")).send().await.unwrap();
        assert_eq!(response.status(), 200, "the API stays ready");
        response.json::<serde_json::Value>().await.unwrap()
    };
    let degraded = readiness().await;
    assert_eq!(degraded["relay"], "degraded", "{degraded}");
    assert!(
        degraded["relay_lag_seconds"].as_f64() >= Some(60.0),
        "{degraded}"
    );

    stack.relay();
    eventually("the relay caught up", Duration::from_secs(30), || async {
        let ready = readiness().await;
        (ready["relay"] == "up").then_some(())
    })
    .await;
}

#[tokio::test]
async fn metrics_count_operations_and_show_the_pipeline_backlog_and_dead_letters() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    api.register("ada@example.com", "Ada").await;
    let refused = api.graphql("{ nosuchfield }", serde_json::json!({})).await;
    assert!(refused["errors"].is_array());
    sqlx::query(
        "INSERT INTO projection_dead_letters (projection, topic, partition, \"offset\", payload, error)
         VALUES ('users', 't', 0, 7, 'x', 'unreadable')",
    )
    .execute(&stack.pool)
    .await
    .unwrap();

    let response = api.client.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(line_start))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    };
    assert_eq!(value("accountable_dead_letters{projection=\"users\"}"), 1.0);
    // No relay runs here: the registration waits to be published.
    assert_eq!(value("accountable_relay_unpublished_events"), 1.0);
    assert!(value("accountable_relay_lag_seconds") >= 0.0);
    assert!(value("accountable_graphql_operations_total{outcome=\"OK\"}") >= 1.0);
    assert!(value("accountable_graphql_operations_total{outcome=\"BAD_USER_INPUT\"}") >= 1.0);
}
