//! The event store: the one module that reads and writes `events` and
//! `snapshots`.
//!
//! - [`committed`]: the committed prefix in commit order, the read the
//!   relay, the live feed, audit, export, checkpoints and the rebuild share;
//! - [`streams`]: reads of one user's stream;
//! - [`sealed`]: the write side's repository, which seals personal fields
//!   on the way in and opens them on the way out;
//! - [`upcast`]: stored events of older versions read as today's;
//! - [`backlog`]: what the relay has yet to publish, for the gauges;
//! - [`rewrite`]: the one-time sealing of what older versions kept in clear;
//! - [`stored`]: the row every reader gets;
//! - [`wake`]: the wake-up sent after a commit of events.
//!
//! The table's own rules (positions, the hash chain, ending sessions with
//! their event) are its triggers', in `migrations/`.

pub mod backlog;
pub mod committed;
pub mod rewrite;
pub mod sealed;
pub mod stored;
pub mod streams;
pub mod upcast;
pub mod wake;

pub use committed::{Bound, CommittedRead, StreamCursor};
pub use sealed::{variant_fields, SealedRepository};
pub use stored::{AuditRow, ChainedEvent, StoredEvent, AUDIT_ROW_COLUMNS, STORED_EVENT_COLUMNS};
pub use streams::StoreHistory;
