//! The HTTP server: `/graphql` and its WebSocket, GraphiQL, health,
//! readiness, metrics, the JWKS and the OAuth endpoints (`oauth`). The application around it is built by
//! [`crate::startup`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::ParseRequestError;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::clients::{self, TrustedProxies};
use crate::auth::keys::KeyRing;
use crate::auth::ratelimit::ClientLimiter;
use crate::auth::{Auth, AuthError, Caller};
use crate::config::Environment;
use crate::graphql::cookie::CookieMode;
use crate::graphql::error::Code;
use crate::graphql::socket::{self, SocketCount, SocketLimits};
use crate::graphql::{AppSchema, RequestMeta};
use crate::{graphiql, oauth, observe, pages, telemetry};
use accountable_projections::trace;
use tracing::Instrument;

/// Largest request body accepted.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;
/// Longest a request may take before it is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest correlation id taken from a client.
const MAX_CORRELATION_ID: usize = 128;
/// How long a WebSocket may wait before its `connection_init`.
pub(crate) const CONNECTION_INIT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handlers share, built by [`crate::startup`].
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) schema: AppSchema,
    pub(crate) pool: PgPool,
    pub(crate) auth: Arc<Auth>,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) origins: Origins,
    /// The relay's cursor is named after it.
    pub(crate) events_topic: String,
    /// The WebSockets open, per client address.
    pub(crate) sockets: SocketCount,
    pub(crate) socket_limits: SocketLimits,
    /// Whose `X-Forwarded-For` names the client.
    pub(crate) proxies: TrustedProxies,
    /// The per-client limit on checks of secrets (shared with GraphQL).
    pub(crate) limiter: Arc<ClientLimiter>,
    /// Where the API is reached, for the OAuth metadata.
    pub(crate) api_url: Option<String>,
    /// Whether session cookies are `Secure` (outside development).
    pub(crate) secure_cookies: bool,
}

/// The browser origins allowed besides the API's own.
#[derive(Clone, Debug)]
pub(crate) enum Origins {
    Any,
    Listed(Arc<Vec<HeaderValue>>),
}

impl Origins {
    pub(crate) fn from_config(origins: &[String]) -> anyhow::Result<Self> {
        if origins.iter().any(|o| o.trim() == "*") {
            return Ok(Self::Any);
        }
        let listed = origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| {
                    anyhow::anyhow!("ACCOUNTABLE_CORS_ORIGINS: {o:?} is not an origin")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::Listed(Arc::new(listed)))
    }

    fn cors(&self) -> CorsLayer {
        let layer = CorsLayer::new()
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::ACCEPT,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-correlation-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(600));
        match self {
            Self::Any => layer.allow_origin(AllowOrigin::any()),
            Self::Listed(origins) => layer.allow_origin(AllowOrigin::list(origins.iter().cloned())),
        }
    }

    /// Whether a request in cookie mode from `origin` may act on the API at
    /// `host`: only a browser's, of the API's own origin or a configured one.
    fn allow_cookie(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        origin.is_some() && self.allow_socket(origin, host)
    }

    /// Whether a WebSocket from `origin` may connect to the API at `host`:
    /// no `Origin` (not a browser), the API's own, or a configured one.
    fn allow_socket(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let own = host
            .and_then(|h| h.to_str().ok())
            .zip(origin.to_str().ok())
            .is_some_and(|(host, origin)| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
            });
        own || match self {
            Self::Any => true,
            Self::Listed(origins) => origins.iter().any(|o| o == origin),
        }
    }
}

pub(crate) fn router(state: HttpState, env: Environment) -> Router {
    let cors = state.origins.cors();
    let graphql = match env {
        Environment::Development => get(graphiql::page).post(graphql_post),
        Environment::Production => axum::routing::post(graphql_post),
    };
    let router = match env {
        Environment::Development => {
            Router::new().route(graphiql::ASSET_ROUTE, get(graphiql::asset))
        }
        Environment::Production => Router::new(),
    };
    router
        .route(
            "/graphql",
            graphql.route_layer(axum::middleware::from_fn(json_only)),
        )
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(oauth::metadata))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/introspect", post(oauth::introspect))
        .merge(pages::routes())
        .with_state(state)
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(axum::middleware::map_response(coded))
        .layer(cors)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The span of a request: every log line within it carries the request and
/// correlation ids (the path only: a query string may hold anything).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_CORRELATION_ID)
            .unwrap_or_default()
            .to_owned()
    };
    let request_id = header("x-request-id");
    let correlation_id = Some(header("x-correlation-id"))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| request_id.clone());
    let span = tracing::info_span!(
        "request",
        otel.name = tracing::field::Empty,
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
        correlation_id,
    );
    trace::name(&span, || {
        format!("{} {}", request.method(), request.uri().path())
    });
    if let Some(traceparent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| telemetry::is_traceparent(v))
    {
        trace::follow(&span, traceparent);
    }
    span
}

/// A POSTed operation must be JSON (`application/json`, parameters such as
/// `charset` allowed): no form posts, no `application/graphql`, no
/// multipart, so that no simple cross-site form can send an operation.
async fn json_only(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if request.method() == axum::http::Method::POST {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return error_body(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::BadUserInput,
                "send the operation as application/json",
            );
        }
    }
    next.run(request).await
}

/// Every error answer is a coded GraphQL error body, also those that the
/// router and the tower layers make themselves (405, 413, 408, a panic).
async fn coded(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            Code::BadUserInput,
            "method not allowed: operations are POSTed to /graphql",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (Code::BadUserInput, "request body over 64 KiB"),
        StatusCode::REQUEST_TIMEOUT => (Code::Unavailable, "the request took too long"),
        StatusCode::NOT_FOUND => (Code::NotFound, "no such path"),
        StatusCode::UNAUTHORIZED => (Code::Unauthenticated, "sign in first"),
        StatusCode::FORBIDDEN => (Code::Forbidden, "not allowed"),
        StatusCode::TOO_MANY_REQUESTS => (Code::RateLimited, "too many requests"),
        StatusCode::SERVICE_UNAVAILABLE => (Code::Unavailable, "unavailable; retry shortly"),
        status if status.is_client_error() => (Code::BadUserInput, "bad request"),
        _ => (Code::Internal, "internal error"),
    };
    let mut coded = error_body(status, code, message);
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = response.headers().get(&name) {
            coded.headers_mut().insert(name, value.clone());
        }
    }
    coded
}

/// Operations over graphql-transport-ws (and the older graphql-ws): see
/// [`socket`] for what a socket may do and how its rights are checked.
async fn graphql_ws(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !state
        .origins
        .allow_socket(headers.get(header::ORIGIN), headers.get(header::HOST))
    {
        return error_body(
            StatusCode::FORBIDDEN,
            Code::Forbidden,
            "this origin may not open subscriptions",
        );
    }
    let Some(protocol) = socket::protocol(
        headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok()),
    ) else {
        return error_body(
            StatusCode::BAD_REQUEST,
            Code::BadUserInput,
            "offer the graphql-transport-ws subprotocol",
        );
    };
    let meta = request_meta(&headers, state.proxies.client(peer.ip(), &headers));
    let Some(slot) = state
        .sockets
        .take(clients::group(meta.client), state.socket_limits.per_client)
    else {
        return error_body(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            "too many open connections from this address",
        );
    };
    let (schema, auth, limits) = (
        state.schema.clone(),
        state.auth.clone(),
        state.socket_limits,
    );
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(limits.message_bytes)
        .max_frame_size(limits.message_bytes)
        .on_upgrade(move |ws| socket::serve(ws, schema, auth, protocol, meta, limits, slot))
}

async fn graphql_post(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLRequest<BadRequest>,
) -> Response {
    let caller = match bearer(&headers) {
        Bearer::None => Caller::Anonymous,
        Bearer::Malformed => return unauthenticated(),
        Bearer::Token(token) => match state.auth.authenticate(token).await {
            Ok(caller) => caller,
            Err(AuthError::InvalidToken(reason)) => {
                tracing::info!(reason, "refused an access token");
                return unauthenticated();
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot check an access token");
                return error_body(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    "internal error",
                );
            }
        },
    };
    let cookie_mode = CookieMode::requested(&headers, state.secure_cookies);
    if cookie_mode.is_some()
        && !state
            .origins
            .allow_cookie(headers.get(header::ORIGIN), headers.get(header::HOST))
    {
        return error_body(
            StatusCode::FORBIDDEN,
            Code::Forbidden,
            "the cookie mode is for pages of this API's own origin",
        );
    }
    let meta = request_meta(&headers, state.proxies.client(peer.ip(), &headers));
    let mut request = request.into_inner().data(meta).data(caller);
    if let Some(mode) = cookie_mode {
        request = request.data(mode);
    }
    // Only a trace has use for the operation's own span.
    let operation = if trace::on() {
        tracing::info_span!("graphql")
    } else {
        tracing::Span::none()
    };
    let mut response = state.schema.execute(request).instrument(operation).await;
    // Parse, validation and variable errors come from async-graphql without
    // a code; every error a client sees has one.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", Code::BadUserInput.as_str());
        }
    }
    let outcome = response
        .errors
        .first()
        .and_then(|error| error.extensions.as_ref())
        .and_then(|extensions| match extensions.get("code") {
            Some(async_graphql::Value::String(code)) => Some(code.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "OK".to_owned());
    metrics::counter!("accountable_graphql_operations_total", "outcome" => outcome).increment(1);
    GraphQLResponse::from(response).into_response()
}

enum Bearer<'a> {
    None,
    Malformed,
    Token(&'a str),
}

fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Bearer::None;
    };
    match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
        Some(token) if !token.trim().is_empty() => Bearer::Token(token.trim()),
        _ => Bearer::Malformed,
    }
}

/// A bad token is an error, never anonymous (RFC 6750).
fn unauthenticated() -> Response {
    let mut response = error_body(
        StatusCode::UNAUTHORIZED,
        Code::Unauthenticated,
        "invalid or expired access token",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

fn error_body(status: StatusCode, code: Code, message: &str) -> Response {
    let body = json!({"errors": [{"message": message, "extensions": {"code": code.as_str()}}]});
    (status, Json(body)).into_response()
}

/// The public keys that verify access tokens, for other services.
async fn jwks(State(state): State<HttpState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.keys.jwks()),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// How long the oldest unpublished event may wait before the relay counts
/// as degraded.
const RELAY_LAG_DEGRADED: Duration = Duration::from_secs(10);
/// Mail due this long (the mail server away, or no mailer running) degrades
/// readiness.
const MAIL_DUE_DEGRADED: Duration = Duration::from_secs(120);

/// The Prometheus exposition of this process and of the pipeline.
async fn metrics_text(State(state): State<HttpState>) -> Response {
    match observe::render(&state.pool, &state.events_topic).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the pipeline's gauges");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "the database does not answer",
            )
        }
    }
}

/// Ready when the database answers; the relay's lag and the mail outbox
/// are reported beside: commands are still taken while the broker or the
/// mail server is away (the event store is the outbox), so either degrades
/// the service without stopping it.
async fn readyz(State(state): State<HttpState>) -> Response {
    let checked = async {
        let lag = observe::relay_lag(&state.pool, &state.events_topic).await?;
        let mail = observe::mail_states(&state.pool).await?;
        let waiting = crate::mail::deliveries::oldest_due(&state.pool).await?;
        Ok::<_, sqlx::Error>((lag, mail, waiting))
    };
    match checked.await {
        Ok((lag, mail, waiting)) => {
            let relay = if lag > RELAY_LAG_DEGRADED.as_secs_f64() {
                "degraded"
            } else {
                "up"
            };
            let count = |state: &str| mail.iter().find(|(s, _)| *s == state).map_or(0, |c| c.1);
            let parked = count("parked");
            let mail_status = if parked > 0 || waiting > MAIL_DUE_DEGRADED.as_secs_f64() {
                "degraded"
            } else {
                "up"
            };
            Json(json!({
                "status": "ready",
                "database": "up",
                "relay": relay,
                "relay_lag_seconds": lag,
                "mail": mail_status,
                "mail_due": count("due"),
                "mail_parked": parked,
                "mail_oldest_due_seconds": waiting,
            }))
            .into_response()
        }
        Err(error) => {
            tracing::warn!(error = %error, "database not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": "down"})),
            )
                .into_response()
        }
    }
}

fn request_meta(headers: &HeaderMap, client: IpAddr) -> RequestMeta {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_CORRELATION_ID)
            .map(str::to_owned)
    };
    let request_id = header("x-request-id").unwrap_or_default();
    let correlation_id = header("x-correlation-id").unwrap_or_else(|| request_id.clone());
    // With traces on, the request's own span: the events it causes are
    // published and applied in its trace.
    let traceparent = trace::traceparent(&tracing::Span::current())
        .or_else(|| header("traceparent").filter(|value| telemetry::is_traceparent(value)))
        .unwrap_or_else(telemetry::new_traceparent);
    RequestMeta {
        request_id,
        correlation_id,
        traceparent,
        client,
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// A request that is not a single GraphQL operation, answered as a GraphQL
/// error body with a code rather than as library debug text.
pub struct BadRequest(ParseRequestError);

impl From<ParseRequestError> for BadRequest {
    fn from(error: ParseRequestError) -> Self {
        Self(error)
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let (status, message) = match &self.0 {
            ParseRequestError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".to_owned(),
            ),
            ParseRequestError::UnsupportedBatch => (
                StatusCode::BAD_REQUEST,
                "batched operations are not supported".to_owned(),
            ),
            ParseRequestError::InvalidRequest(error) => (
                StatusCode::BAD_REQUEST,
                format!("the body is not a GraphQL request: {error}"),
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                "the body is not a GraphQL request".to_owned(),
            ),
        };
        error_body(status, Code::BadUserInput, &message)
    }
}
