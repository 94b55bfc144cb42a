//! `accountable projections rebuild users`: the read table rebuilt from the
//! event store beside the live one, then swapped in atomically while
//! queries go on; the worker then resumes from its Kafka offsets, and its
//! version guard skips whatever the rebuild already applied.

use accountable_projections::users::{reduce, UserRow};
use accountable_vault::Vault;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::events::opened_envelopes;
use crate::store::{self, Bound, CommittedRead, StoredEvent, STORED_EVENT_COLUMNS};
use crate::telemetry;

/// The projections that can be rebuilt.
pub const PROJECTIONS: &[&str] = &["users"];

const PREPARE: &str = "
DROP TABLE IF EXISTS users_rebuild;
CREATE TABLE users_rebuild (LIKE users INCLUDING ALL);";
const SELECT_REBUILT: &str = "
SELECT id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at
  FROM users_rebuild WHERE id = $1";
const SWAP: &str = "
ALTER TABLE users RENAME TO users_replaced;
ALTER TABLE users_rebuild RENAME TO users;
DROP TABLE users_replaced;";
const INDEXES_TO_RENAME: &str =
    "SELECT indexname FROM pg_indexes WHERE tablename = 'users' AND indexname LIKE 'users_rebuild%'";

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuilt {
    pub events: u64,
    pub users: u64,
}

/// A page of the first pass: a user at a time, 2000 events at most.
const PAGE: &str = " ORDER BY aggregate_id, sequence LIMIT 2000";

/// The users' events below `bound`: what the first pass folds.
fn users_below<'a>(bound: &Bound, columns: &str) -> CommittedRead<'a> {
    let mut read = CommittedRead::select_below(columns, bound);
    read.and().push(" AND aggregate_type = 'User'");
    read
}

/// Rebuilds the `users` table from the event store and swaps it in.
pub async fn users(pool: &PgPool, vault: &Vault) -> anyhow::Result<Rebuilt> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql(PREPARE).execute(&mut *conn).await?;
    let bound = Bound::now(&mut *conn).await?;
    let total: i64 = users_below(&bound, "count(*)")
        .fetch_scalar(&mut *conn)
        .await?;
    let progress = telemetry::event_progress(total);

    // First pass: every event that had committed, with all before it, when
    // the rebuild began; beside the live table, which the worker goes on
    // updating.
    let mut rebuilt = Rebuilt::default();
    let mut current: Option<UserRow> = None;
    let mut after = (String::new(), 0_i64);
    loop {
        let mut read = users_below(&bound, STORED_EVENT_COLUMNS);
        read.and()
            .push(" AND (aggregate_id, sequence) > (")
            .push_bind(after.0.clone())
            .push(", ")
            .push_bind(after.1)
            .push(")");
        let page: Vec<StoredEvent> = read.then(PAGE).fetch_all(&mut *conn).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = (last.aggregate_id.clone(), last.sequence);
        let mut rows = Vec::new();
        for envelope in opened_envelopes(vault, &page).await? {
            if current
                .as_ref()
                .is_some_and(|row| row.id != envelope.subject)
            {
                rows.extend(current.take());
            }
            let event = envelope.event()?;
            reduce(&mut current, &envelope, &event);
            rebuilt.events += 1;
        }
        rebuilt.users += u64::try_from(rows.len())?;
        insert(&mut conn, &rows).await?;
        progress.set_position(rebuilt.events);
    }
    rebuilt.users += u64::from(current.is_some());
    insert(&mut conn, &current.into_iter().collect::<Vec<_>>()).await?;
    progress.finish_and_clear();

    // The swap: writers of the live table (the worker) wait; readers go on
    // until the rename, which holds them for its instant. Users with events
    // the first pass could not see are brought up to date first, from the
    // store, so that no row goes back in time.
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE users IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let late = store::streams::users_since(&mut *tx, &bound).await?;
    for user in late {
        let id = Uuid::parse_str(&user)?;
        let mut row: Option<UserRow> = sqlx::query_as(SELECT_REBUILT)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let version = row.as_ref().map_or(0, |r| r.version);
        let events =
            store::streams::user_events_between(&mut *tx, &user, version, i64::MAX).await?;
        for envelope in opened_envelopes(vault, &events).await? {
            let event = envelope.event()?;
            reduce(&mut row, &envelope, &event);
            rebuilt.events += 1;
        }
        if let Some(row) = row {
            sqlx::query("DELETE FROM users_rebuild WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            insert(&mut tx, &[row]).await?;
        }
    }
    sqlx::raw_sql(SWAP).execute(&mut *tx).await?;
    let indexes: Vec<String> = sqlx::query_scalar(INDEXES_TO_RENAME)
        .fetch_all(&mut *tx)
        .await?;
    for index in indexes {
        let renamed = index.replacen("users_rebuild", "users", 1);
        // Identifiers cannot be bound; these come from the catalog.
        sqlx::raw_sql(&format!(
            "ALTER INDEX \"{}\" RENAME TO \"{}\"",
            index.replace('"', "\"\""),
            renamed.replace('"', "\"\"")
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rebuilt)
}

async fn insert(conn: &mut PgConnection, rows: &[UserRow]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "INSERT INTO users_rebuild (id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at) ",
    );
    query.push_values(rows, |mut values, row| {
        values
            .push_bind(row.id)
            .push_bind(row.email.clone())
            .push_bind(row.display_name.clone())
            .push_bind(row.status.as_str())
            .push_bind(row.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>())
            .push_bind(row.locale.clone())
            .push_bind(row.time_zone.clone())
            .push_bind(row.email_verified)
            .push_bind(row.version)
            .push_bind(row.created_at)
            .push_bind(row.updated_at);
    });
    query.build().execute(conn).await?;
    Ok(())
}
