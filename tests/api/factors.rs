//! The second factor end to end: an authenticator app set up and used with
//! codes that pyotp computes (an implementation of RFC 6238 not ours),
//! recovery codes, and what a second step refuses.

use serde_json::{json, Value};

use crate::helpers::*;

const START: &str = "mutation { startTotpEnrollment { secret otpauthUri } }";
const CONFIRM: &str =
    "mutation($c: String!) { confirmTotp(input: {code: $c}) { recoveryCodes version } }";
const LOGIN: &str = "mutation($e: String!, $p: String!) {
  login(input: {email: $e, password: $p}) { secondFactorRequired challenge factors accessToken refreshToken }
}";
const COMPLETE: &str = "mutation($ch: String!, $t: String, $r: String) {
  completeLogin(input: {challenge: $ch, totpCode: $t, recoveryCode: $r}) { accessToken refreshToken }
}";

fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// Ada, registered, with an app enabled: her secret and recovery codes.
pub(crate) async fn ada_with_an_app(api: &TestApi) -> (Session, String, Vec<String>) {
    let ada = api.register("ada@example.com", "Ada").await;
    let (secret, codes) = enable_app(api, &ada.access).await;
    (ada, secret, codes)
}

/// Sets up and confirms an app for the holder of `token`, who has none:
/// its secret and recovery codes.
pub(crate) async fn enable_app(api: &TestApi, token: &str) -> (String, Vec<String>) {
    assert_eq!(factors(api, token).await, (false, false, 0));
    let started = api.graphql_as(Some(token), START, json!({})).await;
    assert_eq!(factors(api, token).await, (false, true, 0));
    let secret = started["data"]["startTotpEnrollment"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned();
    let confirmed = api
        .graphql_as(
            Some(token),
            CONFIRM,
            json!({"c": pyotp_code(&secret, 0).await}),
        )
        .await;
    let codes = confirmed["data"]["confirmTotp"]["recoveryCodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{confirmed}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes)
}

/// `mySecondFactors` as the holder of `token`: enabled, pending, codes left.
async fn factors(api: &TestApi, token: &str) -> (bool, bool, i64) {
    let body = api
        .graphql_as(
            Some(token),
            "{ mySecondFactors { totpEnabled totpPending recoveryCodesLeft } }",
            json!({}),
        )
        .await;
    let factors = &body["data"]["mySecondFactors"];
    (
        factors["totpEnabled"]
            .as_bool()
            .unwrap_or_else(|| panic!("{body}")),
        factors["totpPending"]
            .as_bool()
            .unwrap_or_else(|| panic!("{body}")),
        factors["recoveryCodesLeft"]
            .as_i64()
            .unwrap_or_else(|| panic!("{body}")),
    )
}

async fn challenge(api: &TestApi, email: &str) -> String {
    let body = api.graphql(LOGIN, json!({"e": email, "p": PASSWORD})).await;
    let login = &body["data"]["login"];
    assert_eq!(login["secondFactorRequired"], json!(true), "{body}");
    assert!(
        login["accessToken"].is_null() && login["refreshToken"].is_null(),
        "{body}"
    );
    assert_eq!(login["factors"], json!(["TOTP", "RECOVERY_CODE"]));
    login["challenge"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_app_set_up_with_pyotp_codes_makes_sign_in_take_a_second_step() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let started = api.graphql_as(Some(&ada.access), START, json!({})).await;
    let enrollment = &started["data"]["startTotpEnrollment"];
    let secret = enrollment["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"));
    let uri = enrollment["otpauthUri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Accountable:ada%40example.com?"),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");

    // Until a code confirms it, sign-in needs the password alone.
    let plain = api
        .graphql(LOGIN, json!({"e": "ada@example.com", "p": PASSWORD}))
        .await;
    assert!(plain["data"]["login"]["accessToken"].is_string(), "{plain}");
    let wrong = api
        .graphql_as(Some(&ada.access), CONFIRM, json!({"c": "000000"}))
        .await;
    assert_eq!(code(&wrong), Some("UNAUTHENTICATED"), "{wrong}");

    let now = pyotp_code(secret, 0).await;
    let confirmed = api
        .graphql_as(Some(&ada.access), CONFIRM, json!({"c": now}))
        .await;
    let codes = confirmed["data"]["confirmTotp"]["recoveryCodes"]
        .as_array()
        .unwrap();
    assert_eq!(codes.len(), 10, "{confirmed}");
    assert_eq!(factors(&api, &ada.access).await, (true, false, 10));

    let first = challenge(&api, "ada@example.com").await;
    // The code that confirmed the app was accepted once already.
    let replayed = api.graphql(COMPLETE, json!({"ch": first, "t": now})).await;
    assert_eq!(code(&replayed), Some("UNAUTHENTICATED"), "{replayed}");
    // The next step's code (one step of drift is allowed) signs in.
    let next = pyotp_code(secret, 30).await;
    let done = api.graphql(COMPLETE, json!({"ch": first, "t": next})).await;
    assert!(
        done["data"]["completeLogin"]["accessToken"].is_string(),
        "{done}"
    );
    // A challenge is taken once.
    let again = api
        .graphql(
            COMPLETE,
            json!({"ch": first, "t": pyotp_code(secret, 60).await}),
        )
        .await;
    assert_eq!(code(&again), Some("INVALID_TOKEN"), "{again}");
    // The secret and the recovery codes are nowhere in the store in clear
    // (sealed under Ada's key), so nowhere on the topic either.
    let secret = secret.to_owned();
    for clear in std::iter::once(&secret).chain(
        codes
            .iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        let found = stack
            .count(&format!(
                "SELECT count(*) FROM events WHERE strpos(payload::text, '{clear}') > 0"
            ))
            .await;
        assert_eq!(found, 0, "{clear} in the store");
    }
}

#[tokio::test]
async fn a_recovery_code_stands_in_for_the_app_once() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let (ada, _, codes) = ada_with_an_app(&api).await;
    let first = challenge(&api, "ada@example.com").await;
    let used = api
        .graphql(COMPLETE, json!({"ch": first, "r": codes[0].to_uppercase()}))
        .await;
    assert!(
        used["data"]["completeLogin"]["accessToken"].is_string(),
        "{used}"
    );
    assert_eq!(factors(&api, &ada.access).await, (true, false, 9));
    let second = challenge(&api, "ada@example.com").await;
    let reused = api
        .graphql(COMPLETE, json!({"ch": second, "r": codes[0]}))
        .await;
    assert_eq!(code(&reused), Some("UNAUTHENTICATED"), "{reused}");
    let other = api
        .graphql(COMPLETE, json!({"ch": second, "r": codes[1]}))
        .await;
    assert!(
        other["data"]["completeLogin"]["accessToken"].is_string(),
        "{other}"
    );
}

#[tokio::test]
async fn a_second_step_refuses_bad_codes_and_challenges_with_a_code_and_counts_towards_the_lockout()
{
    let stack = TestStack::with_config(|config| config.auth.login_max_failures = 4).await;
    let api = stack.api().await;
    let (_, secret, _) = ada_with_an_app(&api).await;
    let grace = api.register("grace@example.com", "Grace").await;
    let graces = api.graphql_as(Some(&grace.access), START, json!({})).await;
    let graces_secret = graces["data"]["startTotpEnrollment"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let events = stack.count("SELECT count(*) FROM events").await;
    let ch = challenge(&api, "ada@example.com").await;
    for (what, vars) in [
        ("five digits", json!({"ch": ch, "t": "12345"})),
        ("seven digits", json!({"ch": ch, "t": "1234567"})),
        ("letters", json!({"ch": ch, "t": "12a456"})),
        ("no factor", json!({"ch": ch})),
        (
            "two factors",
            json!({"ch": ch, "t": "123456", "r": "abcde-fghij"}),
        ),
        (
            "an over-long recovery code",
            json!({"ch": ch, "r": "x".repeat(100)}),
        ),
    ] {
        let body = api.graphql(COMPLETE, vars).await;
        assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{what}: {body}");
    }
    for (what, bad) in [
        ("unknown", uuid::Uuid::new_v4().to_string()),
        ("malformed", "not-a-challenge".to_owned()),
    ] {
        let body = api
            .graphql(
                COMPLETE,
                json!({"ch": bad, "t": pyotp_code(&secret, 0).await}),
            )
            .await;
        assert_eq!(code(&body), Some("INVALID_TOKEN"), "{what}: {body}");
    }
    // Only the password's attempt was written.
    assert_eq!(stack.count("SELECT count(*) FROM events").await, events + 1);

    // A code of another account's app does not open this one; wrong codes
    // count, with the password's attempt, towards the lockout.
    let other = api
        .graphql(
            COMPLETE,
            json!({"ch": ch, "t": pyotp_code(&graces_secret, 0).await}),
        )
        .await;
    assert_eq!(code(&other), Some("UNAUTHENTICATED"), "{other}");
    let wrong = api
        .graphql(COMPLETE, json!({"ch": ch, "t": "000000"}))
        .await;
    assert_eq!(code(&wrong), Some("UNAUTHENTICATED"), "{wrong}");
    let wrong = api
        .graphql(COMPLETE, json!({"ch": ch, "t": "999999"}))
        .await;
    assert_eq!(code(&wrong), Some("UNAUTHENTICATED"), "{wrong}");
    let locked = api
        .graphql(
            COMPLETE,
            json!({"ch": ch, "t": pyotp_code(&secret, 30).await}),
        )
        .await;
    assert_eq!(code(&locked), Some("UNAUTHENTICATED"), "locked: {locked}");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'AccountLocked'")
            .await,
        1
    );
}

#[tokio::test]
async fn removing_the_app_takes_the_password_and_a_second_factor() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let (ada, secret, codes) = ada_with_an_app(&api).await;
    const DISABLE: &str = "mutation($p: String!, $t: String, $r: String) {
      disableTotp(input: {currentPassword: $p, totpCode: $t, recoveryCode: $r}) { version }
    }";
    let wrong_password = api
        .graphql_as(
            Some(&ada.access),
            DISABLE,
            json!({"p": "not the password at all", "r": codes[0]}),
        )
        .await;
    assert_eq!(
        code(&wrong_password),
        Some("BAD_USER_INPUT"),
        "{wrong_password}"
    );
    let wrong_code = api
        .graphql_as(
            Some(&ada.access),
            DISABLE,
            json!({"p": PASSWORD, "t": "000000"}),
        )
        .await;
    assert_eq!(code(&wrong_code), Some("UNAUTHENTICATED"), "{wrong_code}");
    let removed = api
        .graphql_as(
            Some(&ada.access),
            DISABLE,
            json!({"p": PASSWORD, "t": pyotp_code(&secret, 30).await}),
        )
        .await;
    assert!(removed["errors"].is_null(), "{removed}");
    assert_eq!(factors(&api, &ada.access).await, (false, false, 0));
    let plain = api
        .graphql(LOGIN, json!({"e": "ada@example.com", "p": PASSWORD}))
        .await;
    assert!(plain["data"]["login"]["accessToken"].is_string(), "{plain}");
}

#[tokio::test]
async fn dangerous_changes_need_a_recent_sign_in_and_reauthenticate_gives_one() {
    let stack = TestStack::new().await;
    let clock = accountable::auth::Clock::default();
    let api = stack.api_with_clock(clock.clone()).await;
    let ada = api.register("ada@example.com", "Ada").await;
    assert_eq!(claims(&ada.access)["amr"], json!(["pwd"]));
    let signed_in_at = claims(&ada.access)["auth_time"]
        .as_i64()
        .expect("auth_time");

    // Ten minutes on, a refreshed token still carries the sign-in's time.
    clock.advance(chrono::Duration::minutes(10));
    let refreshed = api
        .graphql(
            "mutation($r: String!) { refreshToken(refreshToken: $r) { accessToken refreshToken } }",
            json!({"r": ada.refresh}),
        )
        .await;
    let access = refreshed["data"]["refreshToken"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{refreshed}"))
        .to_owned();
    assert_eq!(claims(&access)["auth_time"].as_i64(), Some(signed_in_at));
    const DELETE: &str = "mutation($id: ID!) { deleteUser(input: {id: $id}) { version } }";
    const REAUTH: &str = "mutation($p: String, $t: String) {
      reauthenticate(input: {password: $p, totpCode: $t}) { accessToken expiresIn }
    }";
    let stale = api
        .graphql_as(Some(&access), DELETE, json!({"id": ada.id}))
        .await;
    assert_eq!(code(&stale), Some("REAUTHENTICATION_REQUIRED"), "{stale}");
    let wrong = api
        .graphql_as(
            Some(&access),
            REAUTH,
            json!({"p": "not the password at all"}),
        )
        .await;
    assert_eq!(code(&wrong), Some("UNAUTHENTICATED"), "{wrong}");
    let none = api.graphql_as(Some(&access), REAUTH, json!({})).await;
    assert_eq!(code(&none), Some("BAD_USER_INPUT"), "{none}");

    let fresh = api
        .graphql_as(Some(&access), REAUTH, json!({"p": PASSWORD}))
        .await;
    let fresh = fresh["data"]["reauthenticate"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{fresh}"))
        .to_owned();
    assert_eq!(
        claims(&fresh)["sid"],
        claims(&access)["sid"],
        "the same session"
    );
    assert!(claims(&fresh)["auth_time"].as_i64().unwrap() > signed_in_at);
    let deleted = api
        .graphql_as(Some(&fresh), DELETE, json!({"id": ada.id}))
        .await;
    assert!(deleted["errors"].is_null(), "{deleted}");
}

#[tokio::test]
async fn a_code_of_the_app_reauthenticates_and_marks_the_token_multi_factor() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let (ada, secret, _) = ada_with_an_app(&api).await;
    let body = api
        .graphql_as(
            Some(&ada.access),
            "mutation($t: String) { reauthenticate(input: {totpCode: $t}) { accessToken } }",
            json!({"t": pyotp_code(&secret, 30).await}),
        )
        .await;
    let token = body["data"]["reauthenticate"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    let claims = claims(token);
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]), "{claims}");
}
