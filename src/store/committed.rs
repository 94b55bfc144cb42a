//! The committed prefix of the store, in commit order: the one read that
//! the relay, the live feed, audit, export, checkpoints and the rebuild
//! share.
//!
//! An event's `position` comes from a sequence when its transaction
//! inserts it, so positions do not commit in order: a reader that pages by
//! position alone can pass an event whose transaction is still running and
//! never see it. Events are therefore read in commit order, `(transaction
//! id, position)`, and only below the oldest transaction still running
//! (`pg_snapshot_xmin`), where nothing can commit any more. The rule is
//! written here alone.

use sqlx::postgres::PgRow;
use sqlx::{Executor, FromRow, Postgres, QueryBuilder};

/// The oldest transaction that was running when the bound was taken: every
/// event below it had committed, with every event before it. Readers that
/// read one prefix several times (a rebuild, a checkpoint) take it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound(String);

impl Bound {
    pub async fn now<'c>(executor: impl Executor<'c, Database = Postgres>) -> sqlx::Result<Self> {
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            .fetch_one(executor)
            .await
            .map(Self)
    }

    /// A bound kept earlier (a checkpoint's), as PostgreSQL wrote it.
    pub fn from_text(text: String) -> Self {
        Self(text)
    }

    pub fn as_text(&self) -> &str {
        &self.0
    }
}

/// Where a page in commit order ends: the transaction id (as text) and the
/// position of its last event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StreamCursor {
    pub transaction_id: String,
    pub position: i64,
}

impl StreamCursor {
    /// `<transaction id>.<position>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.transaction_id, self.position)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (transaction_id, position) = text.split_once('.')?;
        transaction_id.parse::<u64>().ok()?;
        Some(Self {
            transaction_id: transaction_id.to_owned(),
            position: position.parse().ok()?,
        })
    }
}

/// Whether committed events wait outside the prefix, behind a transaction
/// that began before theirs and still runs (the prefix ends at the oldest
/// one running, in any database of the cluster): a reader that found the
/// prefix's end should look again soon, not at its next poll.
pub async fn held_back<'c>(executor: impl Executor<'c, Database = Postgres>) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))",
    )
    .fetch_one(executor)
    .await
}

/// The last event of the committed prefix, if any.
pub async fn end<'c>(
    executor: impl Executor<'c, Database = Postgres>,
) -> sqlx::Result<Option<StreamCursor>> {
    CommittedRead::select("transaction_id::text AS transaction_id, position")
        .last()
        .fetch_optional(executor)
        .await
}

/// A read of the committed prefix: `SELECT <columns> FROM events WHERE` the
/// prefix, then whatever the reader narrows it by (` AND …` through
/// [`CommittedRead::and`]), then its order and limit.
pub struct CommittedRead<'a> {
    query: QueryBuilder<'a, Postgres>,
}

impl<'a> CommittedRead<'a> {
    /// The prefix committed now.
    pub fn select(columns: &str) -> Self {
        Self {
            query: QueryBuilder::new(format!(
                "SELECT {columns} FROM events WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
            )),
        }
    }

    /// The prefix below a bound taken earlier.
    pub fn select_below(columns: &str, bound: &Bound) -> Self {
        let mut query = QueryBuilder::new(format!(
            "SELECT {columns} FROM events WHERE transaction_id < "
        ));
        query.push_bind(bound.0.clone()).push("::text::xid8");
        Self { query }
    }

    /// Only what committed since an earlier bound (its own events were not
    /// all committed then).
    pub fn since(mut self, earlier: &Bound) -> Self {
        self.query
            .push(" AND transaction_id >= ")
            .push_bind(earlier.0.clone())
            .push("::text::xid8");
        self
    }

    /// Only what comes after `cursor` in commit order.
    pub fn after(mut self, cursor: Option<&StreamCursor>) -> Self {
        if let Some(cursor) = cursor {
            self.query
                .push(" AND (transaction_id, position) > (")
                .push_bind(cursor.transaction_id.clone())
                .push("::text::xid8, ")
                .push_bind(cursor.position)
                .push(")");
        }
        self
    }

    /// Only what comes after the cursor that `select` names: a query of one
    /// `(transaction_id, position)` row whose text ends where `value` is
    /// bound (the relay's own cursor, read in the same statement).
    pub fn after_selected(mut self, select: &str, value: String) -> Self {
        self.query
            .push(" AND (transaction_id, position) > (")
            .push(select)
            .push_bind(value)
            .push(")");
        self
    }

    /// The query so far, to append ` AND …` conditions to.
    pub fn and(&mut self) -> &mut QueryBuilder<'a, Postgres> {
        &mut self.query
    }

    /// Oldest first, at most `limit` when given.
    pub fn in_commit_order(mut self, limit: Option<i64>) -> Self {
        self.query
            .push(" ORDER BY events.transaction_id, events.position");
        if let Some(limit) = limit {
            self.query.push(" LIMIT ").push_bind(limit);
        }
        self
    }

    /// The last event of the prefix only.
    pub fn last(mut self) -> Self {
        self.query
            .push(" ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1");
        self
    }

    /// Any other ending (`GROUP BY`, another order): the reader's own.
    pub fn then(mut self, sql: &str) -> Self {
        self.query.push(sql);
        self
    }

    pub async fn fetch_all<'c, T>(
        mut self,
        executor: impl Executor<'c, Database = Postgres>,
    ) -> sqlx::Result<Vec<T>>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        self.query.build_query_as().fetch_all(executor).await
    }

    pub async fn fetch_optional<'c, T>(
        mut self,
        executor: impl Executor<'c, Database = Postgres>,
    ) -> sqlx::Result<Option<T>>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        self.query.build_query_as().fetch_optional(executor).await
    }

    /// A single value, such as a `count(*)`.
    pub async fn fetch_scalar<'c, T>(
        mut self,
        executor: impl Executor<'c, Database = Postgres>,
    ) -> sqlx::Result<T>
    where
        T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
    {
        self.query.build_query_scalar().fetch_one(executor).await
    }

    /// The rows one at a time (an export of the whole store).
    pub fn fetch<'c, 'e, T>(
        &'e mut self,
        executor: impl Executor<'c, Database = Postgres> + 'e,
    ) -> futures::stream::BoxStream<'e, sqlx::Result<T>>
    where
        'c: 'e,
        'a: 'e,
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin + 'e,
    {
        self.query.build_query_as().fetch(executor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn cursors_read_back_and_anything_else_is_refused(
            transaction in 0u64..u64::MAX, position in 0i64..i64::MAX, junk in "\\PC{0,40}"
        ) {
            let cursor = StreamCursor { transaction_id: transaction.to_string(), position };
            prop_assert_eq!(StreamCursor::decode(&cursor.encode()), Some(cursor));
            if let Some(decoded) = StreamCursor::decode(&junk) {
                prop_assert_eq!(decoded.encode(), junk);
            }
        }
    }
}
