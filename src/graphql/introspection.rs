//! In production, an operation that asks for the schema (`__schema`,
//! `__type`) is refused with an error, rather than answered with `null` as
//! async-graphql's disabled introspection does.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};

pub struct NoIntrospection;

impl ExtensionFactory for NoIntrospection {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(NoIntrospection)
    }
}

/// The first field of `set` (nested fragments included) that introspects.
fn introspects(set: &SelectionSet) -> Option<async_graphql::Pos> {
    set.items.iter().find_map(|item| match &item.node {
        Selection::Field(field) => {
            let name = field.node.name.node.as_str();
            if name == "__schema" || name == "__type" {
                Some(field.pos)
            } else {
                introspects(&field.node.selection_set.node)
            }
        }
        Selection::InlineFragment(fragment) => introspects(&fragment.node.selection_set.node),
        Selection::FragmentSpread(_) => None,
    })
}

#[async_trait::async_trait]
impl Extension for NoIntrospection {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let operations = document
            .operations
            .iter()
            .map(|(_, operation)| &operation.node.selection_set.node);
        let fragments = document
            .fragments
            .values()
            .map(|fragment| &fragment.node.selection_set.node);
        if let Some(pos) = operations.chain(fragments).find_map(introspects) {
            return Err(ServerError::new(
                "introspection is disabled in production; the schema is published as schema.graphql",
                Some(pos),
            ));
        }
        Ok(document)
    }
}
