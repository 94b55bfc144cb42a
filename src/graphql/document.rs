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

/// The deepest a document may nest selections, arguments, lists and input
/// objects. The parser recurses once per level, so a deeper document is
/// refused before it is parsed: a hostile one must not exhaust the stack.
pub const MAX_NESTING: usize = 64;

/// How deep `query` nests `{`, `[` and `(`, outside strings and comments.
fn nesting(query: &str) -> usize {
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' | '[' | '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '"' => {
                // A string or a block string: skipped to its end, escapes
                // included (an unterminated one ends the document).
                let block = chars.peek() == Some(&'"') && {
                    chars.next();
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        true
                    } else {
                        // `""`: the empty string.
                        continue;
                    }
                };
                let mut quotes = 0;
                while let Some(c) = chars.next() {
                    match (block, c) {
                        (_, '\\') => {
                            chars.next();
                            quotes = 0;
                        }
                        (false, '"') => break,
                        (true, '"') => {
                            quotes += 1;
                            if quotes == 3 {
                                break;
                            }
                        }
                        _ => quotes = 0,
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// Names the operation's span after the operation and its first field, as
/// `mutation register`.
fn name_span(document: &ExecutableDocument) {
    let Some((_, operation)) = document.operations.iter().next() else {
        return;
    };
    crate::telemetry::rename_current_span(|| {
        let field = operation
            .node
            .selection_set
            .node
            .items
            .iter()
            .find_map(|item| match &item.node {
                Selection::Field(field) => Some(field.node.name.node.as_str()),
                _ => None,
            })
            .unwrap_or_default();
        format!("{} {field}", operation.node.ty)
    });
}

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
        if nesting(query) > MAX_NESTING {
            return Err(ServerError::new(
                format!("the document nests deeper than {MAX_NESTING} levels"),
                None,
            ));
        }
        let document = next.run(ctx, query, variables).await?;
        name_span(&document);
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
    use super::{nesting, MAX_NESTING};
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

    #[test]
    fn nesting_counts_brackets_outside_strings_and_comments() {
        assert_eq!(nesting("{ me { id } }"), 2);
        assert_eq!(nesting("{ a(x: [{y: 1}]) }"), 4);
        assert_eq!(nesting(r#"{ a(s: "{{{{[[(") }"#), 2);
        assert_eq!(nesting("{ a(s: \"\"\"{{{ \\\"\"\" {{ \"\"\") }"), 2);
        assert_eq!(nesting("{ a(s: \"\\\"{{\") }"), 2);
        assert_eq!(nesting("# {{{{\n{ a }"), 1);
        assert_eq!(nesting("{ a(s: \"\", t: \"{\") }"), 2);
    }

    #[tokio::test]
    async fn a_document_nested_deeper_than_the_limit_is_refused_before_parsing() {
        let deep = format!("{}{}", "{ me ".repeat(100_000), "}".repeat(100_000));
        let errors = messages(&deep).await;
        assert!(
            errors.iter().any(|e| e.contains("nests deeper")),
            "{errors:?}"
        );
        let fine = format!(
            "{}__typename{}",
            "{ ... on Query ".repeat(MAX_NESTING - 1),
            "}".repeat(MAX_NESTING - 1)
        );
        assert!(!messages(&fine)
            .await
            .iter()
            .any(|e| e.contains("nests deeper")));
    }
}
