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
    stack_with_clock(browser, accountable::auth::Clock::default()).await
}

async fn stack_with_clock(
    browser: &Browser,
    clock: accountable::auth::Clock,
) -> (TestStack, TestApi) {
    let origins = vec![browser.origin("localhost"), browser.origin("sub.localhost")];
    let stack = TestStack::with_config(|config| {
        config.auth.webauthn_rp_id = "localhost".into();
        config.auth.webauthn_origins = origins;
    })
    .await;
    let api = stack.api_with_clock(clock).await;
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

    let listed = api
        .graphql_as(Some(&ada.access), MY_PASSKEYS, json!({}))
        .await;
    let listed = &listed["data"]["myPasskeys"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], json!(passkey_id));
    assert_eq!(listed[0]["name"], json!("Ada's laptop"));
    assert!(listed[0]["lastUsedAt"].is_null());

    // The passkey alone signs in, as Ada, with two factors in one.
    let (body, assertion) = sign_in(&api, &mut browser).await;
    let signed_in = Session::from(&body["data"]["finishPasskeySignIn"]);
    assert_eq!(signed_in.id, ada.id);
    assert_eq!(
        claims(&signed_in.access)["amr"],
        json!(["hwk", "user", "mfa"])
    );
    let seen = api
        .graphql_as(
            Some(&signed_in.access),
            "{ mySessions { current factors } }",
            json!({}),
        )
        .await;
    assert!(seen["errors"].is_null(), "{seen}");
    let listed = api
        .graphql_as(Some(&ada.access), MY_PASSKEYS, json!({}))
        .await;
    assert!(listed["data"]["myPasskeys"][0]["lastUsedAt"].is_string());

    // `User.passkeys`: the owner's and an admin's to see, no one else's.
    stack.relay();
    stack.projection();
    let bob = api.register("bob@example.com", "Bob").await;
    const PASSKEYS_OF: &str =
        "query($id: ID!) { user(id: $id, minVersion: 1) { passkeys { id name } } }";
    let own = api
        .graphql_as(Some(&ada.access), PASSKEYS_OF, json!({"id": ada.id}))
        .await;
    assert_eq!(
        own["data"]["user"]["passkeys"],
        json!([{"id": passkey_id, "name": "Ada's laptop"}]),
        "{own}"
    );
    let others = api
        .graphql_as(Some(&bob.access), PASSKEYS_OF, json!({"id": ada.id}))
        .await;
    assert_eq!(error_code(&others), "FORBIDDEN", "{others}");

    // An answer is taken once: the same again is refused, and so is the
    // same signature on another challenge; neither is a use.
    let used = stack.events_of(&ada.id, "PasskeyUsed").await;
    let (ceremony, _) = begin(&api, None, BEGIN_SIGN_IN, json!({})).await;
    let replayed = api
        .graphql(FINISH_SIGN_IN, json!({"c": ceremony, "k": assertion}))
        .await;
    assert_eq!(error_code(&replayed), "UNAUTHENTICATED", "{replayed}");
    let again = api
        .graphql(FINISH_SIGN_IN, json!({"c": ceremony, "k": assertion}))
        .await;
    assert_eq!(error_code(&again), "INVALID_TOKEN", "{again}");
    assert_eq!(stack.events_of(&ada.id, "PasskeyUsed").await, used);

    // The credential is kept sealed: its event holds no public key in clear.
    let clear = stack
        .count(
            "SELECT count(*) FROM events WHERE event_type IN ('PasskeyRegistered', 'PasskeyUsed')
              AND (payload -> (event_type) -> 'credential' ->> 'alg') IS NULL",
        )
        .await;
    assert_eq!(clear, 0);
}

const LOGIN: &str = "mutation($e: String!, $p: String!) {
  login(input: {email: $e, password: $p}) { secondFactorRequired challenge factors accessToken }
}";
const BEGIN_SECOND_STEP: &str =
    "mutation($ch: String!) { beginPasskeySecondStep(input: {challenge: $ch}) { ceremony options } }";
const FINISH_SECOND_STEP: &str = "mutation($c: String!, $k: String!) {
  finishPasskeySecondStep(input: {ceremony: $c, credential: $k}) { accessToken refreshToken }
}";
const BEGIN_REAUTHENTICATION: &str =
    "mutation { beginPasskeyReauthentication { ceremony options } }";
const REAUTHENTICATE: &str = "mutation($c: String!, $k: String!) {
  reauthenticate(input: {passkey: {ceremony: $c, credential: $k}}) { accessToken }
}";

/// A passkey re-authentication begun by the holder of `begun_by` and
/// finished by the holder of `finished_by`.
async fn reauthenticate(
    api: &TestApi,
    browser: &mut Browser,
    begun_by: &str,
    finished_by: &str,
) -> Value {
    let (ceremony, options) = begin(api, Some(begun_by), BEGIN_REAUTHENTICATION, json!({})).await;
    let assertion = browser.get(&options).await.unwrap();
    api.graphql_as(
        Some(finished_by),
        REAUTHENTICATE,
        json!({"c": ceremony, "k": assertion}),
    )
    .await
}

#[tokio::test]
async fn a_passkey_completes_a_password_sign_in_and_proves_the_user_again() {
    let mut browser = Browser::start().await;
    let (_stack, api) = stack_for(&browser).await;
    let (ada, _, _) = ada_with_an_app(&api).await;
    add_passkey(&api, &mut browser, &ada.access, "Laptop").await;

    let body = api
        .graphql(LOGIN, json!({"e": "ada@example.com", "p": PASSWORD}))
        .await;
    let login = &body["data"]["login"];
    assert_eq!(
        login["factors"],
        json!(["TOTP", "RECOVERY_CODE", "PASSKEY"]),
        "{body}"
    );
    let challenge = login["challenge"].as_str().unwrap().to_owned();
    let (ceremony, options) = begin(&api, None, BEGIN_SECOND_STEP, json!({"ch": challenge})).await;
    assert_eq!(
        options["publicKey"]["allowCredentials"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "the account's own passkey: {options}"
    );
    let assertion = browser.get(&options).await.unwrap();
    let body = api
        .graphql(FINISH_SECOND_STEP, json!({"c": ceremony, "k": assertion}))
        .await;
    let signed_in = Session::from(&body["data"]["finishPasskeySecondStep"]);
    assert_eq!(signed_in.id, ada.id);
    assert_eq!(
        claims(&signed_in.access)["amr"],
        json!(["pwd", "hwk", "user", "mfa"])
    );
    // The login challenge is used up.
    let used = api
        .graphql(
            "mutation($ch: String!) { completeLogin(input: {challenge: $ch, recoveryCode: \"aaaaa-aaaaa\"}) { accessToken } }",
            json!({"ch": challenge}),
        )
        .await;
    assert_eq!(error_code(&used), "INVALID_TOKEN", "{used}");
    let again = api
        .graphql(BEGIN_SECOND_STEP, json!({"ch": challenge}))
        .await;
    assert_eq!(error_code(&again), "INVALID_TOKEN", "{again}");

    // A re-authentication with the passkey answers a fresh token of the
    // same session.
    let body = reauthenticate(&api, &mut browser, &signed_in.access, &signed_in.access).await;
    let fresh = body["data"]["reauthenticate"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(claims(fresh)["sid"], claims(&signed_in.access)["sid"]);
    assert_eq!(claims(fresh)["amr"], json!(["hwk", "user", "mfa"]));

    // Another account's ceremony is no ceremony of Ada's.
    let bob = api.register("bob@example.com", "Bob").await;
    let no_passkey = api
        .graphql_as(Some(&bob.access), BEGIN_REAUTHENTICATION, json!({}))
        .await;
    assert_eq!(error_code(&no_passkey), "BAD_USER_INPUT", "{no_passkey}");
    let foreign = reauthenticate(&api, &mut browser, &signed_in.access, &bob.access).await;
    assert_eq!(error_code(&foreign), "INVALID_TOKEN", "{foreign}");
}

#[tokio::test]
async fn a_signature_counter_that_goes_back_is_refused_and_recorded() {
    let mut browser = Browser::start().await;
    let (stack, api) = stack_for(&browser).await;
    let ada = api.register("ada@example.com", "Ada").await;
    add_passkey(&api, &mut browser, &ada.access, "Laptop").await;
    let credential = browser.credentials().await.remove(0);
    let id = credential["credentialId"].as_str().unwrap().to_owned();
    browser.set_sign_count(&id, 41).await;
    let (body, _) = sign_in(&api, &mut browser).await;
    assert!(body["errors"].is_null(), "{body}");

    // A clone of the authenticator, behind the original.
    browser.set_sign_count(&id, 10).await;
    let (body, _) = sign_in(&api, &mut browser).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    let recorded = stack
        .count("SELECT count(*) FROM events WHERE event_type = 'PasskeyCounterRegressed'")
        .await;
    assert_eq!(recorded, 1);
    let stored: i64 = stack
        .count(
            "SELECT (payload -> 'PasskeyCounterRegressed' ->> 'stored_counter')::bigint FROM events
              WHERE event_type = 'PasskeyCounterRegressed'",
        )
        .await;
    assert!(stored > 41, "{stored}");

    // The original, ahead of every signature seen, still signs in.
    browser.set_sign_count(&id, 100).await;
    let (body, _) = sign_in(&api, &mut browser).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn bad_passkey_answers_get_a_coded_error_and_write_nothing() {
    let mut browser = Browser::start().await;
    let (stack, api) = stack_for(&browser).await;
    let ada = api.register("ada@example.com", "Ada").await;
    let events = user_events(&stack, &ada.id).await;
    let cases = [
        ("not JSON", "BAD_USER_INPUT"),
        ("JSON of something else", "BAD_USER_INPUT"),
        ("over 32 KiB", "BAD_USER_INPUT"),
        ("CBOR that is not an attestation", "UNAUTHENTICATED"),
        ("made for another origin", "UNAUTHENTICATED"),
        ("made for another RP id", "UNAUTHENTICATED"),
    ];
    for (what, code) in cases {
        let (ceremony, options) =
            begin(&api, Some(&ada.access), BEGIN_REGISTRATION, json!({})).await;
        let credential = match what {
            "not JSON" => "{".to_owned(),
            "JSON of something else" => "{\"id\": 1}".to_owned(),
            "over 32 KiB" => format!("\"{}\"", "a".repeat(40_000)),
            "CBOR that is not an attestation" => {
                let mut credential: Value =
                    serde_json::from_str(&browser.create(&options).await).unwrap();
                credential["response"]["attestationObject"] =
                    json!(URL_SAFE_NO_PAD.encode([0xff; 64]));
                credential.to_string()
            }
            "made for another origin" => {
                with_client_data(&browser.create(&options).await, |data| {
                    data["origin"] = json!("http://evil.localhost:1");
                })
            }
            _ => {
                // A page below the relying party that makes its own name
                // the RP id, which the browser allows.
                let mut elsewhere = options.clone();
                elsewhere["publicKey"]["rp"]["id"] = json!("sub.localhost");
                browser
                    .create_on("sub.localhost", &elsewhere)
                    .await
                    .unwrap_or_else(|error| panic!("{what}: {error}"))
            }
        };
        let body = finish_registration(&api, &ada.access, &ceremony, &credential, "Key").await;
        assert_eq!(error_code(&body), code, "{what}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            !message.contains("Webauthn") && !message.contains("serde"),
            "{what}: {message}"
        );
    }
    let (_, options) = begin(&api, Some(&ada.access), BEGIN_REGISTRATION, json!({})).await;
    let genuine = browser.create(&options).await;
    for ceremony in ["not-a-uuid", "0190a3c2-0000-7000-8000-000000000001"] {
        let body = finish_registration(&api, &ada.access, ceremony, &genuine, "Key").await;
        assert_eq!(error_code(&body), "INVALID_TOKEN", "{ceremony}: {body}");
    }
    let (ceremony, _) = begin(&api, Some(&ada.access), BEGIN_REGISTRATION, json!({})).await;
    for name in ["", &"x".repeat(65)] {
        let body = finish_registration(&api, &ada.access, &ceremony, &genuine, name).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{name:?}: {body}");
    }
    let (ceremony, _) = begin(&api, None, BEGIN_SIGN_IN, json!({})).await;
    for bad in ["[]", "{\"rawId\": \"!!\"}"] {
        let body = api
            .graphql(FINISH_SIGN_IN, json!({"c": ceremony, "k": bad}))
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{bad}: {body}");
    }
    assert_eq!(
        user_events(&stack, &ada.id).await,
        events,
        "nothing written"
    );
    let claims_held = stack
        .count("SELECT count(*) FROM passkey_credentials")
        .await;
    assert_eq!(claims_held, 0);

    // And the account still takes a passkey.
    add_passkey(&api, &mut browser, &ada.access, "Laptop").await;
}

#[tokio::test]
async fn a_credential_belongs_to_one_account_until_it_is_removed() {
    let mut browser = Browser::start().await;
    let (stack, api) = stack_for(&browser).await;
    let ada = api.register("ada@example.com", "Ada").await;
    let bob = api.register("bob@example.com", "Bob").await;
    let (ada_key, ada_credential) = add_passkey(&api, &mut browser, &ada.access, "Laptop").await;
    let ada_credential: Value = serde_json::from_str(&ada_credential).unwrap();

    // An authenticator that answers with Ada's credential (its attestation
    // is unsigned, "none") on a ceremony of Bob's: the claim refuses it. On
    // a second ceremony of Ada's it is excluded, and refused as unverified.
    browser.new_authenticator().await;
    for (holder, code) in [(&bob, "CONFLICT"), (&ada, "UNAUTHENTICATED")] {
        let (ceremony, options) =
            begin(&api, Some(&holder.access), BEGIN_REGISTRATION, json!({})).await;
        let mut answer: Value = serde_json::from_str(&browser.create(&options).await).unwrap();
        for field in ["id", "rawId"] {
            answer[field] = ada_credential[field].clone();
        }
        answer["response"]["attestationObject"] =
            ada_credential["response"]["attestationObject"].clone();
        let body =
            finish_registration(&api, &holder.access, &ceremony, &answer.to_string(), "Copy").await;
        assert_eq!(error_code(&body), code, "{body}");
    }
    let listed = api
        .graphql_as(Some(&bob.access), MY_PASSKEYS, json!({}))
        .await;
    assert_eq!(listed["data"]["myPasskeys"], json!([]), "{listed}");
    let listed = api
        .graphql_as(Some(&ada.access), MY_PASSKEYS, json!({}))
        .await;
    assert_eq!(
        listed["data"]["myPasskeys"].as_array().map(Vec::len),
        Some(1)
    );

    // Renamed, then removed: the credential is free and signs in no more.
    let renamed = api
        .graphql_as(
            Some(&ada.access),
            "mutation($id: ID!) { renamePasskey(input: {id: $id, name: \"Work laptop\"}) { passkey { name } } }",
            json!({"id": ada_key}),
        )
        .await;
    assert_eq!(
        renamed["data"]["renamePasskey"]["passkey"]["name"],
        json!("Work laptop"),
        "{renamed}"
    );
    const REMOVE: &str = "mutation($id: ID!) { removePasskey(input: {id: $id}) { version } }";
    let bobs_try = api
        .graphql_as(Some(&bob.access), REMOVE, json!({"id": ada_key}))
        .await;
    assert_eq!(error_code(&bobs_try), "NOT_FOUND", "{bobs_try}");
    let removed = api
        .graphql_as(Some(&ada.access), REMOVE, json!({"id": ada_key}))
        .await;
    assert!(removed["errors"].is_null(), "{removed}");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM passkey_credentials")
            .await,
        0
    );
    let listed = api
        .graphql_as(Some(&ada.access), MY_PASSKEYS, json!({}))
        .await;
    assert_eq!(listed["data"]["myPasskeys"], json!([]), "{listed}");
}

#[tokio::test]
async fn an_erasure_frees_the_users_credentials() {
    let mut browser = Browser::start().await;
    let (stack, api) = stack_for(&browser).await;
    let ada = api.register("ada@example.com", "Ada").await;
    add_passkey(&api, &mut browser, &ada.access, "Laptop").await;
    let erased = api
        .graphql_as(
            Some(&ada.access),
            "mutation($id: ID!) { eraseUser(input: {id: $id}) { version } }",
            json!({"id": ada.id}),
        )
        .await;
    assert!(erased["errors"].is_null(), "{erased}");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM passkey_credentials")
            .await,
        0
    );
    let (body, _) = sign_in(&api, &mut browser).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
}

#[tokio::test]
async fn a_ceremony_expires_and_changes_to_passkeys_need_a_recent_sign_in() {
    let mut browser = Browser::start().await;
    let clock = accountable::auth::Clock::default();
    let (_stack, api) = stack_with_clock(&browser, clock.clone()).await;
    let ada = api.register("ada@example.com", "Ada").await;
    let (passkey_id, _) = add_passkey(&api, &mut browser, &ada.access, "Laptop").await;
    let (ceremony, options) = begin(&api, None, BEGIN_SIGN_IN, json!({})).await;
    let assertion = browser.get(&options).await.unwrap();

    clock.advance(chrono::Duration::minutes(6));
    let late = api
        .graphql(FINISH_SIGN_IN, json!({"c": ceremony, "k": assertion}))
        .await;
    assert_eq!(error_code(&late), "INVALID_TOKEN", "{late}");
    let refreshed = api.refresh(&ada.refresh).await;
    let token = refreshed["data"]["refreshToken"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{refreshed}"));
    for (document, vars) in [
        (BEGIN_REGISTRATION, json!({})),
        (
            "mutation($id: ID!) { removePasskey(input: {id: $id}) { version } }",
            json!({"id": passkey_id}),
        ),
    ] {
        let body = api.graphql_as(Some(token), document, vars).await;
        assert_eq!(error_code(&body), "REAUTHENTICATION_REQUIRED", "{body}");
    }
    // A sign-in with the passkey is a recent one.
    let (body, _) = sign_in(&api, &mut browser).await;
    let fresh = Session::from(&body["data"]["finishPasskeySignIn"]);
    let removed = api
        .graphql_as(
            Some(&fresh.access),
            "mutation($id: ID!) { removePasskey(input: {id: $id}) { version } }",
            json!({"id": passkey_id}),
        )
        .await;
    assert!(removed["errors"].is_null(), "{removed}");
}
