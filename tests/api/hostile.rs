//! What a hostile client tried, item by item (issue 15): rights that
//! outlive their tokens, sessions that survive their end, oracles, and
//! unbounded work. Each test is named after the item it closes.

use std::sync::Arc;
use std::time::Duration;

use accountable::commands::password::PasswordHasher;
use accountable::commands::{CommandContext, Users};
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{error_code, eventually, login, Session, TestApi, TestStack, PASSWORD};
use crate::live::{connect, open, receive, send, Socket};

const REFRESH: &str =
    "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }";
const ME: &str = "{ me { id status } }";
/// A question for the signed-in user that the event store answers (no
/// read side runs in most of these tests).
const OWN_HISTORY: &str =
    "query($id: ID!) { userHistory(id: $id, first: 1) { pageInfo { hasNextPage } } }";

async fn admin(stack: &TestStack, api: &TestApi, email: &str) -> Session {
    api.register(email, "Admin").await;
    stack.grant(email, "ADMIN").await;
    login(api, email).await
}

/// One operation over the socket; answers its first message (or the
/// socket's close), passing over what other operations receive.
async fn over_socket(socket: &mut Socket, id: &str, query: &str, variables: Value) -> Value {
    send(
        socket,
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    )
    .await;
    loop {
        let message = receive(socket, Duration::from_secs(5)).await;
        if message["type"] == "closed" || message["id"] == id {
            return message;
        }
    }
}

/// Reads until the socket closes; answers the close.
async fn until_closed(socket: &mut Socket) -> Value {
    loop {
        let message = receive(socket, Duration::from_secs(10)).await;
        if message["type"] == "closed" {
            return message;
        }
    }
}

#[tokio::test]
async fn item_01_socket_operations_have_the_rights_of_the_moment_and_the_socket_closes() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let root = admin(&stack, &api, "root@example.com").await;
    let ada = admin(&stack, &api, "ada@example.com").await;
    let grace = api.register("grace@example.com", "Grace").await;

    let (mut ada_socket, ack) = connect(&api, Some(&ada.access)).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let (mut grace_socket, ack) = connect(&api, Some(&grace.access)).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");

    let everyone = "{ users(first: 5) { edges { node { email } } } }";
    let listed = over_socket(&mut ada_socket, "q1", everyone, json!({})).await;
    assert_eq!(listed["type"], "next", "{listed}");
    assert!(listed["payload"]["errors"].is_null(), "{listed}");
    // A mutation over the socket runs as it would over HTTP.
    let renamed = over_socket(
        &mut grace_socket,
        "m1",
        "mutation($id: ID!) { updateProfile(input: {id: $id, displayName: \"Grace H\"}) { version } }",
        json!({"id": grace.id}),
    )
    .await;
    assert!(renamed["payload"]["errors"].is_null(), "{renamed}");
    assert!(renamed["payload"]["data"]["updateProfile"]["version"].is_i64());

    let revoked = api
        .graphql_as(
            Some(&root.access),
            "mutation($id: ID!) { revokeRole(input: {id: $id, role: ADMIN}) { version } }",
            json!({"id": ada.id}),
        )
        .await;
    assert!(revoked["errors"].is_null(), "{revoked}");
    let logged_out = api
        .graphql_as(Some(&grace.access), "mutation { logoutAll }", json!({}))
        .await;
    assert_eq!(logged_out["data"]["logoutAll"], true, "{logged_out}");

    for (socket, query) in [(&mut ada_socket, everyone), (&mut grace_socket, ME)] {
        let refused = over_socket(socket, "q2", query, json!({})).await;
        // Either the operation is refused, or the socket was closed first.
        let closed = if refused["type"] == "closed" {
            refused
        } else {
            assert_eq!(refused["type"], "next", "{refused}");
            assert_eq!(
                refused["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
                "{refused}"
            );
            assert!(refused["payload"]["data"].is_null(), "{refused}");
            until_closed(socket).await
        };
        assert_eq!(closed["code"], 4401, "{closed}");
    }
}

/// Refreshes in a loop until told to stop; answers the session it holds
/// then.
async fn refreshing(api: TestApi, mut session: Session, stop: Arc<tokio::sync::Notify>) -> Session {
    loop {
        tokio::select! {
            () = stop.notified() => return session,
            body = api.graphql(REFRESH, json!({"t": session.refresh})) => {
                if !body["errors"].is_null() {
                    return session;
                }
                session = Session::from(&body["data"]["refreshToken"]);
            }
        }
    }
}

#[tokio::test]
async fn item_02_no_refresh_outruns_the_end_of_its_sessions() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let root = admin(&stack, &api, "root@example.com").await;
    for round in 0..10 {
        let email = format!("ada{round}@example.com");
        let ada = api.register(&email, "Ada").await;
        let stop = Arc::new(tokio::sync::Notify::new());
        let refresher = tokio::spawn(refreshing(api.clone(), ada.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(20 * (round % 3))).await;
        let ended = if round % 2 == 0 {
            api.graphql_as(
                Some(&ada.access),
                "mutation($id: ID!, $p: String!) { changePassword(input: {id: $id, currentPassword: $p, newPassword: \"a brand new passphrase here\"}) { version } }",
                json!({"id": ada.id, "p": PASSWORD}),
            )
            .await
        } else {
            api.graphql_as(
                Some(&root.access),
                "mutation($id: ID!) { deactivateUser(input: {id: $id, reason: \"abuse\"}) { version } }",
                json!({"id": ada.id}),
            )
            .await
        };
        assert!(ended["errors"].is_null(), "round {round}: {ended}");
        stop.notify_one();
        let kept = refresher.await.unwrap();
        let refreshed = api.graphql(REFRESH, json!({"t": kept.refresh})).await;
        assert_eq!(
            error_code(&refreshed),
            "UNAUTHENTICATED",
            "round {round}: {refreshed}"
        );
        let own = api
            .graphql_as(Some(&kept.access), OWN_HISTORY, json!({"id": ada.id}))
            .await;
        assert_eq!(error_code(&own), "UNAUTHENTICATED", "round {round}: {own}");
    }
}

#[tokio::test]
async fn item_03_a_closed_account_refreshes_and_signs_in_no_more_even_when_nothing_else_ran() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let kept = api.register("grace@example.com", "Grace").await;

    // The command alone, as it commits: no second step of the API's runs
    // after it (as when the API crashes or times out right after).
    let users = Users::new(
        stack.pool.clone(),
        PasswordHasher::new(
            stack.config.auth.hash_cost(),
            1,
            stack.config.auth.hash_queue,
        )
        .unwrap(),
        stack.config.auth.password_min_length,
        Duration::from_secs(60),
        Arc::new(stack.vault().await),
    );
    let ada_id = ada.id.parse().unwrap();
    users
        .deactivate(ada_id, "abuse", None, &CommandContext::system())
        .await
        .unwrap();

    let refreshed = api.graphql(REFRESH, json!({"t": ada.refresh})).await;
    assert_eq!(error_code(&refreshed), "UNAUTHENTICATED", "{refreshed}");
    let me = api.graphql_as(Some(&ada.access), ME, json!({})).await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED", "{me}");
    let signed_in = api
        .graphql(
            "mutation($p: String!) { login(input: {email: \"ada@example.com\", password: $p}) { accessToken } }",
            json!({"p": PASSWORD}),
        )
        .await;
    assert_eq!(error_code(&signed_in), "UNAUTHENTICATED", "{signed_in}");

    // Reactivated, it signs in again; the sessions it had stay ended.
    users
        .reactivate(ada_id, "appeal", None, &CommandContext::system())
        .await
        .unwrap();
    login(&api, "ada@example.com").await;
    let refreshed = api.graphql(REFRESH, json!({"t": ada.refresh})).await;
    assert_eq!(error_code(&refreshed), "UNAUTHENTICATED", "{refreshed}");
    // Nobody else was touched.
    let other = api.graphql(REFRESH, json!({"t": kept.refresh})).await;
    assert!(other["errors"].is_null(), "{other}");
}

const CHANGE_PASSWORD: &str = "mutation($id: ID!, $p: String!) {
  changePassword(input: {id: $id, currentPassword: $p, newPassword: \"a brand new passphrase here\"}) { version }
}";

#[tokio::test]
async fn item_04_wrong_current_passwords_count_towards_the_lockout_and_the_rate_limit() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;

    // Twenty aliased guesses in one document: ten are checked, then the
    // account is locked, and the right password fails too while it is.
    let guesses: String = (0..20)
        .map(|n| {
            format!(
                "g{n}: changePassword(input: {{id: $id, currentPassword: \"wrong guess number {n:02}\", newPassword: \"a brand new passphrase here\"}}) {{ version }} "
            )
        })
        .collect();
    let body = api
        .graphql_as(
            Some(&ada.access),
            &format!("mutation($id: ID!) {{ {guesses} }}"),
            json!({"id": ada.id}),
        )
        .await;
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(20), "{body}");
    let locked = stack.events_of(&ada.id, "AccountLocked").await;
    assert_eq!(locked, 1);
    let right = api
        .graphql_as(
            Some(&ada.access),
            CHANGE_PASSWORD,
            json!({"id": ada.id, "p": PASSWORD}),
        )
        .await;
    assert_eq!(error_code(&right), "BAD_USER_INPUT", "{right}");

    // Every try counts against the client's rate limit.
    let limited = TestStack::with_config(|c| c.http.rate_limit = 3).await;
    let api = limited.api().await;
    let grace = api.register("grace@example.com", "Grace").await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let body = api
            .graphql_as(
                Some(&grace.access),
                CHANGE_PASSWORD,
                json!({"id": grace.id, "p": "not the password at all"}),
            )
            .await;
        codes.push(error_code(&body).to_owned());
    }
    assert_eq!(codes, ["BAD_USER_INPUT", "BAD_USER_INPUT", "RATE_LIMITED"]);
}

#[tokio::test]
async fn item_05_change_email_answers_alike_for_taken_and_free_addresses_and_is_limited() {
    let stack = TestStack::with_config(|c| c.http.rate_limit = 4).await;
    let api = stack.api().await;
    api.register("taken@example.com", "Taken").await;
    let ada = api.register("ada@example.com", "Ada").await;
    let probe = |address: &'static str| {
        let (api, ada) = (api.clone(), ada.clone());
        async move {
            api.graphql_as(
                Some(&ada.access),
                "mutation($id: ID!, $e: String!) { changeEmail(input: {id: $id, email: $e, expectedVersion: 99}) { version } }",
                json!({"id": ada.id, "e": address}),
            )
            .await
        }
    };
    let taken = probe("taken@example.com").await;
    let free = probe("free@example.com").await;
    assert_eq!(error_code(&taken), "CONFLICT", "{taken}");
    assert_eq!(taken["errors"], free["errors"]);
    // Two registrations and two probes used this client's four.
    let limited = probe("other@example.com").await;
    assert_eq!(error_code(&limited), "RATE_LIMITED", "{limited}");
}

#[tokio::test]
async fn item_06_a_lockout_leaves_the_owners_sessions_and_an_admin_lifts_it() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let root = admin(&stack, &api, "root@example.com").await;
    let ada = api.register("ada@example.com", "Ada").await;
    for _ in 0..11 {
        let body = api
            .graphql(
                "mutation { login(input: {email: \"ada@example.com\", password: \"somebody else's guess\"}) { accessToken } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED");
    }
    let signed_in = api
        .graphql(
            "mutation($p: String!) { login(input: {email: \"ada@example.com\", password: $p}) { accessToken } }",
            json!({"p": PASSWORD}),
        )
        .await;
    assert_eq!(
        error_code(&signed_in),
        "UNAUTHENTICATED",
        "locked: {signed_in}"
    );
    // The owner, signed in before, stays signed in.
    let own = api
        .graphql_as(Some(&ada.access), OWN_HISTORY, json!({"id": ada.id}))
        .await;
    assert!(own["errors"].is_null(), "{own}");
    let refreshed = api.graphql(REFRESH, json!({"t": ada.refresh})).await;
    assert!(refreshed["errors"].is_null(), "{refreshed}");

    let ordinary = api
        .graphql_as(
            Some(&ada.access),
            "mutation($id: ID!) { unlockUser(input: {id: $id}) { version } }",
            json!({"id": ada.id}),
        )
        .await;
    assert_eq!(error_code(&ordinary), "FORBIDDEN", "{ordinary}");
    let unlocked = api
        .graphql_as(
            Some(&root.access),
            "mutation($id: ID!) { unlockUser(input: {id: $id}) { version } }",
            json!({"id": ada.id}),
        )
        .await;
    assert!(unlocked["errors"].is_null(), "{unlocked}");
    login(&api, "ada@example.com").await;
}

#[tokio::test]
async fn item_07_verifying_ones_own_history_is_bounded_and_asked_once_per_document() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    for n in 0..3 {
        api.graphql_as(
            Some(&ada.access),
            "mutation($id: ID!, $n: String!) { updateProfile(input: {id: $id, displayName: $n}) { version } }",
            json!({"id": ada.id, "n": format!("Ada {n}")}),
        )
        .await;
        let sealed = stack.cli(&["audit", "checkpoint"]).await;
        assert!(
            sealed.status.success(),
            "{}",
            String::from_utf8_lossy(&sealed.stderr)
        );
    }
    let verify =
        "query($id: ID) { verifyHistory(id: $id) { ok eventsChecked checkpointsChecked } }";
    let one = api
        .graphql_as(Some(&ada.access), verify, json!({"id": ada.id}))
        .await;
    assert_eq!(one["data"]["verifyHistory"]["ok"], true, "{one}");
    assert_eq!(
        one["data"]["verifyHistory"]["checkpointsChecked"], 1,
        "{one}"
    );
    assert_eq!(one["data"]["verifyHistory"]["eventsChecked"], 4, "{one}");

    let twice = api
        .graphql_as(
            Some(&ada.access),
            "query($id: ID) { a: verifyHistory(id: $id) { ok } b: verifyHistory(id: $id) { ok } }",
            json!({"id": ada.id}),
        )
        .await;
    assert!(twice["data"].is_null(), "{twice}");
    assert_eq!(error_code(&twice), "BAD_USER_INPUT", "{twice}");
}

#[tokio::test]
async fn item_08_sockets_are_bounded_in_time_size_operations_and_number() {
    let stack = TestStack::with_config(|c| {
        c.http.ws_operations = 2;
        c.http.ws_per_client = 3;
    })
    .await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;

    // Pinging is not initialising: the socket is closed at the init timeout.
    let mut pinging = open(&api).await;
    send(&mut pinging, json!({"type": "ping"})).await;
    let closed = until_closed(&mut pinging).await;
    assert_eq!(closed["code"], 4408, "{closed}");

    // Two operations at a time; the third is refused, the socket stays.
    let (mut socket, _) = connect(&api, Some(&ada.access)).await;
    let follow = "subscription { accountEvents { sequence } }";
    for id in ["s1", "s2"] {
        send(
            &mut socket,
            json!({"id": id, "type": "subscribe", "payload": {"query": follow}}),
        )
        .await;
    }
    let refused = over_socket(&mut socket, "s3", follow, json!({})).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "s3", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
    send(&mut socket, json!({"id": "s1", "type": "complete"})).await;
    let answered = over_socket(&mut socket, "q1", OWN_HISTORY, json!({"id": ada.id})).await;
    assert_eq!(answered["type"], "next", "{answered}");

    // A message larger than an HTTP body may be closes the socket.
    socket
        .send(Message::Text("x".repeat(100 * 1024).into()))
        .await
        .unwrap();
    let closed = until_closed(&mut socket).await;
    assert_eq!(closed["type"], "closed", "{closed}");

    // Three sockets per client; the fourth is refused at the upgrade.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&api, Some(&ada.access)).await.0);
    }
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/graphql/ws",
            api.addr
        ))
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let fourth = tokio_tungstenite::connect_async(request).await;
    match fourth {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
        }
        other => panic!(
            "a fourth socket was not refused: {:?}",
            other.map(|(_, r)| r)
        ),
    }
    drop(held);
    eventually(
        "a socket's place given back",
        Duration::from_secs(10),
        || async {
            let (socket, ack) = connect(&api, Some(&ada.access)).await;
            (ack["type"] == "connection_ack").then_some(socket)
        },
    )
    .await;
}

#[tokio::test]
async fn item_09_failing_admin_commands_take_no_lock_and_wait_a_bounded_time() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let root = admin(&stack, &api, "root@example.com").await;
    let ada = api.register("ada@example.com", "Ada").await;

    // Someone else holds the admin lock for the whole test.
    let mut holder = stack.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('accountable.admins'))")
        .execute(&mut *holder)
        .await
        .unwrap();

    // A user deleting themself with a wrong version is answered at once,
    // again and again, without touching the lock.
    for _ in 0..20 {
        let body = api
            .graphql_as(
                Some(&ada.access),
                "mutation($id: ID!) { deleteUser(input: {id: $id, expectedVersion: 99}) { version } }",
                json!({"id": ada.id}),
            )
            .await;
        assert_eq!(error_code(&body), "CONFLICT", "{body}");
    }
    // A change that could remove the last admin waits for the lock a
    // bounded while, then answers UNAVAILABLE.
    let body = api
        .graphql_as(
            Some(&root.access),
            "mutation($id: ID!) { deactivateUser(input: {id: $id, reason: \"tired\"}) { version } }",
            json!({"id": root.id}),
        )
        .await;
    assert_eq!(error_code(&body), "UNAVAILABLE", "{body}");
    let waiting: i64 = stack
        .count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
        .await;
    assert_eq!(waiting, 0);
}

#[tokio::test]
async fn item_10_a_users_own_reason_is_erased_with_them() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    stack.relay();
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    let secret = "write to me at ada.private@elsewhere.example";
    let deleted = api
        .graphql_as(
            Some(&ada.access),
            "mutation($id: ID!, $r: String!) { deleteUser(input: {id: $id, reason: $r}) { version } }",
            json!({"id": ada.id, "r": secret}),
        )
        .await;
    assert!(deleted["errors"].is_null(), "{deleted}");
    let erased = api
        .graphql_as(
            Some(&grace.access),
            "mutation($id: ID!, $r: String!) { eraseUser(input: {id: $id, reason: $r}) { version } }",
            json!({"id": grace.id, "r": secret}),
        )
        .await;
    assert!(erased["errors"].is_null(), "{erased}");
    let in_clear: i64 = stack
        .count("SELECT count(*) FROM events WHERE payload::text LIKE '%ada.private%' OR metadata::text LIKE '%ada.private%'")
        .await;
    assert_eq!(in_clear, 0, "a user's own words are stored in clear");
    let consumer = stack.consumer().await;
    let kind =
        |m: &crate::helpers::Received| m.value["type"].as_str().unwrap_or_default().to_owned();
    let messages = crate::helpers::consume_until(&consumer, Duration::from_secs(30), |seen| {
        seen.iter()
            .any(|m| kind(m) == "accountable.user.deleted.v2")
            && seen.iter().any(|m| kind(m) == "accountable.user.erased.v1")
    })
    .await;
    for message in &messages {
        assert!(
            !message.value.to_string().contains("ada.private"),
            "a user's own words reached the topic in clear: {}",
            message.value
        );
    }
    // The deletion keeps them sealed (auditors with the key can read them
    // until the user is erased).
    let deletion = messages
        .iter()
        .find(|m| kind(m) == "accountable.user.deleted.v2")
        .unwrap();
    assert_eq!(deletion.value["data"]["reason"], "deleted by the user");
    let opened = stack
        .opened(
            &ada.id,
            deletion.value["sequence"].as_i64().unwrap(),
            deletion.value["data"].clone(),
        )
        .await;
    assert_eq!(opened["personal"]["reason"], secret, "{opened}");
}

#[tokio::test]
async fn item_13_addresses_and_names_that_read_alike_are_one() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    api.register("admin@corp.test", "Admin").await;
    let register = |email: &'static str, name: &'static str| {
        let api = api.clone();
        async move {
            api.graphql(
                crate::helpers::REGISTER,
                json!({"input": {"email": email, "password": PASSWORD, "displayName": name}}),
            )
            .await
        }
    };
    let wide = register("\u{FF41}dmin@corp.test", "Admin").await;
    assert_eq!(error_code(&wide), "CONFLICT", "{wide}");
    let hidden = register("ad\u{200B}min@corp.test", "Admin").await;
    assert_eq!(error_code(&hidden), "BAD_USER_INPUT", "{hidden}");
    assert_eq!(
        hidden["errors"][0]["extensions"]["field"], "email",
        "{hidden}"
    );
    let reversed = register("eve@corp.test", "Eve\u{202E}gpj.exe").await;
    assert_eq!(error_code(&reversed), "BAD_USER_INPUT", "{reversed}");
    assert_eq!(
        reversed["errors"][0]["extensions"]["field"], "displayName",
        "{reversed}"
    );
}

/// Signs in as `email` through a proxy that says the client is `client`.
async fn login_from(api: &TestApi, client: &str) -> Value {
    api.client
        .post(api.url("/graphql"))
        .header("x-forwarded-for", client)
        .json(&json!({
            "query": "mutation { login(input: {email: \"nobody@example.com\", password: \"not a password at all\"}) { accessToken } }"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn item_14_behind_a_trusted_proxy_each_client_has_its_own_limit() {
    let stack = TestStack::with_config(|c| {
        c.http.rate_limit = 2;
        c.http.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let api = stack.api().await;
    let codes = |bodies: Vec<Value>| {
        bodies
            .iter()
            .map(|b| error_code(b).to_owned())
            .collect::<Vec<_>>()
    };
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(login_from(&api, "203.0.113.1").await);
    }
    assert_eq!(
        codes(first),
        ["UNAUTHENTICATED", "UNAUTHENTICATED", "RATE_LIMITED"]
    );
    // Another client behind the same proxy, and one in the same IPv6 /64.
    assert_eq!(
        error_code(&login_from(&api, "203.0.113.2").await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(&login_from(&api, "2001:db8::1").await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(&login_from(&api, "2001:db8::2").await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(&login_from(&api, "2001:db8::3").await),
        "RATE_LIMITED"
    );

    // Without a trusted proxy the header is the client's word, not believed.
    let direct = TestStack::with_config(|c| c.http.rate_limit = 2).await;
    let api = direct.api().await;
    let mut spoofed = Vec::new();
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        spoofed.push(login_from(&api, client).await);
    }
    assert_eq!(
        codes(spoofed),
        ["UNAUTHENTICATED", "UNAUTHENTICATED", "RATE_LIMITED"]
    );
}

#[test]
fn item_15_compose_shares_one_writable_key_folder_made_once() {
    let root = env!("CARGO_MANIFEST_DIR");
    let compose = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    let dockerfile = std::fs::read_to_string(format!("{root}/Dockerfile")).unwrap();
    // The image's working folder (where development keeps its master key)
    // belongs to the user the container runs as, and is a volume that every
    // process of the stack mounts.
    assert!(dockerfile.contains("WORKDIR /data"), "{dockerfile}");
    assert!(
        dockerfile.contains("chown 65534:65534 /data"),
        "{dockerfile}"
    );
    let anchor = compose
        .split("\nservices:")
        .next()
        .expect("a shared service block");
    assert!(
        anchor.contains("volumes: [\"accountable-data:/data\"]"),
        "{anchor}"
    );
    assert!(
        compose.contains("\nvolumes:\n  accountable-data:"),
        "{compose}"
    );
    // Only `migrate` makes the key; the others start after it.
    assert!(
        anchor.contains("migrate:\n      condition: service_completed_successfully"),
        "{anchor}"
    );
}

#[tokio::test]
async fn item_16_graphiql_loads_nothing_from_outside() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let page = api.get_text("/graphql").await;
    assert!(page.contains("GraphiQL"), "{page}");
    assert!(!page.contains("://"), "the page names another host: {page}");
    let assets: Vec<&str> = page
        .split(['"', '\''])
        .filter(|part| part.starts_with("/graphiql/"))
        .collect();
    assert_eq!(assets.len(), 4, "{page}");
    for path in assets {
        let response = api.client.get(api.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            kind.starts_with("text/javascript") || kind.starts_with("text/css"),
            "{path}: {kind}"
        );
        assert!(response.bytes().await.unwrap().len() > 1000, "{path}");
    }
}

#[tokio::test]
async fn item_11_a_state_publisher_that_lost_its_lead_stops_publishing() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    stack.relay();
    stack.projection();
    stack.projection();
    let ada = api.register("ada@example.com", "Ada").await;
    let holder = "SELECT pid FROM pg_locks
                   WHERE locktype = 'advisory' AND objsubid = 1 AND granted
                     AND objid = (hashtext('accountable.state')::bigint & 4294967295)::oid
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    // What was published before the lead moves may be published again
    // after (at least once); what is written after must be published once.
    eventually(
        "the first state is published",
        Duration::from_secs(30),
        || async {
            let published: i64 = stack
                .count(&format!(
                    "SELECT count(*) FROM users WHERE id = '{}' AND state_version = version",
                    ada.id
                ))
                .await;
            (published == 1).then_some(())
        },
    )
    .await;
    let first: i32 = eventually(
        "a state publisher leads",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar(holder)
                .fetch_optional(&stack.pool)
                .await
                .unwrap()
        },
    )
    .await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first)
        .execute(&stack.pool)
        .await
        .unwrap();
    eventually("another session leads", Duration::from_secs(30), || async {
        let now: Option<i32> = sqlx::query_scalar(holder)
            .fetch_optional(&stack.pool)
            .await
            .unwrap();
        now.filter(|pid| *pid != first)
    })
    .await;
    let mut version = 0;
    for n in 0..20 {
        version = crate::live::rename(&api, &ada.access, &ada.id, &format!("Ada {n}")).await;
    }
    let consumer = stack.consumer_of(&stack.config.kafka.state_topic).await;
    let states = crate::helpers::consume_until(&consumer, Duration::from_secs(60), |seen| {
        seen.iter()
            .any(|m| m.key == ada.id && m.headers.get("version") == Some(&version.to_string()))
    })
    .await;
    let mut copies = std::collections::HashMap::new();
    for state in states
        .iter()
        .filter(|m| m.key == ada.id && m.headers["version"] != "1")
    {
        *copies.entry(state.headers["version"].clone()).or_insert(0) += 1;
    }
    let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "states published twice: {doubled:?}");
}

#[tokio::test]
async fn item_12_an_unreadable_event_is_parked_and_the_rest_flows_on() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    stack.relay();
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    let (mut socket, ack) = connect(&api, Some(&grace.access)).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { accountEvents { sequence eventType } }"}}),
    )
    .await;
    crate::live::until_following(&api, &mut socket, &grace.access, &grace.id).await;

    // An event no reader of this version understands.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', $1, 2, 'Mystery', '1.0', '{\"Mystery\": {}}', '{}')",
    )
    .bind(&ada.id)
    .execute(&stack.pool)
    .await
    .unwrap();
    let version = crate::live::rename(&api, &grace.access, &grace.id, "Grace H").await;

    // The live feed goes on past it.
    let next = receive(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(
        next["payload"]["data"]["accountEvents"]["sequence"], version,
        "{next}"
    );
    // So does the relay, and it shows what it parked.
    let consumer = stack.consumer().await;
    crate::helpers::consume_until(&consumer, Duration::from_secs(30), |seen| {
        seen.iter()
            .any(|m| m.key == grace.id && m.value["sequence"] == version)
    })
    .await;
    let parked = |stack: &TestStack| {
        let pool = stack.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM relay_parked_events")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(parked(&stack).await, 1);
    let metrics = api.get_text("/metrics").await;
    assert!(
        metrics.contains("accountable_relay_parked_events 1"),
        "{metrics}"
    );

    // Once it reads again (here: repaired by hand), an operator has it
    // published.
    sqlx::query(
        "UPDATE events SET event_type = 'ProfileUpdated', payload = '{\"ProfileUpdated\": {\"personal\": null}}'
          WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(&ada.id)
    .execute(&stack.pool)
    .await
    .unwrap();
    let asked = stack.cli(&["relay", "republish"]).await;
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    crate::helpers::consume_until(&consumer, Duration::from_secs(30), |seen| {
        seen.iter()
            .any(|m| m.key == ada.id && m.value["sequence"] == 2)
    })
    .await;
    eventually(
        "the parked event leaves the table",
        Duration::from_secs(10),
        || async { (parked(&stack).await == 0).then_some(()) },
    )
    .await;
}

/// Whether the pool's connection is inside a transaction block: there,
/// two statements share one transaction id.
async fn in_a_transaction(pool: &sqlx::PgPool) -> bool {
    let xid = || async {
        sqlx::query_scalar::<_, String>("SELECT pg_current_xact_id()::text")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    xid().await == xid().await
}

#[tokio::test]
async fn a_transaction_whose_begin_is_cut_short_leaves_no_connection_inside_it() {
    let stack = TestStack::new().await;
    // One connection, so that the next statement runs on the one whose
    // BEGIN was cut short (as a client hanging up cuts a request short).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(stack.config.database.url.expose())
        .await
        .unwrap();
    assert!(!in_a_transaction(&pool).await);
    for _ in 0..20 {
        let mut connection = accountable::db::for_transaction(&pool).await.unwrap();
        {
            let mut begin = std::pin::pin!(connection.begin());
            // One poll sends BEGIN; the answer has not come back yet.
            let _ = futures::poll!(begin.as_mut());
        }
        drop(connection);
        assert!(
            !in_a_transaction(&pool).await,
            "a connection came back to the pool inside a transaction"
        );
    }
}
