//! End-to-end tests against a real PostgreSQL and a real Kafka broker.

mod accounts;
mod audit;
mod auth;
mod bad_input;
mod erasure;
mod factors;
mod faults;
mod helpers;
mod hostile;
mod live;
mod load;
mod mail;
mod pages;
mod passkeys;
mod pipeline;
mod projection;
mod registration;
mod relay;
mod schema;
mod servers;
mod services;
mod sessions;
mod snapshots;
mod traces;
