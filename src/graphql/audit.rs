//! The auditors' part of the schema: histories, the global event stream,
//! accounts at any moment, and verification of the tamper-evident chain.

use async_graphql::{Context, InputObject, Json, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{ApiError, ApiResult, Code};
use super::guards::{caller, has_any, AnyRole, SelfOr};
use super::users::{parse_id_in, PageInfo, User, READERS};
use super::ApiState;
use crate::audit::history::{self, ReadableEvent, StreamFilter};
use crate::audit::{self as chain, Broken};
use crate::auth::Caller;
use crate::store::StreamCursor;

/// One stored event, as auditors read it.
#[derive(SimpleObject)]
pub struct AccountEvent {
    /// Its place in the global order of the store.
    pub position: i64,
    /// The user whose stream it belongs to.
    pub user_id: ID,
    /// Its number in the user's stream: the user's version once applied.
    pub sequence: i64,
    /// The stored event type, e.g. `UserRegistered`.
    pub event_type: String,
    /// The published CloudEvents type, e.g. `accountable.user.registered.v1`.
    pub cloud_event_type: String,
    /// The version of the event's stored schema.
    pub event_version: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who caused it: a user id, `self` (the user, signed out) or `system`.
    pub actor: Option<String>,
    /// The correlation id of the request that caused it.
    pub correlation_id: Option<String>,
    /// The id of what directly caused it.
    pub causation_id: Option<String>,
    /// The id of the HTTP request that caused it.
    pub request_id: Option<String>,
    /// The event's data as published, personal fields opened: secrets such
    /// as password hashes never appear; `personal` is null once erased.
    pub data: Json<serde_json::Value>,
    /// Whether this event's personal fields were erased.
    pub erased: bool,
    /// The SHA-256 chain hash of the stored event, in hex.
    pub hash: String,
    /// The hash of the event before it in its stream; null for the first.
    pub previous_hash: Option<String>,
}

impl From<ReadableEvent> for AccountEvent {
    fn from(event: ReadableEvent) -> Self {
        let meta = |key: &str| event.row.event.metadata[key].as_str().map(str::to_owned);
        Self {
            position: event.row.event.position,
            user_id: ID(event.row.event.aggregate_id.clone()),
            sequence: event.row.event.sequence,
            event_type: event.row.event.event_type.clone(),
            cloud_event_type: event.envelope["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            event_version: event.row.event.event_version.clone(),
            recorded_at: event.row.event.recorded_at,
            actor: meta("actor"),
            correlation_id: meta("correlation_id"),
            causation_id: meta("causation_id"),
            request_id: meta("request_id"),
            data: Json(event.envelope["data"].clone()),
            erased: event.erased,
            hash: event.row.hash,
            previous_hash: event.row.prev_hash,
        }
    }
}

/// A page of events.
#[derive(SimpleObject)]
pub struct EventConnection {
    /// Where this page sits in the whole list.
    page_info: PageInfo,
    /// The events on this page, each with its cursor.
    edges: Vec<EventEdge>,
}

/// An event on a page.
#[derive(SimpleObject)]
pub struct EventEdge {
    /// Pass as `after` to list the events after this one.
    cursor: String,
    /// The event.
    node: AccountEvent,
}

impl EventConnection {
    fn new(
        events: Vec<ReadableEvent>,
        cursor: impl Fn(&ReadableEvent) -> String,
        has_previous_page: bool,
        has_next_page: bool,
    ) -> Self {
        let edges: Vec<EventEdge> = events
            .into_iter()
            .map(|event| EventEdge {
                cursor: cursor(&event),
                node: AccountEvent::from(event),
            })
            .collect();
        Self {
            page_info: PageInfo::new(
                has_next_page,
                has_previous_page,
                edges.first().map(|e| e.cursor.clone()),
                edges.last().map(|e| e.cursor.clone()),
            ),
            edges,
        }
    }
}

/// Narrows `events`; every given field must match.
#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Stored event types, e.g. `["UserRegistered", "RoleAssigned"]`.
    pub types: Option<Vec<String>>,
    /// Who caused them: a user id, `self` or `system`.
    pub actor: Option<String>,
    /// Whose stream they belong to.
    pub user_id: Option<ID>,
    /// Recorded at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before this instant.
    pub until: Option<DateTime<Utc>>,
}

/// The outcome of checking the history.
#[derive(SimpleObject)]
pub struct HistoryVerification {
    /// Whether every event and checkpoint checked out.
    pub ok: bool,
    /// Events whose hash and link were recomputed.
    pub events_checked: i64,
    /// Streams (users) checked.
    pub streams_checked: i64,
    /// Signed checkpoints checked.
    pub checkpoints_checked: i64,
    /// The first break found; null when `ok`.
    pub broken_at: Option<BrokenLink>,
}

/// Where the history first does not hold.
#[derive(SimpleObject)]
pub struct BrokenLink {
    /// The user whose stream is broken, when one is.
    pub user_id: Option<ID>,
    /// The first event that does not check out, when one does not.
    pub sequence: Option<i64>,
    /// The checkpoint that does not hold, or that the store no longer
    /// matches.
    pub checkpoint: Option<i64>,
    /// What is wrong, in words.
    pub reason: String,
}

impl From<Broken> for BrokenLink {
    fn from(broken: Broken) -> Self {
        Self {
            user_id: broken
                .stream
                .as_deref()
                .map(|s| ID(s.rsplit('/').next().unwrap_or(s).to_owned())),
            sequence: broken.sequence,
            checkpoint: broken.checkpoint,
            reason: broken.reason,
        }
    }
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// A user's events in order, a page at a time (the user themself,
    /// auditors, admins). `first` is 1 to 100 (default 20); `after` is the
    /// `cursor` of the last edge of the previous page.
    #[graphql(
        guard = "SelfOr { id: &id, roles: READERS }",
        complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity"
    )]
    async fn user_history(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user.")] id: ID,
        #[graphql(desc = "How many events: 1 to 100, 20 if left out.")] first: Option<i32>,
        #[graphql(desc = "The `cursor` of the last event of the previous page.")] after: Option<
            String,
        >,
    ) -> ApiResult<EventConnection> {
        let state = ctx.data::<ApiState>()?;
        let id = parse_uuid(&id, "id")?;
        let first = page_size(first);
        let after_sequence = parse_cursor(after.as_deref())?;
        let mut events = history::user_events(
            &state.pool,
            &state.vault,
            id,
            after_sequence.unwrap_or(0),
            first + 1,
        )
        .await?;
        let has_next = truncate(&mut events, first);
        Ok(EventConnection::new(
            events,
            |e| e.row.event.sequence.to_string(),
            after_sequence.is_some(),
            has_next,
        ))
    }

    /// Every event of the store in commit order (transaction, then
    /// position: the order the relay publishes), a page at a time
    /// (auditors and admins), narrowed by `filter`. Only events that every
    /// earlier transaction has committed before are listed, so that paging
    /// never skips one that commits late.
    #[graphql(
        guard = "AnyRole(READERS)",
        complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity"
    )]
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many events: 1 to 100, 20 if left out.")] first: Option<i32>,
        #[graphql(desc = "The `cursor` of the last event of the previous page.")] after: Option<
            String,
        >,
        #[graphql(desc = "Which events to list; all if left out.")] filter: Option<EventFilter>,
    ) -> ApiResult<EventConnection> {
        let state = ctx.data::<ApiState>()?;
        let first = page_size(first);
        let after = after
            .map(|cursor| {
                StreamCursor::decode(&cursor).ok_or_else(|| {
                    ApiError::new(Code::BadUserInput, "after: not a cursor of this list")
                        .with("field", "after")
                })
            })
            .transpose()?;
        let filter = filter.unwrap_or_default();
        let stream_filter = StreamFilter {
            types: filter.types,
            actor: filter.actor,
            user_id: filter
                .user_id
                .map(|id| parse_uuid(&id, "filter.userId"))
                .transpose()?,
            from: filter.from,
            until: filter.until,
            ..StreamFilter::default()
        };
        let mut events = history::stream(
            &state.pool,
            &state.vault,
            &stream_filter,
            after.as_ref(),
            first + 1,
        )
        .await?;
        let has_next = truncate(&mut events, first);
        Ok(EventConnection::new(
            events,
            |e| e.row.event.cursor().encode(),
            after.is_some(),
            has_next,
        ))
    }

    /// The account as it was after `version`, or at the instant `at`
    /// (whichever is earlier when both are given; the latest state when
    /// neither is), folded from its events by the read side's own reducer:
    /// what the read side showed then. Null if it was not registered yet.
    /// Personal fields of an erased user are null at every moment.
    #[graphql(guard = "SelfOr { id: &id, roles: READERS }")]
    async fn user_at(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user.")] id: ID,
        #[graphql(desc = "A version (event sequence) of the user.")] version: Option<i64>,
        #[graphql(desc = "An instant.")] at: Option<DateTime<Utc>>,
    ) -> ApiResult<Option<User>> {
        let state = ctx.data::<ApiState>()?;
        let id = parse_uuid(&id, "id")?;
        let row = history::user_at(&state.pool, &state.vault, id, version, at).await?;
        Ok(row.map(User::from))
    }

    /// Recomputes the hash and link of every event and checks the signed
    /// checkpoints against the store: reports the first edited, inserted,
    /// reordered or deleted event, or deleted stream. With `id`, one user's
    /// stream against the latest checkpoint; without, the whole store and
    /// every checkpoint. The user themself may check their own stream;
    /// auditors and admins any, or all. A document may ask for it once (its
    /// cost counts 1,500 of the 2,500 a document may spend).
    #[graphql(complexity = "child_complexity + VERIFICATION_COST")]
    async fn verify_history(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A user, or every user if left out.")] id: Option<ID>,
    ) -> ApiResult<HistoryVerification> {
        let state = ctx.data::<ApiState>()?;
        let user = id.as_ref().map(|id| parse_uuid(id, "id")).transpose()?;
        match caller(ctx) {
            Caller::Anonymous => return Err(ApiError::new(Code::Unauthenticated, "sign in first")),
            Caller::User { id, roles, .. } => {
                if !has_any(roles, READERS) && user != Some(*id) {
                    return Err(ApiError::new(Code::Forbidden, "not allowed"));
                }
            }
        }
        let user = user.map(|id| id.to_string());
        let report = chain::verify(&state.pool, user.as_deref()).await?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(HistoryVerification {
            ok: report.broken.is_none(),
            events_checked: count(report.events),
            streams_checked: count(report.streams),
            checkpoints_checked: count(report.checkpoints),
            broken_at: report.broken.map(BrokenLink::from),
        })
    }
}

/// The complexity of one `verifyHistory`: more than half of a document's.
const VERIFICATION_COST: usize = 1500;

fn page_size(first: Option<i32>) -> i64 {
    i64::from(first.unwrap_or(20).clamp(1, 100))
}

fn parse_uuid(id: &ID, field: &'static str) -> ApiResult<Uuid> {
    parse_id_in(id, field)
}

fn parse_cursor(after: Option<&str>) -> ApiResult<Option<i64>> {
    after
        .map(|cursor| {
            cursor.parse::<i64>().map_err(|_| {
                ApiError::new(Code::BadUserInput, "after: not a cursor of this list")
                    .with("field", "after")
            })
        })
        .transpose()
}

/// Keeps the first `first` and tells whether there were more.
fn truncate<T>(items: &mut Vec<T>, first: i64) -> bool {
    let first = usize::try_from(first).unwrap_or_default();
    let more = items.len() > first;
    items.truncate(first);
    more
}
