//! Every read of a user row goes through one process-wide DataLoader, so
//! that the lookups of one operation, and of operations running at the same
//! moment, share a single `WHERE id = ANY($1)` query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use accountable_projections::users::{self, UserRow};
use async_graphql::dataloader::{DataLoader, Loader};
use sqlx::PgPool;
use uuid::Uuid;

/// Loads user rows by id; rows are never cached, each load reads afresh.
pub struct UserLoader {
    pool: PgPool,
    queries: Arc<AtomicU64>,
}

/// How many queries the loader has sent: a batch of lookups counts once.
#[derive(Clone, Default)]
pub struct LookupCount(Arc<AtomicU64>);

impl LookupCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Loader<Uuid> for UserLoader {
    type Value = UserRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, UserRow>, Self::Error> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let rows = users::find_many(&self.pool, ids).await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}

pub type Users = DataLoader<UserLoader>;

/// A loader on `pool` and the count of the queries it sends.
pub fn users(pool: PgPool) -> (Users, LookupCount) {
    let count = LookupCount::default();
    let loader = UserLoader {
        pool,
        queries: count.0.clone(),
    };
    (DataLoader::new(loader, tokio::spawn), count)
}
