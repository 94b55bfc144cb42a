//! Who a command runs for, and the ids that tie it to its request.

use std::collections::HashMap;

use uuid::Uuid;

/// Who caused a command; recorded in every event's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The user acting on their own account without a prior identity (registration).
    SelfService,
    /// An authenticated user.
    User(Uuid),
    /// The system itself (migrations, operators' tools).
    System,
}

impl Actor {
    fn as_metadata(&self) -> String {
        match self {
            Self::SelfService => "self".to_owned(),
            Self::User(id) => id.to_string(),
            Self::System => "system".to_owned(),
        }
    }
}

/// Why and on whose behalf a command runs.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub actor: Actor,
    /// Ties together everything caused by one user intent, across services.
    pub correlation_id: String,
    /// The message that caused this command (here: the request).
    pub causation_id: String,
    /// The HTTP request that carried the command.
    pub request_id: String,
    /// The W3C trace context of that request.
    pub traceparent: String,
}

impl CommandContext {
    /// A context for work the system starts itself, with fresh ids.
    pub fn system() -> Self {
        let id = Uuid::now_v7().to_string();
        Self {
            actor: Actor::System,
            correlation_id: id.clone(),
            causation_id: id.clone(),
            request_id: id,
            traceparent: crate::telemetry::new_traceparent(),
        }
    }

    pub(super) fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("actor".to_owned(), self.actor.as_metadata()),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
            ("request_id".to_owned(), self.request_id.clone()),
            ("traceparent".to_owned(), self.traceparent.clone()),
        ])
    }
}
