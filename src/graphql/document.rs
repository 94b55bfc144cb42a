//! Checks of an operation's document before validation: how many fields it
//! selects (aliases, `__typename` and fragment spreads counted, which the
//! complexity limit does not weigh), and, in production, that it does not
//! introspect the schema (async-graphql's disabled introspection answers
//! `null` rather than an error).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Pos, ServerError, ServerResult, Variables};

/// The most fields one operation may select, spreads expanded.
pub const MAX_FIELDS: usize = 1000;

#[derive(Clone, Copy)]
pub struct DocumentGuard {
    pub introspection: bool,
}

impl ExtensionFactory for DocumentGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

/// The first field of `set` (nested inline fragments included) that
/// introspects.
fn introspects(set: &SelectionSet) -> Option<Pos> {
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

/// Counts fields, expanding fragment spreads once each (memoised); a cycle
/// counts as too many (validation would refuse it anyway).
struct Counter<'a> {
    document: &'a ExecutableDocument,
    fragments: HashMap<&'a str, usize>,
    expanding: Vec<&'a str>,
}

impl<'a> Counter<'a> {
    fn count(&mut self, set: &'a SelectionSet) -> usize {
        let mut total: usize = 0;
        for item in &set.items {
            let more = match &item.node {
                Selection::Field(field) => 1 + self.count(&field.node.selection_set.node),
                Selection::InlineFragment(fragment) => {
                    self.count(&fragment.node.selection_set.node)
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str())
                }
            };
            total = total.saturating_add(more);
            if total > MAX_FIELDS {
                break;
            }
        }
        total
    }

    fn fragment(&mut self, name: &'a str) -> usize {
        if let Some(known) = self.fragments.get(name) {
            return *known;
        }
        if self.expanding.contains(&name) {
            return usize::MAX;
        }
        let Some((key, fragment)) = self.document.fragments.get_key_value(name) else {
            return 0;
        };
        self.expanding.push(key.as_str());
        let count = self.count(&fragment.node.selection_set.node);
        self.expanding.pop();
        self.fragments.insert(key.as_str(), count);
        count
    }
}

#[async_trait::async_trait]
impl Extension for DocumentGuard {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let mut counter = Counter {
            document: &document,
            fragments: HashMap::new(),
            expanding: Vec::new(),
        };
        for (_, operation) in document.operations.iter() {
            if counter.count(&operation.node.selection_set.node) > MAX_FIELDS {
                return Err(ServerError::new(
                    format!("the operation selects more than {MAX_FIELDS} fields"),
                    Some(operation.pos),
                ));
            }
        }
        if !self.introspection {
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
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Environment;
    use crate::graphql::schema_builder;

    async fn messages(query: &str) -> Vec<String> {
        let schema = schema_builder(Environment::Development).finish();
        schema
            .execute(query)
            .await
            .errors
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[tokio::test]
    async fn fields_multiplied_through_fragments_are_counted() {
        let typenames: String = (0..100).map(|i| format!("t{i}: __typename ")).collect();
        let spreads: String = (0..20).map(|i| format!("b{i}: __typename ...B ")).collect();
        let query = format!(
            "query {{ ...A }} fragment A on Query {{ {spreads} }} fragment B on Query {{ {typenames} }}"
        );
        let errors = messages(&query).await;
        assert!(errors.iter().any(|e| e.contains("more than")), "{errors:?}");
        let small =
            messages("query { ...A } fragment A on Query { a: __typename b: __typename }").await;
        assert!(small.is_empty(), "{small:?}");
    }

    #[tokio::test]
    async fn a_fragment_cycle_is_refused_without_looping() {
        let errors =
            messages("query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
                .await;
        assert!(!errors.is_empty());
    }
}
