//! The test stack: a fresh database and topic names per test, the real
//! service started on port 0, relay and projection workers started in
//! process or as child processes, and a plain Kafka consumer.
//!
//! PostgreSQL and the broker must be running (scripts/test.sh
//! starts them); a test fails, never skips, when they are not.

mod api;
mod browser;
mod convergence;
mod kafka;
mod mail;
mod stack;
mod wait;

pub use api::*;
pub use browser::*;
pub use convergence::*;
pub use kafka::*;
pub use mail::*;
pub use stack::*;
pub use wait::*;

pub const PASSWORD: &str = "correct horse battery staple";
