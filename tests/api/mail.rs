//! The account flows that go through the mail, against a real SMTP server
//! (aiosmtpd): verifying an address, recovering a forgotten password,
//! confirming a new address; and the mailer's promises: a server that is
//! down delays mail and loses none, a mailer killed between sending and
//! recording sends at most one duplicate, with the same `Message-ID`.

use std::time::Duration;

use accountable::auth::Clock;
use serde_json::{json, Value};

use crate::helpers::*;

const REGISTER_CHECKING_MAIL: &str = "mutation($input: RegisterInput!) {
  register(input: $input) { emailVerificationRequired accessToken refreshToken expiresIn user { id } }
}";
const LOGIN: &str = "mutation($e: String!, $p: String!) {
  login(input: {email: $e, password: $p}) { accessToken refreshToken }
}";
const VERIFY: &str = "mutation($t: String!) { verifyEmail(input: {token: $t}) { version user { id emailVerified } } }";
const REQUEST_VERIFICATION: &str =
    "mutation($e: String!) { requestEmailVerification(input: {email: $e}) }";
const REQUEST_RESET: &str = "mutation($e: String!) { requestPasswordReset(input: {email: $e}) }";
const RESET: &str = "mutation($t: String!, $p: String!) {
  resetPassword(input: {token: $t, newPassword: $p}) { version }
}";
const CHANGE_EMAIL: &str = "mutation($id: ID!, $e: String!) {
  changeEmail(input: {id: $id, email: $e}) { version user { email emailVerified } }
}";
const CONFIRM_CHANGE: &str =
    "mutation($t: String!) { confirmEmailChange(input: {token: $t}) { version user { email emailVerified } } }";
const NEW_PASSWORD: &str = "a brand new passphrase for ada";

/// A stack whose addresses must be verified before sign-in, its mail going
/// to `mail`, with a mailer running.
pub(crate) async fn verifying_stack(mail: &MailServer) -> (TestStack, TestApi) {
    let url = mail.url();
    let stack = TestStack::with_config(|config| {
        config.mail.smtp_url = Some(url);
        config.mail.require_verified_email = Some(true);
    })
    .await;
    let api = stack.api().await;
    stack.projection();
    stack.relay();
    stack.mailer();
    (stack, api)
}

/// A stack that signs new accounts in at once (development's default), its
/// mail going to `mail`, with a mailer running.
pub(crate) async fn open_stack(mail: &MailServer) -> (TestStack, TestApi) {
    let url = mail.url();
    let stack = TestStack::with_config(|config| config.mail.smtp_url = Some(url)).await;
    let api = stack.api().await;
    stack.projection();
    stack.relay();
    stack.mailer();
    (stack, api)
}

async fn register_checking_mail(api: &TestApi, email: &str, password: &str) -> Value {
    api.graphql(
        REGISTER_CHECKING_MAIL,
        json!({"input": {"email": email, "password": password, "displayName": "Ada"}}),
    )
    .await
}

async fn ask_to_move(api: &TestApi, who: &Session, email: &str) -> Value {
    api.graphql_as(
        Some(&who.access),
        CHANGE_EMAIL,
        json!({"id": who.id, "e": email}),
    )
    .await
}

/// Waits until `count` messages are recorded as sent.
async fn until_sent(stack: &TestStack, count: i64) {
    eventually(
        "the deliveries recorded as sent",
        Duration::from_secs(30),
        || async {
            let sent = stack
                .count("SELECT count(*) FROM mail_deliveries WHERE state = 'sent'")
                .await;
            (sent == count).then_some(())
        },
    )
    .await;
}

fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

#[tokio::test]
async fn a_new_account_verifies_its_address_through_the_mail_and_then_signs_in() {
    let mail = MailServer::start().await;
    let (_stack, api) = verifying_stack(&mail).await;

    let body = register_checking_mail(&api, "ada@example.com", PASSWORD).await;
    assert!(body["errors"].is_null(), "{body}");
    let registered = &body["data"]["register"];
    assert_eq!(registered["emailVerificationRequired"], json!(true));
    assert!(
        registered["accessToken"].is_null() && registered["user"].is_null(),
        "{body}"
    );

    // The right password to an unverified address says so; a wrong one
    // says only that it is wrong.
    let early = api
        .graphql(LOGIN, json!({"e": "ada@example.com", "p": PASSWORD}))
        .await;
    assert_eq!(code(&early), Some("EMAIL_NOT_VERIFIED"), "{early}");
    let wrong = api
        .graphql(
            LOGIN,
            json!({"e": "ada@example.com", "p": "not the password at all"}),
        )
        .await;
    assert_eq!(code(&wrong), Some("UNAUTHENTICATED"), "{wrong}");

    let mails = mail.wait_for("ada@example.com", 1).await;
    assert_eq!(mails[0].subject(), "Verify your email address");
    let verified = api.graphql(VERIFY, json!({"t": mails[0].token()})).await;
    assert!(verified["errors"].is_null(), "{verified}");
    assert_eq!(
        verified["data"]["verifyEmail"]["user"]["emailVerified"],
        json!(true)
    );

    let signed_in = api
        .graphql(LOGIN, json!({"e": "ada@example.com", "p": PASSWORD}))
        .await;
    assert!(
        signed_in["data"]["login"]["accessToken"].is_string(),
        "{signed_in}"
    );
    // The link worked once.
    let again = api.graphql(VERIFY, json!({"t": mails[0].token()})).await;
    assert_eq!(code(&again), Some("INVALID_TOKEN"), "{again}");
}

#[tokio::test]
async fn a_taken_address_registers_alike_and_only_its_owner_hears_of_it() {
    let mail = MailServer::start().await;
    let (stack, api) = verifying_stack(&mail).await;

    let first = register_checking_mail(&api, "ada@example.com", PASSWORD).await;
    let second = register_checking_mail(&api, "Ada@Example.com", "another long passphrase").await;
    assert!(second["errors"].is_null(), "{second}");
    assert_eq!(
        first["data"], second["data"],
        "a taken address answers as a new one"
    );

    let mails = mail.wait_for("ada@example.com", 2).await;
    let subjects: Vec<_> = mails.iter().map(Mail::subject).collect();
    assert!(
        subjects.contains(&"Someone tried to sign up with your address".to_owned()),
        "{subjects:?}"
    );
    let registrations = stack
        .count("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
        .await;
    assert_eq!(registrations, 1);
}

#[tokio::test]
async fn a_forgotten_password_is_reset_through_the_mail_and_every_old_session_ends() {
    let mail = MailServer::start().await;
    let (stack, api) = open_stack(&mail).await;
    let ada = api.register("ada@example.com", "Ada").await;

    let events_before = stack.count("SELECT count(*) FROM events").await;
    let unknown = api
        .graphql(REQUEST_RESET, json!({"e": "nobody@example.com"}))
        .await;
    assert_eq!(
        unknown["data"]["requestPasswordReset"],
        json!(true),
        "{unknown}"
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM events").await,
        events_before
    );

    let known = api
        .graphql(REQUEST_RESET, json!({"e": "ada@example.com"}))
        .await;
    assert_eq!(known, unknown, "a known address answers as an unknown one");
    let reset_mail = eventually("the reset mail", Duration::from_secs(30), || async {
        mail.messages()
            .into_iter()
            .find(|m| m.subject() == "Reset your password")
    })
    .await;
    assert_eq!(reset_mail.to(), "ada@example.com");

    let reset = api
        .graphql(RESET, json!({"t": reset_mail.token(), "p": NEW_PASSWORD}))
        .await;
    assert!(reset["errors"].is_null(), "{reset}");

    let refreshed = api
        .graphql(
            "mutation($r: String!) { refreshToken(refreshToken: $r) { accessToken } }",
            json!({"r": ada.refresh}),
        )
        .await;
    assert_eq!(code(&refreshed), Some("UNAUTHENTICATED"), "{refreshed}");
    let me = api
        .graphql_as(Some(&ada.access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(code(&me), Some("UNAUTHENTICATED"), "{me}");
    let old = api
        .graphql(LOGIN, json!({"e": "ada@example.com", "p": PASSWORD}))
        .await;
    assert_eq!(code(&old), Some("UNAUTHENTICATED"));
    let new = api
        .graphql(LOGIN, json!({"e": "ada@example.com", "p": NEW_PASSWORD}))
        .await;
    assert!(new["data"]["login"]["accessToken"].is_string(), "{new}");

    let reused = api
        .graphql(
            RESET,
            json!({"t": reset_mail.token(), "p": "yet another passphrase"}),
        )
        .await;
    assert_eq!(code(&reused), Some("INVALID_TOKEN"), "{reused}");
}

#[tokio::test]
async fn a_new_address_takes_over_only_when_its_link_comes_back() {
    let mail = MailServer::start().await;
    let (_stack, api) = open_stack(&mail).await;
    let ada = api.register("ada@example.com", "Ada").await;
    let eve = api.register("eve@example.com", "Eve").await;

    // Whether the new address is taken changes nothing in the answer.
    let to_taken = ask_to_move(&api, &eve, "ada@example.com").await;
    assert!(to_taken["errors"].is_null(), "{to_taken}");
    assert_eq!(
        to_taken["data"]["changeEmail"]["user"]["email"],
        json!("eve@example.com")
    );

    let asked = ask_to_move(&api, &ada, "ada@lovelace.example").await;
    assert!(asked["errors"].is_null(), "{asked}");
    assert_eq!(
        asked["data"]["changeEmail"]["user"]["email"],
        json!("ada@example.com")
    );

    let link = mail.wait_for("ada@lovelace.example", 1).await;
    assert_eq!(link[0].subject(), "Confirm your new email address");
    let notices = eventually(
        "the notice to the old address",
        Duration::from_secs(30),
        || async {
            mail.messages()
                .into_iter()
                .find(|m| m.to() == "ada@example.com" && m.subject().contains("being changed"))
        },
    )
    .await;
    assert!(
        !notices.body().contains("?token="),
        "a notice carries no link's token"
    );

    let confirmed = api
        .graphql(CONFIRM_CHANGE, json!({"t": link[0].token()}))
        .await;
    assert!(confirmed["errors"].is_null(), "{confirmed}");
    let user = &confirmed["data"]["confirmEmailChange"]["user"];
    assert_eq!(user["email"], json!("ada@lovelace.example"));
    assert_eq!(user["emailVerified"], json!(true));

    // The old address is free again; the new one signs in.
    api.register("ada@example.com", "Another Ada").await;
    let new = api
        .graphql(LOGIN, json!({"e": "ada@lovelace.example", "p": PASSWORD}))
        .await;
    assert!(new["data"]["login"]["accessToken"].is_string(), "{new}");
}

#[tokio::test]
async fn every_token_that_does_not_work_answers_invalid_token_and_nothing_else() {
    let mail = MailServer::start().await;
    let url = mail.url();
    let stack = TestStack::with_config(|config| config.mail.smtp_url = Some(url)).await;
    let clock = Clock::default();
    let api = stack.api_with_clock(clock.clone()).await;
    stack.projection();
    stack.relay();
    stack.mailer();
    api.register("ada@example.com", "Ada").await;
    let first = mail.wait_for("ada@example.com", 1).await[0].token();

    // A newer link supersedes the first (a minute later: one a minute).
    clock.advance(chrono::Duration::minutes(2));
    let asked = api
        .graphql(REQUEST_VERIFICATION, json!({"e": "ada@example.com"}))
        .await;
    assert_eq!(
        asked["data"]["requestEmailVerification"],
        json!(true),
        "{asked}"
    );
    let second = mail.wait_for("ada@example.com", 2).await[1].token();
    assert_ne!(first, second);

    let unknown_user = format!("{}{}", uuid::Uuid::now_v7().simple(), &second[32..]);
    let wrong_secret = format!("{}{}", &second[..32], "A".repeat(43));
    let cases = [
        ("superseded", first.clone()),
        ("unknown user", unknown_user),
        ("wrong secret", wrong_secret),
        ("malformed", "not a token".to_owned()),
        ("empty", String::new()),
        ("too long", "a".repeat(129)),
        ("huge", "a".repeat(10_000)),
    ];
    for (what, token) in &cases {
        for mutation in [VERIFY, CONFIRM_CHANGE] {
            let body = api.graphql(mutation, json!({"t": token})).await;
            assert_eq!(code(&body), Some("INVALID_TOKEN"), "{what}: {body}");
            assert_eq!(
                body["errors"].as_array().map(Vec::len),
                Some(1),
                "{what}: {body}"
            );
        }
        let body = api
            .graphql(RESET, json!({"t": token, "p": NEW_PASSWORD}))
            .await;
        assert_eq!(code(&body), Some("INVALID_TOKEN"), "{what}: {body}");
    }

    // Expired: a day later the newest link no longer works either.
    clock.advance(chrono::Duration::hours(25));
    let expired = api.graphql(VERIFY, json!({"t": second})).await;
    assert_eq!(code(&expired), Some("INVALID_TOKEN"), "{expired}");
}

#[tokio::test]
async fn five_wrong_tries_void_a_reset_link() {
    let mail = MailServer::start().await;
    let (_stack, api) = open_stack(&mail).await;
    api.register("ada@example.com", "Ada").await;
    api.graphql(REQUEST_RESET, json!({"e": "ada@example.com"}))
        .await;
    let link = eventually("the reset mail", Duration::from_secs(30), || async {
        mail.messages()
            .into_iter()
            .find(|m| m.subject() == "Reset your password")
    })
    .await
    .token();
    for _ in 0..5 {
        let wrong = format!("{}{}", &link[..32], "A".repeat(43));
        let body = api
            .graphql(RESET, json!({"t": wrong, "p": NEW_PASSWORD}))
            .await;
        assert_eq!(code(&body), Some("INVALID_TOKEN"), "{body}");
    }
    let body = api
        .graphql(RESET, json!({"t": link, "p": NEW_PASSWORD}))
        .await;
    assert_eq!(
        code(&body),
        Some("INVALID_TOKEN"),
        "the link is void: {body}"
    );
}

#[tokio::test]
async fn requests_for_mail_are_limited_per_client_and_per_account_alike_for_any_address() {
    let mail = MailServer::start().await;
    let url = mail.url();
    let stack = TestStack::with_config(|config| {
        config.mail.smtp_url = Some(url);
        config.http.rate_limit = 3;
    })
    .await;
    let api = stack.api().await;
    api.register("ada@example.com", "Ada").await;

    // Per account: the second request within a minute writes nothing, and
    // answers as the first.
    let first = api
        .graphql(REQUEST_RESET, json!({"e": "ada@example.com"}))
        .await;
    let second = api
        .graphql(REQUEST_RESET, json!({"e": "ada@example.com"}))
        .await;
    assert_eq!(first, second);
    let requested = stack
        .count("SELECT count(*) FROM events WHERE event_type = 'PasswordResetRequested'")
        .await;
    assert_eq!(requested, 1);

    // Per client: past the limit, a known and an unknown address alike.
    let known = api
        .graphql(REQUEST_RESET, json!({"e": "ada@example.com"}))
        .await;
    let unknown = api
        .graphql(REQUEST_RESET, json!({"e": "nobody@example.com"}))
        .await;
    assert_eq!(code(&known), Some("RATE_LIMITED"), "{known}");
    assert_eq!(code(&unknown), Some("RATE_LIMITED"), "{unknown}");
    let verification = api
        .graphql(REQUEST_VERIFICATION, json!({"e": "nobody@example.com"}))
        .await;
    assert_eq!(code(&verification), Some("RATE_LIMITED"), "{verification}");
}

#[tokio::test]
async fn a_display_name_never_reaches_a_header_and_is_escaped_in_html() {
    let mail = MailServer::start().await;
    let (_stack, api) = open_stack(&mail).await;
    let crlf = api
        .graphql(
            REGISTER,
            json!({"input": {"email": "eve@example.com", "password": PASSWORD,
                             "displayName": "Eve\r\nBcc: victim@example.com"}}),
        )
        .await;
    assert_eq!(code(&crlf), Some("BAD_USER_INPUT"), "{crlf}");

    api.register("eve@example.com", "<img src=x onerror=alert(1)> Eve")
        .await;
    let mails = mail.wait_for("eve@example.com", 1).await;
    let raw = &mails[0].raw;
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(!head.contains("Eve") && !head.contains("img"), "{head}");
    assert_eq!(mails[0].to(), "eve@example.com");
    let body = mails[0].body();
    let html = &body[body.find("Content-Type: text/html").expect("an HTML part")..];
    assert!(
        html.contains("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt; Eve"),
        "{html}"
    );
    assert!(!html.contains("<img"), "{html}");
}

#[tokio::test]
async fn mail_due_while_the_server_is_down_arrives_once_when_it_is_back() {
    let mut mail = MailServer::start().await;
    let (stack, api) = open_stack(&mail).await;
    mail.stop().await;

    api.register("ada@example.com", "Ada").await;
    eventually("a failed attempt", Duration::from_secs(30), || async {
        let failed = stack
            .count("SELECT count(*) FROM mail_deliveries WHERE state = 'due' AND last_error IS NOT NULL")
            .await;
        (failed == 1).then_some(())
    })
    .await;

    mail.start_again().await;
    mail.wait_for("ada@example.com", 1).await;
    until_sent(&stack, 1).await;
    assert_eq!(mail.messages().len(), 1, "sent exactly once");
}

#[tokio::test]
async fn a_mailer_killed_between_sending_and_recording_sends_one_duplicate_with_the_same_message_id(
) {
    let mail = MailServer::start().await;
    let url = mail.url();
    let stack = TestStack::with_config(|config| config.mail.smtp_url = Some(url)).await;
    let api = stack.api().await;
    mail.hold();
    let mut mailer = stack.process("mailer");

    api.register("ada@example.com", "Ada").await;
    // The server has the message; the mailer waits for its answer.
    mail.wait_for("ada@example.com", 1).await;
    mailer.kill().await.expect("the mailer is killed");
    mail.release();

    let _mailer = stack.process("mailer");
    let copies = mail.wait_for("ada@example.com", 2).await;
    until_sent(&stack, 1).await;
    let copies_now = mail.messages();
    assert_eq!(copies_now.len(), 2, "one duplicate at most");
    assert_eq!(copies[0].message_id(), copies[1].message_id());
    assert_eq!(copies[0].token(), copies[1].token());
}

#[tokio::test]
async fn an_erased_user_gets_no_mail_and_their_pending_link_dies_with_them() {
    let mail = MailServer::start().await;
    let url = mail.url();
    let stack = TestStack::with_config(|config| config.mail.smtp_url = Some(url)).await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    api.graphql(REQUEST_RESET, json!({"e": "ada@example.com"}))
        .await;

    // The token as the event holds it, before the erasure shreds it.
    let (sequence, data): (i64, Value) = sqlx::query_as(
        "SELECT sequence, payload->'PasswordResetRequested' FROM events WHERE event_type = 'PasswordResetRequested'",
    )
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    let opened = stack.opened(&ada.id, sequence, data).await;
    let token = opened["token"]
        .as_str()
        .expect("the sealed token opens")
        .to_owned();

    let erased = api
        .graphql_as(
            Some(&ada.access),
            "mutation($id: ID!) { eraseUser(input: {id: $id}) { version } }",
            json!({"id": ada.id}),
        )
        .await;
    assert!(erased["errors"].is_null(), "{erased}");
    let body = api
        .graphql(RESET, json!({"t": token, "p": NEW_PASSWORD}))
        .await;
    assert_eq!(code(&body), Some("INVALID_TOKEN"), "{body}");

    stack.mailer();
    eventually(
        "every delivery settled",
        Duration::from_secs(30),
        || async {
            let open = stack
                .count(
                    "SELECT count(*) FROM mail_deliveries WHERE state NOT IN ('sent', 'dropped')",
                )
                .await;
            let all = stack.count("SELECT count(*) FROM mail_deliveries").await;
            (all == 2 && open == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        stack
            .count("SELECT count(*) FROM mail_deliveries WHERE state = 'dropped'")
            .await,
        2
    );
    assert!(mail.messages().is_empty(), "no mail to an erased user");
}

#[tokio::test]
async fn a_message_that_fails_every_attempt_is_parked_visible_and_sent_after_a_retry() {
    let mut mail = MailServer::start().await;
    let url = mail.url();
    let stack = TestStack::with_config(|config| {
        config.mail.smtp_url = Some(url);
        config.mail.max_attempts = 2;
    })
    .await;
    let api = stack.api().await;
    mail.stop().await;
    stack.mailer();
    api.register("ada@example.com", "Ada").await;

    eventually("the message parked", Duration::from_secs(30), || async {
        let parked = stack
            .count("SELECT count(*) FROM mail_deliveries WHERE state = 'parked' AND attempts = 2")
            .await;
        (parked == 1).then_some(())
    })
    .await;
    let ready: Value = api
        .client
        .get(api.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["mail"], json!("degraded"), "{ready}");
    assert_eq!(ready["mail_parked"], json!(1), "{ready}");
    let metrics = api
        .client
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("accountable_mail_messages{state=\"parked\"} 1"),
        "{metrics}"
    );

    mail.start_again().await;
    let retried = stack.cli(&["mailer", "retry"]).await;
    assert!(retried.status.success(), "{retried:?}");
    assert!(String::from_utf8_lossy(&retried.stdout).contains("1 parked"));
    mail.wait_for("ada@example.com", 1).await;
}

#[tokio::test]
async fn two_mailers_send_each_message_once() {
    let mail = MailServer::start().await;
    let url = mail.url();
    let stack = TestStack::with_config(|config| config.mail.smtp_url = Some(url)).await;
    let api = stack.api().await;
    let _first = stack.process("mailer");
    let _second = stack.process("mailer");
    for name in ["ada", "grace", "alan"] {
        api.register(&format!("{name}@example.com"), name).await;
    }
    until_sent(&stack, 3).await;
    let mut to: Vec<_> = mail.messages().iter().map(Mail::to).collect();
    to.sort();
    assert_eq!(
        to,
        ["ada@example.com", "alan@example.com", "grace@example.com"]
    );
}

#[tokio::test]
async fn a_message_refused_for_good_is_parked_at_once_without_the_servers_words() {
    let mail = MailServer::start().await;
    let (stack, api) = open_stack(&mail).await;
    api.register("refused@example.com", "Ada").await;
    let error: String = eventually("the message parked", Duration::from_secs(30), || async {
        sqlx::query_scalar(
            "SELECT last_error FROM mail_deliveries WHERE state = 'parked' AND attempts = 1",
        )
        .fetch_optional(&stack.pool)
        .await
        .unwrap()
    })
    .await;
    assert!(error.contains("550"), "{error}");
    assert!(!error.contains("refused@example.com"), "{error}");
    assert!(mail.messages().is_empty());
}
