//! The account pages (`/account/`) and the console (`/console/`): built
//! by Vite from `web/` into `web/dist` (`scripts/web.sh`) and embedded in
//! the binary, so that `serve` needs nothing else at run time and nothing
//! loads from outside the server. Each page routes on the client; every
//! path under it answers its `index.html`. They talk to `/graphql` like
//! any other frontend.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "web/dist"]
#[allow_missing = true]
struct Built;

/// The pages' content security policy: scripts, styles and requests to
/// this origin only; no frames, no plugins, no forms posting elsewhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What every page and asset is answered with. `no-referrer` keeps the
/// tokens of mailed links out of the `Referer` of anything a page loads.
fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn file(path: &str, cache: &'static str) -> Option<Response> {
    let file = Built::get(path)?;
    let mime = file.metadata.mimetype();
    Some(guarded(
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_str(mime).ok()?),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
            file.data.into_owned(),
        )
            .into_response(),
    ))
}

/// The page's `index.html`, for every client-side route under it.
fn page(name: &'static str) -> Response {
    file(&format!("{name}/index.html"), "no-cache").unwrap_or_else(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "The pages were not built into this binary: run scripts/web.sh, then build again.",
        )
            .into_response()
    })
}

/// Vite's assets: their names carry a hash of their content.
async fn asset(Path(name): Path<String>) -> Response {
    file(&format!("ui/{name}"), "public, max-age=31536000, immutable")
        .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// `/account/…`, `/console/…` and `/ui/…`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let account = || async { page("account") };
    let console = || async { page("console") };
    Router::new()
        .route("/account", get(account))
        .route("/account/", get(account))
        .route("/account/{*path}", get(account))
        .route("/console", get(console))
        .route("/console/", get(console))
        .route("/console/{*path}", get(console))
        .route("/ui/{name}", get(asset))
}

/// Whether the pages are in this binary (`serve` warns at its start when
/// not).
pub fn built() -> bool {
    Built::get("account/index.html").is_some()
}

#[cfg(test)]
mod tests {
    use crate::config::Environment;
    use crate::graphql::schema_builder;

    /// What the pages put where a document names its mutation by a variable.
    const NAMED: [&str; 6] = [
        "deactivateUser",
        "reactivateUser",
        "assignRole",
        "revokeRole",
        "verifyEmail",
        "confirmEmailChange",
    ];

    /// Every GraphQL document the pages' sources hold: the template
    /// literals that open with `mutation `, `query ` or `{ `.
    fn documents() -> Vec<(String, String)> {
        let user_fields = user_fields();
        let mut found = Vec::new();
        for file in [
            "web/src/api.js",
            "web/src/ui.js",
            "web/src/account/main.js",
            "web/src/console/main.js",
        ] {
            let source = source(file);
            let mut rest = source.as_str();
            while let Some(start) = rest.find('`') {
                let after = &rest[start + 1..];
                let Some(end) = after.find('`') else { break };
                let literal = &after[..end];
                if ["mutation ", "query ", "{ "]
                    .iter()
                    .any(|opening| literal.starts_with(opening))
                {
                    let literal = literal.replace("${USER_FIELDS}", &user_fields);
                    if literal.contains("${mutation}") {
                        for name in NAMED {
                            found.push((file.to_owned(), literal.replace("${mutation}", name)));
                        }
                    } else {
                        found.push((file.to_owned(), literal));
                    }
                }
                rest = &after[end + 1..];
            }
        }
        found
    }

    fn source(file: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        std::fs::read_to_string(path).expect("the pages' sources")
    }

    /// The fields `web/src/api.js` exports as `USER_FIELDS`.
    fn user_fields() -> String {
        let source = source("web/src/api.js");
        let (_, rest) = source
            .split_once("export const USER_FIELDS = `")
            .expect("api.js exports USER_FIELDS");
        let (fields, _) = rest.split_once('`').expect("a closed literal");
        fields.to_owned()
    }

    #[tokio::test]
    async fn every_operation_the_pages_send_fits_the_schema() {
        let schema = schema_builder(Environment::Development).finish();
        let documents = documents();
        assert!(documents.len() > 40, "{} documents found", documents.len());
        for (file, document) in documents {
            assert!(!document.contains("${"), "{file}: {document}");
            let response = schema.execute(document.as_str()).await;
            // Without variables or data, a fitting document fails only on
            // those; one that does not fit fails validation on its fields.
            let misfits: Vec<&str> = response
                .errors
                .iter()
                .map(|error| error.message.as_str())
                .filter(|message| {
                    [
                        "Unknown",
                        "Cannot query",
                        "is not defined by type",
                        "Invalid value",
                    ]
                    .iter()
                    .any(|sign| message.contains(sign))
                        && !message.contains("Variable")
                })
                .collect();
            assert!(misfits.is_empty(), "{file}: {document}: {misfits:?}");
        }
    }
}
