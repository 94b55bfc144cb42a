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

/// Longest user agent kept, in characters.
const MAX_USER_AGENT_CHARS: usize = 256;

/// Where a request came from: kept with the session it starts, shown to
/// its user, never written to an event.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
}

impl Origin {
    /// The client's address and the first [`MAX_USER_AGENT_CHARS`]
    /// printable characters of its user agent.
    pub fn new(client: std::net::IpAddr, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent
            .map(|agent| {
                agent
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_CHARS)
                    .collect::<String>()
            })
            .filter(|agent| !agent.trim().is_empty());
        Self {
            client_address: Some(client.to_string()),
            user_agent,
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
    /// Where that request came from.
    pub origin: Origin,
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
            origin: Origin::default(),
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
