//! The cookie mode of sessions, for pages on the API's own origin (the
//! account pages and the console): a request that sends
//! `Accountable-Session: cookie` gets its refresh token as an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` outside development) instead of in
//! the answer, where no script can read it; `refreshToken` and `logout`
//! then take an empty argument and use the cookie. Such a request must
//! come with an `Origin` of the API itself or of a configured origin (the
//! HTTP layer refuses others), and cross-origin pages cannot send the
//! header at all: it is not among those CORS allows.

use async_graphql::Context;
use axum::http::{header, HeaderMap};

/// The request header that asks for the cookie mode.
pub const HEADER: &str = "accountable-session";
/// The cookie that holds the refresh token.
pub const NAME: &str = "accountable_refresh";

/// A request in cookie mode: whether its cookies are `Secure`, and the
/// refresh token its cookie holds.
#[derive(Clone)]
pub struct CookieMode {
    pub secure: bool,
    pub refresh: Option<String>,
}

impl CookieMode {
    /// The cookie mode a request asks for, if it does.
    pub fn requested(headers: &HeaderMap, secure: bool) -> Option<Self> {
        let asked = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("cookie"));
        asked.then(|| Self {
            secure,
            refresh: headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == NAME)
                .map(|(_, value)| value.to_owned())
                .filter(|value| !value.is_empty()),
        })
    }

    fn cookie(&self, value: &str, expired: bool) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        let expired = if expired { "; Max-Age=0" } else { "" };
        format!("{NAME}={value}; Path=/graphql; HttpOnly; SameSite=Strict{secure}{expired}")
    }
}

/// What an answer shows of a new refresh token: in cookie mode nothing (it
/// goes into the cookie), else the token.
pub fn hand_over(ctx: &Context<'_>, token: &str) -> String {
    match ctx.data_opt::<CookieMode>() {
        Some(mode) => {
            ctx.append_http_header(header::SET_COOKIE, mode.cookie(token, false));
            String::new()
        }
        None => token.to_owned(),
    }
}

/// The refresh token a mutation acts on: its argument, or in cookie mode,
/// when that is empty, the cookie's.
pub fn presented(ctx: &Context<'_>, argument: String) -> String {
    match ctx.data_opt::<CookieMode>() {
        Some(mode) if argument.is_empty() => mode.refresh.clone().unwrap_or_default(),
        _ => argument,
    }
}

/// Ends the cookie, in cookie mode.
pub fn clear(ctx: &Context<'_>) {
    if let Some(mode) = ctx.data_opt::<CookieMode>() {
        ctx.append_http_header(header::SET_COOKIE, mode.cookie("", true));
    }
}
