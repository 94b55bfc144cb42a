//! Accountable's projections: Kafka consumers that build read tables from
//! the public event contract, as any downstream service would.
//!
//! - [`crash`]: crash points for the fault tests.
//! - [`contract`]: the envelope and event data as published on Kafka.
//! - [`users`]: the `users` read table: its row, its reducer, its queries.
//! - [`worker`]: the consumer-group loop that applies batches in one
//!   PostgreSQL transaction and commits offsets afterwards.

pub mod contract;
pub mod crash;
pub mod trace;
pub mod users;
pub mod worker;
