//! Account mutations end to end: the write, its rules, and the read side
//! after it converged.

use serde_json::{json, Value};

use crate::helpers::{error_code, login, Session, TestApi, TestStack};

const UPDATE_PROFILE: &str = "mutation($input: UpdateProfileInput!) {
  updateProfile(input: $input) { version user { id displayName locale timeZone version } }
}";

async fn update_profile(api: &TestApi, session: &Session, input: Value) -> Value {
    let mut input = input;
    input["id"] = json!(session.id);
    api.graphql_as(
        Some(&session.access),
        UPDATE_PROFILE,
        json!({"input": input}),
    )
    .await
}

#[tokio::test]
async fn a_user_updates_their_profile_and_reads_it_back() {
    let (_stack, api) = TestStack::full().await;
    let ada = api.register("ada@example.com", "Ada").await;

    let body = update_profile(
        &api,
        &ada,
        json!({"displayName": "Ada Lovelace", "locale": "en-GB", "timeZone": "Europe/London"}),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let payload = &body["data"]["updateProfile"];
    assert_eq!(payload["version"], 2);
    assert_eq!(
        payload["user"],
        json!({"id": ada.id, "displayName": "Ada Lovelace", "locale": "en-GB",
               "timeZone": "Europe/London", "version": 2})
    );

    // Setting what is already set writes nothing.
    let body = update_profile(&api, &ada, json!({"displayName": "Ada Lovelace"})).await;
    assert_eq!(body["data"]["updateProfile"]["version"], 2, "{body}");
}

#[tokio::test]
async fn a_user_cannot_change_another_users_profile() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    let body = api
        .graphql_as(
            Some(&ada.access),
            UPDATE_PROFILE,
            json!({"input": {"id": grace.id, "displayName": "Mallory"}}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let anonymous = api
        .graphql(
            UPDATE_PROFILE,
            json!({"input": {"id": grace.id, "displayName": "Mallory"}}),
        )
        .await;
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED", "{anonymous}");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'ProfileUpdated'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict_and_writes_nothing() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;

    let body = update_profile(
        &api,
        &ada,
        json!({"displayName": "Ada L", "expectedVersion": 7}),
    )
    .await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["currentVersion"], 1);
    assert_eq!(stack.count("SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn of_two_concurrent_changes_from_one_version_one_wins_and_none_is_lost_silently() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;

    const NO_USER: &str =
        "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }";
    let change = |name: &str| {
        api.graphql_as(
            Some(&ada.access),
            NO_USER,
            json!({"input": {"id": ada.id, "displayName": name, "expectedVersion": 1}}),
        )
    };
    let (a, b) = tokio::join!(change("From phone"), change("From laptop"));
    let outcomes: Vec<&str> = [&a, &b]
        .iter()
        .map(|body| {
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("OK")
        })
        .collect();
    let mut sorted = outcomes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["CONFLICT", "OK"], "{a} {b}");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'ProfileUpdated'")
            .await,
        1
    );
}

#[tokio::test]
async fn invalid_profile_input_answers_bad_user_input() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    for (input, field) in [
        (json!({"displayName": ""}), "displayName"),
        (json!({"locale": "english please"}), "locale"),
        (json!({"timeZone": "../../etc/passwd"}), "timeZone"),
    ] {
        let body = update_profile(&api, &ada, input).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    assert_eq!(stack.count("SELECT count(*) FROM events").await, 1);
}

const CHANGE_PASSWORD: &str = "mutation($input: ChangePasswordInput!) {
  changePassword(input: $input) { version }
}";

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_every_session() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let new_password = "a brand new passphrase, long enough";
    let change = |current: &str| {
        api.graphql_as(
            Some(&ada.access),
            CHANGE_PASSWORD,
            json!({"input": {"id": ada.id, "currentPassword": current, "newPassword": new_password}}),
        )
    };

    let wrong = change("not the current password").await;
    assert_eq!(error_code(&wrong), "BAD_USER_INPUT", "{wrong}");
    assert_eq!(wrong["errors"][0]["extensions"]["field"], "currentPassword");
    // The wrong guess counts towards the lockout, as a failed login does
    // (hostile::item_04_…), and changes nothing else.
    let written: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events ORDER BY sequence")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    assert_eq!(written, ["UserRegistered", "LoginAttempted"]);

    // The check (attempt, success), then the change.
    let body = change(crate::helpers::PASSWORD).await;
    assert_eq!(body["data"]["changePassword"]["version"], 5, "{body}");

    // Every session ended, this one included.
    let me = api
        .graphql_as(Some(&ada.access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED", "{me}");
    let refreshed = api.refresh(&ada.refresh).await;
    assert_eq!(error_code(&refreshed), "UNAUTHENTICATED");

    // The old password no longer signs in; the new one does.
    let login = |password: &str| {
        api.graphql(
            "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
            json!({"e": "ada@example.com", "p": password}),
        )
    };
    assert_eq!(
        error_code(&login(crate::helpers::PASSWORD).await),
        "UNAUTHENTICATED"
    );
    assert!(login(new_password).await["errors"].is_null());
    // No password hash travels anywhere but the store.
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'PasswordChanged'")
            .await,
        1
    );
}

#[tokio::test]
async fn nobody_changes_another_users_password() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    let body = api
        .graphql_as(
            Some(&ada.access),
            CHANGE_PASSWORD,
            json!({"input": {"id": grace.id, "currentPassword": "guess",
                             "newPassword": "a brand new passphrase, long enough"}}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
}

const ASSIGN: &str = "mutation($input: RoleInput!) { assignRole(input: $input) { version } }";
const REVOKE: &str = "mutation($input: RoleInput!) { revokeRole(input: $input) { version } }";

#[tokio::test]
async fn the_first_admin_is_made_by_the_cli_and_manages_other_accounts() {
    let (stack, api) = TestStack::full().await;
    api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;

    stack.grant("ada@example.com", "ADMIN").await;
    let granted_by: Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE event_type = 'RoleAssigned'")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(granted_by["actor"], "system");

    let admin = login(&api, "ada@example.com").await;
    let read = api.user(&admin.access, &grace.id, Some(1)).await;
    assert_eq!(read["data"]["user"]["email"], "grace@example.com", "{read}");

    let body = api
        .graphql_as(
            Some(&admin.access),
            UPDATE_PROFILE,
            json!({"input": {"id": grace.id, "displayName": "Grace Hopper"}}),
        )
        .await;
    assert_eq!(
        body["data"]["updateProfile"]["user"]["displayName"], "Grace Hopper",
        "{body}"
    );

    let body = api
        .graphql_as(
            Some(&admin.access),
            ASSIGN,
            json!({"input": {"id": grace.id, "role": "AUDITOR"}}),
        )
        .await;
    let version = body["data"]["assignRole"]["version"]
        .as_i64()
        .expect("a version");
    let read = api.user(&admin.access, &grace.id, Some(version)).await;
    assert_eq!(
        read["data"]["user"]["roles"],
        json!(["AUDITOR", "USER"]),
        "{read}"
    );
}

#[tokio::test]
async fn only_admins_give_roles() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    let grace = api.register("grace@example.com", "Grace").await;
    let body = api
        .graphql_as(
            Some(&grace.access),
            ASSIGN,
            json!({"input": {"id": grace.id, "role": "ADMIN"}}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'RoleAssigned'")
            .await,
        0
    );
}

#[tokio::test]
async fn revoking_a_role_ends_the_users_sessions_and_user_stays() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    api.register("ada@example.com", "Ada").await;
    api.register("grace@example.com", "Grace").await;
    stack.grant("ada@example.com", "ADMIN").await;
    stack.grant("grace@example.com", "AUDITOR").await;
    let admin = login(&api, "ada@example.com").await;
    let auditor = login(&api, "grace@example.com").await;

    let body = api
        .graphql_as(
            Some(&admin.access),
            REVOKE,
            json!({"input": {"id": auditor.id, "role": "AUDITOR"}}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let me = api
        .graphql_as(Some(&auditor.access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED", "{me}");

    let body = api
        .graphql_as(
            Some(&admin.access),
            REVOKE,
            json!({"input": {"id": auditor.id, "role": "USER"}}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
}

const DEACTIVATE: &str =
    "mutation($input: UserRefInput!) { deactivateUser(input: $input) { version } }";
const REACTIVATE: &str =
    "mutation($input: UserRefInput!) { reactivateUser(input: $input) { version } }";
const DELETE: &str = "mutation($input: UserRefInput!) { deleteUser(input: $input) { version } }";

async fn try_login(api: &TestApi, email: &str) -> Value {
    api.graphql(
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
        json!({"e": email, "p": crate::helpers::PASSWORD}),
    )
    .await
}

#[tokio::test]
async fn a_deactivated_user_is_signed_out_until_reactivated() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    stack.grant("ada@example.com", "ADMIN").await;
    let admin = login(&api, "ada@example.com").await;

    let missing_reason = api
        .graphql_as(
            Some(&admin.access),
            DEACTIVATE,
            json!({"input": {"id": grace.id}}),
        )
        .await;
    assert_eq!(
        error_code(&missing_reason),
        "BAD_USER_INPUT",
        "{missing_reason}"
    );
    let by_user = api
        .graphql_as(
            Some(&grace.access),
            DEACTIVATE,
            json!({"input": {"id": admin.id, "reason": "coup"}}),
        )
        .await;
    assert_eq!(error_code(&by_user), "FORBIDDEN", "{by_user}");

    let body = api
        .graphql_as(
            Some(&admin.access),
            DEACTIVATE,
            json!({"input": {"id": grace.id, "reason": "abuse"}}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    // The old access token stops working at once, and so does signing in.
    let me = api
        .graphql_as(Some(&grace.access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED", "{me}");
    assert_eq!(
        error_code(&try_login(&api, "grace@example.com").await),
        "UNAUTHENTICATED"
    );

    let body = api
        .graphql_as(
            Some(&admin.access),
            REACTIVATE,
            json!({"input": {"id": grace.id, "reason": "appeal"}}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(try_login(&api, "grace@example.com").await["errors"].is_null());
}

#[tokio::test]
async fn a_deleted_user_disappears_from_queries_and_frees_the_address() {
    let (stack, api) = TestStack::full().await;
    api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;
    stack.grant("ada@example.com", "ADMIN").await;
    let admin = login(&api, "ada@example.com").await;

    let body = api
        .graphql_as(
            Some(&grace.access),
            DELETE,
            json!({"input": {"id": grace.id}}),
        )
        .await;
    let version = body["data"]["deleteUser"]["version"]
        .as_i64()
        .expect("deleted");
    let read = api.user(&admin.access, &grace.id, Some(version)).await;
    assert!(read["errors"].is_null(), "{read}");
    assert!(read["data"]["user"].is_null(), "{read}");
    assert_eq!(
        error_code(&try_login(&api, "grace@example.com").await),
        "UNAUTHENTICATED"
    );

    // The history stays; the address is free for a new account.
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM events WHERE aggregate_id = '{}'",
                grace.id
            ))
            .await,
        2
    );
    let again = api.register("grace@example.com", "Grace again").await;
    assert_ne!(again.id, grace.id);
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_demoted_deactivated_or_deleted() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    api.register("ada@example.com", "Ada").await;
    api.register("grace@example.com", "Grace").await;
    stack.grant("ada@example.com", "ADMIN").await;
    let ada = login(&api, "ada@example.com").await;

    for (mutation, input) in [
        (REVOKE, json!({"id": ada.id, "role": "ADMIN"})),
        (DEACTIVATE, json!({"id": ada.id, "reason": "leaving"})),
        (DELETE, json!({"id": ada.id})),
    ] {
        let body = api
            .graphql_as(Some(&ada.access), mutation, json!({"input": input}))
            .await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    }

    // With a second admin, the first may step down.
    stack.grant("grace@example.com", "ADMIN").await;
    let body = api
        .graphql_as(
            Some(&ada.access),
            REVOKE,
            json!({"input": {"id": ada.id, "role": "ADMIN"}}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let grace = login(&api, "grace@example.com").await;
    let body = api
        .graphql_as(
            Some(&grace.access),
            DELETE,
            json!({"input": {"id": grace.id}}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let stack = TestStack::new().await;
    let api = stack.api().await;
    api.register("ada@example.com", "Ada").await;
    api.register("grace@example.com", "Grace").await;
    stack.grant("ada@example.com", "ADMIN").await;
    stack.grant("grace@example.com", "ADMIN").await;
    let ada = login(&api, "ada@example.com").await;
    let grace = login(&api, "grace@example.com").await;

    let (a, b) = tokio::join!(
        api.graphql_as(
            Some(&ada.access),
            REVOKE,
            json!({"input": {"id": grace.id, "role": "ADMIN"}})
        ),
        api.graphql_as(
            Some(&grace.access),
            REVOKE,
            json!({"input": {"id": ada.id, "role": "ADMIN"}})
        ),
    );
    let succeeded = [&a, &b].iter().filter(|b| b["errors"].is_null()).count();
    assert_eq!(succeeded, 1, "{a} {b}");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'RoleRevoked'")
            .await,
        1
    );
}

const CHANGE_EMAIL: &str = "mutation($input: ChangeEmailInput!) {
  changeEmail(input: $input) { version user { email } }
}";

#[tokio::test]
async fn an_email_change_changes_nothing_until_confirmed_and_never_tells_a_taken_address() {
    let (stack, api) = TestStack::full().await;
    let ada = api.register("ada@example.com", "Ada").await;
    let grace = api.register("grace@example.com", "Grace").await;

    let taken = api
        .graphql_as(
            Some(&ada.access),
            CHANGE_EMAIL,
            json!({"input": {"id": ada.id, "email": "GRACE@example.com"}}),
        )
        .await;
    assert!(
        taken["errors"].is_null(),
        "a taken address is not told: {taken}"
    );
    let not_hers = api
        .graphql_as(
            Some(&grace.access),
            CHANGE_EMAIL,
            json!({"input": {"id": ada.id, "email": "x@example.com"}}),
        )
        .await;
    assert_eq!(error_code(&not_hers), "FORBIDDEN", "{not_hers}");

    // The address stays until the link mailed to the new one comes back
    // (the mail tests follow it).
    assert_eq!(
        taken["data"]["changeEmail"]["user"]["email"], "ada@example.com",
        "{taken}"
    );
    assert!(try_login(&api, "ada@example.com").await["errors"].is_null());
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'EmailChangeRequested'")
            .await,
        1
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM events WHERE event_type = 'EmailChanged'")
            .await,
        0
    );
}

const USERS: &str = "query($first: Int, $after: String, $filter: UserFilter) {
  users(first: $first, after: $after, filter: $filter) {
    pageInfo { hasNextPage hasPreviousPage }
    edges { cursor node { email displayName status roles } }
  }
}";

#[tokio::test]
async fn admins_and_auditors_page_through_users_in_a_stable_order_with_filters() {
    let (stack, api) = TestStack::full().await;
    let mut emails = Vec::new();
    for name in ["ada", "alan", "grace", "barbara", "edsger"] {
        let email = format!("{name}@example.com");
        api.register(&email, &name.to_uppercase()).await;
        emails.push(email);
    }
    stack.grant("ada@example.com", "ADMIN").await;
    stack.grant("grace@example.com", "AUDITOR").await;
    let admin = login(&api, "ada@example.com").await;
    let auditor = login(&api, "grace@example.com").await;
    let edsger = login(&api, "edsger@example.com").await;
    // Wait until the read side holds everyone with their roles.
    let version_of_grace = 2;
    let grace_id = auditor.id.clone();
    api.user(&admin.access, &grace_id, Some(version_of_grace))
        .await;

    let forbidden = api.graphql_as(Some(&edsger.access), USERS, json!({})).await;
    assert_eq!(error_code(&forbidden), "FORBIDDEN", "{forbidden}");

    // Pages of two, in registration order, from each reader.
    for reader in [&admin, &auditor] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let body = api
                .graphql_as(
                    Some(&reader.access),
                    USERS,
                    json!({"first": 2, "after": after}),
                )
                .await;
            let page = &body["data"]["users"];
            let edges = page["edges"].as_array().unwrap_or_else(|| panic!("{body}"));
            seen.extend(
                edges
                    .iter()
                    .map(|e| e["node"]["email"].as_str().unwrap().to_owned()),
            );
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = edges
                .last()
                .map(|e| e["cursor"].as_str().unwrap().to_owned());
        }
        assert_eq!(seen, emails);
    }

    let filtered = |filter: Value| {
        let api = &api;
        let token = admin.access.clone();
        async move {
            let body = api
                .graphql_as(Some(&token), USERS, json!({"filter": filter}))
                .await;
            body["data"]["users"]["edges"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .map(|e| e["node"]["email"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        filtered(json!({"emailPrefix": "AL"})).await,
        ["alan@example.com"]
    );
    assert_eq!(
        filtered(json!({"displayNamePrefix": "BAR"})).await,
        ["barbara@example.com"]
    );
    assert_eq!(
        filtered(json!({"role": "AUDITOR"})).await,
        ["grace@example.com"]
    );
    assert!(filtered(json!({"emailPrefix": "%"})).await.is_empty());

    // Deleted users leave the list, unless asked for.
    let body = api
        .graphql_as(
            Some(&edsger.access),
            DELETE,
            json!({"input": {"id": edsger.id}}),
        )
        .await;
    let version = body["data"]["deleteUser"]["version"]
        .as_i64()
        .expect("deleted");
    api.user(&admin.access, &edsger.id, Some(version)).await;
    assert!(!filtered(json!({}))
        .await
        .contains(&"edsger@example.com".to_owned()));
    assert_eq!(
        filtered(json!({"status": "DELETED"})).await,
        ["edsger@example.com"]
    );

    let bad = api
        .graphql_as(Some(&admin.access), USERS, json!({"after": "not-a-cursor"}))
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT", "{bad}");
}

#[tokio::test]
async fn the_lookups_of_one_operation_share_one_query() {
    let (stack, api) = TestStack::full().await;
    let mut users = Vec::new();
    for name in ["ada", "alan", "grace", "edsger"] {
        users.push(api.register(&format!("{name}@example.com"), name).await);
    }
    stack.grant("ada@example.com", "ADMIN").await;
    let admin = login(&api, "ada@example.com").await;
    for user in &users {
        api.user(&admin.access, &user.id, Some(1)).await;
    }

    let fields: String = users
        .iter()
        .enumerate()
        .map(|(i, user)| format!("u{i}: user(id: \"{}\") {{ email }}\n", user.id))
        .collect();
    let before = api.user_lookups.get();
    let body = api
        .graphql_as(Some(&admin.access), &format!("{{ {fields} }}"), json!({}))
        .await;

    assert!(body["errors"].is_null(), "{body}");
    for (i, name) in ["ada", "alan", "grace", "edsger"].iter().enumerate() {
        assert_eq!(
            body["data"][format!("u{i}")]["email"],
            format!("{name}@example.com")
        );
    }
    assert_eq!(
        api.user_lookups.get() - before,
        1,
        "four lookups, one query"
    );
}
