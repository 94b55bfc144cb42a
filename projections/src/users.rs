//! The `users` read table: one row per account, current state only.

use accountable_domain::{Role, UnknownName, UserStatus};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::contract::{AccountEvent, Envelope};

/// A row of `users`. `version` is the sequence of the last event applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UserRow {
    pub id: Uuid,
    /// `None` once the user is erased.
    pub email: Option<String>,
    /// `None` once the user is erased.
    pub display_name: Option<String>,
    pub status: UserStatus,
    /// In the order of their names.
    pub roles: Vec<Role>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    /// Whether the owner proved the address.
    pub email_verified: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row as the table stores it: status and roles as text.
#[derive(sqlx::FromRow)]
struct StoredRow {
    id: Uuid,
    email: Option<String>,
    display_name: Option<String>,
    status: String,
    roles: Vec<String>,
    locale: Option<String>,
    time_zone: Option<String>,
    email_verified: bool,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for UserRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        let stored = StoredRow::from_row(row)?;
        let unknown = |error: UnknownName| sqlx::Error::Decode(Box::new(error));
        Ok(Self {
            id: stored.id,
            email: stored.email,
            display_name: stored.display_name,
            status: stored.status.parse().map_err(unknown)?,
            roles: stored
                .roles
                .iter()
                .map(|role| role.parse())
                .collect::<Result<_, _>>()
                .map_err(unknown)?,
            locale: stored.locale,
            time_zone: stored.time_zone,
            email_verified: stored.email_verified,
            version: stored.version,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        })
    }
}

/// What applying one event to a row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already applied (`sequence <= version`): a re-delivery.
    Duplicate,
    /// Events between the row's version and this one are missing.
    Gap {
        after: i64,
    },
}

/// The reducer: applies one event to the row of its user, if it is the next.
pub fn reduce(row: &mut Option<UserRow>, envelope: &Envelope, event: &AccountEvent) -> Outcome {
    let version = row.as_ref().map_or(0, |r| r.version);
    if envelope.sequence <= version {
        return Outcome::Duplicate;
    }
    if envelope.sequence > version + 1 {
        return Outcome::Gap { after: version };
    }
    match (event, row.as_mut()) {
        (AccountEvent::ServiceAccountCreated(e), _) => {
            *row = Some(UserRow {
                id: envelope.subject,
                email: None,
                display_name: Some(e.name.clone()),
                status: UserStatus::Active,
                roles: sorted(e.roles.clone()),
                locale: None,
                time_zone: None,
                email_verified: false,
                version: envelope.sequence,
                created_at: envelope.time,
                updated_at: envelope.time,
            });
        }
        (AccountEvent::Registered(e), _) => {
            *row = Some(UserRow {
                id: envelope.subject,
                email: e.personal.as_ref().map(|p| p.email.clone()),
                display_name: e.personal.as_ref().map(|p| p.display_name.clone()),
                status: e.status,
                roles: sorted(e.roles.clone()),
                locale: None,
                time_zone: None,
                email_verified: e.email_verified,
                version: envelope.sequence,
                created_at: envelope.time,
                updated_at: envelope.time,
            });
        }
        // Sign-in activity leaves the account as it was: only its version moves.
        (
            AccountEvent::LoginAttempted(_)
            | AccountEvent::LoginSucceeded(_)
            | AccountEvent::Locked(_)
            | AccountEvent::Unlocked(_)
            | AccountEvent::PasswordRehashed
            | AccountEvent::PasswordChanged
            | AccountEvent::PasswordReset(_)
            | AccountEvent::MailRequested(_)
            | AccountEvent::SecondFactor(_)
            | AccountEvent::ClientSecret(_),
            Some(row),
        ) => row.version = envelope.sequence,
        (AccountEvent::EmailVerified(_), Some(row)) => {
            row.email_verified = true;
            row.version = envelope.sequence;
            row.updated_at = envelope.time;
        }
        (AccountEvent::EmailChanged(e), Some(row)) => {
            if let Some(personal) = &e.personal {
                row.email = Some(personal.email.clone());
            }
            row.version = envelope.sequence;
            row.updated_at = envelope.time;
        }
        (AccountEvent::Erased(_), Some(row)) => {
            row.email = None;
            row.display_name = None;
            row.locale = None;
            row.time_zone = None;
            set_status(row, UserStatus::Erased, envelope);
        }
        (AccountEvent::Deactivated, Some(row)) => {
            set_status(row, UserStatus::Deactivated, envelope)
        }
        (AccountEvent::Reactivated, Some(row)) => set_status(row, UserStatus::Active, envelope),
        (AccountEvent::Deleted, Some(row)) => set_status(row, UserStatus::Deleted, envelope),
        (AccountEvent::RoleAssigned(e), Some(row)) => {
            if !row.roles.contains(&e.role) {
                row.roles.push(e.role);
                row.roles.sort_by_key(|role| role.as_str());
            }
            row.version = envelope.sequence;
            row.updated_at = envelope.time;
        }
        (AccountEvent::RoleRevoked(e), Some(row)) => {
            row.roles.retain(|r| *r != e.role);
            row.version = envelope.sequence;
            row.updated_at = envelope.time;
        }
        (AccountEvent::ProfileUpdated(e), Some(row)) => {
            if let Some(changed) = &e.personal {
                if changed.display_name.is_some() {
                    row.display_name.clone_from(&changed.display_name);
                }
                if changed.locale.is_some() {
                    row.locale.clone_from(&changed.locale);
                }
                if changed.time_zone.is_some() {
                    row.time_zone.clone_from(&changed.time_zone);
                }
            }
            row.version = envelope.sequence;
            row.updated_at = envelope.time;
        }
        // Anything but a registration as a user's first event.
        (_, None) => return Outcome::Gap { after: 0 },
    }
    Outcome::Applied
}

/// Roles in the order of their names, as the table has always kept them.
fn sorted(mut roles: Vec<Role>) -> Vec<Role> {
    roles.sort_by_key(|role| role.as_str());
    roles.dedup();
    roles
}

fn set_status(row: &mut UserRow, status: UserStatus, envelope: &Envelope) {
    row.status = status;
    row.version = envelope.sequence;
    row.updated_at = envelope.time;
}

const SELECT_FOR_UPDATE: &str = "
SELECT id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at
  FROM users WHERE id = ANY($1) FOR UPDATE";

/// Writes rows, in one statement, each unless the table already holds the
/// same or a later version of it, so that concurrent or repeated writers can
/// never move a row backwards.
const UPSERT: &str = "
INSERT INTO users (id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at)
SELECT id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at
  FROM jsonb_to_recordset($1) AS r(id uuid, email text, display_name text, status text,
       roles text[], locale text, time_zone text, email_verified boolean, version bigint,
       created_at timestamptz, updated_at timestamptz)
ON CONFLICT (id) DO UPDATE SET
    email = EXCLUDED.email,
    display_name = EXCLUDED.display_name,
    status = EXCLUDED.status,
    roles = EXCLUDED.roles,
    locale = EXCLUDED.locale,
    time_zone = EXCLUDED.time_zone,
    email_verified = EXCLUDED.email_verified,
    version = EXCLUDED.version,
    updated_at = EXCLUDED.updated_at
WHERE users.version < EXCLUDED.version";

const SELECT_MANY: &str = "
SELECT id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at
  FROM users WHERE id = ANY($1)";

pub async fn load_for_update(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(SELECT_FOR_UPDATE)
        .bind(ids)
        .fetch_all(conn)
        .await
}

/// Writes the rows of one batch in one statement (see [`UPSERT`]).
pub async fn save(conn: &mut PgConnection, rows: &[&UserRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(UPSERT)
        .bind(sqlx::types::Json(rows))
        .execute(conn)
        .await?;
    Ok(())
}

/// What to list: each field narrows the list; prefixes are matched as
/// typed (case-insensitively for emails).
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
    pub email_prefix: Option<String>,
    pub display_name_prefix: Option<String>,
}

/// Users in id order (ids are UUIDv7, so: in order of registration) after
/// `after`, at most `limit`; deleted and erased users only when asked for
/// by status.
const LIST: &str = "
SELECT id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at
  FROM users
 WHERE ($1::uuid IS NULL OR id > $1)
   AND (CASE WHEN $2::text IS NULL THEN status NOT IN ('DELETED', 'ERASED') ELSE status = $2 END)
   AND ($3::text IS NULL OR $3 = ANY(roles))
   AND ($4::text IS NULL OR lower(email) LIKE $4 ESCAPE '\\')
   AND ($5::text IS NULL OR display_name LIKE $5 ESCAPE '\\')
 ORDER BY id
 LIMIT $6";

/// A page of users, with keyset pagination (no offset scans).
pub async fn list(
    pool: &PgPool,
    filter: &ListFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<UserRow>, sqlx::Error> {
    let prefix = |p: &Option<String>| p.as_deref().map(|p| format!("{}%", escape_like(p)));
    sqlx::query_as(LIST)
        .bind(after)
        .bind(filter.status.map(UserStatus::as_str))
        .bind(filter.role.map(Role::as_str))
        .bind(prefix(
            &filter.email_prefix.as_ref().map(|p| p.to_lowercase()),
        ))
        .bind(prefix(&filter.display_name_prefix))
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// `input` as a literal in a LIKE pattern.
fn escape_like(input: &str) -> String {
    input
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The rows of those of `ids` that have one, deleted users included, in no
/// particular order.
pub async fn find_many(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(SELECT_MANY).bind(ids).fetch_all(pool).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(sequence: i64, value: serde_json::Value) -> Envelope {
        let mut raw = json!({
            "id": format!("0190a3c2-0000-7000-8000-000000000001/{sequence}"),
            "type": "accountable.user.registered.v1",
            "subject": "0190a3c2-0000-7000-8000-000000000001",
            "time": "2026-11-21T10:00:00Z",
            "sequence": sequence,
            "position": 7,
            "data": {
                "personal": {"email": "ada@example.com", "display_name": "Ada"},
                "roles": ["USER"],
                "status": "ACTIVE"
            }
        });
        if let (Some(raw), Some(extra)) = (raw.as_object_mut(), value.as_object()) {
            raw.extend(extra.clone());
        }
        Envelope::from_slice(raw.to_string().as_bytes()).unwrap()
    }

    fn apply(row: &mut Option<UserRow>, env: &Envelope) -> Outcome {
        reduce(row, env, &env.event().unwrap())
    }

    #[test]
    fn registered_creates_the_row_at_version_one() {
        let mut row = None;
        let env = envelope(1, json!({}));
        assert_eq!(apply(&mut row, &env), Outcome::Applied);
        let row = row.unwrap();
        assert_eq!(row.email.as_deref(), Some("ada@example.com"));
        assert_eq!(row.display_name.as_deref(), Some("Ada"));
        assert_eq!(row.status, UserStatus::Active);
        assert_eq!(row.roles, vec![Role::User]);
        assert_eq!(row.version, 1);
        assert_eq!(row.created_at, env.time);
    }

    #[test]
    fn a_redelivered_event_is_a_duplicate_and_changes_nothing() {
        let mut row = None;
        let env = envelope(1, json!({}));
        apply(&mut row, &env);
        let before = row.clone();
        let again = envelope(
            1,
            json!({"data": {
            "personal": {"email": "other@example.com", "display_name": "Other"},
            "roles": ["USER"], "status": "ACTIVE"}}),
        );
        assert_eq!(apply(&mut row, &again), Outcome::Duplicate);
        assert_eq!(row, before);
    }

    #[test]
    fn an_event_past_the_next_sequence_is_a_gap() {
        let mut row = None;
        assert_eq!(
            apply(&mut row, &envelope(3, json!({}))),
            Outcome::Gap { after: 0 }
        );
        assert!(row.is_none());
    }

    #[test]
    fn sign_in_activity_moves_only_the_version() {
        let mut row = None;
        apply(&mut row, &envelope(1, json!({})));
        let before = row.clone().unwrap();
        let attempted = envelope(
            2,
            json!({
            "type": "accountable.user.login_attempted.v1",
            "time": "2026-11-21T11:00:00Z",
            "data": {"at": "2026-11-21T11:00:00Z", "failures": 1}}),
        );
        assert_eq!(apply(&mut row, &attempted), Outcome::Applied);
        assert_eq!(
            row,
            Some(UserRow {
                version: 2,
                ..before
            })
        );
    }

    #[test]
    fn a_profile_update_changes_only_what_it_names() {
        let mut row = None;
        apply(&mut row, &envelope(1, json!({})));
        let updated = envelope(
            2,
            json!({
            "type": "accountable.user.profile_updated.v1",
            "time": "2026-11-21T12:00:00Z",
            "data": {"personal": {"display_name": null, "locale": "en-GB", "time_zone": null}}}),
        );
        assert_eq!(apply(&mut row, &updated), Outcome::Applied);
        let row = row.unwrap();
        assert_eq!(row.display_name.as_deref(), Some("Ada"));
        assert_eq!(row.locale.as_deref(), Some("en-GB"));
        assert_eq!(row.time_zone, None);
        assert_eq!((row.version, row.updated_at), (2, updated.time));
    }

    #[test]
    fn like_patterns_take_user_input_literally() {
        assert_eq!(escape_like(r"100%_a\b"), r"100\%\_a\\b");
    }

    #[test]
    fn sign_in_activity_before_registration_is_a_gap() {
        let mut row = None;
        let succeeded = envelope(
            1,
            json!({
            "type": "accountable.user.login_succeeded.v1",
            "data": {"at": "2026-11-21T11:00:00Z"}}),
        );
        assert_eq!(apply(&mut row, &succeeded), Outcome::Gap { after: 0 });
    }

    #[test]
    fn unknown_types_and_malformed_data_are_contract_errors() {
        let unknown = envelope(1, json!({"type": "accountable.user.teleported.v1"}));
        assert!(matches!(
            unknown.event(),
            Err(crate::contract::ContractError::UnknownType(_))
        ));
        let malformed = envelope(1, json!({"data": {"roles": "USER"}}));
        assert!(matches!(
            malformed.event(),
            Err(crate::contract::ContractError::Data { .. })
        ));
        assert!(Envelope::from_slice(b"{not json").is_err());
    }

    #[test]
    fn erasure_drops_every_personal_field_and_replays_to_the_same_row() {
        let erased = envelope(
            3,
            json!({
            "type": "accountable.user.erased.v1",
            "time": "2026-11-21T13:00:00Z",
            "data": {"fields": ["email", "display_name"], "through_sequence": 2,
                     "status": "ACTIVE", "roles": ["USER"]}}),
        );
        let profile = |personal: serde_json::Value| {
            envelope(
                2,
                json!({"type": "accountable.user.profile_updated.v1",
                       "data": {"personal": personal}}),
            )
        };
        let mut live = None;
        apply(&mut live, &envelope(1, json!({})));
        apply(
            &mut live,
            &profile(json!({"display_name": null, "locale": "en-GB", "time_zone": null})),
        );
        assert_eq!(apply(&mut live, &erased), Outcome::Applied);

        // A rebuild after the erasure reads the earlier events' personal
        // fields as null (their key is gone).
        let mut rebuilt = None;
        apply(
            &mut rebuilt,
            &envelope(
                1,
                json!({"data": {"personal": null,
            "roles": ["USER"], "status": "ACTIVE"}}),
            ),
        );
        apply(&mut rebuilt, &profile(serde_json::Value::Null));
        apply(&mut rebuilt, &erased);

        let live = live.unwrap();
        assert_eq!(
            (
                live.email.as_deref(),
                live.display_name.as_deref(),
                live.locale.as_deref()
            ),
            (None, None, None)
        );
        assert_eq!(live.status, UserStatus::Erased);
        assert_eq!(rebuilt.unwrap(), live);
    }
}
