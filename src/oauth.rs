//! OAuth 2.0 for other services: the token endpoint (RFC 6749: client
//! credentials, refresh tokens), revocation (RFC 7009), introspection
//! (RFC 7662) and the metadata a standard client configures itself from
//! (RFC 8414; OpenID Connect Discovery's document). Every answer is JSON;
//! every error is RFC 6749 §5.2's, with `WWW-Authenticate` on 401.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use accountable_domain::Role;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::tokens::SignInFacts;
use crate::auth::{AuthError, Caller};
use crate::commands::service_accounts::MAX_SECRET_LEN;
use crate::http::HttpState;

/// The longest form body looked at.
const MAX_FORM: usize = 8 * 1024;

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
}

impl OAuthError {
    fn invalid_request(description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description,
        }
    }

    fn invalid_client() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "client authentication failed",
        }
    }

    fn invalid_grant() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_grant",
            description: "the refresh token is invalid, expired or revoked",
        }
    }

    fn server_error(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "the token endpoint failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "internal error",
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut response = (self.status, no_store(), Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"accountable\""),
            );
        }
        response
    }
}

fn no_store() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ]
}

/// The parameters of a form body: each at most once (RFC 6749 §3.1), an
/// empty one as if absent; nothing in the query string, where secrets
/// would be logged and cached.
struct Form(HashMap<String, String>);

impl Form {
    fn parse(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Self, OAuthError> {
        if uri.query().is_some_and(|query| !query.is_empty()) {
            return Err(OAuthError::invalid_request(
                "parameters go in a form body, never in the query string",
            ));
        }
        let form_typed = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|value| {
                value
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_typed {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        if body.len() > MAX_FORM {
            return Err(OAuthError::invalid_request("the form is too large"));
        }
        let mut parameters = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if parameters
                .insert(name.into_owned(), value.into_owned())
                .is_some()
            {
                return Err(OAuthError::invalid_request(
                    "a parameter was given more than once",
                ));
            }
        }
        parameters.retain(|_, value| !value.is_empty());
        Ok(Self(parameters))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The client's credentials: HTTP Basic (each part form-encoded, RFC 6749
/// §2.3.1) or the form's `client_id` and `client_secret`, not both.
fn client_credentials(
    headers: &HeaderMap,
    form: &Form,
) -> Result<Option<(String, String)>, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "));
    let in_form = form.get("client_id").is_some() || form.get("client_secret").is_some();
    match (basic, in_form) {
        (Some(_), true) => Err(OAuthError::invalid_request(
            "use one way to authenticate the client",
        )),
        (Some(encoded), false) => {
            let decoded = STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(OAuthError::invalid_client)?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(OAuthError::invalid_client)?;
            let decode = |part: &str| -> String {
                form_urlencoded::parse(format!("x={part}").as_bytes())
                    .next()
                    .map(|(_, value)| value.into_owned())
                    .unwrap_or_default()
            };
            Ok(Some((decode(id), decode(secret))))
        }
        (None, true) => match (form.get("client_id"), form.get("client_secret")) {
            (Some(id), Some(secret)) => Ok(Some((id.to_owned(), secret.to_owned()))),
            _ => Err(OAuthError::invalid_client()),
        },
        (None, false) => Ok(None),
    }
}

/// The service account the credentials prove, with its roles.
async fn authenticate_client(
    state: &HttpState,
    credentials: Option<(String, String)>,
) -> Result<(Uuid, BTreeSet<Role>), OAuthError> {
    let (id, secret) = credentials.ok_or_else(OAuthError::invalid_client)?;
    let Ok(account_id) = Uuid::parse_str(&id) else {
        return Err(OAuthError::invalid_client());
    };
    if secret.len() > MAX_SECRET_LEN {
        return Err(OAuthError::invalid_client());
    }
    let now = state.auth.clock.now();
    let account = state
        .auth
        .users
        .service_account_by_secret(account_id, &secret, now)
        .await
        .map_err(|error| OAuthError::server_error(&error))?
        .ok_or_else(OAuthError::invalid_client)?;
    Ok((account_id, account.roles))
}

fn scope_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Auditor => "auditor",
        Role::Admin => "admin",
    }
}

/// The roles a requested `scope` asks for, all of them held; every role
/// held when none is asked for.
fn granted(requested: Option<&str>, held: &BTreeSet<Role>) -> Result<Vec<Role>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(held.iter().copied().collect());
    };
    let mut roles = BTreeSet::from([Role::User]);
    for name in requested.split(' ').filter(|name| !name.is_empty()) {
        let role = held
            .iter()
            .copied()
            .find(|role| scope_name(*role) == name)
            .ok_or(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "invalid_scope",
                description: "a scope is unknown or beyond the client's roles",
            })?;
        roles.insert(role);
    }
    Ok(roles.into_iter().collect())
}

fn scope_of(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|role| scope_name(*role))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match grant(&state, peer, &uri, &headers, &body).await {
        Ok(answer) => (StatusCode::OK, no_store(), Json(answer)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn grant(
    state: &HttpState,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, OAuthError> {
    if !state
        .limiter
        .allow(state.proxies.client(peer.ip(), headers))
    {
        return Err(OAuthError {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "slow_down",
            description: "too many requests; retry in a minute",
        });
    }
    let form = Form::parse(uri, headers, body)?;
    let credentials = client_credentials(headers, &form)?;
    match form.get("grant_type") {
        None => Err(OAuthError::invalid_request("grant_type is missing")),
        Some("client_credentials") => {
            let (account_id, held) = authenticate_client(state, credentials).await?;
            let roles = granted(form.get("scope"), &held)?;
            let scope = scope_of(&roles);
            let now = state.auth.clock.now();
            let facts = SignInFacts {
                auth_time: Some(now),
                amr: Vec::new(),
            };
            let access = state
                .auth
                .tokens
                .issue(account_id, roles, Uuid::new_v4(), &facts, now)
                .map_err(|error| OAuthError::server_error(&error))?;
            Ok(json!({
                "access_token": access.token,
                "token_type": "Bearer",
                "expires_in": access.expires_in,
                "scope": scope,
            }))
        }
        Some("refresh_token") => {
            if credentials.is_some() {
                authenticate_client(state, credentials).await?;
            }
            let refresh = form
                .get("refresh_token")
                .ok_or(OAuthError::invalid_request("refresh_token is missing"))?;
            match state.auth.refresh(refresh).await {
                Ok(signed_in) => Ok(json!({
                    "access_token": signed_in.access_token,
                    "token_type": "Bearer",
                    "expires_in": signed_in.expires_in,
                    "refresh_token": signed_in.refresh_token,
                })),
                Err(AuthError::InvalidCredentials | AuthError::InvalidToken(_)) => {
                    Err(OAuthError::invalid_grant())
                }
                Err(error) => Err(OAuthError::server_error(&error)),
            }
        }
        Some(_) => Err(OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported_grant_type",
            description: "grant_type is client_credentials or refresh_token",
        }),
    }
}

/// `POST /oauth/revoke` (RFC 7009): a refresh token ends its session; an
/// access token ends the session it belongs to. Unknown tokens are no
/// error (the answer is 200 either way).
pub(crate) async fn revoke(
    State(state): State<HttpState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let revoked = async {
        let form = Form::parse(&uri, &headers, &body)?;
        let credentials = client_credentials(&headers, &form)?;
        if credentials.is_some() {
            authenticate_client(&state, credentials).await?;
        }
        let token = form
            .get("token")
            .ok_or(OAuthError::invalid_request("token is missing"))?;
        if let Ok(Caller::User {
            id,
            session: Some(session),
            ..
        }) = state.auth.authenticate(token).await
        {
            state
                .auth
                .end_session(session, id)
                .await
                .map_err(|error| OAuthError::server_error(&error))?;
        } else {
            state
                .auth
                .logout(token)
                .await
                .map_err(|error| OAuthError::server_error(&error))?;
        }
        Ok::<_, OAuthError>(())
    }
    .await;
    match revoked {
        Ok(()) => (StatusCode::OK, no_store()).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /oauth/introspect` (RFC 7662), for authenticated clients only.
pub(crate) async fn introspect(
    State(state): State<HttpState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = async {
        let form = Form::parse(&uri, &headers, &body)?;
        let credentials = client_credentials(&headers, &form)?;
        authenticate_client(&state, credentials).await?;
        let token = form
            .get("token")
            .ok_or(OAuthError::invalid_request("token is missing"))?;
        let Ok((claims, Caller::User { roles, .. })) =
            state.auth.authenticate_with_claims(token).await
        else {
            return Ok(json!({"active": false}));
        };
        Ok::<_, OAuthError>(json!({
            "active": true,
            "token_type": "Bearer",
            "sub": claims.sub,
            "scope": scope_of(&roles),
            "iss": claims.iss,
            "aud": claims.aud,
            "exp": claims.exp,
            "iat": claims.iat,
            "jti": claims.jti,
        }))
    }
    .await;
    match answer {
        Ok(answer) => (StatusCode::OK, no_store(), Json(answer)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `/.well-known/openid-configuration` and
/// `/.well-known/oauth-authorization-server`: where the endpoints are, at
/// the configured API URL, or else at the host the request named.
pub(crate) async fn metadata(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let base = match &state.api_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .filter(|host| {
                    host.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                })
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    let document = json!({
        "issuer": state.auth.tokens.issuer(),
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["user", "auditor", "admin"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
    });
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(document),
    )
        .into_response()
}
