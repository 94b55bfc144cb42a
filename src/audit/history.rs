//! The event store as auditors read it: a user's history, the global
//! stream with filters, and an account folded to any version or instant.

use accountable_projections::users::{reduce, UserRow};
use accountable_vault::{is_sealed, EventFields, Vault, PERSONAL};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::events::opened_envelopes;
use crate::store::{self, CommittedRead, StoredEvent, StreamCursor, AUDIT_ROW_COLUMNS};

pub use crate::store::AuditRow;

/// An event in its public form with its personal fields opened: `erased`
/// when they were sealed with a key that is gone.
#[derive(Debug, Clone)]
pub struct ReadableEvent {
    pub row: AuditRow,
    pub envelope: Value,
    pub erased: bool,
}

/// Narrows the global stream; every given field must match.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    /// Stored event types, e.g. `UserRegistered`.
    pub types: Option<Vec<String>>,
    /// A user id, `self` or `system`.
    pub actor: Option<String>,
    pub user_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Positions from this one on.
    pub from_position: Option<i64>,
    /// Positions up to this one.
    pub to_position: Option<i64>,
}

/// Appends ` AND …` for each filter given.
pub fn push_filters(query: &mut QueryBuilder<'_, Postgres>, filter: &StreamFilter) {
    if let Some(types) = &filter.types {
        query
            .push(" AND event_type = ANY(")
            .push_bind(types.clone())
            .push(")");
    }
    if let Some(actor) = &filter.actor {
        query
            .push(" AND metadata ->> 'actor' = ")
            .push_bind(actor.clone());
    }
    if let Some(user_id) = filter.user_id {
        query
            .push(" AND aggregate_id = ")
            .push_bind(user_id.to_string());
    }
    if let Some(from) = filter.from {
        query.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(until) = filter.until {
        query.push(" AND recorded_at < ").push_bind(until);
    }
    if let Some(from) = filter.from_position {
        query.push(" AND position >= ").push_bind(from);
    }
    if let Some(to) = filter.to_position {
        query.push(" AND position <= ").push_bind(to);
    }
}

/// The user's events after sequence `after`, at most `limit`.
pub async fn user_events(
    pool: &PgPool,
    vault: &Vault,
    user_id: Uuid,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<ReadableEvent>> {
    let rows = store::streams::user_page(pool, user_id, after, limit).await?;
    readable(vault, rows).await
}

/// Events after `after` in commit order (transaction id, then position: the
/// order the relay publishes), at most `limit`. Only events whose
/// transaction and every earlier one have committed are listed, so that a
/// page boundary never skips an event that commits late. Each filter has
/// its own index in that order.
pub async fn stream(
    pool: &PgPool,
    vault: &Vault,
    filter: &StreamFilter,
    after: Option<&StreamCursor>,
    limit: i64,
) -> anyhow::Result<Vec<ReadableEvent>> {
    let rows = committed_rows(pool, filter, after, limit).await?;
    readable(vault, rows).await
}

/// The rows of [`stream`], before they are opened.
async fn committed_rows(
    pool: &PgPool,
    filter: &StreamFilter,
    after: Option<&StreamCursor>,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    let mut read = CommittedRead::select(AUDIT_ROW_COLUMNS).after(after);
    push_filters(read.and(), filter);
    read.in_commit_order(Some(limit)).fetch_all(pool).await
}

/// A page of [`stream`] for a follower that must not stop at an event it
/// cannot read (the live feed): such events are left out and answered
/// apart, and the cursor is that of the last row read, readable or not.
pub struct FollowedPage {
    pub events: Vec<ReadableEvent>,
    /// `(position, why)` of each event left out.
    pub unreadable: Vec<(i64, String)>,
    pub cursor: Option<StreamCursor>,
    /// Rows read: fewer than the limit means the end was reached.
    pub read: usize,
}

/// Every event after `after`, in commit order, as [`FollowedPage`]s.
pub async fn follow(
    pool: &PgPool,
    vault: &Vault,
    after: Option<&StreamCursor>,
    limit: i64,
) -> anyhow::Result<FollowedPage> {
    let rows = committed_rows(pool, &StreamFilter::default(), after, limit).await?;
    let read = rows.len();
    let cursor = rows.last().map(|row| row.event.cursor());
    let (readable_rows, unreadable): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .map(|row| match check_readable(&row) {
            Ok(()) => Ok(row),
            Err(why) => Err((row.event.position, why)),
        })
        .partition(Result::is_ok);
    let rows = readable_rows.into_iter().filter_map(Result::ok).collect();
    Ok(FollowedPage {
        events: readable(vault, rows).await?,
        unreadable: unreadable.into_iter().filter_map(Result::err).collect(),
        cursor,
        read,
    })
}

/// Whether [`readable`] can read `row`, or why not.
fn check_readable(row: &AuditRow) -> Result<(), String> {
    row.event.envelope().map_err(|error| error.to_string())?;
    Uuid::parse_str(&row.event.aggregate_id).map_err(|_| "its user id is not a UUID".to_owned())?;
    Ok(())
}

/// The account as the read side showed it after `version`, or at instant
/// `at` (both: whichever is earlier): the user's events folded by the
/// projection's own reducer. `None` if not registered by then.
pub async fn user_at(
    pool: &PgPool,
    vault: &Vault,
    user_id: Uuid,
    version: Option<i64>,
    at: Option<DateTime<Utc>>,
) -> anyhow::Result<Option<UserRow>> {
    let rows = store::streams::user_until(pool, user_id, version, at).await?;
    let events: Vec<StoredEvent> = rows.into_iter().map(|row| row.event).collect();
    let mut row = None;
    for envelope in opened_envelopes(vault, &events).await? {
        let applied = envelope.event()?;
        reduce(&mut row, &envelope, &applied);
    }
    Ok(row)
}

/// The public envelopes of `rows`, their sealed fields opened.
async fn readable(vault: &Vault, rows: Vec<AuditRow>) -> anyhow::Result<Vec<ReadableEvent>> {
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let envelope = row.event.envelope()?;
        let sealed = envelope["data"].get(PERSONAL).is_some_and(is_sealed);
        events.push(ReadableEvent {
            row,
            envelope,
            erased: sealed,
        });
    }
    let mut fields: Vec<EventFields<'_>> = Vec::with_capacity(events.len());
    for event in &mut events {
        let user_id = Uuid::parse_str(&event.row.event.aggregate_id)?;
        let sequence = event.row.event.sequence;
        if let Some(data) = event.envelope["data"].as_object_mut() {
            fields.push(EventFields {
                user_id,
                sequence,
                fields: data,
            });
        }
    }
    vault.unseal(&mut fields).await?;
    drop(fields);
    for event in &mut events {
        // Sealed before, null now: the key is gone.
        event.erased = event.erased && event.envelope["data"][PERSONAL].is_null();
    }
    Ok(events)
}
