//! The row of `events`, as readers of the store get it.

use chrono::{DateTime, Utc};

use super::committed::StreamCursor;

/// One row of `events`, with the columns PostgreSQL fills itself.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub position: i64,
    /// The writing transaction's xid8, as text (sqlx has no xid8 type).
    pub transaction_id: String,
    pub recorded_at: DateTime<Utc>,
}

/// The columns of a [`StoredEvent`], for building static queries.
macro_rules! stored_event_columns {
    () => {
        "aggregate_id, sequence, event_type, event_version, payload, metadata, position, \
         transaction_id::text AS transaction_id, recorded_at"
    };
}
pub(crate) use stored_event_columns;

/// The columns of a [`StoredEvent`], for a [`super::CommittedRead`].
pub const STORED_EVENT_COLUMNS: &str = stored_event_columns!();

impl StoredEvent {
    /// The event's place in commit order.
    pub fn cursor(&self) -> StreamCursor {
        StreamCursor {
            transaction_id: self.transaction_id.clone(),
            position: self.position,
        }
    }
}
