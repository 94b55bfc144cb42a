//! Accountable: an event-sourced CQRS account system.
//!
//! A GraphQL mutation runs a command on a `User` aggregate (cqrs-es), whose
//! events are appended to PostgreSQL; the relay publishes committed events
//! to Kafka; projection workers (the `accountable-projections` crate) build
//! read tables from Kafka; GraphQL queries read those tables.
//!
//! - `accountable-domain` (the `domain/` crate): the `User` aggregate, its
//!   commands, events, values and policies, without I/O.
//! - [`commands`]: the one command service every change goes through, and
//!   password hashing.
//! - [`store`]: the event store, the one module that reads and writes
//!   `events`.
//! - [`events`]: stored events in their published (CloudEvents) form.
//! - [`relay`]: event store → Kafka, in commit order, at least once.
//! - [`audit`]: the hash chain of the event store, signed checkpoints,
//!   and their verification.
//! - [`rebuild`]: a read table rebuilt from the event store and swapped in.
//! - [`state`]: the compacted topic of every user's latest state.
//! - [`shredding`]: the vault (the `accountable-vault` crate) that seals
//!   personal data in events, and the migration of data stored in clear.
//! - [`graphql`]: the schema, its resolvers and client-facing errors.
//! - [`http`]: the axum server around the schema; [`graphiql`] its
//!   development page, served whole from the binary.
//! - [`startup`]: the composition root: the API, `relay`, `project` and
//!   `dev` built from the configuration, with one shutdown; [`background`]
//!   the loops it waits for.
//! - [`observe`]: the Prometheus metrics endpoint.
//! - [`pages`]: the account pages and the console, built from `web/` and
//!   embedded.
//! - [`config`], [`db`], [`kafka`], [`telemetry`]: plumbing.

pub mod audit;
pub mod auth;
pub mod background;
pub mod commands;
pub mod config;
pub mod db;
pub mod events;
pub mod graphiql;
pub mod graphql;
pub mod http;
pub mod kafka;
pub mod mail;
mod oauth;
pub mod observe;
pub mod pages;
pub mod rebuild;
pub mod relay;
pub mod shredding;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
