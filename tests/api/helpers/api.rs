//! The API as a frontend calls it: GraphQL over HTTP, sessions, the
//! operations most tests need.

use std::net::SocketAddr;

use accountable::graphql::loader::LookupCount;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::*;

/// The HTTP API of a running stack.
#[derive(Clone)]
pub struct TestApi {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The queries this API has sent to read user rows.
    pub user_lookups: LookupCount,
}

impl TestApi {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GETs `path` and returns the body as text, after checking the status.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.expect("a body")
    }

    /// `refreshToken` with `token`, asking for the access token only: the
    /// response body.
    pub async fn refresh(&self, token: &str) -> Value {
        self.graphql(
            "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }",
            json!({"t": token}),
        )
        .await
    }

    /// POSTs one GraphQL operation and returns the response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_as(None, query, variables).await
    }

    /// POSTs one GraphQL operation with a bearer token, if any.
    pub async fn graphql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not a JSON body ({e}): {status} {text:?}"))
    }

    /// Registers a user and returns the `register` payload: `user`,
    /// `accessToken`, `refreshToken`, `expiresIn`.
    pub async fn register(&self, email: &str, display_name: &str) -> Session {
        let body = self
            .graphql(
                REGISTER,
                json!({"input": {"email": email, "password": PASSWORD, "displayName": display_name}}),
            )
            .await;
        assert!(body["errors"].is_null(), "register failed: {body}");
        Session::from(&body["data"]["register"])
    }

    /// `user(id, minVersion)` as the holder of `token`.
    pub async fn user(&self, token: &str, id: &str, min_version: Option<i64>) -> Value {
        self.graphql_as(
            Some(token),
            USER,
            json!({"id": id, "minVersion": min_version}),
        )
        .await
    }
}

/// A signed-in user, as `register`, `login` or `refreshToken` answered.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: Value,
    pub id: String,
    pub access: String,
    pub refresh: String,
}

/// The claims of a JWT, unverified.
pub fn claims(token: &str) -> Value {
    let claims = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("base64url")).unwrap()
}

impl From<&Value> for Session {
    fn from(payload: &Value) -> Self {
        let text = |v: &Value| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string in {payload}"))
                .to_owned()
        };
        let access = text(&payload["accessToken"]);
        // The user id is the token's subject.
        let claims = claims(&access);
        Self {
            user: payload["user"].clone(),
            id: text(&claims["sub"]),
            access,
            refresh: text(&payload["refreshToken"]),
        }
    }
}

pub const REGISTER: &str = "mutation($input: RegisterInput!) {
  register(input: $input) {
    accessToken refreshToken expiresIn
    user { id email displayName status roles version createdAt updatedAt }
  }
}";

pub const USER: &str = "query($id: ID!, $minVersion: Int) {
  user(id: $id, minVersion: $minVersion) { id email displayName status roles version createdAt updatedAt }
}";

/// The error code of the first GraphQL error in `body`.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// Signs in with the test password.
pub async fn login(api: &TestApi, email: &str) -> Session {
    let body = api
        .graphql(
            "mutation($e: String!, $p: String!) {
               login(input: {email: $e, password: $p}) { accessToken refreshToken }
             }",
            json!({"e": email, "p": PASSWORD}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    Session::from(&body["data"]["login"])
}

/// A command the API acknowledged: the user and the version it answered.
pub type Acknowledged = (String, i64);

/// Registers `count` users, 16 at a time (`<prefix><n>@example.com`),
/// each answered without error, and returns what the API acknowledged.
pub async fn register_many(api: &TestApi, prefix: &str, count: usize) -> Vec<Acknowledged> {
    const AT_ONCE: usize = 16;
    let mut acknowledged = Vec::with_capacity(count);
    for first in (0..count).step_by(AT_ONCE) {
        let registrations: Vec<_> = (first..count.min(first + AT_ONCE))
            .map(|n| {
                let api = api.clone();
                let email = format!("{prefix}{n}@example.com");
                tokio::spawn(async move {
                    let session = api.register(&email, "Someone").await;
                    let version = session.user["version"].as_i64().expect("a version");
                    (session.id, version)
                })
            })
            .collect();
        for registration in registrations {
            acknowledged.push(registration.await.expect("registered"));
        }
    }
    acknowledged
}
