//! The GraphQL API: one schema, split by feature, over the read tables and
//! the command service.

pub mod audit;
pub mod cookie;
pub mod document;
pub mod error;
pub mod feed;
pub mod freshness;
pub mod guards;
pub mod live;
pub mod loader;
pub mod pipeline;
pub mod services;
pub mod socket;
pub mod timing;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{MergedObject, Schema, SchemaBuilder};
use sqlx::PgPool;

use crate::auth::ratelimit::ClientLimiter;
use crate::auth::Auth;
use crate::config::Environment;
use freshness::ProjectionWatch;

/// What can be read: the caller's account and history and, for admins and
/// auditors, everyone's, at any moment, with the history's verification.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    users::UserQuery,
    users::SessionQuery,
    users::FactorQuery,
    users::PasskeyQuery,
    services::ServiceQuery,
    audit::AuditQuery,
    pipeline::PipelineQuery,
);

/// Every change to accounts and sessions. Each answers its errors with
/// `extensions.code`, and writes nothing when it fails.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    users::UserMutation,
    users::LinkMutation,
    users::FactorMutation,
    users::PasskeyMutation,
    services::ServiceMutation,
    users::SessionMutation,
    pipeline::PipelineMutation,
);

pub type AppSchema = Schema<QueryRoot, MutationRoot, live::SubscriptionRoot>;

/// What resolvers share for the life of the process.
pub struct ApiState {
    pub pool: PgPool,
    pub auth: Arc<Auth>,
    pub limiter: Arc<ClientLimiter>,
    pub freshness: ProjectionWatch,
    /// Every read of a user row goes through it.
    pub users: loader::Users,
    /// Opens sealed personal fields for auditors.
    pub vault: Arc<accountable_vault::Vault>,
    /// Committed events, live, for subscriptions.
    pub feed: feed::EventFeed,
    pub read_your_writes_timeout: Duration,
    /// The events topic, whose relay and projection lag the pipeline's
    /// health tells.
    pub events_topic: String,
}

/// What resolvers know of the HTTP request that carries the operation.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub correlation_id: String,
    /// The W3C `traceparent` the request came with, or a new one.
    pub traceparent: String,
    /// The client: the connection's peer, or the address a trusted proxy
    /// names.
    pub client: IpAddr,
    /// Its `User-Agent`, shown with the sessions it starts.
    pub user_agent: Option<String>,
}

impl RequestMeta {
    /// Where the request came from, for the sessions it starts.
    pub fn origin(&self) -> crate::commands::Origin {
        crate::commands::Origin::new(self.client, self.user_agent.as_deref())
    }
}

/// The schema with its validation limits, before any data is attached.
pub fn schema_builder(
    env: Environment,
) -> SchemaBuilder<QueryRoot, MutationRoot, live::SubscriptionRoot> {
    let builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        live::SubscriptionRoot,
    )
    .limit_depth(10)
    .limit_complexity(2500)
    .limit_directives(5)
    .extension(socket::SocketOperations)
    .extension(timing::FieldTiming);
    match env {
        Environment::Development => builder.extension(document::DocumentGuard {
            introspection: true,
        }),
        Environment::Production => builder
            .disable_introspection()
            .disable_suggestions()
            .extension(document::DocumentGuard {
                introspection: false,
            }),
    }
}

pub fn build_schema(env: Environment, state: ApiState) -> AppSchema {
    schema_builder(env).data(state).finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    schema_builder(Environment::Development).finish().sdl()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const INTROSPECTION: &str = "{ __schema { types {
        name description
        fields(includeDeprecated: true) { name description args { name description } }
        inputFields { name description }
        enumValues(includeDeprecated: true) { name description }
    } } }";

    fn described(item: &Value) -> bool {
        item["description"]
            .as_str()
            .is_some_and(|text| !text.trim().is_empty())
    }

    /// The names of the types, fields, arguments and enum values of the
    /// public API that have no description.
    fn undescribed(schema: &Value) -> Vec<String> {
        let mut missing = Vec::new();
        let types = schema["__schema"]["types"].as_array().into_iter().flatten();
        // `ID` is the specification's own scalar; async-graphql gives it no
        // description and takes none.
        let ours = |ty: &&Value| {
            let name = ty["name"].as_str().unwrap_or("__");
            !name.starts_with("__") && name != "ID"
        };
        for ty in types.filter(ours) {
            let name = ty["name"].as_str().unwrap_or_default();
            if !described(ty) {
                missing.push(name.to_owned());
            }
            for list in ["fields", "inputFields", "enumValues"] {
                for member in ty[list].as_array().into_iter().flatten() {
                    let member_name = format!("{name}.{}", member["name"].as_str().unwrap_or("?"));
                    if !described(member) {
                        missing.push(member_name.clone());
                    }
                    for arg in member["args"].as_array().into_iter().flatten() {
                        if !described(arg) {
                            missing.push(format!("{member_name}({})", arg["name"]));
                        }
                    }
                }
            }
        }
        missing
    }

    #[tokio::test]
    async fn every_type_field_argument_and_value_has_a_description() {
        let schema = schema_builder(Environment::Development).finish();
        let response = schema.execute(INTROSPECTION).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let data = response.data.into_json().expect("introspection is JSON");
        assert!(data["__schema"]["types"]
            .as_array()
            .is_some_and(|t| t.len() > 10));
        assert_eq!(undescribed(&data), Vec::<String>::new());
    }
}
