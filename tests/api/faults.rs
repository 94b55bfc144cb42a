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
