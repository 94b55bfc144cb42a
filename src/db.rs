//! The PostgreSQL pool and the embedded migrations.

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres, Transaction};

pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Connects to the database, creating it first if the server has none of
/// that name, and applies pending migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    if !Postgres::database_exists(url).await? {
        tracing::info!("creating the database");
        if let Err(error) = Postgres::create_database(url).await {
            // Another process may have created it in the meantime.
            if !Postgres::database_exists(url).await? {
                return Err(error.into());
            }
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(url)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A LISTEN connection of its own beside `pool`, not taken from it, so that
/// long-lived listeners never starve the queries; it reconnects by itself.
pub async fn listener(pool: &PgPool) -> sqlx::Result<PgListener> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    PgListener::connect_with(&own).await
}

/// A pooled connection that is to hold one transaction, for the code that a
/// request runs (and so that a client's disconnect or the request timeout
/// may drop at any `.await`).
///
/// sqlx 0.8's `begin`, dropped while its `BEGIN` is under way, hands the
/// connection back to the pool inside a transaction that sqlx does not know
/// of (its rollback guard looks at a depth it raises only afterwards): every
/// later statement on that connection, other users' commands included, then
/// runs in that transaction and is lost with it. One dropped before its
/// [`TransactionConnection::begin`] finished closes the connection instead.
pub struct TransactionConnection {
    connection: PoolConnection<Postgres>,
    begun: bool,
}

impl TransactionConnection {
    pub async fn begin(&mut self) -> sqlx::Result<Transaction<'_, Postgres>> {
        let transaction = self.connection.begin().await?;
        self.begun = true;
        Ok(transaction)
    }
}

impl Drop for TransactionConnection {
    fn drop(&mut self) {
        if !self.begun {
            self.connection.close_on_drop();
        }
    }
}

/// A connection of `pool` for one transaction (see [`TransactionConnection`]).
pub async fn for_transaction(pool: &PgPool) -> sqlx::Result<TransactionConnection> {
    Ok(TransactionConnection {
        connection: pool.acquire().await?,
        begun: false,
    })
}
