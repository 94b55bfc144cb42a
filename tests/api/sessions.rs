//! The sessions a user sees and ends: where and when each began, how its
//! user signed in; ending one stops its refresh token and, at once, its
//! access tokens, in every API process, and leaves the others alone.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{error_code, eventually, login, Session, TestApi, TestStack, PASSWORD};

const MY_SESSIONS: &str = "{ mySessions {
  id startedAt lastUsedAt expiresAt clientAddress userAgent authenticatedAt factors current
} }";
const USER_SESSIONS: &str = "query($u: ID!) { userSessions(userId: $u) { id current } }";
const END_SESSION: &str = "mutation($id: ID!) { endSession(id: $id) }";
const REFRESH: &str =
    "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }";
const LOGOUT: &str = "mutation($t: String!) { logout(refreshToken: $t) }";

/// Signs in from a browser that names itself `agent`.
async fn login_with_agent(api: &TestApi, email: &str, agent: &str) -> Session {
    let body: Value = api
        .client
        .post(api.url("/graphql"))
        .header("user-agent", agent)
        .json(&json!({
            "query": "mutation($e: String!, $p: String!) {
                        login(input: {email: $e, password: $p}) { accessToken refreshToken } }",
            "variables": {"e": email, "p": PASSWORD},
        }))
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("a JSON body");
    assert!(body["errors"].is_null(), "{body}");
    Session::from(&body["data"]["login"])
}

async fn sessions(api: &TestApi, token: &str) -> Vec<Value> {
    let body = api.graphql_as(Some(token), MY_SESSIONS, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["mySessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `endSession(id)` as the holder of `token`.
async fn end_session(api: &TestApi, token: &str, id: impl Into<Value>) -> Value {
    api.graphql_as(Some(token), END_SESSION, json!({"id": id.into()}))
        .await
}

/// Whether an access token is accepted (the question needs no read side).
async fn works(api: &TestApi, token: &str) -> bool {
    api.graphql_as(Some(token), "{ mySessions { id } }", json!({}))
        .await["errors"]
        .is_null()
}

async fn refreshes(api: &TestApi, refresh: &str) -> bool {
    api.graphql(REFRESH, json!({"t": refresh})).await["errors"].is_null()
}

/// The session (token family) behind an access token: its `sid` claim.
fn sid(session: &Session) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let claims = session.access.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("base64url"))
        .expect("JSON claims");
    claims["sid"].as_str().expect("a session id").to_owned()
}

#[tokio::test]
async fn a_user_sees_each_session_with_where_it_began_and_ends_one_of_them_at_once() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    api.register("ada@example.com", "Ada").await;
    let phone = login_with_agent(&api, "ada@example.com", "Phone/1.0\t").await;
    let laptop = login_with_agent(&api, "ada@example.com", &"Laptop".repeat(100)).await;

    let listed = sessions(&api, &laptop.access).await;
    // The registration's session, the phone's, the laptop's: newest first.
    assert_eq!(listed.len(), 3, "{listed:?}");
    let laptop_row = &listed[0];
    assert_eq!(laptop_row["id"], sid(&laptop).as_str());
    assert_eq!(laptop_row["current"], true);
    assert_eq!(laptop_row["clientAddress"], "127.0.0.1");
    assert_eq!(laptop_row["factors"], json!(["pwd"]));
    assert!(laptop_row["authenticatedAt"].is_string(), "{laptop_row}");
    // A user agent is kept to 256 characters, without control characters.
    assert_eq!(
        laptop_row["userAgent"].as_str().map(str::len),
        Some(256),
        "{laptop_row}"
    );
    let phone_row = &listed[1];
    assert_eq!(phone_row["id"], sid(&phone).as_str());
    assert_eq!(phone_row["current"], false);
    assert_eq!(phone_row["userAgent"], "Phone/1.0");

    // A refresh keeps the session, and moves its last use.
    let body = api.graphql(REFRESH, json!({"t": phone.refresh})).await;
    let phone = Session::from(&body["data"]["refreshToken"]);
    let listed = sessions(&api, &laptop.access).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0]["id"], sid(&phone).as_str(), "{listed:?}");
    assert_eq!(listed[0]["startedAt"], phone_row["startedAt"]);
    assert_eq!(listed[0]["userAgent"], "Phone/1.0");

    // The laptop ends the phone's session: its access token is refused at
    // once, not when it expires, and its refresh token too.
    assert!(works(&api, &phone.access).await);
    let body = end_session(&api, &laptop.access, sid(&phone)).await;
    assert_eq!(body["data"]["endSession"], true, "{body}");
    let refused = api
        .graphql_as(Some(&phone.access), "{ mySessions { id } }", json!({}))
        .await;
    assert_eq!(error_code(&refused), "UNAUTHENTICATED", "{refused}");
    assert!(!refreshes(&api, &phone.refresh).await);
    // The laptop's session is untouched.
    assert!(works(&api, &laptop.access).await);
    let listed = sessions(&api, &laptop.access).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|s| s["id"] != sid(&phone).as_str()));

    // Ending it again, or a session that is not hers, or no session at all:
    // NOT_FOUND, and nothing changes.
    let bob = api.register("bob@example.com", "Bob").await;
    for id in [sid(&phone), sid(&bob), uuid::Uuid::now_v7().to_string()] {
        let body = end_session(&api, &laptop.access, id).await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    }
    assert!(works(&api, &bob.access).await);
    assert!(refreshes(&api, &bob.refresh).await);
    let body = end_session(&api, &laptop.access, "not an id").await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let body = api.graphql(END_SESSION, json!({"id": sid(&laptop)})).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    assert!(works(&api, &laptop.access).await);
}

#[tokio::test]
async fn logging_out_refuses_the_sessions_access_tokens_at_once() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let other = login(&api, "ada@example.com").await;
    assert!(works(&api, &ada.access).await);

    let body = api.graphql(LOGOUT, json!({"t": ada.refresh})).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert!(!works(&api, &ada.access).await);
    assert!(works(&api, &other.access).await);
}

#[tokio::test]
async fn a_session_ended_through_one_api_is_refused_by_another_that_remembered_the_user() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let other = stack.api().await;
    api.register("ada@example.com", "Ada").await;
    let phone = login(&api, "ada@example.com").await;
    let laptop = login(&api, "ada@example.com").await;
    for instance in [&api, &other] {
        assert!(works(instance, &phone.access).await);
    }
    let body = end_session(&api, &laptop.access, sid(&phone)).await;
    assert_eq!(body["data"]["endSession"], true, "{body}");
    eventually(
        "the end of the session to reach the other API",
        Duration::from_secs(5),
        || async { (!works(&other, &phone.access).await).then_some(()) },
    )
    .await;
    assert!(works(&other, &laptop.access).await);
}

#[tokio::test]
async fn an_admin_sees_and_ends_the_sessions_of_another_user_and_no_one_else_does() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    api.register("root@example.com", "Root").await;
    stack.grant("root@example.com", "ADMIN").await;
    let admin = login(&api, "root@example.com").await;
    let ada = api.register("ada@example.com", "Ada").await;
    let bob = api.register("bob@example.com", "Bob").await;

    let body = api
        .graphql_as(Some(&bob.access), USER_SESSIONS, json!({"u": ada.id}))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let body = api
        .graphql_as(Some(&admin.access), USER_SESSIONS, json!({"u": ada.id}))
        .await;
    let listed = body["data"]["userSessions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["id"], sid(&ada).as_str());
    assert_eq!(listed[0]["current"], false);

    let body = end_session(&api, &bob.access, sid(&ada)).await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    assert!(works(&api, &ada.access).await);
    let body = end_session(&api, &admin.access, sid(&ada)).await;
    assert_eq!(body["data"]["endSession"], true, "{body}");
    assert!(!works(&api, &ada.access).await);
    assert!(!refreshes(&api, &ada.refresh).await);
    assert!(works(&api, &bob.access).await);
}

#[tokio::test]
async fn erasing_an_account_wipes_where_its_sessions_came_from() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    login_with_agent(&api, "ada@example.com", "Ada's browser").await;
    let kept = |stack: &TestStack, id: String| {
        let pool = stack.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM refresh_tokens
                  WHERE user_id = $1 AND (client_address IS NOT NULL OR user_agent IS NOT NULL)",
            )
            .bind(uuid::Uuid::parse_str(&id).expect("a user id"))
            .fetch_one(&pool)
            .await
            .expect("a count")
        }
    };
    assert_eq!(kept(&stack, ada.id.clone()).await, 2);

    let body = api
        .graphql_as(
            Some(&ada.access),
            "mutation($id: ID!) { eraseUser(input: {id: $id}) { version } }",
            json!({"id": ada.id}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(kept(&stack, ada.id.clone()).await, 0);
}

#[tokio::test]
async fn the_tokens_of_sessions_long_over_are_forgotten_at_a_later_sign_in() {
    let stack = TestStack::with_config(|c| c.auth.refresh_max_secs = 1000).await;
    let clock = accountable::auth::Clock::default();
    let api = stack.api_with_clock(clock.clone()).await;
    let ada = api.register("ada@example.com", "Ada").await;
    let body = api.graphql(REFRESH, json!({"t": ada.refresh})).await;
    let renewed = Session::from(&body["data"]["refreshToken"]);
    let rows = |stack: &TestStack| {
        let pool = stack.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM refresh_tokens")
                .fetch_one(&pool)
                .await
                .expect("a count")
        }
    };
    assert_eq!(rows(&stack).await, 2);

    // Within a day of its end the session's tokens stay: a replaced one
    // still tells a reuse.
    clock.advance(chrono::Duration::seconds(1000 + 3600));
    login(&api, "ada@example.com").await;
    assert_eq!(rows(&stack).await, 3);
    clock.advance(chrono::Duration::days(1));
    let last = login(&api, "ada@example.com").await;
    // Both tokens of the first session are gone; the two later ones stay.
    assert_eq!(rows(&stack).await, 2);
    assert!(!refreshes(&api, &renewed.refresh).await);
    assert!(refreshes(&api, &last.refresh).await);
}

#[tokio::test]
async fn a_fresh_sign_in_counts_for_its_own_session_only_and_an_ended_one_cannot_reauthenticate() {
    let stack = TestStack::new().await;
    let clock = accountable::auth::Clock::default();
    let api = stack.api_with_clock(clock.clone()).await;
    let phone = api.register("ada@example.com", "Ada").await;
    let laptop = login(&api, "ada@example.com").await;
    const REAUTH: &str =
        "mutation($p: String) { reauthenticate(input: {password: $p}) { accessToken } }";
    const DELETE: &str = "mutation($id: ID!) { deleteUser(input: {id: $id}) { version } }";

    clock.advance(chrono::Duration::minutes(10));
    let renew = |session: Session| {
        let api = api.clone();
        async move {
            let body = api.graphql(REFRESH, json!({"t": session.refresh})).await;
            Session::from(&body["data"]["refreshToken"])
        }
    };
    let phone = renew(phone).await;
    let laptop = renew(laptop).await;
    let body = api
        .graphql_as(Some(&laptop.access), REAUTH, json!({"p": PASSWORD}))
        .await;
    assert!(
        body["data"]["reauthenticate"]["accessToken"].is_string(),
        "{body}"
    );

    // The phone's session was not proven again: its token, refreshed after
    // the laptop's re-authentication, is still too old for a deletion.
    let phone = renew(phone).await;
    let stale = api
        .graphql_as(Some(&phone.access), DELETE, json!({"id": phone.id}))
        .await;
    assert_eq!(error_code(&stale), "REAUTHENTICATION_REQUIRED", "{stale}");

    // An ended session cannot prove itself again.
    let body = end_session(&api, &laptop.access, sid(&phone)).await;
    assert_eq!(body["data"]["endSession"], true, "{body}");
    let body = api
        .graphql_as(Some(&phone.access), REAUTH, json!({"p": PASSWORD}))
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
}

/// A POST of `query` in cookie mode, from `origin` (none: not a browser),
/// with `cookie`: the status, the `Set-Cookie` answered and the body.
async fn in_cookie_mode(
    api: &TestApi,
    origin: Option<&str>,
    cookie: Option<&str>,
    query: &str,
) -> (u16, Option<String>, Value) {
    let mut request = api
        .client
        .post(api.url("/graphql"))
        .header("accountable-session", "cookie")
        .json(&json!({"query": query}));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let set = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, set, response.json().await.unwrap())
}

/// `name=value` of a `Set-Cookie`.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn in_cookie_mode_the_refresh_token_is_an_http_only_same_site_cookie_for_this_origin_only() {
    let (_stack, api) = TestStack::full().await;
    api.register("ada@example.com", "Ada").await;
    let own = format!("http://{}", api.addr);
    let login = format!(
        "mutation {{ login(input: {{email: \"ada@example.com\", password: \"{PASSWORD}\"}}) {{ accessToken refreshToken }} }}"
    );

    let (status, set, body) = in_cookie_mode(&api, Some(&own), None, &login).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["login"]["refreshToken"], "",
        "no script sees it"
    );
    let set = set.expect("a cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/graphql"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP in development: {set}");
    let first = pair(&set);
    assert!(
        first.starts_with("accountable_refresh=") && first.len() > 30,
        "{first}"
    );

    // The cookie refreshes, and is replaced by the next token.
    let refresh = "mutation { refreshToken(refreshToken: \"\") { accessToken refreshToken } }";
    let (status, set, body) = in_cookie_mode(&api, Some(&own), Some(&first), refresh).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["data"]["refreshToken"]["accessToken"].is_string(),
        "{body}"
    );
    let rotated = pair(&set.expect("a new cookie"));
    assert_ne!(rotated, first);
    // An answer that does not select the refresh token replaces the cookie
    // all the same: else the next refresh would present the token just
    // replaced, and end the session as a reuse.
    let unselected = "mutation { refreshToken(refreshToken: \"\") { accessToken } }";
    let (status, set, body) = in_cookie_mode(&api, Some(&own), Some(&rotated), unselected).await;
    assert_eq!(status, 200, "{body}");
    let second = pair(&set.expect("a new cookie, unselected"));
    assert_ne!(second, rotated);
    let (_, set, body) = in_cookie_mode(&api, Some(&own), Some(&second), unselected).await;
    assert!(
        body["data"]["refreshToken"]["accessToken"].is_string(),
        "the cookie's token goes on: {body}"
    );
    let second = pair(&set.expect("a new cookie"));

    // Another site, or no browser at all, may not use the cookie mode.
    for origin in [Some("http://evil.example"), None] {
        let (status, _, body) = in_cookie_mode(&api, origin, Some(&second), refresh).await;
        assert_eq!(status, 403, "{origin:?}: {body}");
        assert_eq!(error_code(&body), "FORBIDDEN");
    }

    // Signing out ends the session and the cookie.
    let logout = "mutation { logout(refreshToken: \"\") }";
    let (_, set, body) = in_cookie_mode(&api, Some(&own), Some(&second), logout).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert!(set.expect("the cookie ended").contains("Max-Age=0"));
    let (_, _, body) = in_cookie_mode(&api, Some(&own), Some(&second), refresh).await;
    assert!(body["errors"].is_array(), "the session is over: {body}");
}
