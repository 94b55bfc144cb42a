//! Crash points, for the fault tests: with `ACCOUNTABLE_CRASH_AT=<point>`
//! the process aborts the first time it reaches that point, with no
//! cleanup, as `kill -9` would. Without the variable a point does nothing.
//!
//! The points (each named where it sits):
//! - `relay.before_ack`: the batch handed to the producer, not yet acknowledged;
//! - `relay.after_ack`: every message acknowledged, the cursor not yet moved;
//! - `project.before_commit`: the batch applied in the open transaction;
//! - `project.after_commit`: the transaction committed, the Kafka offsets not.

use std::sync::OnceLock;

/// The environment variable that names the point to crash at.
pub const CRASH_AT: &str = "ACCOUNTABLE_CRASH_AT";

/// Aborts the process if `CRASH_AT` names `point`.
pub fn point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT.get_or_init(|| std::env::var(CRASH_AT).ok()).as_deref() == Some(point) {
        tracing::error!(point, "crashing on purpose ({CRASH_AT})");
        std::process::abort();
    }
}
