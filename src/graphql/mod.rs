//! The GraphQL API: one schema, split by feature, over the read tables and
//! the command service.

pub mod error;
pub mod freshness;
pub mod guards;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{EmptySubscription, MergedObject, Schema, SchemaBuilder};
use sqlx::PgPool;

use crate::auth::ratelimit::ClientLimiter;
use crate::auth::Auth;
use crate::config::Environment;
use freshness::ProjectionWatch;

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(users::UserQuery);

#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(users::UserMutation);

pub type AppSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// What resolvers share for the life of the process.
pub struct ApiState {
    pub pool: PgPool,
    pub auth: Arc<Auth>,
    pub limiter: ClientLimiter,
    pub freshness: ProjectionWatch,
    pub read_your_writes_timeout: Duration,
}

/// What resolvers know of the HTTP request that carries the operation.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub correlation_id: String,
    /// The peer address of the connection.
    pub client: IpAddr,
}

/// The schema with its validation limits, before any data is attached.
pub fn schema_builder(
    env: Environment,
) -> SchemaBuilder<QueryRoot, MutationRoot, EmptySubscription> {
    let builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .limit_depth(10)
    .limit_complexity(1000)
    .limit_directives(5);
    match env {
        Environment::Development => builder,
        Environment::Production => builder.disable_introspection().disable_suggestions(),
    }
}

pub fn build_schema(env: Environment, state: ApiState) -> AppSchema {
    schema_builder(env).data(state).finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    schema_builder(Environment::Development).finish().sdl()
}
