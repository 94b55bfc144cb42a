//! Auditors: histories, the global stream, accounts at any moment, and the
//! tamper-evident chain, end to end.

use std::time::Duration;

use accountable::audit::checkpoint;
use serde_json::{json, Value};

use crate::helpers::{error_code, eventually, login, Session, TestApi, TestStack};

const HISTORY: &str = "query($id: ID!, $first: Int, $after: String) {
  userHistory(id: $id, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      position userId sequence eventType cloudEventType eventVersion recordedAt
      actor correlationId causationId requestId data erased hash previousHash
    } }
  }
}";

const VERIFY: &str = "query($id: ID) {
  verifyHistory(id: $id) {
    ok eventsChecked streamsChecked checkpointsChecked
    brokenAt { userId sequence checkpoint reason }
  }
}";

const USER_AT: &str = "query($id: ID!, $version: Int, $at: DateTime) {
  userAt(id: $id, version: $version, at: $at) {
    id email displayName status roles version locale timeZone createdAt updatedAt
  }
}";

async fn rename(api: &TestApi, user: &Session, name: &str) -> i64 {
    let body = api
        .graphql_as(
            Some(&user.access),
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }",
            json!({"input": {"id": user.id, "displayName": name}}),
        )
        .await;
    body["data"]["updateProfile"]["version"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body}"))
}

/// Every event of `id`'s history, page by page.
async fn whole_history(api: &TestApi, token: &str, id: &str, first: i64) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let body = api
            .graphql_as(
                Some(token),
                HISTORY,
                json!({"id": id, "first": first, "after": after}),
            )
            .await;
        let page = &body["data"]["userHistory"];
        let edges = page["edges"].as_array().unwrap_or_else(|| panic!("{body}"));
        events.extend(edges.iter().map(|e| e["node"].clone()));
        if page["pageInfo"]["hasNextPage"] != true {
            return events;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

#[tokio::test]
async fn a_users_history_of_1000_events_pages_in_order_with_who_and_why() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    // Each sign-in writes two events (attempted, succeeded).
    for _ in 0..499 {
        login(&api, "ada@example.com").await;
    }
    rename(&api, &ada, "Ada 1000").await;

    let events = whole_history(&api, &ada.access, &ada.id, 100).await;
    assert_eq!(events.len(), 1000);
    let mut previous_hash = Value::Null;
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence"], json!(n + 1));
        assert_eq!(event["userId"], ada.id.as_str());
        assert_eq!(event["previousHash"], previous_hash, "the chain links");
        previous_hash = event["hash"].clone();
        assert!(event["requestId"].is_string() && event["correlationId"].is_string());
        assert_eq!(event["erased"], false);
    }
    assert_eq!(events[0]["eventType"], "UserRegistered");
    assert_eq!(
        events[0]["cloudEventType"],
        "accountable.user.registered.v1"
    );
    assert_eq!(events[0]["actor"], "self");
    assert_eq!(events[0]["data"]["personal"]["email"], "ada@example.com");
    assert_eq!(events[1]["eventType"], "LoginAttempted");
    assert_eq!(events[999]["actor"], ada.id.as_str());
    assert_eq!(events[999]["data"]["personal"]["display_name"], "Ada 1000");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("argon2"), "secrets never appear");
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));

    // Someone else's history is not theirs to read.
    let grace = api.register("grace@example.com", "Grace").await;
    let body = api
        .graphql_as(Some(&grace.access), HISTORY, json!({"id": ada.id}))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
}

#[tokio::test]
async fn the_audit_stream_pages_in_position_order_with_each_filter() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    rename(&api, &ada, "Ada L").await;
    rename(&api, &grace, "Grace H").await;
    let alan = api.register("alan@example.com", "Alan").await;
    stack.grant("alan@example.com", "AUDITOR").await;
    let auditor = login(&api, "alan@example.com").await;

    let page = |filter: Value, first: i64, after: Option<String>| {
        let api = &api;
        let token = auditor.access.clone();
        async move {
            let body = api
                .graphql_as(
                    Some(&token),
                    "query($first: Int, $after: String, $filter: EventFilter) {
                       events(first: $first, after: $after, filter: $filter) {
                         pageInfo { hasNextPage endCursor }
                         edges { node { position userId eventType actor } }
                       } }",
                    json!({"first": first, "after": after, "filter": filter}),
                )
                .await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["events"].clone()
        }
    };
    // Everything, two at a time, in position order.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let events = page(json!({}), 2, after.clone()).await;
        all.extend(
            events["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone()),
        );
        if events["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = events["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let total = stack.count("SELECT count(*) FROM events").await;
    assert_eq!(i64::try_from(all.len()).unwrap(), total);
    let positions: Vec<i64> = all
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    let nodes = |events: Value| -> Vec<Value> {
        events["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect()
    };
    let by_type = nodes(page(json!({"types": ["ProfileUpdated"]}), 100, None).await);
    assert_eq!(by_type.len(), 2);
    let by_user = nodes(page(json!({"userId": grace.id}), 100, None).await);
    assert!(by_user.iter().all(|e| e["userId"] == grace.id.as_str()));
    assert_eq!(by_user.len(), 2);
    let by_actor = nodes(page(json!({"actor": "system"}), 100, None).await);
    assert_eq!(by_actor.len(), 1, "the grant");
    assert_eq!(by_actor[0]["eventType"], "RoleAssigned");
    let future = nodes(page(json!({"from": "2999-01-01T00:00:00Z"}), 100, None).await);
    assert!(future.is_empty());
    let past = nodes(page(json!({"until": "2999-01-01T00:00:00Z"}), 100, None).await);
    assert_eq!(i64::try_from(past.len()).unwrap(), total.min(100));

    // Users are not auditors (Alan's first token predates his role).
    let body = api
        .graphql_as(
            Some(&alan.access),
            "{ events { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let body = api
        .graphql_as(
            Some(&ada.access),
            "{ events { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
}

#[tokio::test]
async fn user_at_shows_what_the_read_side_showed_at_each_version_and_instant() {
    let (stack, api) = TestStack::full().await;
    let ada = api.register("ada@example.com", "Ada").await;
    api.register("grace@example.com", "Grace").await;
    stack.grant("grace@example.com", "AUDITOR").await;
    let auditor = login(&api, "grace@example.com").await;

    let mut seen = Vec::new();
    let fields = "id email displayName status roles version locale timeZone createdAt updatedAt";
    let read = |version: i64| {
        let api = &api;
        let ada = &ada;
        async move {
            let body = api
                .graphql_as(
                    Some(&ada.access),
                    &format!("query($id: ID!, $v: Int) {{ user(id: $id, minVersion: $v) {{ {fields} }} }}"),
                    json!({"id": ada.id, "v": version}),
                )
                .await;
            body["data"]["user"].clone()
        }
    };
    seen.push((1, read(1).await, chrono::Utc::now()));
    for name in ["Ada L", "Ada Lovelace"] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let version = rename(&api, &ada, name).await;
        seen.push((version, read(version).await, chrono::Utc::now()));
    }
    for (version, shown, instant) in &seen {
        let by_version = api
            .graphql_as(
                Some(&auditor.access),
                USER_AT,
                json!({"id": ada.id, "version": version}),
            )
            .await;
        assert_eq!(&by_version["data"]["userAt"], shown, "version {version}");
        let by_instant = api
            .graphql_as(
                Some(&auditor.access),
                USER_AT,
                json!({"id": ada.id, "at": instant.to_rfc3339()}),
            )
            .await;
        assert_eq!(&by_instant["data"]["userAt"], shown, "at {instant}");
    }
    let before = api
        .graphql_as(
            Some(&auditor.access),
            USER_AT,
            json!({"id": ada.id, "at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(before["data"]["userAt"], Value::Null, "{before}");
}

#[tokio::test]
async fn an_erased_users_history_keeps_every_event_with_personal_fields_null() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    rename(&api, &ada, "Ada L").await;
    let erased = api
        .graphql_as(
            Some(&ada.access),
            "mutation($id: ID!) { eraseUser(input: {id: $id}) { version } }",
            json!({"id": ada.id}),
        )
        .await;
    assert!(erased["errors"].is_null(), "{erased}");
    api.register("grace@example.com", "Grace").await;
    stack.grant("grace@example.com", "AUDITOR").await;
    let auditor = login(&api, "grace@example.com").await;

    let events = whole_history(&api, &auditor.access, &ada.id, 20).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UserRegistered", "ProfileUpdated", "UserErased"]);
    assert_eq!(events[0]["data"]["personal"], Value::Null);
    assert_eq!(events[0]["data"]["roles"], json!(["USER"]));
    assert_eq!(events[0]["erased"], true);
    assert_eq!(events[1]["erased"], true);
    assert_eq!(events[2]["erased"], false);
    assert!(!serde_json::to_string(&events).unwrap().contains("ada@"));

    let verified = api
        .graphql_as(Some(&auditor.access), VERIFY, json!({"id": ada.id}))
        .await;
    assert_eq!(verified["data"]["verifyHistory"]["ok"], true, "{verified}");
    assert_eq!(verified["data"]["verifyHistory"]["eventsChecked"], 3);
}

/// A stack with two users of three events each, a checkpoint sealing them,
/// and an auditor; answers the auditor's token and the two users' ids.
async fn sealed_history() -> (TestStack, TestApi, String, String, String) {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let mut ids = Vec::new();
    for name in ["ada", "alan"] {
        let user = api.register(&format!("{name}@example.com"), name).await;
        rename(&api, &user, &format!("{name} 2")).await;
        rename(&api, &user, &format!("{name} 3")).await;
        ids.push(user.id);
    }
    api.register("grace@example.com", "Grace").await;
    stack.grant("grace@example.com", "AUDITOR").await;
    let auditor = login(&api, "grace@example.com").await;
    let made = stack.cli(&["audit", "checkpoint"]).await;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (ada, alan) = (ids.remove(0), ids.remove(0));
    (stack, api, auditor.access, ada, alan)
}

async fn assert_intact(stack: &TestStack, api: &TestApi, token: &str) {
    let body = api.graphql_as(Some(token), VERIFY, json!({})).await;
    assert_eq!(body["data"]["verifyHistory"]["ok"], true, "{body}");
    assert!(body["data"]["verifyHistory"]["checkpointsChecked"].as_i64() >= Some(1));
    let cli = stack.cli(&["audit", "verify"]).await;
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
}

/// Both `verifyHistory` and `accountable audit verify` report the break.
async fn assert_broken(stack: &TestStack, api: &TestApi, token: &str, user: &str, expect: &str) {
    let body = api.graphql_as(Some(token), VERIFY, json!({})).await;
    let report = &body["data"]["verifyHistory"];
    assert_eq!(report["ok"], false, "{body}");
    assert_eq!(report["brokenAt"]["userId"], user, "{body}");
    let reason = report["brokenAt"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(expect), "{reason}");
    let cli = stack.cli(&["audit", "verify"]).await;
    assert!(!cli.status.success(), "the CLI exits non-zero");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains(user) && stderr.contains(expect), "{stderr}");
    let one = stack.cli(&["audit", "verify", "--user", user]).await;
    assert!(!one.status.success());
}

async fn sql(stack: &TestStack, statement: &str, user: &str) {
    sqlx::query(statement)
        .bind(user)
        .execute(&stack.pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[tokio::test]
async fn an_edited_payload_is_detected() {
    let (stack, api, token, ada, _) = sealed_history().await;
    assert_intact(&stack, &api, &token).await;
    sql(
        &stack,
        "UPDATE events SET payload = '{\"ProfileUpdated\": {\"personal\": null}}'
          WHERE aggregate_id = $1 AND sequence = 2",
        &ada,
    )
    .await;
    assert_broken(&stack, &api, &token, &ada, "changed").await;
}

#[tokio::test]
async fn a_deleted_event_is_detected() {
    let (stack, api, token, ada, _) = sealed_history().await;
    sql(
        &stack,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 2",
        &ada,
    )
    .await;
    assert_broken(&stack, &api, &token, &ada, "expected sequence 2").await;
}

#[tokio::test]
async fn a_deleted_last_event_is_detected_by_the_checkpoint() {
    let (stack, api, token, ada, _) = sealed_history().await;
    sql(
        &stack,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &ada,
    )
    .await;
    assert_broken(&stack, &api, &token, &ada, "last events were deleted").await;
}

#[tokio::test]
async fn a_forged_event_inserted_into_a_stream_is_detected() {
    let (stack, api, token, ada, _) = sealed_history().await;
    sql(
        &stack,
        "UPDATE events SET sequence = sequence + 1000 WHERE aggregate_id = $1 AND sequence >= 2",
        &ada,
    )
    .await;
    sql(
        &stack,
        "UPDATE events SET sequence = sequence - 999 WHERE aggregate_id = $1 AND sequence > 1000",
        &ada,
    )
    .await;
    sql(
        &stack,
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', $1, 2, 'RoleAssigned', '1.0', '{\"RoleAssigned\": {\"role\": \"ADMIN\"}}', '{\"actor\": \"system\"}')",
        &ada,
    )
    .await;
    assert_broken(&stack, &api, &token, &ada, "event").await;
}

#[tokio::test]
async fn two_swapped_events_are_detected() {
    let (stack, api, token, ada, _) = sealed_history().await;
    sql(
        &stack,
        "UPDATE events e SET payload = o.payload
           FROM events o
          WHERE e.aggregate_id = $1 AND o.aggregate_id = $1
            AND ((e.sequence = 2 AND o.sequence = 3) OR (e.sequence = 3 AND o.sequence = 2))",
        &ada,
    )
    .await;
    assert_broken(&stack, &api, &token, &ada, "changed").await;
}

#[tokio::test]
async fn a_deleted_stream_is_detected_by_the_checkpoint() {
    let (stack, api, token, _, alan) = sealed_history().await;
    sql(&stack, "DELETE FROM events WHERE aggregate_id = $1", &alan).await;
    assert_broken(&stack, &api, &token, &alan, "stream was deleted").await;
}

#[tokio::test]
async fn an_edited_checkpoint_is_detected() {
    let (stack, api, token, _, _) = sealed_history().await;
    sqlx::query("UPDATE audit_checkpoints SET streams = streams + 1")
        .execute(&stack.pool)
        .await
        .unwrap();
    let body = api.graphql_as(Some(&token), VERIFY, json!({})).await;
    let report = &body["data"]["verifyHistory"];
    assert_eq!(report["ok"], false, "{body}");
    assert_eq!(report["brokenAt"]["checkpoint"], 1, "{body}");
    let cli = stack.cli(&["audit", "verify"]).await;
    assert!(!cli.status.success());
}

fn export_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Lines in commit order, each event once, every one there.
fn assert_complete_and_ordered(lines: &[Value], total: i64) {
    assert_eq!(i64::try_from(lines.len()).unwrap(), total);
    let keys: Vec<(u64, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["transaction_id"].as_str().unwrap().parse().unwrap(),
                l["position"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "ordered, no duplicates"
    );
}

#[tokio::test]
async fn an_export_of_10000_events_is_complete_ordered_checkable_offline_and_resumes() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    rename(&api, &ada, "Ada L").await;
    // 10,000 more events, in batches of separate transactions.
    for _ in 0..10 {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'User', gen_random_uuid()::text, 1, 'RoleAssigned', '1.0',
                    '{\"RoleAssigned\": {\"role\": \"AUDITOR\"}}', '{\"actor\": \"system\"}'
               FROM generate_series(1, 1000)",
        )
        .execute(&stack.pool)
        .await
        .unwrap();
    }
    let total = stack.count("SELECT count(*) FROM events").await;
    assert_eq!(total, 10_002);
    let path =
        std::env::temp_dir().join(format!("accountable-export-{}.jsonl", uuid::Uuid::new_v4()));
    let file = path.to_str().unwrap();

    let export = stack.cli(&["audit", "export", "--output", file]).await;
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let lines = export_lines(&path);
    assert_complete_and_ordered(&lines, total);

    // Offline: each line's hash follows from the line and the one before.
    let chained = |line: &Value| accountable::audit::chain::ChainedEvent {
        aggregate_type: line["aggregate_type"].as_str().unwrap().into(),
        aggregate_id: line["aggregate_id"].as_str().unwrap().into(),
        sequence: line["sequence"].as_i64().unwrap(),
        event_type: line["event_type"].as_str().unwrap().into(),
        event_version: line["event_version"].as_str().unwrap().into(),
        position: line["position"].as_i64().unwrap(),
        recorded_micros: line["recorded_micros"].as_i64().unwrap(),
        payload: line["payload"].as_str().unwrap().into(),
        metadata: line["metadata"].as_str().unwrap().into(),
        prev_hash: None,
        hash: Vec::new(),
    };
    let hex = accountable::audit::chain::hex;
    let first = chained(&lines[0]);
    assert_eq!(hex(&first.expected_hash(None)), lines[0]["hash"]);
    let second = chained(&lines[1]);
    let link = first.expected_hash(None);
    assert_eq!(lines[1]["prev_hash"], hex(&link));
    assert_eq!(hex(&second.expected_hash(Some(&link))), lines[1]["hash"]);
    assert!(!std::fs::read_to_string(&path)
        .unwrap()
        .contains("ada@example.com"));

    // Cut off mid-line after 4,000 events, as by a crash: it resumes.
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: String = text.lines().take(4000).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, format!("{kept}{{\"transaction_id\": \"12")).unwrap();
    let resumed = stack.cli(&["audit", "export", "--output", file]).await;
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("exported 6002 events"));
    assert_complete_and_ordered(&export_lines(&path), total);

    // Filters: one user's events.
    let mine = path.with_extension("ada.jsonl");
    let export = stack
        .cli(&[
            "audit",
            "export",
            "--output",
            mine.to_str().unwrap(),
            "--user",
            &ada.id,
        ])
        .await;
    assert!(export.status.success());
    assert_eq!(export_lines(&mine).len(), 2);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&mine);
}

#[tokio::test]
async fn a_later_checkpoint_seals_what_moved_and_equals_a_scan_of_the_store() {
    let (stack, api, auditor, ada, _) = sealed_history().await;
    let ada_session = login(&api, "ada@example.com").await;
    rename(&api, &ada_session, "ada 4").await;
    let edsger = api.register("edsger@example.com", "Edsger").await;
    // A checkpoint seals what committed below the oldest running
    // transaction of the whole server: another test's may hold it back.
    let sealed = "SELECT max(checkpoint_id) FROM audit_checkpoint_heads WHERE aggregate_id = $1";
    let latest = eventually(
        "a checkpoint to seal edsger",
        Duration::from_secs(30),
        || async {
            let made = stack.cli(&["audit", "checkpoint"]).await;
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
            sqlx::query_scalar::<_, Option<i64>>(sealed)
                .bind(&edsger.id)
                .fetch_one(&stack.pool)
                .await
                .unwrap()
        },
    )
    .await;
    assert!(latest > 1);
    let ada_sealed: Option<i64> = sqlx::query_scalar(sealed)
        .bind(&ada)
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert!(
        ada_sealed > Some(1),
        "ada's new head was sealed after the first"
    );
    let (bound, streams, digest): (String, i64, Vec<u8>) = sqlx::query_as(
        "SELECT xid_bound::text, streams, heads_digest FROM audit_checkpoints WHERE id = $1",
    )
    .bind(latest)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    // What it sealed is what a scan of the whole store finds below its bound.
    let scanned = checkpoint::heads_below(&stack.pool, &bound).await.unwrap();
    assert_eq!(streams, i64::try_from(scanned.len()).unwrap());
    assert_eq!(digest, checkpoint::digest(&scanned));
    assert_intact(&stack, &api, &auditor).await;
}

/// Commit order is the numeric order of transaction ids: `10` after `9`,
/// though its text sorts first.
#[tokio::test]
async fn the_export_and_the_audit_stream_follow_transaction_ids_as_numbers() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let alan = api.register("alan@example.com", "Alan").await;
    stack
        .move_to_transactions(&[(&ada.id, "10"), (&alan.id, "9")])
        .await;
    let path =
        std::env::temp_dir().join(format!("accountable-export-{}.jsonl", uuid::Uuid::new_v4()));
    let export = stack
        .cli(&["audit", "export", "--output", path.to_str().unwrap()])
        .await;
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let lines = export_lines(&path);
    assert_complete_and_ordered(&lines, 2);
    assert_eq!(lines[0]["aggregate_id"], alan.id.as_str());
    std::fs::remove_file(&path).unwrap();

    // The auditors' stream of events too (what follows has later ids).
    stack.grant("alan@example.com", "AUDITOR").await;
    let auditor = login(&api, "alan@example.com").await;
    let body = api
        .graphql_as(
            Some(&auditor.access),
            "{ events(first: 2) { edges { node { userId } } } }",
            json!({}),
        )
        .await;
    let users: Vec<&Value> = body["data"]["events"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|edge| &edge["node"]["userId"])
        .collect();
    assert_eq!(users, [&json!(alan.id), &json!(ada.id)], "{body}");
}
