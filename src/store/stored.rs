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

/// A stored event with its place in the chain.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    #[sqlx(flatten)]
    pub event: StoredEvent,
    pub hash: String,
    pub prev_hash: Option<String>,
}

/// The columns of an [`AuditRow`], for building static queries.
macro_rules! audit_row_columns {
    () => {
        concat!(
            stored_event_columns!(),
            ", encode(hash, 'hex') AS hash, encode(prev_hash, 'hex') AS prev_hash"
        )
    };
}
pub(crate) use audit_row_columns;

/// The columns of an [`AuditRow`], for a [`super::CommittedRead`].
pub const AUDIT_ROW_COLUMNS: &str = audit_row_columns!();

/// The columns of an event that its hash covers, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainedEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub position: i64,
    /// `recorded_at` in microseconds since the Unix epoch.
    pub recorded_micros: i64,
    /// The stored text of the payload (ciphertext for sealed fields).
    pub payload: String,
    /// The stored text of the metadata.
    pub metadata: String,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Vec<u8>,
}

/// The columns of a [`ChainedEvent`], for building static queries.
macro_rules! chained_event_columns {
    () => {
        "aggregate_type, aggregate_id, sequence, event_type, event_version, position, \
         (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_micros, \
         payload::text AS payload, metadata::text AS metadata, prev_hash, hash"
    };
}
pub(crate) use chained_event_columns;
