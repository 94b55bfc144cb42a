//! Faults: the service keeps taking commands and converges when a part is
//! away or stops.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use accountable::config::Secret;
use accountable_projections::crash::CRASH_AT;

use rdkafka::consumer::Consumer;

use serde_json::{json, Value};

use crate::helpers::{
    assert_converged, caught_up, error_code, eventually, register_many, Acknowledged, Supervised,
    TestApi, TestStack, PASSWORD,
};
use crate::servers::{Broker, Postgres};

/// Runs `process` (`relay` or `project`) until it crashes at `point`, with
/// the other part running, then starts it again; commands are taken before
/// and after. Returns the stack once everything converged.
async fn crash_and_restart(process: &str, point: &str) -> TestStack {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let mut acknowledged = register_many(&api, "before", 20).await;
    let other = if process == "relay" {
        "project"
    } else {
        "relay"
    };
    let _other = stack.process(other);
    let mut crashing = stack.process_command_with(process, &[(CRASH_AT, point.to_owned())]);
    let status = tokio::time::timeout(Duration::from_secs(60), crashing.wait())
        .await
        .unwrap_or_else(|_| panic!("{process} never reached {point}"))
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{process} crashed at {point}: {status}"
    );
    let _restarted = stack.process(process);
    acknowledged.extend(register_many(&api, "after", 20).await);
    assert_converged(&stack, &acknowledged).await;
    stack
}

#[tokio::test]
async fn the_relay_killed_after_kafka_acknowledged_but_before_its_cursor_moved_publishes_again() {
    let stack = crash_and_restart("relay", "relay.after_ack").await;
    let on_topic: i64 = stack
        .count("SELECT coalesce(sum(published), 0)::bigint FROM relay_cursors")
        .await;
    let events = stack.count("SELECT count(*) FROM events").await;
    // The acknowledged batch was published again by the next relay (at
    // least once), and the projection applied it once.
    assert_eq!(
        on_topic, events,
        "the cursor counts what it moved past once"
    );
    let messages =
        crate::helpers::consume_until(&stack.consumer().await, Duration::from_secs(30), |read| {
            read.len() as i64 > events
        })
        .await;
    assert!(messages.len() as i64 > events, "the batch went out twice");
}

#[tokio::test]
async fn the_relay_killed_before_kafka_acknowledged_loses_nothing() {
    crash_and_restart("relay", "relay.before_ack").await;
}

#[tokio::test]
async fn the_projection_killed_between_its_database_commit_and_its_offset_commit_applies_nothing_twice(
) {
    crash_and_restart("project", "project.after_commit").await;
}

#[tokio::test]
async fn the_projection_killed_before_its_database_commit_loses_nothing() {
    crash_and_restart("project", "project.before_commit").await;
}

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
    // Kafka acknowledged offsets 0..=9 and 0..=4 of two partitions; the
    // projection applied 0..7 of the first and nothing of the second.
    for statement in [
        "INSERT INTO relay_cursors (name) VALUES ($1) ON CONFLICT DO NOTHING",
        "INSERT INTO relay_partitions (name, partition, last_offset) VALUES ($1, 0, 9), ($1, 1, 4)",
        "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset)
         VALUES ('users', $1, 0, 7)",
    ] {
        sqlx::query(statement)
            .bind(&stack.config.kafka.events_topic)
            .execute(&stack.pool)
            .await
            .unwrap();
    }

    let text = api.get_text("/metrics").await;
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(line_start))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    };
    assert_eq!(value("accountable_dead_letters{projection=\"users\"}"), 1.0);
    assert_eq!(
        value("accountable_projection_lag_messages{projection=\"users\"}"),
        8.0
    );
    // No relay runs here: the registration waits to be published.
    assert_eq!(value("accountable_relay_unpublished_events"), 1.0);
    assert!(value("accountable_relay_lag_seconds") >= 0.0);
    assert_eq!(value("accountable_relay_generation"), 1.0);
    // Latency per root field (per command, for mutations), by outcome.
    assert!(
        text.lines().any(|line| line
            .starts_with("accountable_graphql_field_duration_seconds_count{")
            && line.contains("field=\"register\"")
            && line.contains("type=\"Mutation\"")
            && line.contains("outcome=\"OK\"")),
        "{text}"
    );
    assert!(value("accountable_graphql_operations_total{outcome=\"OK\"}") >= 1.0);
    assert!(value("accountable_graphql_operations_total{outcome=\"BAD_USER_INPUT\"}") >= 1.0);
}

/// Sends SIGTERM to `child` and waits for it to exit.
async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("running");
    // SAFETY: kill(2) on the pid of our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the process exits after SIGTERM")
        .unwrap()
}

#[tokio::test]
async fn sigterm_lets_the_relay_record_its_batch_and_the_projection_commit_its_offsets_before_exit()
{
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let acknowledged = register_many(&api, "u", 300).await;
    let batch = [("ACCOUNTABLE_RELAY_BATCH_SIZE", "20".to_owned())];
    let mut relay = stack.process_command_with("relay", &batch);
    let mut projection = stack.process("project");
    eventually("both are mid-stream", Duration::from_secs(60), || async {
        let projected = stack.count("SELECT count(*) FROM users").await;
        (projected > 0).then_some(())
    })
    .await;
    let (relay_exit, projection_exit) =
        tokio::join!(terminate(&mut relay), terminate(&mut projection));
    assert!(relay_exit.success(), "relay: {relay_exit}");
    assert!(projection_exit.success(), "project: {projection_exit}");

    // Every message on the topic is behind the relay's cursor: the batch in
    // flight was acknowledged and recorded, not cut off.
    let reader = stack.consumer().await;
    let topic = stack.config.kafka.events_topic.clone();
    let mut on_topic = 0;
    let mut on_broker = rdkafka::TopicPartitionList::new();
    for partition in 0..stack.config.kafka.topic_partitions {
        let (_, high) = reader
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .unwrap();
        on_topic += high;
        on_broker.add_partition(&topic, partition);
    }
    let published = stack
        .count("SELECT coalesce(sum(published), 0)::bigint FROM relay_cursors")
        .await;
    assert_eq!(
        published, on_topic,
        "published by the cursor vs on the topic"
    );

    // The offsets in Kafka are those kept with the rows.
    let group: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.config.kafka.bootstrap_servers)
        .set("group.id", &stack.config.kafka.projection_group)
        .create()
        .unwrap();
    let committed = group
        .committed_offsets(on_broker, Duration::from_secs(10))
        .unwrap();
    let in_kafka: Vec<(i32, i64)> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(next) => Some((e.partition(), next)),
            _ => None,
        })
        .collect();
    let in_database: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM projection_checkpoints ORDER BY partition",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert_eq!(in_kafka, in_database);

    let _relay = stack.process("relay");
    let _projection = stack.process("project");
    assert_converged(&stack, &acknowledged).await;
}

/// A stack on a broker of its own, its relay and projection running as
/// supervised processes, with `count` users registered and projected.
async fn on_own_broker(
    broker: &Broker,
    count: usize,
) -> (TestStack, TestApi, Vec<Acknowledged>, [Supervised; 2]) {
    let stack = TestStack::with_config(|config| {
        config.kafka.bootstrap_servers = broker.bootstrap_servers();
    })
    .await;
    let api = stack.api().await;
    let parts = [stack.supervised("relay"), stack.supervised("project")];
    let acknowledged = register_many(&api, "before", count).await;
    eventually("projected", Duration::from_secs(60), || {
        caught_up(&stack, count as i64)
    })
    .await;
    (stack, api, acknowledged, parts)
}

#[tokio::test]
async fn commands_succeed_while_the_broker_is_stopped_for_30_seconds_and_everything_catches_up() {
    let broker = Broker::start().await;
    let (stack, api, mut acknowledged, _parts) = on_own_broker(&broker, 5).await;
    broker.pause();
    let stopped = tokio::time::Instant::now();
    let mut seen_degraded = false;
    let mut n = 0;
    while stopped.elapsed() < Duration::from_secs(30) {
        acknowledged.extend(register_many(&api, &format!("during{n}-"), 2).await);
        n += 1;
        let ready: Value = serde_json::from_str(&api.get_text("/readyz").await).unwrap();
        seen_degraded |= ready["relay"] == "degraded";
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen_degraded,
        "/readyz reported the relay degraded while the broker was away"
    );
    broker.resume();
    assert_converged(&stack, &acknowledged).await;
}

#[tokio::test]
async fn the_broker_losing_its_data_makes_the_relay_publish_the_store_again_and_consumers_converge()
{
    let mut broker = Broker::start().await;
    let (stack, api, mut acknowledged, parts) = on_own_broker(&broker, 20).await;
    broker.lose_everything().await;
    acknowledged.extend(register_many(&api, "after", 10).await);
    assert_converged(&stack, &acknowledged).await;
    // librdkafka 2.12 may crash (SIGSEGV in its metadata cache) in a client
    // that sees a topic it knows come back under a new topic id; the
    // supervisor starts the process again, and it converges from the store
    // and the offsets kept with the rows.
    eprintln!(
        "restarts after the broker lost its data: relay {}, project {}",
        parts[0].restarts(),
        parts[1].restarts()
    );
    assert_eq!(
        stack.count("SELECT generation FROM relay_cursors").await,
        2,
        "the topic was written anew once"
    );
    let metrics = api.get_text("/metrics").await;
    assert!(
        metrics.contains("accountable_relay_generation 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn requests_answer_unavailable_while_postgresql_restarts_and_the_service_recovers_by_itself()
{
    let postgres = Postgres::start().await;
    let stack = TestStack::with_config(|config| {
        config.database.url = Secret::new(postgres.url("accountable"));
    })
    .await;
    let api = stack.api().await;
    let _parts = [stack.process("relay"), stack.process("project")];
    let ada = api.register("ada@example.com", "Ada").await;

    postgres.stop();
    let refused = api
        .graphql(
            crate::helpers::REGISTER,
            json!({"input": {"email": "bob@example.com", "password": PASSWORD, "displayName": "Bob"}}),
        )
        .await;
    assert_eq!(error_code(&refused), "UNAVAILABLE", "{refused}");
    let read = api.user(&ada.access, &ada.id, None).await;
    assert_eq!(error_code(&read), "UNAVAILABLE", "{read}");
    let text = format!("{refused}{read}");
    assert!(
        !text.contains("sqlx") && !text.contains("connection"),
        "{text}"
    );

    postgres.start_again().await;
    // The same API, relay and projection: nothing was restarted but PostgreSQL.
    let bob = eventually("commands succeed again", Duration::from_secs(60), || async {
        let body = api
            .graphql(
                crate::helpers::REGISTER,
                json!({"input": {"email": "bob@example.com", "password": PASSWORD, "displayName": "Bob"}}),
            )
            .await;
        body["errors"].is_null().then(|| crate::helpers::Session::from(&body["data"]["register"]))
    })
    .await;
    let version = bob.user["version"].as_i64().unwrap();
    let read = api.user(&bob.access, &bob.id, Some(version)).await;
    assert_eq!(read["data"]["user"]["displayName"], "Bob", "{read}");
    assert_converged(&stack, &[(ada.id, 1), (bob.id, version)]).await;
}

/// Partitions claimed (two-key advisory locks) by the sessions named `name`.
async fn partitions_held_by(stack: &TestStack, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
            AND a.application_name = $1 AND a.datname = current_database()",
    )
    .bind(name)
    .fetch_one(&stack.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn partitions_moving_to_another_worker_in_the_middle_of_a_batch_lose_and_double_nothing() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let _relay = stack.process("relay");
    let _first = stack.process_named("project", "worker-a");
    let partitions = i64::from(stack.config.kafka.topic_partitions);
    eventually(
        "worker-a owns the partitions",
        Duration::from_secs(30),
        || async { (partitions_held_by(&stack, "worker-a").await == partitions).then_some(()) },
    )
    .await;
    let _second = stack.process_named("project", "worker-b");
    let writers = tokio::spawn({
        let api = api.clone();
        async move { register_many(&api, "u", 300).await }
    });
    eventually(
        "worker-a is mid-stream",
        Duration::from_secs(60),
        || async { (stack.count("SELECT count(*) FROM users").await >= 30).then_some(()) },
    )
    .await;
    // worker-a loses its sessions, and with them its partitions, while it
    // holds a batch; worker-b claims them and reads from the offsets kept
    // with the rows.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'worker-a' AND datname = current_database()",
    )
    .execute(&stack.pool)
    .await
    .unwrap();
    eventually(
        "worker-b took partitions over",
        Duration::from_secs(30),
        || async { (partitions_held_by(&stack, "worker-b").await > 0).then_some(()) },
    )
    .await;
    let acknowledged = writers.await.unwrap();
    assert_converged(&stack, &acknowledged).await;
}
