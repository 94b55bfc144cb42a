//! Crypto-shredding end to end: after `eraseUser`, no store we control holds
//! the user's personal data readably, and every other fact stays.

use std::time::Duration;

use accountable::config::{Environment, Secret};
use accountable::startup::Application;
use accountable_vault::MasterKey;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{consume_until, error_code, eventually, Session, TestApi, TestStack};

const EMAIL: &str = "zelda.quixote@wambaugh.example";
const NAME: &str = "Zelda Quixote-Wambaugh";
const NEW_NAME: &str = "Zelda Q. Wambaugh";

const ERASE: &str = "mutation($id: ID!) {
  eraseUser(input: {id: $id}) {
    version
    user { status email displayName }
    erasureReceipt { userId erasedAt erasedBy reason fields throughSequence eventSequence keyId keyDestroyedAt }
  }
}";

async fn erase(api: &TestApi, token: &str, id: &str) -> Value {
    api.graphql_as(Some(token), ERASE, json!({"id": id})).await
}

/// Registers Zelda with a full profile; answers her session and version.
async fn zelda(api: &TestApi) -> (Session, i64) {
    let zelda = api.register(EMAIL, NAME).await;
    let body = api
        .graphql_as(
            Some(&zelda.access),
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }",
            json!({"input": {"id": zelda.id, "displayName": NEW_NAME,
                             "locale": "nb-NO", "timeZone": "Europe/Oslo"}}),
        )
        .await;
    let version = body["data"]["updateProfile"]["version"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body}"));
    (zelda, version)
}

/// Every row of every table of the database, as text.
async fn database_text(pool: &PgPool) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() > 10, "{tables:?}");
    let mut text = String::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(&format!(
            "SELECT string_agg(t::text, E'\\n') FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        text.push_str(&rows.unwrap_or_default());
    }
    text
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The personal data of Zelda that must be gone, in every form a dump shows.
fn traces() -> Vec<String> {
    let mut traces = Vec::new();
    for secret in [
        EMAIL,
        NAME,
        NEW_NAME,
        "wambaugh",
        "Wambaugh",
        "Europe/Oslo",
        "nb-NO",
    ] {
        traces.push(secret.to_owned());
        traces.push(hex(secret));
    }
    traces
}

async fn projected_version(stack: &TestStack, id: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT version FROM users WHERE id = $1")
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_optional(&stack.pool)
        .await
        .unwrap()
}

async fn wait_projected(stack: &TestStack, id: &str, version: i64) {
    eventually(
        "the read side reaches the version",
        Duration::from_secs(30),
        || async { projected_version(stack, id).await.filter(|v| *v >= version) },
    )
    .await;
}

#[tokio::test]
async fn after_erasure_no_store_holds_the_users_personal_data_and_every_other_fact_stays() {
    let (stack, api) = TestStack::full().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let (zelda, version) = zelda(&api).await;
    let events_before = stack
        .count("SELECT count(*) FROM events WHERE event_type <> 'UserErased'")
        .await;
    // Before the erasure the data is there (sealed) and opens.
    let sealed: Value = sqlx::query_scalar(
        "SELECT payload -> 'UserRegistered' -> 'personal' FROM events WHERE aggregate_id = $1",
    )
    .bind(&zelda.id)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert!(!sealed.to_string().contains("wambaugh"), "{sealed}");
    let snapshots = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM snapshots WHERE aggregate_id = $1")
            .bind(&zelda.id)
            .fetch_one(&stack.pool)
            .await
            .unwrap()
    };
    assert_eq!(snapshots().await, 1, "commands keep a (sealed) snapshot");

    let body = erase(&api, &zelda.access, &zelda.id).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(snapshots().await, 0, "erasure drops the snapshot");
    let erased_version = body["data"]["eraseUser"]["version"].as_i64().unwrap();
    assert_eq!(erased_version, version + 1);
    let receipt = &body["data"]["eraseUser"]["erasureReceipt"];
    assert_eq!(receipt["userId"], zelda.id.as_str());
    assert_eq!(receipt["erasedBy"], zelda.id.as_str());
    assert_eq!(receipt["throughSequence"], version);
    assert_eq!(receipt["reason"], "erased at the user's request");
    let erased_user = &body["data"]["eraseUser"]["user"];
    assert_eq!(erased_user["status"], "ERASED", "{body}");
    assert_eq!(erased_user["email"], Value::Null);
    assert_eq!(erased_user["displayName"], Value::Null);
    assert_eq!(receipt["eventSequence"], erased_version);
    assert!(receipt["keyDestroyedAt"].is_string(), "{receipt}");
    let fields: Vec<&str> = receipt["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in [
        "email",
        "display_name",
        "locale",
        "time_zone",
        "password_hash",
    ] {
        assert!(fields.contains(&field), "{receipt}");
    }
    wait_projected(&stack, &zelda.id, erased_version).await;
    wait_projected(&stack, &ada.id, 1).await;

    // No byte of it in any table.
    let dump = database_text(&stack.pool).await;
    for trace in traces() {
        assert!(!dump.contains(&trace), "{trace:?} is still in the database");
    }
    assert!(dump.contains("ada@example.com"), "other users' data stays");

    // Nor in any message on the events topic.
    let total = usize::try_from(stack.count("SELECT count(*) FROM events").await).unwrap();
    let consumer = stack.consumer().await;
    let messages = consume_until(&consumer, Duration::from_secs(30), |m| m.len() >= total).await;
    for message in &messages {
        let text = format!("{} {} {:?}", message.key, message.value, message.headers);
        for trace in traces() {
            assert!(!text.contains(&trace), "{trace:?} is on the topic: {text}");
        }
    }
    // The published copies no longer open: their key is gone.
    let registered = messages
        .iter()
        .find(|m| m.key == zelda.id && m.value["sequence"] == 1)
        .unwrap();
    let opened = stack
        .opened(&zelda.id, 1, registered.value["data"].clone())
        .await;
    assert_eq!(opened["personal"], Value::Null);
    assert_eq!(opened["roles"], json!(["USER"]));

    // The read side shows nothing personal, and hides the user.
    let row: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    ) = sqlx::query_as(
        "SELECT email, display_name, locale, time_zone, status FROM users WHERE id = $1",
    )
    .bind(Uuid::parse_str(&zelda.id).unwrap())
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert_eq!(row, (None, None, None, None, "ERASED".to_owned()));

    // Every other fact of the history stays.
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type <> 'UserErased'")
            .await,
        events_before
    );
    let log_in = |email: &'static str| {
        let api = &api;
        async move {
            api.graphql(
                "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
                json!({"e": email, "p": crate::helpers::PASSWORD}),
            )
            .await
        }
    };
    assert!(log_in("ada@example.com").await["errors"].is_null());
    // Zelda can no longer sign in; her old token is refused.
    assert_eq!(error_code(&log_in(EMAIL).await), "UNAUTHENTICATED");
    let me = api
        .graphql_as(Some(&zelda.access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED", "{me}");

    // An auditor or admin finds the receipt later.
    stack.grant("ada@example.com", "AUDITOR").await;
    let auditor = api
        .graphql(
            "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
            json!({"e": "ada@example.com", "p": crate::helpers::PASSWORD}),
        )
        .await;
    let token = auditor["data"]["login"]["accessToken"].as_str().unwrap();
    let later = api
        .graphql_as(
            Some(token),
            "query($id: ID!) { erasureReceipt(userId: $id) { keyId erasedBy throughSequence } }",
            json!({"id": zelda.id}),
        )
        .await;
    assert_eq!(later["data"]["erasureReceipt"]["keyId"], receipt["keyId"]);
    assert_eq!(later["data"]["erasureReceipt"]["throughSequence"], version);
    let by_ada = api
        .graphql_as(
            Some(&ada.access),
            "query($id: ID!) { erasureReceipt(userId: $id) { keyId } }",
            json!({"id": zelda.id}),
        )
        .await;
    assert_eq!(error_code(&by_ada), "FORBIDDEN", "{by_ada}");

    // The address is free again.
    let again = api.register(EMAIL, "Another Zelda").await;
    assert_ne!(again.id, zelda.id);
}

#[tokio::test]
async fn erasing_twice_is_harmless() {
    let (stack, api) = TestStack::full().await;
    api.register("ada@example.com", "Ada").await;
    stack.grant("ada@example.com", "ADMIN").await;
    let admin = crate::helpers::login(&api, "ada@example.com").await;
    let (zelda, _) = zelda(&api).await;

    let first = erase(&api, &admin.access, &zelda.id).await;
    assert!(first["errors"].is_null(), "{first}");
    let second = erase(&api, &admin.access, &zelda.id).await;
    assert!(second["errors"].is_null(), "{second}");
    assert_eq!(
        second["data"]["eraseUser"]["version"],
        first["data"]["eraseUser"]["version"]
    );
    assert_eq!(
        second["data"]["eraseUser"]["erasureReceipt"]["keyDestroyedAt"],
        first["data"]["eraseUser"]["erasureReceipt"]["keyDestroyedAt"]
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'UserErased'")
            .await,
        1
    );
    // Nobody else may erase a user.
    let other = api.register("grace@example.com", "Grace").await;
    let forbidden = erase(&api, &other.access, &admin.id).await;
    assert_eq!(error_code(&forbidden), "FORBIDDEN", "{forbidden}");
}

#[tokio::test]
async fn a_worker_rebuilding_after_an_erasure_reproduces_the_purged_state() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    stack.relay();
    let mut worker = stack.process("project");
    let (zelda, _) = zelda(&api).await;
    let body = erase(&api, &zelda.access, &zelda.id).await;
    let erased = body["data"]["eraseUser"]["version"].as_i64().unwrap();
    wait_projected(&stack, &zelda.id, erased).await;
    let purged = database_text(&stack.pool).await;
    let row_of = |pool: PgPool, id: Uuid| async move {
        sqlx::query_as::<_, (Option<String>, Option<String>, String, Vec<String>, i64)>(
            "SELECT email, display_name, status, roles, version FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let id = Uuid::parse_str(&zelda.id).unwrap();
    let before = row_of(stack.pool.clone(), id).await;

    worker.kill().await.unwrap();
    sqlx::query("TRUNCATE users, projection_checkpoints")
        .execute(&stack.pool)
        .await
        .unwrap();
    let _rebuilder = stack.process("project");
    wait_projected(&stack, &zelda.id, erased).await;

    assert_eq!(row_of(stack.pool.clone(), id).await, before);
    assert!(!purged.contains("wambaugh") && !purged.contains("Wambaugh"));
    let rebuilt = database_text(&stack.pool).await;
    for trace in traces() {
        assert!(
            !rebuilt.contains(&trace),
            "{trace:?} came back in the rebuild"
        );
    }
}

#[tokio::test]
async fn a_missing_or_wrong_master_key_refuses_to_start() {
    let stack = TestStack::new().await;
    let _api = stack.api().await;
    let shutdown = CancellationToken::new();

    let mut wrong = stack.config.clone();
    wrong.vault.master_key = Some(Secret::new(MasterKey::generate().to_base64().to_string()));
    let refused = Application::build(&wrong, stack.pool.clone(), shutdown.clone()).await;
    let error = refused.err().expect("a wrong master key is refused");
    assert!(error.to_string().contains("master key"), "{error}");

    let mut malformed = stack.config.clone();
    malformed.vault.master_key = Some(Secret::new("too short"));
    let refused = Application::build(&malformed, stack.pool.clone(), shutdown.clone()).await;
    assert!(refused.is_err());

    let mut missing = stack.config.clone();
    missing.env = Environment::Production;
    missing.vault.master_key = None;
    missing.vault.master_key_file = None;
    let refused = Application::build(&missing, stack.pool.clone(), shutdown.clone()).await;
    let error = refused
        .err()
        .expect("production without a master key is refused");
    assert!(error.to_string().contains("master key"), "{error}");

    // Nothing was written with the refused keys: the right one still works.
    let session = stack.api().await.register(EMAIL, NAME).await;
    assert!(!session.id.is_empty());
}

#[tokio::test]
async fn what_earlier_versions_stored_in_clear_is_sealed_once_at_start() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let (zelda, version) = zelda(&api).await;
    // Put the store back as the versions before crypto-shredding wrote it.
    let rows: Vec<(i64, Value)> = sqlx::query_as(
        "SELECT sequence, payload FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&zelda.id)
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert_eq!(i64::try_from(rows.len()).unwrap(), version);
    for (sequence, mut payload) in rows {
        let variant = payload
            .as_object_mut()
            .unwrap()
            .values_mut()
            .next()
            .unwrap();
        let opened = stack.opened(&zelda.id, sequence, variant.clone()).await;
        *variant = opened;
        sqlx::query("UPDATE events SET payload = $3 WHERE aggregate_id = $1 AND sequence = $2")
            .bind(&zelda.id)
            .bind(sequence)
            .bind(&payload)
            .execute(&stack.pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE user_emails SET email_key = $1")
        .bind(EMAIL)
        .execute(&stack.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM vault_migrations")
        .execute(&stack.pool)
        .await
        .unwrap();
    let clear = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE payload::text LIKE '%wambaugh%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert!(clear(stack.pool.clone()).await > 0);

    // The next start seals it.
    let restarted = stack.api().await;
    assert_eq!(clear(stack.pool.clone()).await, 0);
    let dump = database_text(&stack.pool).await;
    assert!(!dump.contains(EMAIL), "the email index holds no address");
    let login = crate::helpers::login(&restarted, EMAIL).await;
    assert_eq!(login.id, zelda.id);
    assert_eq!(
        stack.count("SELECT count(*) FROM vault_migrations").await,
        1
    );
}

#[tokio::test]
async fn private_signing_keys_are_stored_sealed_and_clear_ones_are_sealed_at_start() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register(EMAIL, NAME).await;
    let (kid, stored, sealed): (String, Vec<u8>, bool) =
        sqlx::query_as("SELECT kid, private_der, sealed FROM signing_keys")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert!(sealed);
    // A PKCS#8 DER document starts with a SEQUENCE tag and the Ed25519 OID.
    let ed25519_oid = [0x06, 0x03, 0x2b, 0x65, 0x70];
    assert!(!stored.windows(5).any(|w| w == ed25519_oid), "not in clear");
    let clear = stack
        .vault()
        .await
        .open_secret(&format!("signing-key/{kid}"), &stored)
        .unwrap();
    assert!(clear.windows(5).any(|w| w == ed25519_oid));

    // As an earlier version left it: in clear. The next start seals it.
    sqlx::query("UPDATE signing_keys SET private_der = $1, sealed = false")
        .bind(&clear[..])
        .execute(&stack.pool)
        .await
        .unwrap();
    let restarted = stack.api().await;
    let (stored, sealed): (Vec<u8>, bool) =
        sqlx::query_as("SELECT private_der, sealed FROM signing_keys")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert!(sealed && !stored.windows(5).any(|w| w == ed25519_oid));
    // Tokens signed before still verify, and new ones are signed.
    let mine = restarted
        .graphql_as(
            Some(&ada.access),
            "query($id: ID!) { userHistory(id: $id) { edges { node { sequence } } } }",
            json!({"id": ada.id}),
        )
        .await;
    assert!(mine["errors"].is_null(), "{mine}");
    let again = crate::helpers::login(&restarted, EMAIL).await;
    assert_eq!(again.id, ada.id);
}
