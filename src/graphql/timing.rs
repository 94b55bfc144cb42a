//! Latency of each root field (a mutation is one command), recorded as
//! `accountable_graphql_field_duration_seconds{type, field, outcome}`.
//! Labels come from the schema, never from the client (operation names are
//! the client's to choose, and would make the label set unbounded).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{ServerResult, Value};

/// Times the root fields of every operation.
pub struct FieldTiming;

impl ExtensionFactory for FieldTiming {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(FieldTiming)
    }
}

#[async_trait::async_trait]
impl Extension for FieldTiming {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if info.path_node.parent.is_some() || info.is_for_introspection {
            return next.run(ctx, info).await;
        }
        let (parent, field) = (info.parent_type.to_owned(), info.name.to_owned());
        let started = std::time::Instant::now();
        let result = next.run(ctx, info).await;
        let outcome = match &result {
            Ok(_) => "OK".to_owned(),
            Err(error) => error
                .extensions
                .as_ref()
                .and_then(|extensions| match extensions.get("code") {
                    Some(Value::String(code)) => Some(code.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "ERROR".to_owned()),
        };
        metrics::histogram!(
            "accountable_graphql_field_duration_seconds",
            "type" => parent,
            "field" => field,
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        result
    }
}
