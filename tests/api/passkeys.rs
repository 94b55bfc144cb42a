//! Passkeys end to end, in a real browser: Debian's Chromium with a virtual
//! WebAuthn authenticator answers the options our mutations give with
//! `navigator.credentials.create` and `.get`, on a page at
//! `http://localhost:…`, the relying party `localhost`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::factors::ada_with_an_app;
use crate::helpers::*;

const BEGIN_REGISTRATION: &str = "mutation { beginPasskeyRegistration { ceremony options } }";
const FINISH_REGISTRATION: &str = "mutation($c: String!, $k: String!, $n: String!) {
  finishPasskeyRegistration(input: {ceremony: $c, credential: $k, name: $n}) {
    passkey { id name createdAt lastUsedAt } version
  }
}";
const BEGIN_SIGN_IN: &str = "mutation { beginPasskeySignIn { ceremony options } }";
const FINISH_SIGN_IN: &str = "mutation($c: String!, $k: String!) {
  finishPasskeySignIn(input: {ceremony: $c, credential: $k}) { accessToken refreshToken }
}";
const MY_PASSKEYS: &str = "{ myPasskeys { id name createdAt lastUsedAt } }";

/// A stack whose relying party is `localhost`, served at the browser's
/// page (and at `sub.localhost`, for the test of a foreign RP id).
async fn stack_for(browser: &Browser) -> (TestStack, TestApi) {
    let origins = vec![browser.origin("localhost"), browser.origin("sub.localhost")];
    let stack = TestStack::with_config(|config| {
        config.auth.webauthn_rp_id = "localhost".into();
        config.auth.webauthn_origins = origins;
    })
    .await;
    let api = stack.api().await;
    (stack, api)
}

/// A ceremony begun by `document` as `token`: its id and options.
async fn begin(api: &TestApi, token: Option<&str>, document: &str, vars: Value) -> (String, Value) {
    let body = api.graphql_as(token, document, vars).await;
    let (_, begun) = body["data"]
        .as_object()
        .and_then(|data| data.iter().next())
        .unwrap_or_else(|| panic!("{body}"));
    let ceremony = begun["ceremony"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    (ceremony.to_owned(), begun["options"].clone())
}

/// Adds a passkey named `name` to the holder of `token`, created in the
/// browser: its id, and the credential JSON the browser gave.
async fn add_passkey(
    api: &TestApi,
    browser: &mut Browser,
    token: &str,
    name: &str,
) -> (String, String) {
    let (ceremony, options) = begin(api, Some(token), BEGIN_REGISTRATION, json!({})).await;
    assert_eq!(options["publicKey"]["rp"]["id"], json!("localhost"));
    let credential = browser.create(&options).await;
    let body = finish_registration(api, token, &ceremony, &credential, name).await;
    let id = body["data"]["finishPasskeyRegistration"]["passkey"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    (id, credential)
}

async fn finish_registration(
    api: &TestApi,
    token: &str,
    ceremony: &str,
    credential: &str,
    name: &str,
) -> Value {
    api.graphql_as(
        Some(token),
        FINISH_REGISTRATION,
        json!({"c": ceremony, "k": credential, "n": name}),
    )
    .await
}

/// A sign-in with the browser's passkey alone: the answer of
/// `finishPasskeySignIn`, and the assertion the browser gave.
async fn sign_in(api: &TestApi, browser: &mut Browser) -> (Value, String) {
    let (ceremony, options) = begin(api, None, BEGIN_SIGN_IN, json!({})).await;
    assert_eq!(
        options["publicKey"]["allowCredentials"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "a sign-in names no account: {options}"
    );
    let assertion = browser.get(&options).await.expect("the browser signs");
    let body = api
        .graphql(FINISH_SIGN_IN, json!({"c": ceremony, "k": assertion}))
        .await;
    (body, assertion)
}

async fn user_events(stack: &TestStack, user_id: &str) -> i64 {
    stack
        .count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{user_id}'"
        ))
        .await
}

/// `credential` with `edit` applied to its decoded `clientDataJSON`.
fn with_client_data(credential: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut credential: Value = serde_json::from_str(credential).unwrap();
    let encoded = credential["response"]["clientDataJSON"].as_str().unwrap();
    let mut client_data: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap();
    edit(&mut client_data);
    credential["response"]["clientDataJSON"] =
        json!(URL_SAFE_NO_PAD.encode(client_data.to_string()));
    credential.to_string()
}

#[tokio::test]
async fn a_passkey_made_in_chromium_signs_in_on_its_own_once_per_challenge() {
    let mut browser = Browser::start().await;
    let (stack, api) = stack_for(&browser).await;
    let ada = api.register("ada@example.com", "Ada").await;
    let (passkey_id, _) = add_passkey(&api, &mut browser, &ada.access, " Ada's laptop ").await;
    assert_eq!(browser.credentials().await.len(), 1, "a discoverable key");

    let listed = api.graphql_as(Some(&ada.access), MY_PASSKEYS, json!({})).await;
    let listed = &listed["data"]["myPasskeys"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], json!(passkey_id));
    assert_eq!(listed[0]["name"], json!("Ada's laptop"));
    assert!(listed[0]["lastUsedAt"].is_null());

    // The passkey alone signs in, as Ada, with two factors in one.
    let (body, assertion) = sign_in(&api, &mut browser).await;
    let signed_in = Session::from(&body["data"]["finishPasskeySignIn"]);
    assert_eq!(signed_in.id, ada.id);
    assert_eq!(claims(&signed_in.access)["amr"], json!(["hwk", "user", "mfa"]));
    let seen = api
        .graphql_as(
            Some(&signed_in.access),
            "{ mySessions { current factors } }",
            json!({}),
        )
        .await;
    assert!(seen["errors"].is_null(), "{seen}");
    let listed = api.graphql_as(Some(&ada.access), MY_PASSKEYS, json!({})).await;
    assert!(listed["data"]["myPasskeys"][0]["lastUsedAt"].is_string());

    // An answer is taken once: the same again is refused, and so is the
    // same signature on another challenge; neither is a use.
    let uses = format!(
        "SELECT count(*) FROM events WHERE aggregate_id = '{}' AND event_type = 'PasskeyUsed'",
        ada.id
    );
    let used = stack.count(&uses).await;
    let (ceremony, _) = begin(&api, None, BEGIN_SIGN_IN, json!({})).await;
    let replayed = api
        .graphql(FINISH_SIGN_IN, json!({"c": ceremony, "k": assertion}))
        .await;
    assert_eq!(error_code(&replayed), "UNAUTHENTICATED", "{replayed}");
    let again = api
        .graphql(FINISH_SIGN_IN, json!({"c": ceremony, "k": assertion}))
        .await;
    assert_eq!(error_code(&again), "INVALID_TOKEN", "{again}");
    assert_eq!(stack.count(&uses).await, used);

    // The credential is kept sealed: its event holds no public key in clear.
    let clear = stack
        .count(
            "SELECT count(*) FROM events WHERE event_type IN ('PasskeyRegistered', 'PasskeyUsed')
              AND (payload -> (event_type) -> 'credential' ->> 'alg') IS NULL",
        )
        .await;
    assert_eq!(clear, 0);
}
