//! Mail: the messages that account events call for (verification links,
//! reset links, notices), kept in an outbox on the event store and sent by
//! the `mailer` process over SMTP (lettre).

pub mod deliveries;
mod mailer;
pub mod messages;

pub use mailer::{Mailer, MailerConfig, Transport};
