//! `accountEvents` over `/graphql/ws` (graphql-transport-ws).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{TestApi, TestStack};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A graphql-transport-ws connection, initialised with `token`; answers the
/// server's first message (`connection_ack`, or a close).
pub async fn connect(api: &TestApi, token: Option<&str>) -> (Socket, Value) {
    let mut request = format!("ws://{}/graphql/ws", api.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let payload = token.map_or(
        json!({}),
        |t| json!({"authorization": format!("Bearer {t}")}),
    );
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    let first = receive(&mut socket, Duration::from_secs(5)).await;
    (socket, first)
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next protocol message; a close is `{"type": "closed", "code": …}`.
pub async fn receive(socket: &mut Socket, within: Duration) -> Value {
    let until = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(until, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no message within {within:?}"));
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "ping" {
                    send(socket, json!({"type": "pong"})).await;
                    continue;
                }
                return value;
            }
            Some(Ok(Message::Close(frame))) => {
                return json!({"type": "closed", "code": frame.map(|f| u16::from(f.code))})
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return json!({"type": "closed"}),
        }
    }
}

const FOLLOW: &str = "subscription($id: ID) {
  accountEvents(userId: $id) { userId sequence eventType data }
}";

async fn subscribe(socket: &mut Socket, user: Option<&str>) {
    send(
        socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": FOLLOW, "variables": {"id": user}}}),
    )
    .await;
}

/// Renames the user again and again until the subscription delivers one of
/// the changes (a subscription follows events from the moment the server
/// has set it up, which the protocol does not announce), then reads up to
/// the last of them. Answers that last event.
pub async fn until_following(api: &TestApi, socket: &mut Socket, token: &str, id: &str) -> Value {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = 0;
    let mut next = Value::Null;
    for n in 0.. {
        assert!(
            tokio::time::Instant::now() < until,
            "the subscription never started"
        );
        last = rename(api, token, id, &format!("Warm-up {n}")).await;
        let waited = tokio::time::timeout(
            Duration::from_millis(500),
            receive(socket, Duration::from_secs(1)),
        );
        if let Ok(received) = waited.await {
            next = received;
            break;
        }
    }
    while next["payload"]["data"]["accountEvents"]["sequence"] != last {
        next = receive(socket, Duration::from_secs(5)).await;
    }
    next
}

/// Renames the user; answers the version written.
pub async fn rename(api: &TestApi, token: &str, id: &str, name: &str) -> i64 {
    let body = api
        .graphql_as(
            Some(token),
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }",
            json!({"input": {"id": id, "displayName": name}}),
        )
        .await;
    body["data"]["updateProfile"]["version"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body}"))
}

#[tokio::test]
async fn a_subscription_gets_the_users_events_within_a_second_and_ends_at_logout() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    let (mut socket, ack) = connect(&api, Some(&ada.access)).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    subscribe(&mut socket, None).await;

    let first = until_following(&api, &mut socket, &ada.access, &ada.id).await;
    let version = first["payload"]["data"]["accountEvents"]["sequence"]
        .as_i64()
        .unwrap_or_else(|| panic!("{first}"));

    // Someone else's change is not Ada's to see; her own arrives within a
    // second of the mutation.
    rename(&api, &grace.access, &grace.id, "Grace H").await;
    rename(&api, &ada.access, &ada.id, "Ada Lovelace").await;
    let next = receive(&mut socket, Duration::from_secs(1)).await;
    assert_eq!(next["type"], "next", "{next}");
    let event = &next["payload"]["data"]["accountEvents"];
    assert_eq!(event["userId"], ada.id.as_str(), "{next}");
    assert_eq!(event["eventType"], "ProfileUpdated");
    assert_eq!(event["sequence"], version + 1);
    assert_eq!(event["data"]["personal"]["display_name"], "Ada Lovelace");

    // Logging out of the session ends the subscription.
    let body = api
        .graphql(
            "mutation($t: String!) { logout(refreshToken: $t) }",
            json!({"t": ada.refresh}),
        )
        .await;
    assert_eq!(body["data"]["logout"], true);
    let ended = receive(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(ended["type"], "next", "{ended}");
    assert_eq!(
        ended["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{ended}"
    );
    let complete = receive(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(complete["type"], "complete", "{complete}");
}

#[tokio::test]
async fn following_someone_else_needs_a_reader_and_a_connection_needs_a_token() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;

    let (mut socket, ack) = connect(&api, Some(&grace.access)).await;
    assert_eq!(ack["type"], "connection_ack");
    subscribe(&mut socket, Some(&ada.id)).await;
    let refused = receive(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );

    let (_, closed) = connect(&api, None).await;
    assert_eq!(closed["type"], "closed", "{closed}");
    let (_, closed) = connect(&api, Some("not-a-token")).await;
    assert_eq!(closed["type"], "closed", "{closed}");

    // An auditor follows anyone.
    stack.grant("grace@example.com", "AUDITOR").await;
    let auditor = crate::helpers::login(&api, "grace@example.com").await;
    let (mut socket, ack) = connect(&api, Some(&auditor.access)).await;
    assert_eq!(ack["type"], "connection_ack");
    subscribe(&mut socket, Some(&ada.id)).await;
    let next = until_following(&api, &mut socket, &ada.access, &ada.id).await;
    assert_eq!(
        next["payload"]["data"]["accountEvents"]["userId"],
        ada.id.as_str(),
        "{next}"
    );
}

/// A graphql-transport-ws connection on which nothing was sent yet.
pub async fn open(api: &TestApi) -> Socket {
    let mut request = format!("ws://{}/graphql/ws", api.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

#[tokio::test]
async fn a_connection_must_initialise_first_and_soon() {
    let stack = TestStack::new().await;
    let api = stack.api().await;

    // A subscribe before connection_init closes the connection.
    let mut socket = open(&api).await;
    subscribe(&mut socket, None).await;
    let closed = receive(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(closed["type"], "closed", "{closed}");

    // Silence after connecting is not waited out for ever.
    let mut socket = open(&api).await;
    let closed = receive(&mut socket, Duration::from_secs(15)).await;
    assert_eq!(closed["type"], "closed", "{closed}");
}
