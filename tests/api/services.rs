//! Service accounts and the OAuth 2.0 endpoints end to end: a service finds
//! the token endpoint by discovery and fetches a token with Authlib, PyJWT
//! verifies it from the JWKS alone (tests/peers/oauth_client.py); secrets
//! are revoked at once; the endpoints answer RFC 6749's errors.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const CREATE: &str = "mutation($n: String!, $r: [Role!]) {
  createServiceAccount(input: {name: $n, roles: $r}) { id name owner roles status secrets { id } }
}";
const ISSUE: &str = "mutation($id: ID!, $d: Int) {
  issueClientSecret(input: {serviceAccountId: $id, expiresInDays: $d}) {
    clientId clientSecret secret { id prefix createdAt expiresAt revokedAt } version
  }
}";
const REVOKE: &str = "mutation($id: ID!, $s: ID!) {
  revokeClientSecret(input: {serviceAccountId: $id, secretId: $s}) { secrets { id revokedAt } }
}";
/// A query an auditor's token may run.
const AUDITED: &str = "{ users(first: 1) { edges { cursor } } }";

/// An admin, signed in just now.
async fn admin(stack: &TestStack, api: &TestApi) -> Session {
    api.register("root@example.com", "Root").await;
    stack.grant("root@example.com", "ADMIN").await;
    stack.grant("root@example.com", "AUDITOR").await;
    login(api, "root@example.com").await
}

/// A service account with `roles` and one secret: its id and the secret.
async fn service(api: &TestApi, admin: &Session, roles: Value) -> (String, String, String) {
    let created = api
        .graphql_as(
            Some(&admin.access),
            CREATE,
            json!({"n": "billing", "r": roles}),
        )
        .await;
    let id = created["data"]["createServiceAccount"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let issued = api
        .graphql_as(Some(&admin.access), ISSUE, json!({"id": id}))
        .await;
    let issued = &issued["data"]["issueClientSecret"];
    let secret = issued["clientSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("{issued}"))
        .to_owned();
    let secret_id = issued["secret"]["id"].as_str().unwrap().to_owned();
    (id, secret, secret_id)
}

/// `POST path` with a form body (and Basic credentials, when given).
async fn post_form(
    api: &TestApi,
    path: &str,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = api.client.post(api.url(path)).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn client_token(api: &TestApi, id: &str, secret: &str) -> (StatusCode, Value) {
    let (status, _, body) = post_form(
        api,
        "/oauth/token",
        Some((id, secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn a_service_finds_the_endpoint_by_discovery_and_its_token_verifies_with_pyjwt() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let root = admin(&stack, &api).await;
    let (id, secret, _) = service(&api, &root, json!(["AUDITOR"])).await;
    assert!(secret.starts_with("acs_"), "{secret}");

    let output = tokio::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/oauth_client.py"
        ))
        .args([&api.url(""), &id, &secret, "accountable", "user auditor"])
        .output()
        .await
        .expect("python runs (scripts/python.sh installs Authlib and PyJWT)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        seen["metadata"]["token_endpoint"],
        json!(api.url("/oauth/token"))
    );
    assert_eq!(seen["token"]["token_type"], json!("Bearer"));
    assert_eq!(seen["token"]["scope"], json!("user auditor"));
    assert_eq!(seen["claims"]["sub"], json!(id));
    assert_eq!(seen["claims"]["roles"], json!(["USER", "AUDITOR"]));

    // The token is a caller's like a person's: an auditor reads.
    let token = seen["token"]["access_token"].as_str().unwrap();
    let read = api.graphql_as(Some(token), AUDITED, json!({})).await;
    assert!(read["errors"].is_null(), "{read}");
    // A narrower scope gives a narrower token.
    let (status, _, body) = post_form(
        &api,
        "/oauth/token",
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "user"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let narrow = body["access_token"].as_str().unwrap();
    assert_eq!(claims(narrow)["roles"], json!(["USER"]));
    let refused = api.graphql_as(Some(narrow), AUDITED, json!({})).await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");

    // No secret in any event: the hash is sealed, the secret nowhere.
    let clear = stack
        .count(&format!(
            "SELECT count(*) FROM events WHERE payload::text LIKE '%{}%'",
            &secret[8..]
        ))
        .await;
    assert_eq!(clear, 0);
    let unsealed = stack
        .count(
            "SELECT count(*) FROM events WHERE event_type = 'ClientSecretIssued'
              AND (payload -> 'ClientSecretIssued' -> 'secret_hash' ->> 'alg') IS NULL",
        )
        .await;
    assert_eq!(unsealed, 0);
    // Admins page through service accounts.
    let listed = api
        .graphql_as(
            Some(&root.access),
            "{ serviceAccounts(first: 10) { nodes { id name secrets { prefix } } endCursor } }",
            json!({}),
        )
        .await;
    let nodes = &listed["data"]["serviceAccounts"]["nodes"];
    assert_eq!(nodes[0]["id"], json!(id), "{listed}");
    assert_eq!(nodes[0]["secrets"][0]["prefix"], json!(&secret[..8]));
    // A page at a time, oldest first.
    let (second, _, _) = service(&api, &root, json!([])).await;
    const PAGE: &str =
        "query($a: String) { serviceAccounts(first: 1, after: $a) { nodes { id } endCursor } }";
    let first = api.graphql_as(Some(&root.access), PAGE, json!({})).await;
    let page = &first["data"]["serviceAccounts"];
    assert_eq!(page["nodes"][0]["id"], json!(id), "{first}");
    let next = api
        .graphql_as(Some(&root.access), PAGE, json!({"a": page["endCursor"]}))
        .await;
    let page = &next["data"]["serviceAccounts"];
    assert_eq!(page["nodes"][0]["id"], json!(second), "{next}");
    assert!(page["endCursor"].is_null(), "{next}");
}

#[tokio::test]
async fn a_revoked_secret_and_its_tokens_are_refused_at_once() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let root = admin(&stack, &api).await;
    let (id, secret, secret_id) = service(&api, &root, json!(["AUDITOR"])).await;
    let (status, body) = client_token(&api, &id, &secret).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();

    let revoked = api
        .graphql_as(
            Some(&root.access),
            REVOKE,
            json!({"id": id, "s": secret_id}),
        )
        .await;
    assert!(
        revoked["data"]["revokeClientSecret"]["secrets"][0]["revokedAt"].is_string(),
        "{revoked}"
    );
    let read = api.graphql_as(Some(&token), AUDITED, json!({})).await;
    assert_eq!(error_code(&read), "UNAUTHENTICATED", "{read}");
    let (status, body) = client_token(&api, &id, &secret).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], json!("invalid_client"));

    // A deactivated account gets no token with a secret that is live.
    let issued = api
        .graphql_as(Some(&root.access), ISSUE, json!({"id": id}))
        .await;
    let second = issued["data"]["issueClientSecret"]["clientSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("{issued}"))
        .to_owned();
    let (status, body) = client_token(&api, &id, &second).await;
    assert_eq!(status, 200, "{body}");
    let held = body["access_token"].as_str().unwrap().to_owned();
    let deactivated = api
        .graphql_as(
            Some(&root.access),
            "mutation($id: ID!) { deactivateUser(input: {id: $id, reason: \"retired\"}) { version } }",
            json!({"id": id}),
        )
        .await;
    assert!(deactivated["errors"].is_null(), "{deactivated}");
    assert_eq!(client_token(&api, &id, &second).await.0, 401);
    let read = api.graphql_as(Some(&held), AUDITED, json!({})).await;
    assert_eq!(error_code(&read), "UNAUTHENTICATED", "{read}");
}

/// What is wrong, the form, the Basic credentials, and the error expected.
type Case<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<(&'a str, &'a str)>,
    &'a str,
);

#[tokio::test]
async fn the_token_endpoint_answers_rfc_6749_errors() {
    let stack = TestStack::new().await;
    let clock = accountable::auth::Clock::default();
    let api = stack.api_with_clock(clock.clone()).await;
    let root = admin(&stack, &api).await;
    let (id, secret, _) = service(&api, &root, json!(["AUDITOR"])).await;
    let grant = [("grant_type", "client_credentials")];

    for (basic, what) in [
        ((id.as_str(), "acs_wrong"), "a wrong secret"),
        ((id.as_str(), &"a".repeat(500)[..]), "an over-long secret"),
        (
            ("0190a3c2-0000-7000-8000-000000000001", secret.as_str()),
            "an unknown client",
        ),
        (("not-a-uuid", secret.as_str()), "a malformed client id"),
        ((root.id.as_str(), secret.as_str()), "a person's id"),
    ] {
        let (status, headers, body) = post_form(&api, "/oauth/token", Some(basic), &grant).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], json!("invalid_client"), "{what}");
        assert!(
            headers
                .get("www-authenticate")
                .is_some_and(|value| value.to_str().unwrap().starts_with("Basic")),
            "{what}"
        );
        assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    }

    let cases: Vec<Case> = vec![
        (
            "no grant type",
            vec![],
            Some((&id, &secret)),
            "invalid_request",
        ),
        (
            "an unknown grant type",
            vec![("grant_type", "password")],
            Some((&id, &secret)),
            "unsupported_grant_type",
        ),
        (
            "a parameter twice",
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            Some((&id, &secret)),
            "invalid_request",
        ),
        (
            "two ways to authenticate",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            Some((&id, &secret)),
            "invalid_request",
        ),
        (
            "a scope beyond the roles",
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            Some((&id, &secret)),
            "invalid_scope",
        ),
        (
            "an unknown scope",
            vec![("grant_type", "client_credentials"), ("scope", "openid")],
            Some((&id, &secret)),
            "invalid_scope",
        ),
        (
            "a bad refresh token",
            vec![("grant_type", "refresh_token"), ("refresh_token", "nope")],
            None,
            "invalid_grant",
        ),
    ];
    for (what, form, basic, error) in cases {
        let (status, _, body) = post_form(&api, "/oauth/token", basic, &form).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], json!(error), "{what}: {body}");
    }

    // A secret in the query string, JSON instead of a form.
    let in_query = api
        .client
        .post(api.url(&format!(
            "/oauth/token?grant_type=client_credentials&client_id={id}&client_secret={secret}"
        )))
        .form(&grant)
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 400);
    let body: Value = in_query.json().await.unwrap();
    assert_eq!(body["error"], json!("invalid_request"));
    let as_json = api
        .client
        .post(api.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_json.status(), 400);

    // A person's refresh token is traded as `refreshToken` trades it.
    let person = api.register("ada@example.com", "Ada").await;
    let (status, _, body) = post_form(
        &api,
        "/oauth/token",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &person.refresh),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].is_string());

    // A secret that expired.
    let issued = api
        .graphql_as(Some(&root.access), ISSUE, json!({"id": id, "d": 1}))
        .await;
    let expiring = issued["data"]["issueClientSecret"]["clientSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("{issued}"))
        .to_owned();
    assert_eq!(client_token(&api, &id, &expiring).await.0, 200);
    clock.advance(chrono::Duration::days(2));
    assert_eq!(client_token(&api, &id, &expiring).await.0, 401);
    assert_eq!(client_token(&api, &id, &secret).await.0, 200);
}

#[tokio::test]
async fn introspection_needs_a_client_and_revocation_ends_a_session() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let root = admin(&stack, &api).await;
    let (id, secret, _) = service(&api, &root, json!([])).await;
    let ada = api.register("ada@example.com", "Ada").await;

    let (status, _, body) =
        post_form(&api, "/oauth/introspect", None, &[("token", &ada.access)]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = post_form(
        &api,
        "/oauth/introspect",
        Some((&id, &secret)),
        &[("token", &ada.access)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], json!(true), "{body}");
    assert_eq!(body["sub"], json!(ada.id));
    let (_, _, body) = post_form(
        &api,
        "/oauth/introspect",
        Some((&id, &secret)),
        &[("token", "not.a.token")],
    )
    .await;
    assert_eq!(body, json!({"active": false}));

    // Revoking the access token ends its session: it and the refresh token
    // stop working at once.
    let (status, _, _) = post_form(&api, "/oauth/revoke", None, &[("token", &ada.access)]).await;
    assert_eq!(status, 200);
    let (_, _, body) = post_form(
        &api,
        "/oauth/introspect",
        Some((&id, &secret)),
        &[("token", &ada.access)],
    )
    .await;
    assert_eq!(body["active"], json!(false), "{body}");
    let (status, _, body) = post_form(
        &api,
        "/oauth/token",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &ada.refresh),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // An unknown token is no error.
    let (status, _, _) = post_form(&api, "/oauth/revoke", None, &[("token", "unknown")]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn only_admins_create_service_accounts_with_roles_they_hold_after_a_recent_sign_in() {
    let stack = TestStack::new().await;
    let clock = accountable::auth::Clock::default();
    let api = stack.api_with_clock(clock.clone()).await;
    let ada = api.register("ada@example.com", "Ada").await;
    let refused = api
        .graphql_as(Some(&ada.access), CREATE, json!({"n": "x"}))
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");
    api.register("root@example.com", "Root").await;
    stack.grant("root@example.com", "ADMIN").await;
    let root = login(&api, "root@example.com").await;
    let beyond = api
        .graphql_as(
            Some(&root.access),
            CREATE,
            json!({"n": "x", "r": ["AUDITOR"]}),
        )
        .await;
    assert_eq!(error_code(&beyond), "FORBIDDEN", "{beyond}");
    for bad in ["", &"x".repeat(101)] {
        let body = api
            .graphql_as(Some(&root.access), CREATE, json!({"n": bad}))
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
    clock.advance(chrono::Duration::minutes(10));
    let refreshed = api.refresh(&root.refresh).await;
    let stale = refreshed["data"]["refreshToken"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{refreshed}"));
    let late = api
        .graphql_as(Some(stale), CREATE, json!({"n": "billing"}))
        .await;
    assert_eq!(error_code(&late), "REAUTHENTICATION_REQUIRED", "{late}");
    let (id, _, _) = service(&api, &login(&api, "root@example.com").await, json!([])).await;
    let late = api.graphql_as(Some(stale), ISSUE, json!({"id": id})).await;
    assert_eq!(error_code(&late), "REAUTHENTICATION_REQUIRED", "{late}");
}

#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    let stack = TestStack::new().await;
    let log = std::env::temp_dir().join(format!("accountable-log-{}.txt", uuid::Uuid::new_v4()));
    let (mut server, api) = stack.serve_process_logging(&log).await;
    let root = admin(&stack, &api).await;
    let (id, secret, _) = service(&api, &root, json!([])).await;
    let wrong = format!("{}{}", &secret[..12], "x".repeat(secret.len() - 12));
    assert_eq!(client_token(&api, &id, &secret).await.0, 200);
    assert_eq!(client_token(&api, &id, &wrong).await.0, 401);
    let in_query = api
        .client
        .post(api.url(&format!("/oauth/token?client_secret={secret}")))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 400);
    let refused = post_form(
        &api,
        "/oauth/token",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &root.refresh),
        ],
    )
    .await;
    assert_eq!(refused.0, 200);

    server.kill().await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert!(logged.contains("/oauth/token"), "the requests were logged");
    for secret in [&secret[8..], &wrong[12..], &root.refresh, &root.access] {
        assert!(!logged.contains(secret), "a secret in the log");
    }
}
