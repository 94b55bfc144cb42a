//! The account pages and the console in Chromium, on the real service: a
//! person signs up, follows the mailed link, turns on an authenticator app
//! and signs in with it, and ends another session; another signs in with a
//! recovery code, changes password and address and turns the app off; an
//! admin finds a user, deactivates them and sees the event on the
//! timeline; an auditor sees a history edited in SQL break; an admin sees a
//! user's app and lockout, lifts the lock and grants a role; an erasure asks
//! for a fresh sign-in; operations that find the access token expired
//! together refresh it once. Screenshots of each page go to
//! `target/pages/<test>/`.

use accountable::auth::Clock;
use serde_json::json;

use crate::helpers::*;

/// The path and query of the first link to `path` in `body`.
fn link_in(body: &str, path: &str) -> String {
    let start = body
        .find(path)
        .unwrap_or_else(|| panic!("no link to {path} in {body}"));
    body[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<')
        .collect()
}

#[tokio::test]
async fn a_person_signs_up_verifies_the_address_signs_in_with_an_app_and_ends_a_session() {
    let mail = MailServer::start().await;
    let (_stack, api) = crate::mail::verifying_stack(&mail).await;
    let mut pages = Pages::start("account").await;
    let email = "grace@example.test";

    pages.goto(&api.url("/account/sign-up")).await;
    pages.fill("Email", email).await;
    pages.fill("Display name", "Grace Hopper").await;
    pages.fill("Password", PASSWORD).await;
    pages.screenshot("1-sign-up").await;
    pages.click("button", "Create account").await;
    pages.see("Check your inbox").await;

    // The link the mail holds is to the pages `serve` answers.
    let sent = mail.wait_for(email, 1).await;
    let link = link_in(&sent[0].body(), "/account/verify-email?token=");
    pages.goto(&api.url(&link)).await;
    pages.see("Your address is verified").await;
    pages.screenshot("2-verified").await;
    assert!(
        !pages.text("body").await.contains("token"),
        "the token is not shown"
    );
    pages.click("link", "Go to sign-in").await;
    pages.fill("Email", email).await;
    pages.fill("Password", PASSWORD).await;
    pages.click("button", "Sign in").await;
    pages.see("Your account").await;

    // Signed in elsewhere too, before the app is on.
    let elsewhere = login(&api, email).await;

    pages.click("button", "Set up an authenticator app").await;
    let secret = pages.text("#totp-secret").await;
    pages.screenshot("3-authenticator-app").await;
    let code = pyotp_code(&secret, 0).await;
    pages.fill("Code from your authenticator app", &code).await;
    pages.click("button", "Turn on").await;
    pages.see("Recovery codes").await;
    pages.click("button", "Sign out").await;

    pages.fill("Email", email).await;
    pages.fill("Password", PASSWORD).await;
    pages.click("button", "Sign in").await;
    pages.see("Second step").await;
    // The next step's code: the one used to turn the app on is spent.
    let code = pyotp_code(&secret, 30).await;
    pages.fill("Code from your authenticator app", &code).await;
    pages.screenshot("4-second-step").await;
    pages.click("button", "Continue").await;
    pages.see("Your account").await;
    pages.see("2 live sessions").await;
    assert_eq!(pages.count("text=this session").await, 1);
    // A reload takes the session up again from its cookie.
    pages.goto(&api.url("/account/")).await;
    pages.see("2 live sessions").await;
    pages.screenshot("5-sessions").await;

    pages.click("button", "End session").await;
    pages.see("1 live session").await;
    let refreshed = api.refresh(&elsewhere.refresh).await;
    assert_eq!(error_code(&refreshed), "UNAUTHENTICATED", "{refreshed}");
    // The page's own session goes on, until it signs out, for good.
    pages.see("Signed in as").await;
    pages.click("button", "Sign out").await;
    pages.see("Forgotten password?").await;
    pages.goto(&api.url("/account/")).await;
    pages.see("Forgotten password?").await;
}

#[tokio::test]
async fn a_person_signs_in_with_a_recovery_code_changes_password_and_address_and_turns_the_app_off()
{
    let mail = MailServer::start().await;
    let (_stack, api) = crate::mail::open_stack(&mail).await;
    let ada = api.register("ada@example.test", "Ada Lovelace").await;
    let (secret, codes) = crate::factors::enable_app(&api, &ada.access).await;
    let mut pages = Pages::start("account-changes").await;

    pages.goto(&api.url("/account/")).await;
    pages.fill("Email", "ada@example.test").await;
    pages.fill("Password", PASSWORD).await;
    pages.click("button", "Sign in").await;
    pages.see("Second step").await;
    pages.click("button", "Use a recovery code instead").await;
    pages.fill("Recovery code", &codes[0]).await;
    pages.click("button", "Continue").await;
    pages.see("9 recovery codes left").await;

    let new_password = "a new password of some length";
    pages.fill("Current password", PASSWORD).await;
    pages.fill("New password", new_password).await;
    pages.click("button", "Change password").await;
    // Every session ends with the change, the page's own too.
    pages.see("Your password is changed").await;
    pages.screenshot("password-changed").await;
    let login = |password: &'static str| {
        let api = &api;
        async move {
            api.graphql(
                "mutation($p: String!) { login(input: {email: \"ada@example.test\", password: $p}) { secondFactorRequired } }",
                json!({"p": password}),
            )
            .await
        }
    };
    assert_eq!(error_code(&login(PASSWORD).await), "UNAUTHENTICATED");
    let renewed = login(new_password).await;
    assert_eq!(
        renewed["data"]["login"]["secondFactorRequired"], true,
        "{renewed}"
    );
    pages.fill("Email", "ada@example.test").await;
    pages.fill("Password", new_password).await;
    pages.click("button", "Sign in").await;
    // The next step's code: the one that turned the app on is spent.
    let code = pyotp_code(&secret, 30).await;
    pages.fill("Code from your authenticator app", &code).await;
    pages.click("button", "Continue").await;
    pages.see("Your account").await;

    pages
        .fill("New email address", "countess@example.test")
        .await;
    pages.click("button", "Change email").await;
    pages.see("We sent a link to countess@example.test").await;
    let sent = mail.wait_for("countess@example.test", 1).await;
    pages
        .goto(&api.url(&link_in(&sent[0].body(), "/account/confirm-email")))
        .await;
    pages.see("Your new address is confirmed").await;
    pages.screenshot("address-confirmed").await;

    // The app is lost: a recovery code turns it off.
    pages.goto(&api.url("/account/")).await;
    pages.see("Turn off the app").await;
    pages.fill("Your password", new_password).await;
    pages
        .fill("Code from your app, or a recovery code", &codes[1])
        .await;
    pages.click("button", "Turn off the app").await;
    pages.see("Sign-in asks for your password only.").await;
    pages.see("countess@example.test").await;
}

/// A stack with a signed-in console user holding `role`, and Alan, whose
/// stream has two events.
async fn console_as(role: &str, test: &str, clock: Clock) -> (TestStack, TestApi, Pages, Session) {
    let stack = TestStack::new().await;
    let api = stack.api_with_clock(clock).await;
    stack.relay();
    stack.projection();
    let staff = format!("{}@example.test", role.to_lowercase());
    api.register(&staff, "Staff").await;
    stack.grant(&staff, role).await;
    let alan = api.register("turing@example.test", "Alan Turing").await;
    let renamed = api
        .graphql_as(
            Some(&alan.access),
            "mutation($id: ID!) { updateProfile(input: {id: $id, timeZone: \"Europe/London\"}) { version } }",
            json!({"id": alan.id}),
        )
        .await;
    assert!(renamed["errors"].is_null(), "{renamed}");
    // The console acts on the version the read side shows: let it show 2.
    let read = api.user(&alan.access, &alan.id, Some(2)).await;
    assert!(read["errors"].is_null(), "{read}");
    let mut pages = Pages::start(test).await;
    pages.goto(&api.url("/console/")).await;
    pages.fill("Email", &staff).await;
    pages.fill("Password", PASSWORD).await;
    pages.click("button", "Sign in").await;
    pages.see("Email starts with").await;
    (stack, api, pages, alan)
}

/// Finds Alan by the start of his address and opens his page (in the
/// page: a reload would sign the console out).
async fn open_alan(pages: &mut Pages) {
    pages.fill("Email starts with", "turing").await;
    pages.click("button", "Search").await;
    pages.see("1 users on this page").await;
    pages.screenshot("users").await;
    pages.click("link", "turing@example.test").await;
    pages.see("Alan Turing").await;
}

#[tokio::test]
async fn an_admin_finds_a_user_deactivates_them_and_sees_the_event_on_the_timeline() {
    let (_stack, api, mut pages, alan) =
        console_as("ADMIN", "console-admin", Clock::default()).await;
    open_alan(&mut pages).await;
    pages.see("1 live session").await;
    pages.click("button", "End every session").await;
    pages.see("0 live sessions").await;
    let refreshed = api.refresh(&alan.refresh).await;
    assert_eq!(error_code(&refreshed), "UNAUTHENTICATED", "{refreshed}");
    pages.fill("Reason to deactivate", "left the company").await;
    pages.click("button", "Deactivate").await;
    pages.see("Reason to reactivate").await;
    assert_eq!(pages.text("#status").await, "deactivated");
    pages.screenshot("user").await;

    pages.click("link", "History").await;
    pages.see("UserDeactivated").await;
    pages.see("Verified: every one of").await;
    pages.click_nth("button", "State after this event", 0).await;
    pages.see("After event 1").await;
    pages.screenshot("history").await;

    pages.click("link", "Pipeline").await;
    pages.see("Relay to Kafka").await;
    pages.see("accountable_relay_lag_seconds").await;
    pages.screenshot("pipeline").await;
    pages.screenshot_top("pipeline-top").await;

    let deactivated = api
        .graphql(
            "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
            json!({"e": "turing@example.test", "p": PASSWORD}),
        )
        .await;
    assert!(deactivated["errors"].is_array(), "{deactivated}");

    pages.click("link", "Users").await;
    open_alan(&mut pages).await;
    pages.fill("Reason to reactivate", "back again").await;
    pages.click("button", "Reactivate").await;
    pages.see("Reason to deactivate").await;
    assert_eq!(pages.text("#status").await, "active");
    login(&api, "turing@example.test").await;
}

#[tokio::test]
async fn an_admin_sees_a_users_app_and_lockout_lifts_the_lock_and_grants_a_role() {
    let (stack, api, mut pages, alan) =
        console_as("ADMIN", "console-factors", Clock::default()).await;
    crate::factors::enable_app(&api, &alan.access).await;
    for _ in 0..11 {
        let refused = api
            .graphql(
                "mutation($e: String!) { login(input: {email: $e, password: \"not his password\"}) { accessToken } }",
                json!({"e": "turing@example.test"}),
            )
            .await;
        assert_eq!(error_code(&refused), "UNAUTHENTICATED", "{refused}");
    }
    open_alan(&mut pages).await;
    assert_eq!(pages.text("#totp").await, "on 10 recovery codes left");
    let lockout = pages.text("#lockout").await;
    assert!(lockout.starts_with("locked until"), "{lockout}");
    pages.screenshot("locked").await;

    pages.click("button", "Unlock sign-in").await;
    pages.see_exactly("not locked").await;
    assert_eq!(pages.count("text=Unlock sign-in").await, 0);
    let signed_in = api
        .graphql(
            "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { secondFactorRequired } }",
            json!({"e": "turing@example.test", "p": PASSWORD}),
        )
        .await;
    assert_eq!(
        signed_in["data"]["login"]["secondFactorRequired"], true,
        "{signed_in}"
    );

    // That sign-in was an event the page has not read: the role change,
    // decided on version 16, is refused, and the page reads the user again.
    pages.click("button", "Make auditor").await;
    pages
        .see("The user changed since this page read them")
        .await;
    pages.see_exactly("17").await;
    pages.click("button", "Make auditor").await;
    pages.see("Revoke auditor").await;
    let assigned = stack.events_of(&alan.id, "RoleAssigned").await;
    assert_eq!(assigned, 1);
}

#[tokio::test]
async fn operations_that_find_the_access_token_expired_together_refresh_it_once() {
    let clock = Clock::default();
    let (_stack, _, mut pages, _) = console_as("AUDITOR", "console-expired", clock.clone()).await;
    open_alan(&mut pages).await;
    // Past the access token's life: the history's timeline and its
    // verification both find it expired. Two refreshes would present the
    // cookie's token twice, which ends the session as a reuse.
    clock.advance(chrono::Duration::minutes(6));
    pages.click("link", "History").await;
    pages.see("Verified: every one of").await;
    pages.see("ProfileUpdated").await;
    // Still signed in: the profile (not the sign-in form) shows.
    pages.click("link", "Profile").await;
    pages.see_exactly("Authenticator app").await;
}

#[tokio::test]
async fn an_auditor_sees_a_history_edited_in_sql_break_and_cannot_act() {
    let (stack, _, mut pages, alan) =
        console_as("AUDITOR", "console-auditor", Clock::default()).await;
    sqlx::query(
        "UPDATE events SET payload = '{\"ProfileUpdated\": {\"personal\": null}}'
          WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(&alan.id)
    .execute(&stack.pool)
    .await
    .unwrap();
    open_alan(&mut pages).await;
    assert_eq!(pages.count("text=Reason to deactivate").await, 0);
    pages.click("link", "History").await;
    pages.see("The chain is broken").await;
    let verdict = pages.text("[role=alert]").await;
    assert!(verdict.contains("at event 2"), "{verdict}");
    pages.see("does not verify").await;
    assert_eq!(
        pages
            .count(".timeline li.broken[data-event=ProfileUpdated]")
            .await,
        1
    );
    pages.screenshot("broken-chain").await;
}

#[tokio::test]
async fn an_erasure_from_the_console_asks_for_a_fresh_sign_in_and_then_goes_on() {
    let clock = Clock::default();
    let (stack, _, mut pages, alan) = console_as("ADMIN", "console-erase", clock.clone()).await;
    open_alan(&mut pages).await;
    // Past the access token's life and the recent sign-in's: the page
    // refreshes its token, and the erasure asks who is there.
    clock.advance(chrono::Duration::minutes(6));
    pages.click_text("Erase this user…").await;
    pages
        .fill("Type turing@example.test to confirm", "turing@example.test")
        .await;
    pages.click("button", "Erase for good").await;
    pages.see("Confirm it is you").await;
    pages.screenshot("fresh-sign-in").await;
    pages.fill("Your password", PASSWORD).await;
    pages.click("button", "Confirm").await;
    pages.see("No such user").await;
    let erased = stack.events_of(&alan.id, "UserErased").await;
    assert_eq!(erased, 1);
}

#[tokio::test]
async fn a_person_adds_a_passkey_on_the_page_and_signs_in_with_it_alone_and_as_a_second_step() {
    // Passkeys need a host name, not an address: the pages are opened at
    // `localhost`, on a port chosen before the API starts.
    let port = crate::servers::free_port();
    let origin = format!("http://localhost:{port}");
    let allowed = origin.clone();
    let stack = TestStack::with_config(|config| {
        config.http.addr = ([127, 0, 0, 1], port).into();
        config.auth.webauthn_rp_id = "localhost".into();
        config.auth.webauthn_origins = vec![allowed];
    })
    .await;
    let api = stack.api().await;
    stack.relay();
    stack.projection();
    let ada = api.register("ada@example.test", "Ada Lovelace").await;
    let (secret, _) = crate::factors::enable_app(&api, &ada.access).await;
    let mut pages = Pages::start("passkey").await;

    pages.goto(&format!("{origin}/account/")).await;
    pages.fill("Email", "ada@example.test").await;
    pages.fill("Password", PASSWORD).await;
    pages.click("button", "Sign in").await;
    // The next step's code: the one that turned the app on is spent.
    let code = pyotp_code(&secret, 30).await;
    pages.fill("Code from your authenticator app", &code).await;
    pages.click("button", "Continue").await;
    pages.see("Your account").await;
    pages.fill("Passkey name", "laptop").await;
    pages.click("button", "Add a passkey").await;
    pages.see_exactly("laptop").await;
    pages.screenshot("1-passkey-added").await;
    pages.click("button", "Sign out").await;

    pages.click("button", "Sign in with a passkey").await;
    pages.see("Signed in as").await;
    pages.see("hwk, user, mfa").await;
    pages.screenshot("2-signed-in-with-a-passkey").await;
    pages.click("button", "Sign out").await;

    // The passkey as the second step of a password sign-in.
    pages.fill("Email", "ada@example.test").await;
    pages.fill("Password", PASSWORD).await;
    pages.click("button", "Sign in").await;
    pages.see("Second step").await;
    pages.click("button", "Use a passkey").await;
    pages.see("Signed in as").await;
    pages.see("pwd, hwk, user, mfa").await;
}
