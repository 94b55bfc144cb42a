//! GraphQL over WebSocket (graphql-transport-ws, and the older graphql-ws),
//! with the same rights as over HTTP at the moment of each operation.
//!
//! - The `connection_init` payload carries the access token; a socket
//!   without a valid one is closed, and so is one that has not sent it
//!   within [`SocketLimits::init_timeout`], whatever else it sent.
//! - Every operation on the socket (query, mutation or subscription) is
//!   authorised when it arrives, as an HTTP request would be
//!   ([`SocketOperations`]), and the connection's token is checked again
//!   every [`RECHECK_EVERY`]: once it expires, its session ends or the
//!   caller's sessions are cut off, every running subscription answers
//!   `UNAUTHENTICATED` and the socket is closed (4401).
//! - A socket runs at most [`SocketLimits::operations`] operations at a
//!   time (one more is answered `RATE_LIMITED`), a client address holds at
//!   most [`SocketLimits::per_client`] sockets, and messages are as large as
//!   an HTTP body may be.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::http::{WebSocketProtocols, WsMessage};
use async_graphql::{Data, Request, ServerError, ServerResult};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::Code;
use super::{ApiState, AppSchema, RequestMeta};
use crate::auth::{Auth, AuthError, Caller};

/// How often a connection's token is checked again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest access token a connection may present.
const MAX_TOKEN: usize = 4096;

/// graphql-transport-ws close codes.
const UNAUTHORIZED: u16 = 4401;
const INIT_TIMEOUT: u16 = 4408;
const TOO_MANY: u16 = 4429;

#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// Operations one socket may run at once.
    pub operations: usize,
    /// Sockets one client address may hold open.
    pub per_client: usize,
    /// Largest message (and frame) a client may send, in bytes.
    pub message_bytes: usize,
    /// How long a socket may take to send its `connection_init`.
    pub init_timeout: Duration,
}

/// The access token a WebSocket connection was opened with, in the
/// connection's data.
#[derive(Clone)]
pub struct ConnectionToken(pub String);

/// What the operations of one socket share: its token and the request
/// that opened it.
#[derive(Clone)]
struct SocketSession {
    token: String,
    meta: RequestMeta,
}

/// Authorises every operation that arrives over a socket at that moment,
/// as [`crate::http`] does for a POST: the caller and the request's meta
/// are added to the operation's data, or it is refused.
pub struct SocketOperations;

impl ExtensionFactory for SocketOperations {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SocketOperations)
    }
}

#[async_trait::async_trait]
impl Extension for SocketOperations {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let Some(session) = ctx.data_opt::<SocketSession>() else {
            return next.run(ctx, request).await;
        };
        let state = ctx
            .data::<ApiState>()
            .map_err(|_| coded(Code::Internal, "internal error"))?;
        // As over HTTP: the token verifies and is not cut off (no query
        // while the cut-off is remembered); whether its session still
        // lives is the connection's check, once a second.
        let caller = state
            .auth
            .authenticate(&session.token)
            .await
            .map_err(refusal)
            .map_err(|(code, message)| coded(code, message))?;
        let mut meta = session.meta.clone();
        meta.request_id = uuid::Uuid::now_v7().to_string();
        next.run(ctx, request.data(caller).data(meta)).await
    }
}

fn coded(code: Code, message: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
    error
}

/// The caller the socket's token stands for now, its session still live.
async fn authorise(auth: &Auth, token: &str) -> Result<Caller, (Code, &'static str)> {
    auth.authenticate_session(token).await.map_err(refusal)
}

/// What a socket's operation or connection is told when its token does not
/// count (or cannot be checked); the detail is logged only.
fn refusal(error: AuthError) -> (Code, &'static str) {
    match error {
        AuthError::InvalidToken(reason) => {
            tracing::info!(reason, "refused a socket's access token");
            (
                Code::Unauthenticated,
                "the access token expired or its session ended",
            )
        }
        error => {
            tracing::error!(error = %error, "cannot check a socket's access token");
            (
                Code::Unavailable,
                "cannot check the access token; retry shortly",
            )
        }
    }
}

/// The sockets each client address holds.
#[derive(Clone, Default)]
pub struct SocketCount(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One client's place among the open sockets, given back on drop.
pub struct SocketSlot {
    count: SocketCount,
    client: IpAddr,
}

impl SocketCount {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more socket of `client`, unless it holds `limit`.
    pub fn take(&self, client: IpAddr, limit: usize) -> Option<SocketSlot> {
        let mut open = self.lock();
        let count = open.entry(client).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(SocketSlot {
            count: self.clone(),
            client,
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.count.lock();
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// The protocol of a `Sec-WebSocket-Protocol` header: the first one
/// offered that we speak.
pub fn protocol(header: Option<&str>) -> Option<WebSocketProtocols> {
    header?
        .split(',')
        .find_map(|offered| offered.trim().parse().ok())
}

/// The part of a client message that says what it is.
#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
}

/// The operations running on one socket, and what the socket must send of
/// its own accord.
struct Operations {
    running: Mutex<HashSet<String>>,
    limit: usize,
    refusals: mpsc::Sender<String>,
    /// Set when the client sent refused operations faster than it read the
    /// answers: the socket is closed.
    flooded: AtomicBool,
    /// Set when `connection_init` arrived (whether or not it is accepted).
    init_received: AtomicBool,
    protocol: WebSocketProtocols,
}

impl Operations {
    fn running(&self) -> MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a client message goes on to the protocol handler: an
    /// operation beyond the limit, or one whose id is running, is answered
    /// here instead.
    fn admit(&self, message: &[u8]) -> bool {
        let Ok(Kind { kind, id }) = serde_json::from_slice::<Kind>(message) else {
            // The protocol handler closes the socket on what it cannot read.
            return true;
        };
        match (kind.as_str(), id) {
            ("subscribe" | "start", Some(id)) => {
                let mut running = self.running();
                if running.contains(&id) {
                    return self.refuse(
                        &id,
                        Code::BadUserInput,
                        "an operation with this id is running",
                    );
                }
                if running.len() >= self.limit {
                    drop(running);
                    return self.refuse(
                        &id,
                        Code::RateLimited,
                        "too many operations on this connection",
                    );
                }
                running.insert(id);
                true
            }
            ("complete" | "stop", Some(id)) => {
                self.running().remove(&id);
                true
            }
            ("connection_init", _) => {
                self.init_received.store(true, Ordering::Relaxed);
                true
            }
            _ => true,
        }
    }

    /// Answers operation `id` with an error.
    fn refuse(&self, id: &str, code: Code, message: &str) -> bool {
        let error = json!({"message": message, "extensions": {"code": code.as_str()}});
        let payload = match self.protocol {
            WebSocketProtocols::GraphQLWS => json!([error]),
            WebSocketProtocols::SubscriptionsTransportWS => error,
        };
        let refusal = json!({"type": "error", "id": id, "payload": payload}).to_string();
        if self.refusals.try_send(refusal).is_err() {
            self.flooded.store(true, Ordering::Relaxed);
        }
        false
    }

    /// A message the server sends: a `complete` ends its operation.
    fn sent(&self, message: &str) {
        if let Ok(Kind { kind, id: Some(id) }) = serde_json::from_str::<Kind>(message) {
            if kind == "complete" {
                self.running().remove(&id);
            }
        }
    }

    /// The messages that end every running operation with `code`.
    fn end_all(&self, code: Code, message: &str) -> Vec<String> {
        let errors = json!([{"message": message, "extensions": {"code": code.as_str()}}]);
        let next = match self.protocol {
            WebSocketProtocols::GraphQLWS => "next",
            WebSocketProtocols::SubscriptionsTransportWS => "data",
        };
        self.running()
            .drain()
            .flat_map(|id| {
                [
                    json!({"type": next, "id": id, "payload": {"errors": errors}}).to_string(),
                    json!({"type": "complete", "id": id}).to_string(),
                ]
            })
            .collect()
    }
}

/// Every error a client sees has a code: async-graphql's own (parse,
/// validation) come without one.
fn with_codes(message: String) -> String {
    if !message.contains("\"errors\"") {
        return message;
    }
    let Ok(mut value) = serde_json::from_str::<Value>(&message) else {
        return message;
    };
    let Some(errors) = value
        .get_mut("payload")
        .and_then(|payload| payload.get_mut("errors"))
        .and_then(Value::as_array_mut)
    else {
        return message;
    };
    for error in errors {
        if error.pointer("/extensions/code").is_none() {
            if let Some(error) = error.as_object_mut() {
                let extensions = error.entry("extensions").or_insert_with(|| json!({}));
                if let Some(extensions) = extensions.as_object_mut() {
                    extensions.insert("code".into(), Code::BadUserInput.as_str().into());
                }
            }
        }
    }
    value.to_string()
}

/// The bearer token of a `connection_init` payload.
fn connection_token(payload: &Value) -> Option<String> {
    ["authorization", "Authorization"]
        .iter()
        .find_map(|key| payload.get(*key).and_then(Value::as_str))
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty() && token.len() <= MAX_TOKEN)
        .map(str::to_owned)
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Serves one socket until either side closes it, its token stops
/// counting, or it breaks a limit; `slot` is its client's place.
pub async fn serve(
    socket: WebSocket,
    schema: AppSchema,
    auth: Arc<Auth>,
    protocol: WebSocketProtocols,
    meta: RequestMeta,
    limits: SocketLimits,
    slot: SocketSlot,
) {
    let _slot = slot;
    let (mut sink, stream) = socket.split();
    let (refusals, mut refused) = mpsc::channel(limits.operations.max(1));
    let operations = Arc::new(Operations {
        running: Mutex::default(),
        limit: limits.operations,
        refusals,
        flooded: AtomicBool::new(false),
        init_received: AtomicBool::new(false),
        protocol,
    });
    let token: Arc<OnceLock<String>> = Arc::default();

    let input = stream
        .take_while(|message| futures::future::ready(message.is_ok()))
        .filter_map(|message| {
            futures::future::ready(match message {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            })
        })
        .filter({
            let operations = operations.clone();
            move |message| futures::future::ready(operations.admit(message))
        });
    let mut protocol_handler = async_graphql::http::WebSocket::new(schema, input, protocol)
        .on_connection_init({
            let (auth, token) = (auth.clone(), token.clone());
            move |payload| async move {
                let bearer = connection_token(&payload).ok_or_else(|| {
                    async_graphql::Error::new(
                        "sign in: send {\"authorization\": \"Bearer <access token>\"} in connection_init",
                    )
                })?;
                authorise(&auth, &bearer)
                    .await
                    .map_err(|(_, message)| async_graphql::Error::new(message))?;
                let mut data = Data::default();
                data.insert(SocketSession {
                    token: bearer.clone(),
                    meta,
                });
                data.insert(ConnectionToken(bearer.clone()));
                // Only the first init gets here (a second closes the socket).
                let _ = token.set(bearer);
                Ok(data)
            }
        });

    let init_deadline = tokio::time::sleep(limits.init_timeout);
    tokio::pin!(init_deadline);
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let outgoing = tokio::select! {
            message = protocol_handler.next() => match message {
                Some(WsMessage::Text(text)) => {
                    operations.sent(&text);
                    vec![Message::Text(with_codes(text).into())]
                }
                Some(WsMessage::Close(code, reason)) => vec![close(code, &reason)],
                None => break,
            },
            Some(refusal) = refused.recv() => vec![Message::Text(refusal.into())],
            () = &mut init_deadline, if !operations.init_received.load(Ordering::Relaxed) => {
                vec![close(INIT_TIMEOUT, "Connection initialisation timeout")]
            }
            _ = recheck.tick(), if token.get().is_some() => {
                let Some(bearer) = token.get() else { continue };
                match authorise(&auth, bearer).await {
                    Ok(_) => continue,
                    Err((code, message)) => operations
                        .end_all(code, message)
                        .into_iter()
                        .map(|text| Message::Text(text.into()))
                        .chain([close(UNAUTHORIZED, message)])
                        .collect(),
                }
            }
        };
        for message in outgoing {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                return;
            }
        }
        if operations.flooded.load(Ordering::Relaxed) {
            let _ = sink
                .send(close(TOO_MANY, "too many refused operations"))
                .await;
            return;
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}
